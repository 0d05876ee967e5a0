//! The bank H5 page (the endpoint document's "using the result"): an auto-submitting form
//! whose `action` is `submitUrl`, `method` is `submitMethod`, and whose hidden inputs are the
//! members of `submitParams`. It works with scripts off (a visible button), every value is
//! HTML-escaped, and a Content-Security-Policy allows exactly one inline script (by hash), so
//! even a value that escaped its attribute could not run.

use base64::Engine;
use once_cell::sync::Lazy;
use rsa::sha2::{Digest, Sha256};
use serde_json::{Map, Value};

/// The only script on the page.
const SUBMIT_SCRIPT: &str = "document.forms[0].submit();";

static SCRIPT_HASH: Lazy<String> = Lazy::new(|| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SUBMIT_SCRIPT.as_bytes())));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("submitUrl is missing")]
    NoUrl,
    #[error("submitUrl is not an http(s) URL")]
    BadUrl,
    #[error("submitMethod must be GET or POST")]
    BadMethod,
    #[error("submitParams is not a JSON object")]
    BadParams,
    #[error("encoding names no known character set")]
    BadEncoding,
}

/// A rendered page.
pub struct Page {
    pub content_type: String,
    pub body: Vec<u8>,
    pub csp: String,
}

/// Whether a verified answer should become the bank page: success with a `submitUrl`.
pub fn wants_form(fields: &Map<String, Value>) -> bool {
    fields.get("errCode").and_then(Value::as_str) == Some("0000")
        && fields.get("submitUrl").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `submitUrl` as an absolute http(s) URL. The document's sample is `www.icbc.com` (no
/// scheme): such a URL is taken as `https://` (bank pages are served over TLS), never as a
/// path relative to paysign. Other schemes (`javascript:`, `data:` …) are refused.
pub fn absolute_url(raw: &str) -> Result<String, FormError> {
    let url = raw.trim();
    if url.is_empty() {
        return Err(FormError::NoUrl);
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FormError::BadUrl);
    }
    let lower = url.to_ascii_lowercase();
    let url = if lower.starts_with("https://") || lower.starts_with("http://") {
        url.to_string()
    } else if url.contains("://") || url.starts_with("//") || lower.contains(':') && !looks_like_host_port(url) {
        return Err(FormError::BadUrl);
    } else {
        format!("https://{url}")
    };
    let host = url.split("://").nth(1).unwrap_or("").split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(FormError::BadUrl);
    }
    Ok(url)
}

/// `host:port/...` without a scheme (a digit-only port), as opposed to `javascript:...`.
fn looks_like_host_port(s: &str) -> bool {
    let first = s.split(['/', '?', '#']).next().unwrap_or("");
    match first.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

pub fn render(fields: &Map<String, Value>) -> Result<Page, FormError> {
    let action = absolute_url(fields.get("submitUrl").and_then(Value::as_str).ok_or(FormError::NoUrl)?)?;
    let method = match fields.get("submitMethod").and_then(Value::as_str).map(str::trim) {
        None | Some("") => "post",
        Some(m) if m.eq_ignore_ascii_case("post") => "post",
        Some(m) if m.eq_ignore_ascii_case("get") => "get",
        Some(_) => return Err(FormError::BadMethod),
    };
    let label = fields.get("encoding").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).unwrap_or("UTF-8");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or(FormError::BadEncoding)?;
    // The page is sent in the output encoding of `encoding` (UTF-16 labels fall back to UTF-8,
    // as browsers submit forms), so the bank receives the parameters in the charset it expects.
    let encoding = encoding.output_encoding();
    let params: Map<String, Value> = match fields.get("submitParams") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => return Err(FormError::BadParams),
        },
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(FormError::BadParams),
    };

    let mut inputs = String::new();
    for (name, value) in &params {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        inputs.push_str(&format!("    <input type=\"hidden\" name=\"{}\" value=\"{}\">\n", escape(name), escape(&text)));
    }
    let charset = encoding.name();
    let html = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"{charset}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>正在跳转至银行 / Redirecting to your bank</title>\n</head>\n<body>\n\
         <form name=\"unionpay_punchout_form\" method=\"{method}\" action=\"{action}\" accept-charset=\"{charset}\">\n{inputs}\
             <noscript><p>请点击继续 / Please continue to your bank.</p></noscript>\n\
             <button type=\"submit\">继续 / Continue</button>\n  </form>\n\
         <script>{SUBMIT_SCRIPT}</script>\n</body>\n</html>\n",
        action = escape(&action),
    );
    let (bytes, _, _) = encoding.encode(&html);
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; form-action http: https:; frame-ancestors 'none'; base-uri 'none'",
        *SCRIPT_HASH
    );
    Ok(Page { content_type: format!("text/html; charset={charset}"), body: bytes.into_owned(), csp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(url: &str, method: &str, params: &str, enc: &str) -> Map<String, Value> {
        serde_json::json!({"errCode":"0000","submitUrl":url,"submitMethod":method,"submitParams":params,"encoding":enc})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn renders_escaped_form() {
        let p = render(&answer("https://bank.test/bind?a=1&b=2", "post", r#"{"epccGwMsg":"\"><script>x()</script>'&"}"#, "UTF-8")).unwrap();
        let html = String::from_utf8(p.body).unwrap();
        assert!(html.contains(r#"action="https://bank.test/bind?a=1&amp;b=2""#));
        assert!(html.contains(r#"name="epccGwMsg" value="&quot;&gt;&lt;script&gt;x()&lt;/script&gt;&#39;&amp;""#));
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(html.contains(r#"method="post""#));
        assert_eq!(p.content_type, "text/html; charset=UTF-8");
        assert!(p.csp.contains("frame-ancestors 'none'"));
    }

    #[test]
    fn url_and_method_rules() {
        assert_eq!(absolute_url("www.icbc.com").unwrap(), "https://www.icbc.com");
        assert_eq!(absolute_url("www.icbc.com:8443/x").unwrap(), "https://www.icbc.com:8443/x");
        assert_eq!(absolute_url("HTTP://bank.test/x").unwrap(), "HTTP://bank.test/x");
        assert_eq!(absolute_url("javascript:alert(1)"), Err(FormError::BadUrl));
        assert_eq!(absolute_url("data:text/html,x"), Err(FormError::BadUrl));
        assert_eq!(absolute_url("//evil.test"), Err(FormError::BadUrl));
        assert_eq!(absolute_url("ftp://x"), Err(FormError::BadUrl));
        assert_eq!(absolute_url("https://"), Err(FormError::BadUrl));
        assert!(render(&answer("https://b.test", "GeT", "{}", "UTF-8")).unwrap().body.windows(12).any(|w| w == b"method=\"get\""));
        assert_eq!(render(&answer("https://b.test", "PUT", "{}", "UTF-8")).err(), Some(FormError::BadMethod));
        assert_eq!(render(&answer("https://b.test", "POST", "[1]", "UTF-8")).err(), Some(FormError::BadParams));
        assert_eq!(render(&answer("https://b.test", "POST", "{}", "NOPE-1")).err(), Some(FormError::BadEncoding));
    }

    #[test]
    fn gbk_page_is_encoded_in_gbk() {
        let p = render(&answer("https://b.test", "post", r#"{"n":"张三"}"#, "GBK")).unwrap();
        assert_eq!(p.content_type, "text/html; charset=GBK");
        // 张三 in GBK
        assert!(p.body.windows(4).any(|w| w == [0xD5, 0xC5, 0xC8, 0xFD]));
    }
}
