#!/usr/bin/env python3
"""Turns `cargo bench --bench crypto` output into the README's Markdown tables (median times,
and the aws-lc / rsa ratio per operation and size)."""
import re
import sys

text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
unit = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
times = {}
for m in re.finditer(r"^((?:step|call)/\S+)\s*(?:\n\s*)?time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", text, re.M):
    times[m.group(1)] = float(m.group(2)) * unit[m.group(3)]

def fmt(us):
    return f"{us/1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs" if us >= 1 else f"{us*1000:.0f} ns"

ops = []
for name in times:
    parts = name.split("/")
    key = "/".join(parts[1:-2]) if parts[-2] in ("aws-lc", "rsa") else "/".join(parts[1:-1])
    if key not in ops:
        ops.append(key)
print("| operation | size | aws-lc | rsa (pure Rust) | rsa / aws-lc |")
print("|---|---|---|---|---|")
for op in ops:
    for size in ("300", "1024", "4096"):
        group = "step" if not op.startswith(("seal", "open/")) else "call"
        a = times.get(f"{group}/{op}/aws-lc/{size}")
        r = times.get(f"{group}/{op}/rsa/{size}")
        single = times.get(f"{group}/{op}/{size}")
        if single is not None:
            print(f"| {op} | {size} B | {fmt(single)} (no RSA) | | |")
        elif a is not None and r is not None:
            print(f"| {op} | {size} B | {fmt(a)} | {fmt(r)} | {r/a:.1f}x |")
