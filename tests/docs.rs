//! The documentation as a reader walks it: every relative link leads to a file and every
//! `#anchor` to a heading of it, the source layout names every module, and the production
//! configuration has one path everywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut md: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    md.sort();
    files.extend(md);
    files
}

/// The anchor GitHub gives a heading: lower case, only letters, digits, `-` and `_` kept,
/// spaces as `-`; a repeated one gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while seen.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        seen.insert(unique);
    }
    seen
}

/// `[text](target)` links outside code blocks.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        for (i, _) in line.match_indices("](") {
            if let Some(end) = line[i + 2..].find(')') {
                out.push((n + 1, line[i + 2..i + 2 + end].to_string()));
            }
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_exists() {
    let mut broken = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, target) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            if !linked.exists() {
                broken.push(format!("{}:{line}: {target}: no such file", file.display()));
                continue;
            }
            if !anchor.is_empty() && linked.extension().is_some_and(|x| x == "md") {
                let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
                if !headings.contains(anchor) {
                    broken.push(format!("{}:{line}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_source_layout_names_every_module() {
    let layout = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let mut missing = Vec::new();
    for dir in ["src", "crates/http/src", "crates/plugin/src", "crates/protocol/src", "crates/protocol/src/crypto"] {
        for path in rust_files(&root().join(dir)) {
            // A module in a folder is named with its folder (`ops/metrics.rs`); a folder by its
            // `mod.rs` (`ops/`).
            let rel = path.strip_prefix(root().join(dir)).unwrap().to_string_lossy().to_string();
            let name = rel.strip_suffix("mod.rs").unwrap_or(&rel).to_string();
            let named = match name.rsplit_once('/') {
                // In a folder: the folder and the file are named (the file under its folder).
                Some((folder, file)) if !file.is_empty() => layout.contains(&format!("{folder}/")) && layout.contains(file),
                _ => layout.contains(&name),
            };
            if rel != "lib.rs" && !(dir.ends_with("/src") && rel.starts_with("crypto/")) && !named {
                missing.push(format!("{dir}/{rel}"));
            }
        }
    }
    // crypto/'s files are summed up in one line, except the one that names its own role.
    missing.retain(|m| !m.starts_with("crates/protocol/src/crypto/") || m.ends_with("rejection.rs"));
    assert!(missing.is_empty(), "docs/architecture.md does not name {missing:?}");
}

/// The deploy kit installs conf/prod/paysign.yaml at one path; a command that names another
/// fails on the machine it is copied to.
#[test]
fn the_production_configuration_has_one_path_everywhere() {
    let mut files = docs();
    files.extend(
        ["Dockerfile", "conf/deploy/kubernetes.yaml", "conf/deploy/paysign.service", "conf/prod/paysign.yaml"].map(|f| root().join(f)),
    );
    let mut wrong = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("/etc/paysign/") {
                let rest = &line[i + "/etc/paysign/".len()..];
                if rest.starts_with("paysign.yaml") || rest.starts_with("config.yaml") {
                    wrong.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "the configuration is /etc/paysign/config/paysign.yaml:\n{}", wrong.join("\n"));
}

/// The Rust files under `dir`, in its folders too.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}
