import socket, sys, time
pid=int(sys.argv[1]); ports=[int(p) for p in sys.argv[2].split(",")]; n=int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])/1024
def threads(): return len(__import__("os").listdir(f"/proc/{pid}/task"))
base=rss(); print(f"idle baseline {base:.0f} MiB, {threads()} threads")
socks=[]; refused=0
for p in ports:
    for i in range(n):
        s=socket.socket(); s.connect(("127.0.0.1",p)); socks.append((p,s))
time.sleep(2)
peak=rss()
def hwm():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM"): return int(l.split()[1])/1024
open_=0
for p,s in socks:
    s.setblocking(False)
    try:
        d=s.recv(1)
        if d==b"": refused+=1
        else: open_+=1
    except BlockingIOError: open_+=1
    except Exception: refused+=1
print(f"{n} idle connections to each of {ports}: RSS {peak:.0f} MiB (peak {hwm():.0f} MiB), {threads()} threads; {open_} held open, {refused} closed at once")
for p,s in socks: s.close()
for t in (5,30):
    time.sleep(t if t==5 else 25)
    print(f"{t}s after they close: RSS {rss():.0f} MiB ({100*(rss()-base)/base:+.0f} % of baseline)")
