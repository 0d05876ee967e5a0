//! `paysign check` on every shipped configuration, and start-up refusals that name the
//! setting and the file.

mod common;

use std::process::Command;

use common::*;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paysign")).args(["check", "-c", path.to_str().unwrap()]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_shipped_config_is_valid() {
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, out) = check(&p);
            assert!(ok, "{}: {out}", p.display());
            assert!(out.contains(": ok ("), "{out}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

const BASE: &str = "listen: 127.0.0.1:18080\nadmin_listen: 127.0.0.1:19091\nplatform:\n  base_url: http://127.0.0.1:19443\nmerchants:\n";
const MD5: &str = "  - customer_no: \"202112090603\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n";

fn refused(yaml: &str, expect: &[&str]) {
    let dir = temp_dir();
    let path = dir.join("bad.yaml");
    write(&path, yaml);
    let (ok, out) = check(&path);
    assert!(!ok, "accepted:\n{yaml}");
    for e in expect {
        assert!(out.contains(e), "expected '{e}' in: {out}");
    }
    assert!(out.contains("bad.yaml"), "{out}");
}

#[test]
fn bad_configs_are_refused_with_the_setting_and_file_named() {
    // The base config is accepted.
    let dir = temp_dir();
    write(&dir.join("good.yaml"), &format!("{BASE}{MD5}"));
    let (ok, out) = check(&dir.join("good.yaml"));
    assert!(ok, "{out}");

    refused(&format!("{BASE}{MD5}surprise: 1\n"), &["unknown field `surprise`"]);
    refused(
        &format!("{BASE}{}", MD5.replace("md5_key_file: keys/md5.key", "md5_key_file: keys/missing.key")),
        &["merchants[0].md5_key_file", "missing.key", "cannot read file"],
    );
    refused(
        &format!("{BASE}{}", MD5.replace("    md5_key_file: keys/md5.key\n", "")),
        &["merchants[0].md5_key_file", "needs md5_key_file or md5_key_env"],
    );
    refused(
        &format!("{BASE}{}", MD5.replace("platform_public.pem", "merchant_private.pem")),
        &["merchants[0].platform_public_key", "merchant_private.pem", "is a private key"],
    );
    refused(
        &format!("{BASE}{}", MD5.replace("platform_public.pem", "weak1024_public.pem")),
        &["merchants[0].platform_public_key", "weak1024_public.pem", "1024-bit"],
    );
    refused(
        &format!("{BASE}{MD5}    md5_key_env: PAYSIGN_TEST_MD5\n"),
        &["merchants[0].md5_key_file", "set md5_key_file or md5_key_env, not both"],
    );
    // The PKCS#11 PIN follows the same rule (one source, never empty).
    let token_merchant = "  - customer_no: \"202112090604\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: \"pkcs11:token=paysign;object=merchant\"\n";
    let pkcs11 = |pin: &str| format!("pkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n{pin}{BASE}{token_merchant}");
    refused(&pkcs11("  pin_file: keys/md5.key\n  pin_env: PAYSIGN_TEST_PIN\n"), &["pkcs11.pin_file", "set pin_file or pin_env, not both"]);
    refused(&pkcs11(""), &["pkcs11.pin_file", "a pkcs11: key needs pin_file or pin_env"]);
    let dir = temp_dir();
    write(&dir.join("empty.pin"), "\n");
    refused(&pkcs11(&format!("  pin_file: {}\n", dir.join("empty.pin").display())), &["pkcs11.pin", "the PIN is empty"]);
    refused(&format!("{BASE}{}", MD5.replace("md5\n", "rsa\n")), &["merchants[0].md5_key_file", "not used by profile rsa"]);
    refused(&format!("{BASE}{MD5}    chunk_size: 300\n"), &["merchants[0].chunk_size", "245"]);
    refused(&format!("{BASE}{MD5}{MD5}"), &["merchants[1].customer_no", "configured twice"]);
    refused(&BASE.replace("http://127.0.0.1:19443", "ftp://x"), &["platform.base_url", "https://"]);
    refused(&format!("{}{MD5}", BASE.replace("listen: 127.0.0.1:18080", "listen: localhost")), &["listen", "not an address"]);
    refused(
        &format!("{BASE}{}", MD5.replace("md5_key_file: keys/md5.key", "md5_key_env: PAYSIGN_TEST_UNSET_VAR")),
        &["md5_key_env", "PAYSIGN_TEST_UNSET_VAR"],
    );
    refused(
        &format!(
            "{}{MD5}",
            BASE.replace("  base_url: http://127.0.0.1:19443\n", "  base_url: http://127.0.0.1:19443\n  ca_file: nope.pem\n")
        ),
        &["platform.ca_file", "nope.pem"],
    );
}

/// `notify.inbox`: every wrong setting refused, naming it; the key never printed.
#[test]
fn bad_inbox_settings_are_refused_with_the_setting_named() {
    let notify = |inbox: &str| {
        format!("{BASE}{MD5}notify:\n  forward_timeout_ms: 5000\n  routes:\n    - path: /n\n      target: http://127.0.0.1:9/t\n  inbox:\n{inbox}")
    };
    let key = "    key_file: keys/inbox.key\n";
    let refused_inbox = |inbox: &str, expect: &[&str]| {
        let dir = temp_dir();
        write_secret(&dir.join("keys/inbox.key"), &"ab".repeat(32));
        write_secret(&dir.join("short.key"), "abcd");
        let path = dir.join("bad.yaml");
        write(&path, &notify(inbox));
        let (ok, out) = check(&path);
        assert!(!ok, "accepted:\n{inbox}");
        for e in expect {
            assert!(out.contains(e), "expected '{e}' in: {out}");
        }
        assert!(!out.contains(&"ab".repeat(32)), "the key was printed: {out}");
    };
    refused_inbox(key, &["notify.inbox.sqlite_path", "the inbox needs sqlite_path or postgres_url"]);
    refused_inbox(
        &format!("    sqlite_path: a.db\n    postgres_url: postgresql://p@h/d\n{key}"),
        &["set sqlite_path or postgres_url, not both"],
    );
    refused_inbox(&format!("    postgres_url: mysql://h/d\n{key}"), &["notify.inbox.postgres_url", "is not a PostgreSQL URL"]);
    refused_inbox(
        &format!("    postgres_url_env: PAYSIGN_TEST_UNSET_VAR\n{key}"),
        &["notify.inbox.postgres_url_env", "PAYSIGN_TEST_UNSET_VAR"],
    );
    refused_inbox("    sqlite_path: a.db\n", &["notify.inbox.key_file", "the inbox needs key_file or key_env"]);
    refused_inbox(
        "    sqlite_path: a.db\n    key_file: short.key\n",
        &["notify.inbox.key_file", "must be 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`); got 4 characters"],
    );
    refused_inbox(
        &format!("    sqlite_path: a.db\n{key}    lease_ms: 5000\n"),
        &["notify.inbox.lease_ms", "must be longer than notify.forward_timeout_ms (5000 ms)"],
    );
    refused_inbox(&format!("    sqlite_path: a.db\n{key}    deliverers: 0\n"), &["notify.inbox.deliverers", "must be positive"]);
    refused_inbox(
        &format!("    sqlite_path: a.db\n{key}    retry_first_ms: 9000\n    retry_max_interval_ms: 1000\n"),
        &["notify.inbox.retry_max_interval_ms", "at least retry_first_ms"],
    );
    refused_inbox(&format!("    sqlite_path: a.db\n{key}    surprise: 1\n"), &["unknown field `surprise`"]);
}

#[test]
fn md5_key_from_environment_and_weak_keys_when_allowed() {
    let dir = temp_dir();
    let path = dir.join("env.yaml");
    write(
        &path,
        &format!(
            "allow_weak_keys: true\n{BASE}{}",
            MD5.replace("md5_key_file: keys/md5.key", "md5_key_env: PAYSIGN_TEST_MD5")
                .replace("platform_public.pem", "weak1024_public.pem")
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_paysign"))
        .args(["check", "-c", path.to_str().unwrap()])
        .env("PAYSIGN_TEST_MD5", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn run_refuses_a_broken_config_at_start_up() {
    let dir = temp_dir();
    let path = dir.join("broken.yaml");
    write(&path, &format!("{BASE}{}", MD5.replace("platform_public.pem", "nothere.pem")));
    let out = Command::new(env!("CARGO_BIN_EXE_paysign")).args(["run", "-c", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("merchants[0].platform_public_key") && err.contains("nothere.pem"), "{err}");
}

/// `paysign check`'s exit status and its stdout lines.
fn check_lines(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let (code, stdout, _) = run_paysign(&["check", "-c", path.to_str().unwrap()], env, "");
    (code, stdout.lines().map(str::to_string).collect())
}

#[test]
fn check_reports_every_problem_at_once_and_names_the_setting_of_a_type_error() {
    let dir = temp_dir();
    let path = dir.join("many.yaml");
    let p = path.display();
    // Four problems: a value of the wrong type, an unknown key, a missing key file, threads 0.
    write(&path, &format!("threads: 0\n{BASE}{}    chunk_size: abc\n    colour: blue\n", MD5.replace("keys/md5.key", "keys/missing.key")));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 1, "{lines:#?}");
    let missing = dir.join("keys/missing.key");
    assert_eq!(
        lines,
        [
            format!("{p}: merchants[0].chunk_size: invalid configuration: invalid type: string \"abc\", expected usize (line 11, column 17)"),
            format!("{p}: merchants[0].colour: invalid configuration: unknown field `colour`, expected one of `customer_no`, `profile`, `platform_public_key`, `md5_key_file`, `md5_key_env`, `merchant_private_key`, `chunk_size`, `next_platform_public_key`, `seal_with`"),
            format!("{p}: threads: must be at least 1"),
            format!("{p}: merchants[0].md5_key_file ({}): cannot read file: No such file or directory (os error 2)", missing.display()),
            format!("{p}: 4 problem(s)"),
        ]
    );
}

#[test]
fn check_needs_no_dns_a_name_that_does_not_resolve_is_a_warning() {
    let dir = temp_dir();
    let path = dir.join("named.yaml");
    write(&path, &format!("{}{MD5}", BASE.replace("http://127.0.0.1:19443", "https://openapi.platform.example")));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let p = path.display();
    assert!(
        lines[0].starts_with(&format!("warning: {p}: platform.base_url: cannot resolve openapi.platform.example now ("))
            && lines[0].ends_with("); it must resolve when paysign starts"),
        "{lines:#?}"
    );
    assert_eq!(lines[1], format!("{p}: ok (gateway, 1 merchant(s), 1 warning(s))"));
    // `run` still needs the name: it refuses to start, naming the setting.
    let (code, _, stderr) = run_paysign(&["run", "-c", path.to_str().unwrap()], &[], "");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("paysign: {p}: platform.base_url: cannot resolve openapi.platform.example")), "{stderr}");
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_and_an_open_notify_listener_is_warned_about() {
    let dir = temp_dir();
    let path = dir.join("open.yaml");
    let p = path.display();
    let notify = "notify:\n  listen: 0.0.0.0:18081\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:18000/in\n";
    write(&path, &format!("{}{MD5}{notify}", BASE.replace("admin_listen: 127.0.0.1:19091", "admin_listen: 0.0.0.0:19091")));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [
            format!("{p}: admin_token_file: is required when admin_listen (0.0.0.0:19091) is not a loopback address"),
            format!("warning: {p}: notify.allow_from: is empty while notify.listen (0.0.0.0:18081) is not a loopback address: list the platform's callback addresses"),
            format!("{p}: 1 problem(s)"),
        ]
    );
    // With a token (owner-only) and an allow-list: clean.
    write_secret(&dir.join("keys/admin_token"), "an-admin-token-of-some-length\n");
    write(
        &path,
        &format!(
            "admin_token_file: keys/admin_token\n{}{MD5}{}",
            BASE.replace("admin_listen: 127.0.0.1:19091", "admin_listen: 0.0.0.0:19091"),
            notify.replace("  routes:", "  allow_from: [\"203.0.113.0/24\"]\n  routes:")
        ),
    );
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!((code, lines), (0, vec![format!("{p}: ok (gateway, 1 merchant(s))")]));
}

#[test]
fn secret_files_others_may_write_are_refused_and_others_may_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = dir.join("perm.yaml");
    let p = path.display();
    let rsa = "  - customer_no: \"202112090604\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/merchant_private.pem\n";
    write(&dir.join("keys/admin_token"), "an-admin-token-of-some-length\n");
    write(&path, &format!("admin_token_file: keys/admin_token\n{BASE}{MD5}{rsa}"));
    let chmod = |f: &str, mode: u32| std::fs::set_permissions(dir.join("keys").join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    chmod("md5.key", 0o666);
    chmod("merchant_private.pem", 0o620);
    chmod("admin_token", 0o644);
    let key = |f: &str| dir.join("keys").join(f).display().to_string();
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [
            format!("{p}: merchants[0].md5_key_file ({}): is writable by group or others (mode 0666): anyone who can write it can replace the secret; chmod go-w (0600 or 0400)", key("md5.key")),
            format!("{p}: merchants[1].merchant_private_key ({}): is writable by group or others (mode 0620): anyone who can write it can replace the secret; chmod go-w (0600 or 0400)", key("merchant_private.pem")),
            format!("warning: {p}: admin_token_file ({}): is readable by others (mode 0644); chmod o-r (0600 or 0400)", key("admin_token")),
            format!("{p}: 2 problem(s)"),
        ]
    );
    // At start too: refused, exit 1, every problem named.
    let (code, _, stderr) = run_paysign(&["run", "-c", path.to_str().unwrap()], &[], "");
    assert_eq!(code, 1);
    assert!(
        stderr
            .contains(&format!("paysign: {p}: merchants[0].md5_key_file ({}): is writable by group or others (mode 0666)", key("md5.key"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("paysign: {p}: merchants[1].merchant_private_key ({}): is writable", key("merchant_private.pem"))),
        "{stderr}"
    );
    chmod("md5.key", 0o600);
    chmod("merchant_private.pem", 0o400);
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.last().unwrap(), &format!("{p}: ok (gateway, 2 merchant(s), 1 warning(s))"));
}

#[test]
fn run_and_sandbox_refuse_each_others_configuration() {
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf");
    let (sandbox, gateway) = (conf.join("sandbox.yaml"), conf.join("paysign.yaml"));
    let (code, _, stderr) = run_paysign(&["run", "-c", sandbox.to_str().unwrap()], &[], "");
    assert_eq!(code, 1);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "paysign: {}: this is a sandbox configuration (it has platform_private_key): start it with `paysign sandbox -c {}`",
            sandbox.display(),
            sandbox.display()
        )
    );
    let (code, _, stderr) = run_paysign(&["sandbox", "-c", gateway.to_str().unwrap()], &[], "");
    assert_eq!(code, 1);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "paysign: {}: this is a gateway configuration (it has platform): start it with `paysign run -c {}`",
            gateway.display(),
            gateway.display()
        )
    );
}

#[test]
fn run_without_c_logs_which_file_it_uses() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let (proxy, admin) = (free_port(), free_port());
    write(
        &dir.join("conf/paysign.yaml"),
        &format!(
            "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\nplatform:\n  base_url: http://127.0.0.1:9\nmerchants:\n{}",
            MD5.replace("keys/", "../keys/")
        ),
    );
    // An others-readable MD5 key: a warning at start, not a refusal.
    std::fs::set_permissions(dir.join("keys/md5.key"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paysign"));
    cmd.arg("run").current_dir(&dir).env("PAYSIGN_LOG", "info").stdout(std::process::Stdio::null());
    let p = spawn_cmd(&mut cmd, dir.join("gateway.log"));
    wait_ready(admin, "/healthz");
    let wanted = format!("no -c given: using the configuration file {}", dir.join("conf/paysign.yaml").display());
    assert!(eventually(10, || p.logs().contains(&wanted)), "{}", p.logs());
    let warned = "configuration: conf/paysign.yaml: merchants[0].md5_key_file (conf/../keys/md5.key): is readable by others (mode 0644); chmod o-r (0600 or 0400)";
    assert!(p.logs().contains(warned), "{}", p.logs());
}

#[test]
fn check_needs_no_hsm_a_token_key_is_checked_but_not_opened() {
    let dir = temp_dir();
    let path = dir.join("token.yaml");
    let p = path.display();
    write_secret(&dir.join("pin"), "1234\n");
    // The module only has to exist: `check` never loads it (any file will do here).
    let module = dir.join("keys/platform_public.pem");
    let token_merchant = "  - customer_no: \"202112090604\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: \"pkcs11:token=paysign;object=merchant\"\n";
    write(&path, &format!("pkcs11:\n  module: {}\n  pin_file: pin\n{BASE}{token_merchant}", module.display()));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(
        (code, lines),
        (
            0,
            vec![
                format!("warning: {p}: merchants[0].merchant_private_key: the key in the PKCS#11 token is not opened by check (`paysign keys check --pkcs11-module` opens it)"),
                format!("{p}: ok (gateway, 1 merchant(s), 1 warning(s))"),
            ]
        )
    );
    write(&path, &format!("pkcs11:\n  module: {}\n  pin_file: pin\n{BASE}{token_merchant}", dir.join("nope.so").display()));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(
        (code, lines),
        (1, vec![format!("{p}: pkcs11.module ({}): file does not exist", dir.join("nope.so").display()), format!("{p}: 1 problem(s)")])
    );
}

// ---------------------------------------------------------------- a configuration in code

use paysign_plugin::config::{Config, InboxFile, MerchantFile, NotifyFile, NotifyRouteFile, PlatformFile};
use paysign_plugin::{Live, ReloadError, ReloadSource};

/// conf/paysign.yaml, written with the builder.
fn demo_in_code() -> paysign_plugin::config::ConfigBuilder {
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf");
    Config::builder()
        .source(conf.join("paysign.yaml"))
        .listen("127.0.0.1:8080")
        .admin_listen("127.0.0.1:9091")
        .threads(2)
        .crypto_backend(paysign_plugin::protocol::crypto::Backend::AwsLc)
        .grace_period_seconds(5)
        .max_body_bytes(65536)
        .allow_weak_keys(false)
        .platform(PlatformFile {
            base_url: "http://127.0.0.1:9443".into(),
            connect_timeout_ms: 2000,
            read_timeout_ms: 10000,
            connect_retries: 1,
            max_response_bytes: 1048576,
            pool_idle_timeout_secs: 30,
            ..PlatformFile::default()
        })
        .merchant(MerchantFile::md5("202112090603", "keys/platform_public.pem", "keys/md5-202112090603.key"))
        .merchant(MerchantFile::rsa("202112090604", "keys/platform_public.pem", "keys/merchant_private.pem"))
        .notify(NotifyFile {
            listen: "127.0.0.1:8081".into(),
            ack: "SUCCESS".into(),
            forward_timeout_ms: 5000,
            routes: vec![NotifyRouteFile::new("/notify/bindcard", "http://127.0.0.1:9443/__sandbox/inbox")],
            inbox: Some(InboxFile {
                sqlite_path: Some("../.paysign-data/inbox.sqlite".into()),
                key_file: Some("keys/inbox.key".into()),
                ..InboxFile::default()
            }),
            ..NotifyFile::default()
        })
}

#[test]
fn the_builder_makes_the_same_config_as_the_demo_file() {
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/paysign.yaml");
    let file = paysign_plugin::config::load(&conf).unwrap();
    let code = demo_in_code().build().unwrap();
    // `describe` is every setting in force (GET /config); the warnings are the file's too.
    assert_eq!(code.describe(), file.describe());
    assert_eq!(code.warnings, file.warnings);
    assert_eq!(code.upstream, file.upstream);
    // Left at their defaults, the builder's settings are the file's defaults.
    let sha = "ab".repeat(32);
    let minimal = Config::builder()
        .source(&conf)
        .base_url("http://127.0.0.1:9443")
        .merchant(MerchantFile::md5("202112090603", "keys/platform_public.pem", "keys/md5-202112090603.key"))
        .merchant(MerchantFile::rsa("202112090604", "keys/platform_public.pem", "keys/merchant_private.pem").chunk_size(117))
        .caller(paysign_plugin::config::CallerFile::new("orders", &sha, ["202112090604"], ["*"]))
        .build()
        .unwrap();
    let yaml = format!(
        "platform: {{base_url: 'http://127.0.0.1:9443'}}\ncallers:\n  - {{name: orders, token_sha256: '{sha}', merchants: ['202112090604'], endpoints: ['*']}}\nmerchants:\n  - {{customer_no: '202112090603', profile: md5, platform_public_key: keys/platform_public.pem, md5_key_file: keys/md5-202112090603.key}}\n  - {{customer_no: '202112090604', profile: rsa, platform_public_key: keys/platform_public.pem, merchant_private_key: keys/merchant_private.pem, chunk_size: 117}}\n"
    );
    let from_text = paysign_plugin::config::load_str(&yaml, &conf).unwrap();
    assert_eq!(minimal.describe(), from_text.describe());
}

#[test]
fn builder_errors_name_the_setting_and_never_panic() {
    let md5 = || MerchantFile::md5("202112090603", "keys/platform_public.pem", "keys/md5-202112090603.key");
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/paysign.yaml");
    let base = || Config::builder().source(&conf).base_url("http://127.0.0.1:9443").merchant(md5());
    let errors =
        |b: paysign_plugin::config::ConfigBuilder| -> Vec<String> { b.build().unwrap_err().0.iter().map(ToString::to_string).collect() };
    let c = conf.display();

    // Accepted in code before (then every call 503): refused as in a file.
    assert_eq!(errors(base().max_in_flight(0)), [format!("{c}: max_in_flight: must be at least 1")]);
    // Every problem at once, in the file's order.
    assert_eq!(
        errors(base().threads(0).max_connections(0).header_timeout_ms(0)),
        [
            format!("{c}: threads: must be at least 1"),
            format!("{c}: max_connections: must be at least 1"),
            format!("{c}: header_timeout_ms: must be positive"),
        ]
    );
    // No platform, no merchant: refused (an empty address list panicked inside Paysign::new).
    assert_eq!(
        errors(Config::builder()),
        [
            "(code): platform.base_url: '' must start with https:// or http://".to_string(),
            "(code): merchants: at least one merchant is required".to_string(),
        ]
    );
    assert_eq!(
        errors(base().addresses(["platform.example"])),
        [format!("{c}: platform.addresses: each entry must be an IP address (no port, no name)")]
    );
    let e = base().max_in_flight(0).build().unwrap_err();
    assert!(e.names("max_in_flight") && !e.names("threads"), "{e}");
    // Fixed addresses are used as given, never looked up.
    let fixed = base().base_url("https://platform.example").addresses(["192.0.2.7", "192.0.2.8"]).build().unwrap();
    assert_eq!(fixed.upstream.target.addrs, ["192.0.2.7:443".parse().unwrap(), "192.0.2.8:443".parse().unwrap()]);
}

#[test]
fn validation_needs_no_dns_nor_hsm_loading_to_run_does_both() {
    let conf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/paysign.yaml");
    let md5 = MerchantFile::md5("202112090603", "keys/platform_public.pem", "keys/md5-202112090603.key");
    // A name that cannot resolve: offline, it is not looked up (0.0.0.0); to run, it must resolve.
    let b = Config::builder().source(&conf).base_url("https://name.invalid").merchant(md5);
    let offline = b.clone().build_offline().unwrap();
    assert_eq!(offline.upstream.target.addrs, ["0.0.0.0:443".parse().unwrap()]);
    let e = b.build().unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.to_string().starts_with(&format!("{}: platform.base_url: cannot resolve name.invalid: ", conf.display())), "{e}");
    // Every name goes through the same step: the notification targets and the egress proxy.
    let named = Config::builder()
        .source(&conf)
        .base_url("http://127.0.0.1:9443")
        .merchant(MerchantFile::md5("202112090603", "keys/platform_public.pem", "keys/md5-202112090603.key"))
        .with(|f| f.platform.egress_proxy = Some("localhost:3128".into()))
        .notify(NotifyFile { routes: vec![NotifyRouteFile::new("/notify/bindcard", "http://localhost:9/inbox")], ..NotifyFile::default() });
    let offline = named.clone().build_offline().unwrap();
    let route = |c: &Config| c.notify.as_ref().unwrap().routes[0].target.addrs.clone();
    assert_eq!(
        (route(&offline), offline.upstream.egress_proxy),
        (vec!["0.0.0.0:9".parse().unwrap()], Some("0.0.0.0:3128".parse().unwrap()))
    );
    let online = named.build().unwrap();
    assert!(!route(&online).is_empty() && route(&online).iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{:?}", route(&online));
    assert!(online.upstream.egress_proxy.is_some_and(|a| a.ip().is_loopback() && a.port() == 3128), "{:?}", online.upstream.egress_proxy);
    // A key in a token: offline, refused without touching any module.
    let token = MerchantFile::rsa("202112090604", "keys/platform_public.pem", "pkcs11:token=paysign;object=merchant");
    let e = Config::builder()
        .source(&conf)
        .base_url("http://127.0.0.1:9443")
        .merchant(token)
        .pkcs11(paysign_plugin::config::Pkcs11File::with_pin_env("/nonexistent/module.so", "PATH"))
        .build_offline()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: merchants[0].merchant_private_key: PKCS#11 keys are opened only when the configuration is loaded for real",
            conf.display()
        )
    );
}

#[test]
fn a_closure_reload_source_gives_the_next_config() {
    let initial = demo_in_code().build().unwrap();
    let body = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(65536));
    let next = body.clone();
    let live = Live::new(
        ReloadSource::from_fn(move || {
            // 0 stands for a settings store that holds a bad value.
            Ok(demo_in_code().max_body_bytes(next.load(std::sync::atomic::Ordering::SeqCst)).threads(2).build()?)
        }),
        initial,
        fresh_metrics(),
    );
    assert_eq!(live.current().generation, 1);
    body.store(4096, std::sync::atomic::Ordering::SeqCst);
    let r = live.reload().unwrap();
    assert_eq!((r.generation, r.needs_restart.len()), (2, 0));
    assert_eq!(live.current().config.max_body_bytes, 4096);

    body.store(0, std::sync::atomic::Ordering::SeqCst);
    match live.reload() {
        Err(ReloadError::Invalid(e)) => {
            assert_eq!(e.iter().map(|e| e.setting.as_str()).collect::<Vec<_>>(), ["max_body_bytes"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((live.current().generation, live.current().config.max_body_bytes), (2, 4096));

    // A source may refuse for a reason of its own: nothing changes either.
    let refusing = Live::new(
        ReloadSource::from_fn(|| Err(ReloadError::Source("the settings store is unreachable".into()))),
        demo_in_code().build().unwrap(),
        fresh_metrics(),
    );
    let e = refusing.reload().unwrap_err();
    assert_eq!((e.to_string(), refusing.current().generation), ("the settings store is unreachable".to_string(), 1));

    // Settings read once at start are named, and stay in force, as with a file.
    let live =
        Live::new(ReloadSource::from_fn(|| Ok(demo_in_code().threads(3).build()?)), demo_in_code().build().unwrap(), fresh_metrics());
    let r = live.reload().unwrap();
    assert_eq!((r.generation, r.needs_restart), (2, vec!["threads"]));
    assert_eq!(live.current().config.threads, 2);
}

#[test]
fn check_reports_names_that_do_not_resolve_in_the_files_order() {
    // Validation looks no name up; `check` then tries each, and says so where the name is.
    let dir = temp_dir();
    let path = dir.join("order.yaml");
    std::fs::set_permissions(dir.join("keys/md5.key"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let notify =
        "notify:\n  listen: 0.0.0.0:18081\n  routes:\n    - path: /notify/bindcard\n      target: http://inbox.platform.example/in\n";
    write(&path, &format!("{}{MD5}{notify}", BASE.replace("http://127.0.0.1:19443", "https://openapi.platform.example")));
    let (code, lines) = check_lines(&path, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    let p = path.display();
    let settings: Vec<_> =
        lines.iter().map(|l| l.strip_prefix(&format!("warning: {p}: ")).map(|r| r.split([' ', ':']).next().unwrap())).collect();
    assert_eq!(
        settings,
        [Some("platform.base_url"), Some("merchants[0].md5_key_file"), Some("notify.allow_from"), Some("notify.routes[0].target"), None],
        "{lines:#?}"
    );
    assert!(lines[3].contains("cannot resolve inbox.platform.example now ("), "{lines:#?}");
    assert_eq!(lines[4], format!("{p}: ok (gateway, 1 merchant(s), 4 warning(s))"));
}

/// An instance's metrics in a registry of its own.
fn fresh_metrics() -> std::sync::Arc<paysign_plugin::metrics::Metrics> {
    std::sync::Arc::new(paysign_plugin::metrics::Metrics::new(&prometheus::Registry::new()).unwrap())
}
