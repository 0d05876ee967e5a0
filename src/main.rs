//! paysign's command line: parse arguments, load and validate configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod gateway;
mod lifecycle;
mod server;
mod tools;

use paysign_plugin::config;

/// jemalloc: freed memory goes back to the OS within seconds (see docs/operations.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread purges freed pages after a second (the default, ten
/// seconds and then again ten, kept ~50 % over the idle baseline 30 s after a flood); each
/// thread caches blocks up to 64 KiB (the default stops at 32 KiB), the size of the buffer
/// pingora allocates for every request body and every upstream answer it reads, which otherwise
/// goes through the arena twice per call (docs/performance.md: −4 µs per md5 call, +1 MiB RSS).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_max:65536\0";

/// A signing gateway (pingora) for an aggregated-payment platform's open API.
#[derive(Parser)]
#[command(name = "paysign", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway and sandbox platform in one process (the end-to-end demo).
    Demo {
        /// The gateway's configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "conf/paysign.yaml")]
        config: PathBuf,
        /// The sandbox platform's configuration file.
        #[arg(long, default_value = "conf/sandbox.yaml")]
        sandbox: PathBuf,
    },
    /// The gateway (production).
    Run {
        /// The gateway's configuration file [default: conf/paysign.yaml, relative to the current
        /// directory; the file used is logged].
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Take over the listening sockets of a running paysign, which hands them over on SIGQUIT
        /// (`paysign upgrade` does both, safely).
        #[arg(long)]
        upgrade: bool,
    },
    /// Replace the running gateway (named by its pid file) with a new process, without refusing
    /// a connection: starts `run --upgrade`, waits until it waits for the sockets, then signals
    /// the old process (exit 1, the old process still serving, when anything fails).
    Upgrade {
        /// The gateway's configuration file (the new process runs with it; its upgrade socket
        /// and pid file say which process to replace).
        #[arg(short, long, value_name = "FILE", default_value = "conf/paysign.yaml")]
        config: PathBuf,
    },
    /// The sandbox platform alone.
    Sandbox {
        /// The sandbox platform's configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "conf/sandbox.yaml")]
        config: PathBuf,
    },
    /// Validate configuration files offline, every key file included: print every problem and
    /// warning (a host name that does not resolve now is a warning); exit 1 on a problem.
    Check {
        /// A gateway or sandbox configuration file; repeat -c to check several
        /// (-c a.yaml -c b.yaml).
        #[arg(short, long = "config", value_name = "FILE", required = true)]
        configs: Vec<PathBuf>,
    },
    /// Print the canonical string, sign and envelope that would be sent for stdin's plaintext (exit 1 when --path validation refuses it).
    Seal {
        /// The gateway's configuration file (its merchants' keys are used).
        #[arg(short, long, value_name = "FILE", default_value = "conf/paysign.yaml")]
        config: PathBuf,
        /// customerNo (needed when several merchants are configured).
        #[arg(long)]
        merchant: Option<String>,
        /// The endpoint, to validate its fields (e.g. /api/vborder/shortcut/bindCard/create).
        #[arg(long)]
        path: Option<String>,
    },
    /// Open and verify stdin's response or notification, step by step (exit 1 when it does not verify).
    Open {
        /// The gateway's configuration file (its merchants' keys are used).
        #[arg(short, long, value_name = "FILE", default_value = "conf/paysign.yaml")]
        config: PathBuf,
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Create or upgrade the notification inbox's tables (notify.inbox) and exit; `run` does the
    /// same at start-up, so this is for a database prepared ahead (replicas started together
    /// migrate safely too). Exit 1 when the store cannot be opened.
    Migrate {
        /// The gateway's configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "conf/paysign.yaml")]
        config: PathBuf,
    },
    /// Key files: formats, sizes and kinds, and which form pairs.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Check key files (PEM or DER, PKCS#1 or PKCS#8) and keys in a PKCS#11 token (pkcs11: URIs);
    /// exit 1 when one is unusable, weak (under 2048 bits) or not checked (a URI without
    /// --pkcs11-module).
    Check {
        /// Key files, or `pkcs11:token=…;object=…` URIs.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        /// The PKCS#11 module, to open the keys URIs name.
        #[arg(long, value_name = "PATH")]
        pkcs11_module: Option<PathBuf>,
        /// The environment variable holding the token's PIN.
        #[arg(long, value_name = "VAR")]
        pin_env: Option<String>,
        /// A file holding the token's PIN.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = paysign_plugin::logging::init() {
        eprintln!("paysign: {e}");
        return ExitCode::FAILURE;
    }
    lifecycle::install_panic_hook();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // The log lines before it first (they leave through the log writer's thread).
            paysign_plugin::logging::flush(paysign_plugin::logging::EXIT_WAIT);
            for line in msg.lines() {
                eprintln!("paysign: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Where a token's PIN comes from, for `keys check` on `pkcs11:` URIs.
struct TokenAccess {
    module: Option<PathBuf>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
}

impl TokenAccess {
    fn pin(&self) -> Result<String, String> {
        match (&self.pin_env, &self.pin_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", f.display())),
            _ => Err("give --pin-env or --pin-file (one of them)".into()),
        }
    }

    /// One line about the key a `pkcs11:` URI names; `Err`: the line of a key that fails the
    /// check (an error, or a key nobody looked at).
    fn check(&self, uri: &str) -> Result<String, String> {
        let error = |e: String| format!("ERROR: {e}");
        let parsed = paysign_plugin::pkcs11::Pkcs11Uri::parse(uri).map_err(|e| error(e.to_string()))?;
        let Some(module) = &self.module else {
            // Saying nothing is not saying "fine": a key nobody looked at fails the check.
            return Err(format!(
                "NOT CHECKED: PKCS#11 URI (token '{}'); give --pkcs11-module and --pin-env or --pin-file to check the key in the token",
                parsed.token
            ));
        };
        let pin = paysign_protocol::crypto::Secret::new(self.pin().map_err(error)?);
        let key = paysign_plugin::pkcs11::open_key(uri, module, &pin, false).map_err(|e| error(e.to_string()))?;
        Ok(format!("private key in a PKCS#11 token, RSA-{} (it never leaves the token)", key.public().bits()))
    }
}

fn keys_check(files: &[String], tokens: &TokenAccess) -> Result<(), String> {
    let mut texts = Vec::new();
    let mut unreadable = false;
    for name in files {
        if paysign_plugin::pkcs11::is_uri(name) {
            match tokens.check(name) {
                Ok(line) => println!("{name}: {line}"),
                Err(line) => {
                    println!("{name}: {line}");
                    unreadable = true;
                }
            }
            continue;
        }
        let name = name.clone();
        match std::fs::read_to_string(&name) {
            Ok(t) => texts.push((name, t)),
            Err(e) => {
                println!("{name}: ERROR: cannot read: {e}");
                unreadable = true;
            }
        }
    }
    let (report, ok) = tools::keys_check(&texts);
    print!("{report}");
    if ok && !unreadable {
        Ok(())
    } else {
        Err("some keys are unusable, weak or not checked".into())
    }
}

fn check(configs: &[PathBuf]) -> Result<(), String> {
    let mut failed = 0;
    for path in configs {
        let report = check_one(path);
        for e in &report.errors {
            println!("{e}");
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        let warned = match report.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        };
        if report.errors.is_empty() {
            println!("{}: ok ({}, {} merchant(s){warned})", path.display(), report.kind, report.merchants);
        } else {
            println!("{}: {} problem(s)", path.display(), report.errors.len());
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} configuration file(s) have problems"));
    }
    Ok(())
}

/// What `check` found in one file, whichever kind it is.
struct Checked {
    kind: &'static str,
    errors: Vec<config::ConfigError>,
    warnings: Vec<config::ConfigError>,
    merchants: usize,
}

fn check_one(path: &std::path::Path) -> Checked {
    match kind_of(path) {
        Some(Kind::Sandbox) => match paysign_sandbox::load_sandbox(path) {
            Ok(s) => Checked { kind: "sandbox", errors: Vec::new(), warnings: Vec::new(), merchants: s.merchants.len() },
            Err(e) => Checked { kind: "sandbox", errors: vec![e], warnings: Vec::new(), merchants: 0 },
        },
        _ => {
            let r = config::load_report(path, config::Mode::Check);
            Checked { kind: "gateway", errors: r.errors, warnings: r.warnings, merchants: r.merchants }
        }
    }
}

fn stdin() -> Result<String, String> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).map_err(|e| format!("reading stdin: {e}"))?;
    Ok(input)
}

/// A gateway configuration, every problem in it named; its warnings are logged.
fn gateway(path: &std::path::Path) -> Result<config::Config, String> {
    if kind_of(path) == Some(Kind::Sandbox) {
        return Err(format!(
            "{}: this is a sandbox configuration (it has platform_private_key): start it with `paysign sandbox -c {}`",
            path.display(),
            path.display()
        ));
    }
    let report = config::load_report(path, config::Mode::Run);
    match report.config {
        Some(c) if report.errors.is_empty() => {
            for w in &c.warnings {
                tracing::warn!("configuration: {w}");
            }
            Ok(c)
        }
        _ if report.errors.is_empty() => Err(format!("{}: not loaded", path.display())),
        _ => Err(report.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
    }
}

fn sandbox(path: &std::path::Path) -> Result<paysign_sandbox::SandboxConfig, String> {
    if kind_of(path) == Some(Kind::Gateway) {
        return Err(format!(
            "{}: this is a gateway configuration (it has platform): start it with `paysign run -c {}`",
            path.display(),
            path.display()
        ));
    }
    paysign_sandbox::load_sandbox(path).map_err(|e| e.to_string())
}

fn dispatch(command: Command) -> Result<(), String> {
    match command {
        Command::Run { config, upgrade } => {
            let config = config.unwrap_or_else(|| {
                let default = PathBuf::from("conf/paysign.yaml");
                // Saying which file is used: without -c it depends on the current directory.
                let shown = std::env::current_dir().map_or_else(|_| default.clone(), |d| d.join(&default));
                tracing::info!("no -c given: using the configuration file {}", shown.display());
                default
            });
            server::run(Some(gateway(&config)?), None, upgrade)
        }
        Command::Upgrade { config } => {
            let cfg = gateway(&config).map_err(|e| format!("{e}; nothing was changed"))?;
            let files = lifecycle::RunFiles::of(&cfg.upgrade_sock, &cfg.source);
            println!("{}", lifecycle::upgrade(&config, &files)?);
            Ok(())
        }
        Command::Sandbox { config } => server::run(None, Some(sandbox(&config)?), false),
        Command::Demo { config, sandbox: sandbox_config } => {
            let cfg = gateway(&config)?;
            let sb = sandbox(&sandbox_config)?;
            server::run(Some(cfg), Some(sb), false)
        }
        Command::Check { configs } => check(&configs),
        Command::Seal { config, merchant, path } => {
            let m = tools::merchant(&gateway(&config)?, merchant.as_deref())?;
            let report = tools::seal(&m, path.as_deref(), &stdin()?)?;
            print!("{}", report.text);
            match report.refused {
                Some(code) => Err(format!("validation refuses this request (errCode {code}); the gateway would not send it")),
                None => Ok(()),
            }
        }
        Command::Open { config, merchant } => {
            let m = tools::merchant(&gateway(&config)?, merchant.as_deref())?;
            let (report, verified) = tools::open(&m, &stdin()?);
            print!("{report}");
            if verified {
                Ok(())
            } else {
                Err("the message does not verify".into())
            }
        }
        Command::Keys { command: KeysCommand::Check { files, pkcs11_module, pin_env, pin_file } } => {
            keys_check(&files, &TokenAccess { module: pkcs11_module, pin_env, pin_file })
        }
        Command::Migrate { config } => {
            let cfg = gateway(&config)?;
            let Some(settings) = cfg.notify.as_ref().and_then(|n| n.inbox.clone()) else {
                return Err(format!("{}: notify.inbox is not configured: there is nothing to migrate", config.display()));
            };
            let store = match &settings.store {
                paysign_plugin::config::InboxStore::Sqlite(p) => format!("the SQLite file {} is ready", p.display()),
                paysign_plugin::config::InboxStore::Postgres(_) => format!(
                    "the PostgreSQL database (notify.inbox.postgres_url) is ready (schema version {})",
                    paysign_plugin::inbox::postgres::SCHEMA_VERSION
                ),
            };
            paysign_plugin::InboxCell::new(settings).open_now().map_err(|e| format!("notify.inbox: {e}"))?;
            println!("notify.inbox: {store}");
            Ok(())
        }
        Command::Version => {
            println!("paysign {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gateway,
    Sandbox,
}

/// What kind of configuration a file is, judged by its top-level keys (`None`: unreadable
/// or neither; loading it then says what is wrong).
fn kind_of(path: &std::path::Path) -> Option<Kind> {
    let value: serde_yaml::Value = config::read_yaml(path).ok()?;
    if value.get("platform_private_key").is_some() {
        Some(Kind::Sandbox)
    } else if value.get("platform").is_some() {
        Some(Kind::Gateway)
    } else {
        None
    }
}
