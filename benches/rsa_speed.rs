//! Single-block RSA-2048 operations per CPU-second on one core, for both backends, next to
//! `openssl speed rsa2048` measured in the same run. `cargo bench --bench rsa_speed`.
//! Prints a Markdown table with the ratios the README reports.

use std::process::Command;
use std::time::{Duration, Instant};

use paysign_protocol::crypto::{segmented, signature, Backend};

#[path = "fixtures.rs"]
mod fixtures;
use fixtures::*;

/// Long enough for a stable rate, short enough for a 2-core CI-sized machine.
const RUN: Duration = Duration::from_secs(2);

/// Operations per second of `f` run back to back on this thread for `RUN`.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let msg = "bankCardName=张三&bankCardType=CREDIT&bankCode=ICBC&bindNotifyUrl=http://xxxx/xxxx&certNo=110123199001011234";
    let block = vec![b'a'; 245];
    let mut rows = Vec::new();
    for be in [Backend::AwsLc, Backend::RustCrypto] {
        let private = private("merchant_private.pem", be);
        let public = public("merchant_public.pem", be);
        let sig = signature::rsa_sign(&private, msg).unwrap();
        let one_block = segmented::encrypt(&public, &block, 245).unwrap();
        let sign = rate(|| {
            signature::rsa_sign(&private, msg).unwrap();
        });
        let decrypt = rate(|| {
            segmented::decrypt(&private, &one_block).unwrap();
        });
        let verify = rate(|| assert!(signature::rsa_verify(&public, msg, &sig)));
        let encrypt = rate(|| {
            segmented::encrypt(&public, &block, 245).unwrap();
        });
        let platform_public = public_key_platform(be);
        let type1 = segmented::seal_type1(&fixtures::private("platform_private.pem", be), &block, 245).unwrap();
        let open1 = rate(|| {
            segmented::open_type1(&platform_public, &type1).unwrap();
        });
        rows.push((be, [sign, decrypt, verify, encrypt, open1]));
    }
    // The blinding choice of the pure-Rust backend: the raw private operation with and
    // without blinding (hazmat API; paysign itself always blinds).
    let raw_key = {
        use rsa::pkcs8::DecodePrivateKey;
        let text = std::fs::read_to_string(format!("{}/tests/fixtures/keys/merchant_private.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
        rsa::PrivateKey::from_pkcs8_pem(&text).unwrap()
    };
    let c = {
        use rsa::traits::PublicKeyParts;
        rsa::BoxedUint::from_be_slice(&[0x42u8; 200], raw_key.n_bits_precision()).unwrap()
    };
    let mut sys = crypto_common::getrandom::SysRng;
    let blinded = rate(|| {
        rsa::hazmat::rsa_decrypt_and_check(&raw_key, Some(&mut sys), &c).unwrap();
    });
    let unblinded = rate(|| {
        rsa::hazmat::rsa_decrypt_and_check::<crypto_common::getrandom::SysRng>(&raw_key, None, &c).unwrap();
    });
    let token = softhsm_key().map(|private| {
        let public = public("merchant_public.pem", Backend::AwsLc);
        let one_block = segmented::encrypt(&public, &block, 245).unwrap();
        let sign = rate(|| {
            signature::rsa_sign(&private, msg).unwrap();
        });
        let decrypt = rate(|| {
            segmented::decrypt(&private, &one_block).unwrap();
        });
        (sign, decrypt)
    });
    let ossl = openssl_speed(2, None);
    println!("\nRSA-2048, operations per second on one core (one thread, this run):\n");
    println!("| operation | aws-lc | rsa (pure Rust, blinded) | aws-lc / rsa | openssl speed | openssl / aws-lc |");
    println!("|---|---|---|---|---|---|");
    let names = ["sign (SHA256withRSA)", "decrypt one block", "verify", "encrypt one block (incl. base64)", "type-1 open one block"];
    for (i, name) in names.iter().enumerate() {
        let a = rows[0].1[i];
        let r = rows[1].1[i];
        let o = match (ossl, i) {
            (Some((s, _)), 0 | 1) => Some(s),
            (Some((_, v)), 2..=4) => Some(v),
            _ => None,
        };
        let (ocol, ratio) = match o {
            Some(o) => (format!("{o:.0}"), format!("{:.2}x", o / a)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!("| {name} | {a:.0} | {r:.0} | {:.2}x | {ocol} | {ratio} |", a / r);
    }
    println!("\n(openssl speed's private figure is its sign rate; its public figure is its verify rate.)");
    match token {
        Some((sign, decrypt)) => println!(
            "\nThe same key in a SoftHSM2 token (PKCS#11, one pooled session): sign {sign:.0}/s ({:.0} µs, {:.2}x aws-lc's time), decrypt one block {decrypt:.0}/s ({:.0} µs, {:.2}x aws-lc's time).",
            1e6 / sign,
            rows[0].1[0] / sign,
            1e6 / decrypt,
            rows[0].1[1] / decrypt
        ),
        None => println!("\n(SoftHSM2 not installed: no PKCS#11 figures; scripts/setup test installs it.)"),
    }
    println!(
        "\nrsa crate raw private operation: blinded {blinded:.0}/s, unblinded {unblinded:.0}/s: blinding costs {:.2}x (paysign keeps it on).",
        unblinded / blinded
    );
}

/// The merchant key imported into a fresh SoftHSM2 token, opened through paysign's PKCS#11
/// path exactly as the gateway opens it; `None` without SoftHSM2.
fn softhsm_key() -> Option<std::sync::Arc<paysign_protocol::crypto::PrivateKey>> {
    let module = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())?;
    let dir = std::env::temp_dir().join(format!("paysign-bench-hsm-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tokens")).ok()?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", dir.join("tokens").display())).ok()?;
    // SAFETY: set before any thread of this bench uses the environment.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let key = format!("{}/tests/fixtures/keys/merchant_private.pem", env!("CARGO_MANIFEST_DIR"));
    for args in [
        vec!["--init-token", "--free", "--label", "bench", "--pin", "4321", "--so-pin", "8765"],
        vec!["--import", key.as_str(), "--token", "bench", "--label", "merchant", "--id", "01", "--pin", "4321"],
    ] {
        if !Command::new("softhsm2-util").args(&args).output().ok()?.status.success() {
            return None;
        }
    }
    let pin = paysign_protocol::crypto::Secret::new("4321".into());
    paysign_plugin::pkcs11::open_key("pkcs11:token=bench;object=merchant", &module, &pin, false).ok().map(std::sync::Arc::new)
}

fn public_key_platform(be: Backend) -> std::sync::Arc<paysign_protocol::crypto::PublicKey> {
    public("platform_public.pem", be)
}
