//! Criterion benches of every step of the hot path, at ~300 B, ~1 KiB and ~4 KiB messages,
//! for both RSA backends. `cargo bench --bench crypto`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paysign_protocol::canonicalize;
use paysign_protocol::crypto::{segmented, signature, Backend, Secret};
use serde_json::Value;

#[path = "fixtures.rs"]
mod fixtures;
use fixtures::*;

const SIZES: [usize; 3] = [300, 1024, 4096];
const BACKENDS: [Backend; 2] = [Backend::AwsLc, Backend::RustCrypto];

fn steps(c: &mut Criterion) {
    let md5_key = Secret::new(MD5_KEY.into());
    for size in SIZES {
        let obj = business(size);
        let canonical = canonicalize(&obj);
        let plaintext = Value::Object(obj.clone()).to_string();
        let mut g = c.benchmark_group("step");
        g.throughput(Throughput::Bytes(plaintext.len() as u64));
        g.bench_with_input(BenchmarkId::new("canonicalize", size), &obj, |b, o| b.iter(|| canonicalize(o)));
        g.bench_with_input(BenchmarkId::new("md5_sign", size), &canonical, |b, s| b.iter(|| signature::md5_sign(s, &md5_key)));
        for be in BACKENDS {
            let tag = |op: &str| format!("{op}/{}", be.as_str());
            let private = private("merchant_private.pem", be);
            let public = public("merchant_public.pem", be);
            let platform_private = private_for_type1(be);
            let sig = signature::rsa_sign(&private, &canonical).unwrap();
            g.bench_with_input(BenchmarkId::new(tag("rsa_sign"), size), &canonical, |b, s| {
                b.iter(|| signature::rsa_sign(&private, s).unwrap())
            });
            g.bench_with_input(BenchmarkId::new(tag("rsa_verify"), size), &canonical, |b, s| {
                b.iter(|| assert!(signature::rsa_verify(&public, s, &sig)))
            });
            g.bench_with_input(BenchmarkId::new(tag("encrypt"), size), &plaintext, |b, p| {
                b.iter(|| segmented::encrypt(&public, p.as_bytes(), 245).unwrap())
            });
            let sealed = segmented::encrypt(&public, plaintext.as_bytes(), 245).unwrap();
            g.bench_with_input(BenchmarkId::new(tag("decrypt"), size), &sealed, |b, s| b.iter(|| segmented::decrypt(&private, s).unwrap()));
            let type1 = segmented::seal_type1(&platform_private, plaintext.as_bytes(), 245).unwrap();
            let platform_public = public_for_type1(be);
            g.bench_with_input(BenchmarkId::new(tag("open_type1"), size), &type1, |b, s| {
                b.iter(|| segmented::open_type1(&platform_public, s).unwrap())
            });
        }
        g.finish();
    }
}

fn private_for_type1(be: Backend) -> std::sync::Arc<paysign_protocol::crypto::PrivateKey> {
    private("platform_private.pem", be)
}
fn public_for_type1(be: Backend) -> std::sync::Arc<paysign_protocol::crypto::PublicKey> {
    public("platform_public.pem", be)
}

/// Whole `seal` (request) and `open` (response) per profile: what one call costs in crypto.
fn whole(c: &mut Criterion) {
    for size in SIZES {
        let mut g = c.benchmark_group("call");
        for be in BACKENDS {
            for profile in ["md5", "rsa"] {
                let m = merchant(profile, be);
                let obj = business(size);
                g.bench_with_input(BenchmarkId::new(format!("seal/{profile}/{}", be.as_str()), size), &obj, |b, o| {
                    b.iter(|| m.seal(paysign_protocol::Business::from_map(o)).unwrap())
                });
                let body = answer(profile, size, be);
                g.bench_with_input(BenchmarkId::new(format!("open/{profile}/{}", be.as_str()), size), &body, |b, body| {
                    b.iter(|| m.open_response(body).unwrap())
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // Short runs: 60+ benchmarks on a 2-core machine; medians are stable enough for ratios.
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = steps, whole
}
criterion_main!(benches);
