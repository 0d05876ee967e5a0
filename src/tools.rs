//! Offline tools for signature debugging (`paysign seal`, `paysign open`, `paysign keys
//! check`). They use the configured keys, write to stdout, and never print key material or
//! the MD5 key; for a failed check they say precisely which step failed and why.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value};

use paysign_plugin::config::Config;
use paysign_protocol::canonical::Part;
use paysign_protocol::crypto::keys::{self, AnyKey};
use paysign_protocol::crypto::{segmented, signature, CryptoError};
use paysign_protocol::envelope::{ANSWER_ONLY, NOTIFICATION_REQUIRED};
use paysign_protocol::schema::Endpoints;
use paysign_protocol::{Business, Merchant, MerchantKeys, OpenError, Opened};

/// Picks `--merchant`, or the only configured merchant.
pub fn merchant(cfg: &Config, named: Option<&str>) -> Result<Arc<Merchant>, String> {
    match named {
        Some(c) => cfg.merchants.get(c).cloned().ok_or_else(|| format!("merchant {c} is not configured in {}", cfg.source.display())),
        None => cfg.default_merchant().cloned().ok_or_else(|| "several merchants are configured: pass --merchant NO".into()),
    }
}

/// What `paysign seal` printed, and the errCode of the validation that refused the request
/// (the command then exits 1: the gateway would not send it).
pub struct SealReport {
    pub text: String,
    pub refused: Option<&'static str>,
}

/// `paysign seal`: the canonical string, `sign` and the envelope that would be sent. The
/// input is read as the gateway reads a caller's body (numbers keep the caller's text).
pub fn seal(m: &Merchant, path: Option<&str>, input: &str) -> Result<SealReport, String> {
    let business = match Business::parse(input.as_bytes()) {
        Ok(b) => b,
        Err(paysign_protocol::envelope::NotAnObject::OtherValue) => return Err("input is not a JSON object".into()),
        Err(paysign_protocol::envelope::NotAnObject::NotJson) => {
            let why = serde_json::from_str::<Value>(input).err().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!("input is not JSON: {why}"));
        }
    };
    let mut out = String::new();
    let mut refused = None;
    let _ = writeln!(out, "merchant:  {} (profile {})", m.customer_no, m.profile().as_str());
    if let Some(p) = path {
        let endpoints = Endpoints::builtin()?;
        match endpoints.get(p) {
            Some(ep) => match ep.validate(&business) {
                Ok(()) => {
                    let _ = writeln!(out, "validate:  ok ({})", ep.name);
                }
                Err(bad) => {
                    let _ = writeln!(out, "validate:  errCode {} — {} (paysign would refuse this request)", bad.code, bad.message);
                    refused = Some(bad.code);
                }
            },
            None => {
                let _ = writeln!(out, "validate:  no schema for {p}; sealed without field validation");
            }
        }
    }
    let canonical = business.canonical();
    let _ = writeln!(out, "canonical: {canonical}");
    let sign = match &m.keys {
        MerchantKeys::Md5 { md5_key, .. } => signature::md5_sign(&canonical, md5_key),
        MerchantKeys::Rsa { merchant_private, .. } => signature::rsa_sign(merchant_private, &canonical).map_err(|e| e.to_string())?,
    };
    let _ = writeln!(out, "sign:      {sign}");
    let sealed = m.seal(business).map_err(|e| e.to_string())?;
    let _ = writeln!(out, "chunk:     {} bytes per RSA block", m.chunk_size);
    let _ = writeln!(out, "envelope:  {}", String::from_utf8_lossy(&sealed.body));
    Ok(SealReport { text: out, refused })
}

/// `paysign open`: every step of opening a response or notification, and whether it
/// verifies. Returns the report and whether the signature verified.
///
/// The verdict is the gateway's own: a response envelope goes through
/// [`Merchant::open_response`] and `{"customerNo","reqmsg"}` (a notification) through
/// [`Merchant::open_notification_observed`], the functions the proxy and the notification
/// listener call; the steps before it only explain.
pub fn open(m: &Merchant, input: &str) -> (String, bool) {
    let mut out = String::new();
    let input = input.trim();
    let steps_ok = open_steps(m, input, &mut out).is_ok();
    let notification = matches!(serde_json::from_str::<Value>(input), Ok(Value::Object(ref o)) if o.contains_key("reqmsg"));
    let verdict = if notification {
        match serde_json::from_str::<Value>(input) {
            Ok(Value::Object(data)) => m.open_notification_observed(&data, &()),
            _ => Err(OpenError::Envelope("body is not a JSON object")),
        }
    } else {
        m.open_response(input.as_bytes())
    };
    let verified = matches!(verdict, Ok(Opened::Verified { .. }));
    if let Err(e) = &verdict {
        if steps_ok {
            // The gateway refuses what the steps above let through: say why.
            let step = if *e == OpenError::NotANotification { "notification:" } else { "gateway:" };
            let _ = writeln!(out, "{step:<10} FAILED: {e}");
        }
        if *e == OpenError::NotANotification {
            let _ = writeln!(
                out,
                "           a notification carries {} and none of {} (an answer cannot pose as one)",
                NOTIFICATION_REQUIRED.join(", "),
                ANSWER_ONLY.join(", ")
            );
        }
    } else if verified && notification {
        let _ = writeln!(out, "notification: ok ({} present)", NOTIFICATION_REQUIRED.join(", "));
    }
    let _ = writeln!(out, "result:    {}", if verified { "VERIFIED" } else { "NOT VERIFIED" });
    if let Err(e) = &verdict {
        let _ = writeln!(out, "reason:    {} (the gateway's metric label)", e.reason());
    }
    (out, verified)
}

fn fail(out: &mut String, step: &str, why: String) -> Result<(), ()> {
    let _ = writeln!(out, "{step:<10} FAILED: {why}");
    Err(())
}

fn open_steps(m: &Merchant, input: &str, out: &mut String) -> Result<(), ()> {
    let _ = writeln!(out, "merchant:  {} (profile {})", m.customer_no, m.profile().as_str());
    let outer = match serde_json::from_str::<Value>(input) {
        Ok(Value::Object(o)) => o,
        _ => return fail(out, "input:", "not a JSON object".into()),
    };
    let data: Map<String, Value> = if outer.contains_key("reqmsg") {
        let _ = writeln!(out, "input:     notification: {{customerNo, reqmsg}} (to open an answer, give its whole envelope)");
        outer
    } else {
        let code = outer.get("code").map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)).unwrap_or_default();
        let success = outer.get("success").and_then(Value::as_bool).unwrap_or(false);
        let _ = writeln!(out, "input:     response envelope: code={code} success={success}");
        if code != "200" || !success {
            let msg = outer.get("msg").and_then(Value::as_str).unwrap_or("");
            return fail(out, "envelope:", format!("platform-level failure, code {code}, msg {msg:?}; there is no reqmsg to open"));
        }
        match outer.get("data") {
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(d)) => d,
                _ => return fail(out, "data:", "data is a string but not JSON object text".into()),
            },
            Some(Value::Object(d)) => d.clone(),
            _ => return fail(out, "data:", "data is missing".into()),
        }
    };
    let named = data.get("customerNo").and_then(Value::as_str).unwrap_or("");
    if named != m.customer_no {
        return fail(out, "customerNo:", format!("customerNo mismatch: the message names {named:?}, the merchant is {}", m.customer_no));
    }
    let _ = writeln!(out, "customerNo: ok");
    let Some(reqmsg) = data.get("reqmsg").and_then(Value::as_str) else {
        return fail(out, "reqmsg:", "reqmsg is missing".into());
    };
    let (k, opened) = match &m.keys {
        MerchantKeys::Md5 { platform_public, .. } => (platform_public.size(), None),
        MerchantKeys::Rsa { merchant_private, .. } => (merchant_private.size(), Some(merchant_private.clone())),
    };
    let compact: String = reqmsg.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let raw = match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(r) => r,
        Err(e) => return fail(out, "reqmsg:", format!("not valid base64: {e}")),
    };
    if raw.is_empty() || raw.len() % k != 0 {
        return fail(
            out,
            "reqmsg:",
            format!(
                "bad block length: {} bytes is not a non-zero multiple of the {k}-byte block of a {}-bit key (wrong key size, or a truncated message)",
                raw.len(),
                k * 8
            ),
        );
    }
    let _ = writeln!(out, "reqmsg:    {} bytes = {} block(s) of {k}", raw.len(), raw.len() / k);
    let plain = match (&m.keys, opened) {
        (MerchantKeys::Md5 { platform_public, .. }, _) => {
            let mut all = Vec::new();
            for (i, block) in raw.chunks(k).enumerate() {
                match segmented::open_type1_block(platform_public, block) {
                        Ok(p) => all.extend_from_slice(&p),
                        Err(CryptoError::Padding) => return fail(
                            out,
                            "open:",
                            format!(
                                "padding: block {} has no valid PKCS#1 type-1 padding under the platform public key (wrong platform key, or a corrupted block)",
                                i + 1
                            ),
                        ),
                        Err(e) => return fail(out, "open:", format!("block {}: {e}", i + 1)),
                    }
            }
            all
        }
        (_, Some(private)) => match segmented::decrypt(&private, reqmsg) {
            Ok(p) => p,
            Err(e) => return fail(out, "open:", e.to_string()),
        },
        _ => return fail(out, "open:", "no key".into()),
    };
    let text = match String::from_utf8(plain) {
        Ok(t) => t,
        Err(_) => {
            let why = if m.profile() == paysign_protocol::Profile::Rsa {
                "the decrypted bytes are not UTF-8: wrong merchant private key or corrupted ciphertext (PKCS#1 v1.5 implicit rejection does not say which block)"
            } else {
                "the opened bytes are not UTF-8 (the platform used another charset, or chunking broke a character)"
            };
            return fail(out, "plaintext:", why.into());
        }
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            let _ = writeln!(out, "bom:       a UTF-8 byte-order mark before the JSON, skipped");
            rest
        }
        None => text.as_str(),
    };
    let _ = writeln!(out, "plaintext: {text}");
    // Read as the gateway reads it: numbers keep their text as the platform wrote it.
    let Ok(fields) = Business::parse(text.as_bytes()) else {
        return fail(out, "plaintext:", "not a JSON object".into());
    };
    match fields.get("customerNo") {
        None | Some(Part::Json("null")) => {}
        Some(Part::Text(c)) if c == m.customer_no => {}
        Some(other) => {
            return fail(
                out,
                "customerNo:",
                format!("customerNo mismatch inside the plaintext: {}, the merchant is {}", other.to_value(), m.customer_no),
            )
        }
    }
    let canonical = fields.canonical();
    let _ = writeln!(out, "canonical: {canonical}");
    let sign = match fields.get("sign") {
        Some(Part::Text(s)) if !s.is_empty() => s,
        _ => return fail(out, "signature:", "the plaintext has no sign".into()),
    };
    let ok = match &m.keys {
        MerchantKeys::Md5 { md5_key, .. } => {
            let ok = signature::md5_verify(&canonical, md5_key, sign);
            if !ok {
                let expected = signature::md5_sign(&canonical, md5_key);
                return fail(
                    out,
                    "signature:",
                    format!("md5 of the canonical string with the configured key is {expected}, the message says {sign}"),
                );
            }
            ok
        }
        MerchantKeys::Rsa { platform_public, .. } => signature::rsa_verify(platform_public, &canonical, sign),
    };
    if !ok {
        return fail(out, "signature:", "SHA256withRSA does not verify under the platform public key".into());
    }
    let _ = writeln!(out, "signature: ok ({})", m.profile().as_str());
    Ok(())
}

/// `paysign keys check`: format, size and kind of each key, and which form pairs; not ok when a
/// key is unusable or weak (a weak key is refused unless `allow_weak_keys`).
pub fn keys_check(files: &[(String, String)]) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    let mut privates = Vec::new();
    let mut publics = Vec::new();
    for (name, text) in files {
        match keys::parse_any(text) {
            Ok(AnyKey::Public(k, f)) => {
                let weak = if k.bits() < keys::MIN_BITS { " — WEAK: refused unless allow_weak_keys" } else { "" };
                all_ok &= weak.is_empty();
                let _ = writeln!(out, "{name}: RSA public key, {} bits, {f}{weak}", k.bits());
                publics.push((name.clone(), k));
            }
            Ok(AnyKey::Private(k, f)) => {
                let weak = if k.public().bits() < keys::MIN_BITS { " — WEAK: refused unless allow_weak_keys" } else { "" };
                all_ok &= weak.is_empty();
                let _ = writeln!(out, "{name}: RSA private key, {} bits, {f}{weak}", k.public().bits());
                privates.push((name.clone(), k));
            }
            Err(e) => {
                all_ok = false;
                let _ = writeln!(out, "{name}: ERROR: {e}");
            }
        }
    }
    for (pn, p) in &privates {
        for (qn, q) in &publics {
            if keys::is_pair(p, q) {
                let _ = writeln!(out, "pair: {pn} + {qn}");
            }
        }
    }
    (out, all_ok)
}
