//! The offline tools, run as the real binary on the vectors.

mod common;

use common::*;
use serde_json::Value;

fn config(profile: &str) -> std::path::PathBuf {
    let dir = temp_dir();
    let m = if profile == "md5" {
        format!(
            "  - customer_no: \"{MD5_MERCHANT_VEC}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n"
        )
    } else {
        format!("  - customer_no: \"{MD5_MERCHANT_VEC}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/merchant_private.pem\n")
    };
    let path = dir.join("tools.yaml");
    write(&path, &format!("platform:\n  base_url: http://127.0.0.1:9\nmerchants:\n{m}"));
    path
}

/// The vectors' merchant number (the same as the md5 test merchant).
const MD5_MERCHANT_VEC: &str = "202112090603";

fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let (code, stdout, _) = run_paysign(args, &[], stdin);
    (code, stdout)
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no '{prefix}' in:\n{out}")).trim()
}

fn exchanges() -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("exchanges.json")).unwrap()).unwrap();
    v["exchanges"].as_array().unwrap().clone()
}

#[test]
fn open_reports_every_exchange_precisely() {
    for profile in ["md5", "rsa"] {
        let cfg = config(profile);
        let cfg = cfg.to_str().unwrap();
        for ex in exchanges().iter().filter(|e| e["profile"] == profile) {
            let (code, out) = run(&["open", "-c", cfg], ex["responseBody"].as_str().unwrap());
            let plaintext = ex["responsePlaintext"].as_str().unwrap_or("");
            let request = ex["requestPlaintext"].as_str().unwrap();
            let order = serde_json::from_str::<Value>(request).unwrap()["orderNo"].as_str().unwrap().to_string();
            match ex["expect"].as_str().unwrap() {
                "verified" => {
                    assert_eq!(code, 0, "{out}");
                    assert_eq!(line(&out, "plaintext:"), plaintext);
                    assert_eq!(line(&out, "result:"), "VERIFIED");
                    assert_eq!(line(&out, "signature:"), format!("ok ({profile})"));
                }
                "reject" if order.starts_with("TAMPER-SIGN") => {
                    assert_eq!(code, 1, "{out}");
                    assert!(line(&out, "signature:").starts_with("FAILED:"), "{out}");
                    assert_eq!(line(&out, "result:"), "NOT VERIFIED");
                }
                "reject" => {
                    assert_eq!(code, 1);
                    assert!(line(&out, "customerNo:").contains("customerNo mismatch"), "{out}");
                }
                _ => {
                    assert_eq!(code, 1);
                    assert!(line(&out, "envelope:").contains("platform-level failure, code 500"), "{out}");
                }
            }
        }
    }
}

#[test]
fn open_names_bad_block_length_and_padding() {
    let ex = &exchanges()[0];
    let outer: Value = serde_json::from_str(ex["responseBody"].as_str().unwrap()).unwrap();
    let data: Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
    let reqmsg = data["reqmsg"].as_str().unwrap();
    let cfg = config("md5");
    let cfg = cfg.to_str().unwrap();

    // A notification-shaped body, truncated: not a whole number of blocks.
    let truncated = serde_json::json!({"customerNo": MD5_MERCHANT_VEC, "reqmsg": &reqmsg[..reqmsg.len() - 12]});
    let (code, out) = run(&["open", "-c", cfg], &truncated.to_string());
    assert_eq!(code, 1);
    assert!(line(&out, "reqmsg:").contains("bad block length: 1017 bytes is not a non-zero multiple of the 256-byte block"), "{out}");

    // One byte of block 2 changed: the type-1 padding check names the block.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(reqmsg).unwrap();
    raw[300] ^= 1;
    let corrupt = serde_json::json!({"customerNo": MD5_MERCHANT_VEC, "reqmsg": b64.encode(raw)});
    let (code, out) = run(&["open", "-c", cfg], &corrupt.to_string());
    assert_eq!(code, 1);
    assert!(line(&out, "open:").contains("padding: block 2 has no valid PKCS#1 type-1 padding"), "{out}");
}

#[test]
fn seal_prints_the_vector_canonical_string_sign_and_an_envelope_the_platform_opens() {
    use paysign_protocol::crypto::{keys, Secret};
    use paysign_protocol::platform::{Platform, PlatformMerchant, PlatformMerchantKeys};
    use std::sync::Arc;

    let signing: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("signing.json")).unwrap()).unwrap();
    let case = &signing["cases"][1];
    let platform = Platform {
        private: Arc::new(
            keys::load_private(&std::fs::read_to_string(fixtures().join("keys/platform_private.pem")).unwrap(), false).unwrap(),
        ),
        previous: None,
    };
    for (profile, sign_field) in [("md5", "md5Sign"), ("rsa", "rsaSign")] {
        let cfg = config(profile);
        let (code, out) = run(&["seal", "-c", cfg.to_str().unwrap(), "--path", BINDCARD], &case["object"].to_string());
        assert_eq!(code, 0, "{out}");
        assert_eq!(line(&out, "validate:"), "ok (bindcard_create)");
        assert_eq!(line(&out, "canonical:"), case["canonical"].as_str().unwrap());
        assert_eq!(line(&out, "sign:"), case[sign_field].as_str().unwrap());
        let env: Value = serde_json::from_str(line(&out, "envelope:")).unwrap();
        let pm = PlatformMerchant {
            previous: None,
            customer_no: MD5_MERCHANT_VEC.into(),
            keys: if profile == "md5" {
                PlatformMerchantKeys::Md5 { md5_key: Secret::new(MD5_KEY.into()) }
            } else {
                PlatformMerchantKeys::Rsa {
                    merchant_public: Arc::new(
                        keys::load_public(&std::fs::read_to_string(fixtures().join("keys/merchant_public.pem")).unwrap(), false).unwrap(),
                    ),
                }
            },
        };
        let (_, fields) = platform.open_request(&pm, env["reqmsg"].as_str().unwrap()).unwrap();
        assert_eq!(fields["sign"], case[sign_field]);
        assert!(!out.contains(MD5_KEY) && !out.contains("PRIVATE"), "the tool printed a secret");
    }
}

#[test]
fn keys_check_tells_formats_sizes_kinds_and_pairs() {
    let k = |n: &str| fixtures().join("keys").join(n).to_str().unwrap().to_string();
    let files = [
        "platform_public.pem",
        "platform_public_pkcs1.pem",
        "platform_public.b64",
        "platform_private.pem",
        "merchant_private.b64",
        "merchant_public.pem",
    ];
    let args: Vec<String> =
        std::iter::once("keys".to_string()).chain(std::iter::once("check".to_string())).chain(files.iter().map(|f| k(f))).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = run(&args, "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{}: RSA public key, 2048 bits, PEM RSA PUBLIC KEY (PKCS#1)", k("platform_public_pkcs1.pem"))), "{out}");
    assert!(out.contains(&format!("{}: RSA private key, 2048 bits, base64 DER PKCS#1 private key", k("merchant_private.b64"))), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("pair: ")).count(), 4, "{out}");
    assert!(out.contains(&format!("pair: {} + {}", k("merchant_private.b64"), k("merchant_public.pem"))));
    assert!(!out.contains("BEGIN"), "key material printed");

    let (code, out) = run(&["keys", "check", &k("README.md")], "");
    assert_eq!(code, 1);
    assert!(out.contains("ERROR: not an RSA key"), "{out}");
}

#[test]
fn keys_check_fails_on_a_weak_key_and_on_a_token_key_it_did_not_open() {
    let k = |n: &str| fixtures().join("keys").join(n).to_str().unwrap().to_string();
    // A 1024-bit key is refused by the gateway (unless allow_weak_keys): the check fails.
    let (code, out, stderr) = run_paysign(&["keys", "check", &k("platform_public.pem"), &k("weak1024_public.pem")], &[], "");
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{}: RSA public key, 2048 bits, PEM PUBLIC KEY (SPKI)\n{}: RSA public key, 1024 bits, PEM PUBLIC KEY (SPKI) — WEAK: refused unless allow_weak_keys\n",
            k("platform_public.pem"),
            k("weak1024_public.pem")
        )
    );
    assert_eq!(stderr.lines().last(), Some("paysign: some keys are unusable, weak or not checked"));
    // A pkcs11: URI without --pkcs11-module was not looked at: not a pass.
    let (code, out, _) = run_paysign(&["keys", "check", "pkcs11:token=paysign;object=merchant"], &[], "");
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "pkcs11:token=paysign;object=merchant: NOT CHECKED: PKCS#11 URI (token 'paysign'); give --pkcs11-module and --pin-env or --pin-file to check the key in the token\n"
    );
}

#[test]
fn the_config_option_has_help_and_check_says_it_repeats() {
    let (code, help, _) = run_paysign(&["check", "--help"], &[], "");
    assert_eq!(code, 0);
    assert!(help.contains("-c, --config <FILE>"), "{help}");
    assert!(help.contains("repeat -c to check several"), "{help}");
    for sub in ["run", "demo", "sandbox", "seal", "open"] {
        let (_, help, _) = run_paysign(&[sub, "--help"], &[], "");
        let line = help.lines().find(|l| l.contains("-c, --config <FILE>")).unwrap_or_else(|| panic!("{sub}: {help}"));
        assert!(line.trim().len() > "-c, --config <FILE>".len(), "{sub}: -c has no help text: {help}");
    }
    let (_, help, _) = run_paysign(&["run", "--help"], &[], "");
    assert!(help.contains("[default: conf/paysign.yaml"), "{help}");
}

#[test]
fn every_subcommand_has_help_and_the_binary_has_a_version() {
    let run = |args: &[&str]| run_paysign(args, &[], "");
    for sub in ["demo", "run", "sandbox", "check", "seal", "open", "migrate", "keys", "version"] {
        let (code, text, _) = run(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help");
        assert!(text.contains(&format!("Usage: paysign {sub}")), "{sub}: {text}");
    }
    let (_, keys, _) = run(&["keys", "check", "--help"]);
    assert!(keys.contains("Usage: paysign keys check [OPTIONS] <FILE>..."), "{keys}");
    assert!(keys.contains("--pkcs11-module <PATH>") && keys.contains("--pin-env <VAR>"), "{keys}");
    assert_eq!(run(&["--version"]).1, "paysign 0.1.0\n");
    assert_eq!(run(&["version"]).1, "paysign 0.1.0\n");
    // Wrong use: a clear error on stderr, a failing exit status, nothing run.
    let (code, _, stderr) = run(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unexpected argument '--no-such-flag'"), "{stderr}");
    let (code, _, stderr) = run(&["check"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--config <FILE>"), "{stderr}");
}

/// `seal` exits 1 when its own validation says the gateway would refuse the request (it still
/// prints what it found), and signs the caller's number text as written, as the gateway does.
#[test]
fn seal_exits_1_when_validation_refuses_and_keeps_the_callers_number_text() {
    let cfg = config("md5");
    let cfg = cfg.to_str().unwrap();
    let mut missing = bindcard("SEAL-1");
    missing.as_object_mut().unwrap().remove("mobile");
    let mut invalid = bindcard("SEAL-2");
    invalid["userType"] = Value::String("NOBODY".into());
    for (body, code) in [(missing, "1003"), (invalid, "1002")] {
        let (status, out, stderr) = run_paysign(&["seal", "-c", cfg, "--path", BINDCARD], &[], &body.to_string());
        assert_eq!(status, 1, "{out}");
        assert!(line(&out, "validate:").starts_with(&format!("errCode {code} — ")), "{out}");
        assert!(out.contains("\nenvelope:  {"), "{out}");
        assert_eq!(
            stderr.trim_end().lines().last(),
            Some(&*format!("paysign: validation refuses this request (errCode {code}); the gateway would not send it"))
        );
    }
    // Without --path nothing is validated: exit 0. Numbers keep the caller's text.
    let (status, out, _) = run_paysign(&["seal", "-c", cfg], &[], r#"{"orderNo":"SEAL-3","amount":1.0E10,"o":{"r": 5.0E-4}}"#);
    assert_eq!(status, 0, "{out}");
    assert_eq!(line(&out, "canonical:"), r#"amount=1.0E10&o={"r":5.0E-4}&orderNo=SEAL-3"#);
}
