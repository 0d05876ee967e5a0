//! HTTPS to the platform: the sandbox serves TLS with a certificate from a test CA made here
//! (rcgen); the gateway verifies it against `platform.ca_file`. A wrong CA or a certificate
//! for another host name is refused with a clear error, and nothing is sent.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A server certificate for `names` (DNS) and, if `ip`, 127.0.0.1, signed by `ca`.
fn server_cert(ca: &Ca, names: &[&str], ip: bool, dir: &Path) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if ip {
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&c, format!("{}{}", cert.pem(), ca.pem)).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A client certificate signed by `ca`, for mutual TLS.
fn client_cert(ca: &Ca, dir: &Path) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["paysign-merchant".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();
    let (c, k) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A stack whose sandbox serves HTTPS with `cert`, and whose gateway trusts `trusted`.
fn tls_stack(cert: (PathBuf, PathBuf), trusted: &Path, verify: bool) -> Stack {
    Stack::start(Options {
        tls: true,
        merchants: &[RSA_MERCHANT],
        sandbox_extra: format!("tls_cert_file: {}\ntls_key_file: {}\n", cert.0.display(), cert.1.display()),
        gateway_extra: format!("  ca_file: {}\n  tls_verify: {verify}\n  connect_retries: 0\n", trusted.display()),
        ..Options::default()
    })
}

fn certs_dir() -> PathBuf {
    let d = temp_dir().join("tls");
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TLS_FAILED: &str =
    "the TLS handshake with the platform failed (certificate not trusted, or not for this host name); nothing was sent";

#[test]
fn verified_https_to_the_platform() {
    let d = certs_dir();
    let ca = ca("paysign test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    let s = tls_stack(server_cert(&ca, &["platform.test"], true, &d), &d.join("ca.pem"), true);
    let r = s.post(BINDCARD, None, bindcard("TLS-1").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errCode"], "0000");
}

#[test]
fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    let d = certs_dir();
    let real = ca("paysign test CA");
    let other = ca("some other CA");
    std::fs::write(d.join("other.pem"), &other.pem).unwrap();
    let s = tls_stack(server_cert(&real, &["platform.test"], true, &d), &d.join("other.pem"), true);
    let r = s.post(BINDCARD, None, bindcard("TLS-2").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    assert_eq!(r.json()["errMessage"], TLS_FAILED);
    let m = s.metrics();
    assert_eq!(
        sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="tls_failed"}}"#)),
        Some(1.0)
    );
    assert!(s.settled_logs().contains("TLS with 127.0.0.1"));
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let d = certs_dir();
    let ca = ca("paysign test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    // Trusted CA, but the certificate names only other.test, and we connect to 127.0.0.1.
    let s = tls_stack(server_cert(&ca, &["other.test"], false, &d), &d.join("ca.pem"), true);
    let r = s.post(BINDCARD, None, bindcard("TLS-3").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    assert_eq!(r.json()["errMessage"], TLS_FAILED);
}

#[test]
fn verification_can_be_turned_off_for_testing_only() {
    let d = certs_dir();
    let real = ca("paysign test CA");
    let other = ca("some other CA");
    std::fs::write(d.join("other.pem"), &other.pem).unwrap();
    let s = tls_stack(server_cert(&real, &["platform.test"], true, &d), &d.join("other.pem"), false);
    let r = s.post(BINDCARD, None, bindcard("TLS-4").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let d = certs_dir();
    let ca = ca("paysign test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    let server = server_cert(&ca, &["platform.test"], true, &d);
    let client = client_cert(&ca, &d);
    let stack = |with_client_cert: bool| {
        let client_lines = if with_client_cert {
            format!("  client_cert_file: {}\n  client_key_file: {}\n", client.0.display(), client.1.display())
        } else {
            String::new()
        };
        Stack::start(Options {
            tls: true,
            merchants: &[RSA_MERCHANT],
            sandbox_extra: format!(
                "tls_cert_file: {}\ntls_key_file: {}\ntls_client_ca_file: {}\n",
                server.0.display(),
                server.1.display(),
                d.join("ca.pem").display()
            ),
            gateway_extra: format!("  ca_file: {}\n  connect_retries: 0\n{client_lines}", d.join("ca.pem").display()),
            ..Options::default()
        })
    };
    // The platform requires a client certificate: without one, nothing gets through. In TLS
    // 1.3 the server refuses the missing certificate only after the client's handshake has
    // finished and the request bytes are on their way, so paysign cannot tell "refused" from
    // "lost" and answers, conservatively, delivery `unknown`.
    let s = stack(false);
    let r = s.post(BINDCARD, None, bindcard("MTLS-1").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("unknown"));
    drop(s);
    // With it, the call goes through.
    let s = stack(true);
    let r = s.post(BINDCARD, None, bindcard("MTLS-2").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errCode"], "0000");
}

/// A host name in the base URL: it is sent as SNI and checked against the certificate.
#[test]
fn host_names_are_verified_by_name() {
    let d = certs_dir();
    let ca = ca("paysign test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    let cert = server_cert(&ca, &["localhost"], false, &d);
    let s = Stack::start(Options {
        tls: true,
        platform_host: "localhost",
        merchants: &[RSA_MERCHANT],
        sandbox_extra: format!("tls_cert_file: {}\ntls_key_file: {}\n", cert.0.display(), cert.1.display()),
        gateway_extra: format!("  ca_file: {}\n", d.join("ca.pem").display()),
        ..Options::default()
    });
    let r = s.post(BINDCARD, None, bindcard("TLS-NAME").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}
