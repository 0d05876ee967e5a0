//! # paysign-settings
//!
//! The configuration files of the paysign gateway and of its platform simulator (the sandbox)
//! are read the same way, by this crate, so that neither depends on the other: YAML whose
//! errors name the setting and its position (unknown keys refused, nesting bounded), and the
//! files a configuration names — keys, secrets, certificates — resolved relative to it, secrets
//! refused when others could replace them, every problem naming its setting and file.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paysign_protocol::crypto::keys::{self, KeyError};
use paysign_protocol::crypto::{Backend, PrivateKey, PublicKey, Secret};
use serde::Deserialize;

/// A configuration problem: which file, which setting, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file (for a configuration built in code: the name it was given).
    pub config: PathBuf,
    /// The setting, as written in the file (`merchants[0].platform_public_key`).
    pub setting: String,
    /// The file the setting names, when the problem is with that file.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.config.display(), self.setting)?;
        if let Some(file) = &self.file {
            write!(f, " ({})", file.display())?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem of a configuration that does not validate (never empty), in the order of the
/// settings; shown one per line — by `Debug` too, so that a `main` returning it with `?` prints
/// the messages, not the structure.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Debug for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// Whether one of the problems is with `setting`.
    pub fn names(&self, setting: &str) -> bool {
        self.0.iter().any(|e| e.setting == setting)
    }
}

/// Reading the files a configuration names (keys, certificates, secrets), relative to the
/// configuration file, with every error naming the setting and the file; warnings collected.
pub struct Files<'a> {
    /// The configuration file.
    pub config: &'a Path,
    /// Its folder: relative paths are resolved from here.
    pub dir: PathBuf,
    /// Whether RSA keys under 2048 bits are accepted (test keys only).
    pub allow_weak: bool,
    /// The crypto backend the keys are loaded for.
    pub backend: Backend,
    warnings: RefCell<Vec<ConfigError>>,
}

/// The files of the configuration at `path` (its folder resolves relative paths).
pub fn files_for(path: &Path, allow_weak: bool, backend: Backend) -> Files<'_> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Files { config: path, dir, allow_weak, backend, warnings: RefCell::default() }
}

impl Files<'_> {
    /// A problem with `setting` (and `file`) of this configuration.
    pub fn err(&self, setting: impl Into<String>, file: Option<&Path>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            config: self.config.to_path_buf(),
            setting: setting.into(),
            file: file.map(Path::to_path_buf),
            message: message.into(),
        }
    }

    /// A warning at position `at` among the warnings so far (a warning found later reported in the file's order).
    pub fn warn_at(&self, at: usize, warning: ConfigError) {
        let mut w = self.warnings.borrow_mut();
        let at = at.min(w.len());
        w.insert(at, warning);
    }

    /// How many warnings there are so far.
    pub fn warning_count(&self) -> usize {
        self.warnings.borrow().len()
    }

    /// Something worth saying that does not make the configuration unusable.
    pub fn warn(&self, setting: impl Into<String>, file: Option<&Path>, message: impl Into<String>) {
        self.warnings.borrow_mut().push(self.err(setting, file, message));
    }

    /// The warnings so far, taken.
    pub fn take_warnings(&self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// Reads a file holding a secret (a private key, the MD5 key, a token, a PIN), refusing one
    /// that others could replace and warning about one that others can read (as ssh does).
    pub fn read_secret(&self, setting: &str, p: &Path) -> Result<(PathBuf, String), ConfigError> {
        let path = self.resolve(p);
        self.secret_mode(setting, &path)?;
        self.read(setting, p)
    }

    /// Refuses a secret file others could replace; warns when others can read it.
    pub fn secret_mode(&self, setting: &str, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        // A missing file is reported by the read that follows.
        let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(self.err(
                setting,
                Some(path),
                format!("is writable by group or others (mode {mode:04o}): anyone who can write it can replace the secret; chmod go-w (0600 or 0400)"),
            ));
        }
        if mode & 0o004 != 0 {
            self.warn(setting, Some(path), format!("is readable by others (mode {mode:04o}); chmod o-r (0600 or 0400)"));
        }
        Ok(())
    }

    /// A path from the configuration, relative to its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// Reads a file the configuration names: (its resolved path, its text).
    pub fn read(&self, setting: &str, p: &Path) -> Result<(PathBuf, String), ConfigError> {
        let path = self.resolve(p);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) => Err(self.err(setting, Some(&path), format!("cannot read file: {e}"))),
        }
    }

    /// An RSA public key file (refused: missing, a private key, under 2048 bits unless allowed).
    pub fn public_key(&self, setting: &str, p: &Option<PathBuf>) -> Result<Arc<PublicKey>, ConfigError> {
        let p = p.as_ref().ok_or_else(|| self.err(setting, None, "is required for this profile"))?;
        let (path, text) = self.read(setting, p)?;
        keys::load_public(&text, self.allow_weak)
            .map(|k| Arc::new(k.with_backend(self.backend)))
            .map_err(|e: KeyError| self.err(setting, Some(&path), e.to_string()))
    }

    /// An RSA private key file, refused when others may write it.
    pub fn private_key(&self, setting: &str, p: &Option<PathBuf>) -> Result<Arc<PrivateKey>, ConfigError> {
        let p = p.as_ref().ok_or_else(|| self.err(setting, None, "is required for this profile"))?;
        let (path, text) = self.read_secret(setting, p)?;
        keys::load_private(&text, self.allow_weak)
            .map(|k| Arc::new(k.with_backend(self.backend)))
            .map_err(|e: KeyError| self.err(setting, Some(&path), e.to_string()))
    }

    /// A merchant's MD5 key, from `<at>.md5_key_file` or `<at>.md5_key_env`.
    pub fn md5_key(&self, at: &str, file: &Option<PathBuf>, env: &Option<String>) -> Result<Secret, ConfigError> {
        self.secret(&format!("{at}.md5_key"), "an md5 merchant", "the MD5 key", file, env)
    }

    /// A secret read from `<setting>_file` or `<setting>_env` (exactly one of them), without
    /// the file's trailing newline; never empty. `who` needs it, `what` it is (for messages).
    pub fn secret(
        &self,
        setting: &str,
        who: &str,
        what: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Secret, ConfigError> {
        let (file_setting, env_setting) = (format!("{setting}_file"), format!("{setting}_env"));
        let short = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
        let (f, e) = (short(&file_setting), short(&env_setting));
        let raw = match (file, env) {
            (Some(_), Some(_)) => return Err(self.err(file_setting, None, format!("set {f} or {e}, not both"))),
            (None, None) => return Err(self.err(file_setting, None, format!("{who} needs {f} or {e}"))),
            (Some(p), None) => self.read_secret(&file_setting, p)?.1,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| self.err(env_setting, None, format!("environment variable {var} is not set or not UTF-8")))?,
        };
        // Files usually end with a newline that is not part of the secret.
        let value = raw.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(self.err(setting, file.as_deref().map(|p| self.resolve(p)).as_deref(), format!("{what} is empty")));
        }
        Ok(Secret::new(value))
    }

    /// Two files that go together (a certificate and its key): both existing, or neither set.
    pub fn file_pair(
        &self,
        (a_name, a): (&str, &Option<PathBuf>),
        (b_name, b): (&str, &Option<PathBuf>),
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let (a, b) = (self.resolve(a), self.resolve(b));
                for (setting, f) in [(a_name, &a), (b_name, &b)] {
                    if !f.is_file() {
                        return Err(self.err(setting, Some(f), "file does not exist"));
                    }
                }
                // The second of the pair is the private key.
                self.secret_mode(b_name, &b)?;
                Ok(Some((a, b)))
            }
            (None, None) => Ok(None),
            _ => Err(self.err(a_name, None, format!("set both {a_name} and {b_name}, or neither"))),
        }
    }

    /// Refuses a setting the merchant's profile does not use.
    pub fn not_for_profile(&self, at: &str, name: &str, set: bool, profile: &str) -> Result<(), ConfigError> {
        if set {
            return Err(self.err(format!("{at}.{name}"), None, format!("is not used by profile {profile}; remove it")));
        }
        Ok(())
    }
}

/// A listener address (`127.0.0.1:8080`).
pub fn check_listen(ctx: &Files, setting: &str, v: &str) -> Result<(), ConfigError> {
    v.parse::<SocketAddr>().map(|_| ()).map_err(|_| ctx.err(setting, None, format!("'{v}' is not an address like 127.0.0.1:8080")))
}

/// A merchant number: 1 to 32 ASCII letters or digits.
pub fn check_customer_no(ctx: &Files, at: &str, c: &str) -> Result<(), ConfigError> {
    if c.is_empty() || c.len() > 32 || !c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ctx.err(format!("{at}.customer_no"), None, "must be 1 to 32 ASCII letters or digits"));
    }
    Ok(())
}

/// `true`, for serde's `default = …` (also used by the sandbox's schema).
pub fn default_true() -> bool {
    true
}

/// `merchants[].profile`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// Requests signed with the shared MD5 key.
    Md5,
    /// Requests signed with the merchant's RSA key.
    Rsa,
}

/// A YAML file into any schema (the sandbox's too); errors name the file.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        config: path.to_path_buf(),
        setting: "(file)".into(),
        file: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_yaml(&text, path)
}

/// [`read_yaml`] from text; errors name `path`.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    if let Some(e) = too_deep(text, path) {
        return Err(e);
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: the YAML
/// parser's time grows with the square of their depth (40,000 levels, an 80 KB file: 13.5 s of
/// CPU in `check`, and as long in a reload), and no setting nests more than a few levels.
const MAX_NESTING: usize = 64;

/// The refusal of a file nested deeper than [`MAX_NESTING`] (brackets in quotes and comments do
/// not count; a stray quote only makes the count smaller, never refuses a good file).
pub fn too_deep(text: &str, path: &Path) -> Option<ConfigError> {
    let (mut depth, mut quote, mut comment, mut prev) = (0usize, None::<char>, false, '\n');
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if q == '"' && c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '"' | '\'' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                return Some(ConfigError {
                    config: path.to_path_buf(),
                    setting: "(file)".into(),
                    file: None,
                    message: format!("invalid configuration: nested deeper than {MAX_NESTING} levels of [ ] or {{ }}"),
                });
            }
        }
        prev = c;
    }
    None
}

/// A YAML error as a problem with the setting it is about: serde_yaml prefixes its message
/// with the path (`merchants[0].chunk_size: invalid type: …`), and names an unknown key in
/// the message (`unknown field `x``).
pub fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    // The position goes after the message, in a form that reads as part of it.
    let text = match (e.location(), text.rfind(" at line ")) {
        (Some(l), Some(i)) => format!("{} (line {}, column {})", &text[..i], l.line(), l.column()),
        _ => text,
    };
    let (setting, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(char::is_whitespace) => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    // `unknown field `x`` names the key itself: the setting is the key.
    let unknown = message.strip_prefix("unknown field `").and_then(|r| r.split_once('`')).map(|(k, _)| k.to_string());
    let setting = match (unknown, setting.is_empty()) {
        (Some(k), true) => k,
        (Some(k), false) => format!("{setting}.{k}"),
        (None, true) => "(file)".into(),
        (None, false) => setting,
    };
    ConfigError { config: path.to_path_buf(), setting, file: None, message: format!("invalid configuration: {message}") }
}
