//! paysign's command line: parse arguments, load and validate configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

mod server;
mod tools;

use paysign_plugin::config;

/// jemalloc: freed memory goes back to the OS within seconds (see docs/operations.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread purges freed pages after a second (the default, ten
/// seconds and then again ten, kept ~50 % over the idle baseline 30 s after a flood).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

const USAGE: &str = "\
usage:
  paysign demo    [-c conf/paysign.yaml] [--sandbox conf/sandbox.yaml]
                  gateway and sandbox platform in one process (the end-to-end demo)
  paysign run     [-c conf/paysign.yaml] [--upgrade]
                  the gateway; --upgrade takes over the sockets of a running one (send it SIGQUIT)
  paysign sandbox [-c conf/sandbox.yaml]      the sandbox platform alone
  paysign check   -c FILE [-c FILE …]         validate configuration files (exit 1 on a problem)
  paysign seal    -c FILE [--merchant NO] [--path P] < plaintext.json
                  print the canonical string, sign and envelope that would be sent
  paysign open    -c FILE [--merchant NO] < response-or-notification.json
                  open and verify, step by step (exit 1 when it does not verify)
  paysign keys check FILE [FILE …]            format, size and kind of keys; which form pairs
  paysign version";

fn main() -> ExitCode {
    paysign_plugin::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("paysign: {msg}");
            ExitCode::FAILURE
        }
    }
}

struct Flags {
    configs: Vec<PathBuf>,
    sandbox: Option<PathBuf>,
    merchant: Option<String>,
    path: Option<String>,
    upgrade: bool,
}

fn flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags { configs: vec![], sandbox: None, merchant: None, path: None, upgrade: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "-c" | "--config" => f.configs.push(PathBuf::from(value()?)),
            "--sandbox" => f.sandbox = Some(PathBuf::from(value()?)),
            "--merchant" => f.merchant = Some(value()?),
            "--path" => f.path = Some(value()?),
            "--upgrade" => f.upgrade = true,
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(f)
}

fn one(f: &Flags, default: &str) -> Result<PathBuf, String> {
    match f.configs.as_slice() {
        [] => Ok(PathBuf::from(default)),
        [one] => Ok(one.clone()),
        _ => Err("give one -c".into()),
    }
}

fn keys(args: &[String]) -> Result<(), String> {
    let Some((sub, files)) = args.split_first().filter(|(s, f)| s.as_str() == "check" && !f.is_empty()) else {
        return Err(format!("usage: paysign keys check FILE [FILE …]\n{USAGE}"));
    };
    let _ = sub;
    let mut texts = Vec::new();
    let mut unreadable = false;
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.clone(), t)),
            Err(e) => {
                println!("{f}: ERROR: cannot read: {e}");
                unreadable = true;
            }
        }
    }
    let (report, ok) = tools::keys_check(&texts);
    print!("{report}");
    if ok && !unreadable {
        Ok(())
    } else {
        Err("some files are not usable keys".into())
    }
}

fn dispatch(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args.split_first().ok_or_else(|| USAGE.to_string())?;
    if cmd == "keys" {
        return keys(rest);
    }
    let f = flags(rest)?;
    match cmd.as_str() {
        "run" => {
            let cfg = config::load(&one(&f, "conf/paysign.yaml")?).map_err(|e| e.to_string())?;
            server::run(Some(cfg), None, f.upgrade)
        }
        "sandbox" => {
            let sb = paysign_sandbox::load_sandbox(&one(&f, "conf/sandbox.yaml")?).map_err(|e| e.to_string())?;
            server::run(None, Some(sb), false)
        }
        "demo" => {
            let cfg = config::load(&one(&f, "conf/paysign.yaml")?).map_err(|e| e.to_string())?;
            let sb_path = f.sandbox.clone().unwrap_or_else(|| PathBuf::from("conf/sandbox.yaml"));
            let sb = paysign_sandbox::load_sandbox(&sb_path).map_err(|e| e.to_string())?;
            server::run(Some(cfg), Some(sb), false)
        }
        "check" => {
            if f.configs.is_empty() {
                return Err(format!("check needs -c FILE\n{USAGE}"));
            }
            let mut failed = 0;
            for path in &f.configs {
                match load_any(path) {
                    Ok(AnyConfig::Gateway(c)) => {
                        println!("{}: ok (gateway, {} merchant(s))", path.display(), c.merchants.len())
                    }
                    Ok(AnyConfig::Sandbox(s)) => {
                        println!("{}: ok (sandbox, {} merchant(s))", path.display(), s.merchants.len())
                    }
                    Err(e) => {
                        println!("{e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(format!("{failed} configuration file(s) have problems"));
            }
            Ok(())
        }
        "seal" | "open" => {
            let cfg = config::load(&one(&f, "conf/paysign.yaml")?).map_err(|e| e.to_string())?;
            let m = tools::merchant(&cfg, f.merchant.as_deref())?;
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).map_err(|e| format!("reading stdin: {e}"))?;
            if cmd == "seal" {
                print!("{}", tools::seal(&m, f.path.as_deref(), &input)?);
                Ok(())
            } else {
                let (report, verified) = tools::open(&m, &input);
                print!("{report}");
                if verified {
                    Ok(())
                } else {
                    Err("the message does not verify".into())
                }
            }
        }
        "version" | "--version" => {
            println!("paysign {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n{USAGE}")),
    }
}

/// What kind of file this is, judged by its top-level keys (for `paysign check`).
enum AnyConfig {
    Gateway(Box<config::Config>),
    Sandbox(Box<paysign_sandbox::SandboxConfig>),
}

fn load_any(path: &std::path::Path) -> Result<AnyConfig, config::ConfigError> {
    let value: serde_yaml::Value = config::read_yaml(path)?;
    if value.get("platform_private_key").is_some() {
        paysign_sandbox::load_sandbox(path).map(|c| AnyConfig::Sandbox(Box::new(c)))
    } else {
        config::load(path).map(|c| AnyConfig::Gateway(Box::new(c)))
    }
}
