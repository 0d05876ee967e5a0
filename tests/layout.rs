//! The layering the workspace promises, checked: the protocol crate stays pure, and no module of
//! the plugin crate imports (directly or through others) a module that imports it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_protocol_crate_has_no_io_runtime_metrics_yaml_or_logging() {
    let manifest = std::fs::read_to_string(root().join("crates/protocol/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    for banned in ["pingora", "tokio", "prometheus", "serde_yaml", "log ", "tracing"] {
        assert!(!deps.contains(banned), "paysign-protocol depends on {banned}");
    }
    for entry in walk(&root().join("crates/protocol/src")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for banned in ["pingora::", "tokio::", "prometheus::", "serde_yaml::", "log::", "tracing::", "std::net", "std::fs"] {
            assert!(!text.contains(banned), "{} uses {banned}", entry.display());
        }
    }
}

/// The sandbox plays the platform: it shares the protocol, the configuration-file reading and the
/// HTTP plumbing with the gateway, never the gateway itself (a change inside the gateway cannot
/// change the platform the tests run against).
#[test]
fn the_sandbox_does_not_depend_on_the_gateway() {
    let manifest = std::fs::read_to_string(root().join("crates/sandbox/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let ours: Vec<&str> = deps.lines().filter_map(|l| l.split_whitespace().next()).filter(|d| d.starts_with("paysign-")).collect();
    assert_eq!(ours, ["paysign-protocol", "paysign-settings", "paysign-http"], "{deps}");
    for entry in walk(&root().join("crates/sandbox/src")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(!text.contains("paysign_plugin"), "{} uses the gateway", entry.display());
    }
}

#[test]
fn no_module_of_the_plugin_crate_imports_in_a_cycle() {
    let src = root().join("crates/plugin/src");
    // A module is named by its file, a folder module by its folder (`keys/mod.rs` is `keys`).
    let files: BTreeMap<String, std::path::PathBuf> = walk(&src)
        .into_iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?;
            let name = if stem == "mod" { p.parent()?.file_name()?.to_str()? } else { stem };
            Some((name.to_string(), p))
        })
        .filter(|(m, _)| m != "lib")
        .collect();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        // Code only: not the tests, not comments (doc links are not imports).
        let code: String =
            text.split("#[cfg(test)]").next().unwrap().lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let code = code.as_str();
        // `crate::keys::executor::X` depends on `executor` (the deepest module it names).
        let deps = code
            .match_indices("crate::")
            .filter_map(|(i, _)| {
                let path = code[i + 7..].split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != ':').next()?;
                path.split("::").filter(|s| modules.contains(*s)).last()
            })
            .filter(|d| *d != m)
            .map(str::to_string)
            .collect();
        graph.insert(m.clone(), deps);
    }
    // Depth-first search for a path back to the start.
    for start in graph.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        while let Some(path) = stack.pop() {
            for next in &graph[path[path.len() - 1]] {
                assert!(next != start, "import cycle: {} -> {start}", path.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" -> "));
                if !path.contains(&next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
    assert!(graph.len() >= 20, "{graph:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
