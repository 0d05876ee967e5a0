//! Loading: a file read and parsed (YAML, every refused key reported), then validated
//! ([`super::validate`]) and, when it is loaded to run, completed online ([`super::online`]:
//! names looked up, keys in a token opened).

use std::path::{Path, PathBuf};

use super::runtime::Config;
use super::schema::GatewayFile;
use super::validate::{ctx_in, validate, Found};
use super::{online, ConfigError};

/// How a configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// To run: host names are looked up and keys in a PKCS#11 token opened (both required),
    /// once the rest has validated.
    Run,
    /// `paysign check`: everything that can be checked offline; a name that does not resolve
    /// now and a key in a token are warnings (neither DNS nor the HSM is needed).
    Check,
    /// The fuzzer: no DNS query may leave, a token key is an error.
    Offline,
}

/// Everything loading a file found: every problem (not only the first) and the warnings.
#[derive(Debug)]
pub struct Report {
    /// The configuration, when there is no problem (and, for [`Mode::Check`], no key in a
    /// token that was left unopened).
    pub config: Option<Config>,
    /// Every problem (empty: loaded).
    pub errors: Vec<ConfigError>,
    /// What is worth saying but not refused.
    pub warnings: Vec<ConfigError>,
    /// How many merchants the file configures.
    pub merchants: usize,
}

/// Loads and validates a gateway configuration, parsing every key.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    first_problem(load_report(path, Mode::Run))
}

/// [`load`] from text, without looking host names up (they become 0.0.0.0); relative paths
/// are relative to `path`'s folder. For the fuzzer: it must send no DNS query.
pub fn load_str_offline(text: &str, path: &Path) -> Result<Config, ConfigError> {
    first_problem(report_str(text, path, Mode::Offline))
}

fn first_problem(report: Report) -> Result<Config, ConfigError> {
    match (report.config, report.errors.into_iter().next()) {
        (_, Some(e)) => Err(e),
        (Some(c), None) => Ok(c),
        (None, None) => Err(ConfigError {
            config: PathBuf::new(),
            setting: "(file)".into(),
            file: None,
            message: "not loaded (a key was left unopened)".into(),
        }),
    }
}

/// Every problem of a gateway file, with its warnings.
pub fn load_report(path: &Path, mode: Mode) -> Report {
    match std::fs::read_to_string(path) {
        Ok(text) => report_str(&text, path, mode),
        Err(e) => Report {
            config: None,
            errors: vec![ConfigError {
                config: path.to_path_buf(),
                setting: "(file)".into(),
                file: None,
                message: format!("cannot read: {e}"),
            }],
            warnings: Vec::new(),
            merchants: 0,
        },
    }
}

/// [`load`] from text: names looked up and keys in a token opened (as [`load`]); relative
/// paths are relative to `path`'s folder, and errors name `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    first_problem(report_str(text, path, Mode::Run))
}

fn report_str(text: &str, path: &Path, mode: Mode) -> Report {
    let (file, errors) = parse_gateway(text, path);
    match file {
        Some(file) => report_file(file, path, mode, errors),
        None => Report { config: None, errors, warnings: Vec::new(), merchants: 0 },
    }
}

/// Validates a parsed file (or the builder's), then completes it online for [`Mode::Run`].
/// `errors`: those found while parsing, reported first, as they appear in the file.
pub(crate) fn report_file(file: GatewayFile, path: &Path, mode: Mode, mut errors: Vec<ConfigError>) -> Report {
    let merchants = file.merchants.len();
    let ctx = ctx_in(path, file.allow_weak_keys, file.crypto_backend, mode);
    let mut found = Found { errors: Vec::new() };
    let mut config = validate(file, &ctx, &mut found);
    errors.extend(found.errors);
    let pending = ctx.take_pending();
    match (mode, config.as_mut()) {
        (Mode::Run, Some(c)) if errors.is_empty() => errors.extend(online::complete(c, pending, &ctx)),
        (Mode::Check, _) => online::try_lookups(&pending, &ctx),
        _ => {}
    }
    let warnings = ctx.take_warnings();
    let config = match config {
        Some(mut c) if errors.is_empty() => {
            c.warnings = warnings.clone();
            Some(c)
        }
        _ => None,
    };
    Report { config, errors, warnings, merchants }
}

pub use paysign_settings::{parse_yaml, read_yaml};
use paysign_settings::{too_deep, yaml_error};

/// Parses a gateway file, reporting every key of the wrong type or name rather than only the
/// first: each refused key is taken out and the rest parsed again (a key that is required then
/// stops the search, as the next error would only repeat it as missing).
pub(crate) fn parse_gateway(text: &str, path: &Path) -> (Option<GatewayFile>, Vec<ConfigError>) {
    if let Some(e) = too_deep(text, path) {
        return (None, vec![e]);
    }
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut value: Option<serde_yaml::Value> = None;
    let mut current = text.to_string();
    // Bounded: a file with more bad keys than this reports the first ones.
    for _ in 0..32 {
        let e = match serde_yaml::from_str::<GatewayFile>(&current) {
            Ok(file) => return (Some(file), errors),
            Err(e) => e,
        };
        let mut problem = yaml_error(path, &e);
        if errors.is_empty() {
            match serde_yaml::from_str::<serde_yaml::Value>(text) {
                Ok(v) => value = Some(v),
                Err(_) => return (None, vec![problem]),
            }
        } else {
            // Positions refer to the rewritten text after the first error: drop them.
            if let Some(i) = problem.message.rfind(" (line ") {
                problem.message.truncate(i);
            }
        }
        let missing =
            problem.message.strip_prefix("invalid configuration: missing field `").and_then(|r| r.split_once('`')).map(|(k, _)| k);
        if let Some(k) = missing {
            let full = if problem.setting == "(file)" { k.to_string() } else { format!("{}.{k}", problem.setting) };
            if errors.iter().any(|e| e.setting == full) {
                break;
            }
        }
        let removed = value.as_mut().is_some_and(|v| remove_setting(v, &problem.setting));
        errors.push(problem);
        if !removed {
            break;
        }
        match value.as_ref().map(serde_yaml::to_string) {
            Some(Ok(t)) => current = t,
            _ => break,
        }
    }
    (None, errors)
}

/// Removes `a.b[2].c` from a YAML tree; false when there is no such key.
fn remove_setting(root: &mut serde_yaml::Value, setting: &str) -> bool {
    let mut parts: Vec<(String, Option<usize>)> = Vec::new();
    for segment in setting.split('.') {
        let mut rest = segment;
        let name_end = rest.find('[').unwrap_or(rest.len());
        parts.push((rest[..name_end].to_string(), None));
        rest = &rest[name_end..];
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, after)) = r.split_once(']') else { return false };
            let Ok(n) = n.parse::<usize>() else { return false };
            parts.push((String::new(), Some(n)));
            rest = after;
        }
    }
    let Some(last) = parts.pop() else { return false };
    let mut node = root;
    for (key, index) in &parts {
        let next = match index {
            Some(i) => node.get_mut(*i),
            None => node.get_mut(key.as_str()),
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match last {
        (_, Some(i)) => match node.as_sequence_mut() {
            Some(seq) if i < seq.len() => {
                seq.remove(i);
                true
            }
            _ => false,
        },
        (key, None) => node.as_mapping_mut().is_some_and(|m| m.remove(key.as_str()).is_some()),
    }
}
