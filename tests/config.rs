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
    write(&dir.join("keys/admin_token"), "an-admin-token-of-some-length\n");
    std::fs::set_permissions(dir.join("keys/admin_token"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
    write(&dir.join("pin"), "1234\n");
    std::fs::set_permissions(dir.join("pin"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
