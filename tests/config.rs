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
