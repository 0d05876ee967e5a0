//! The answer: the verified JSON or the bank page, written with every header, and the
//! access line's shape.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{Exchange, Verified, DELIVERY_HEADER, JSON};
use crate::error::GatewayError;
use crate::h5;
use crate::logging;

/// A verified answer for the internal service: the plaintext JSON, or the bank page.
pub(super) struct Reply {
    pub(super) body: Bytes,
    pub(super) content_type: String,
    /// Set for the bank page (with the frame/sniff/referrer headers that go with it).
    pub(super) csp: Option<String>,
}

/// The access line (a contract: these fields, in this order; see docs/observability.md),
/// serialised straight from the request's state.
#[derive(serde::Serialize)]
pub(super) struct AccessLine<'a> {
    pub(super) request_id: &'a str,
    pub(super) endpoint: &'a str,
    pub(super) merchant: &'a str,
    pub(super) order_no: Option<&'a str>,
    pub(super) outcome: &'a str,
    pub(super) status: u16,
    pub(super) delivery: &'a str,
    pub(super) err_code: Option<&'a str>,
    pub(super) latency_ms: f64,
    pub(super) upstream_ms: Option<f64>,
    pub(super) ts: logging::Now,
    pub(super) level: &'static str,
    pub(super) msg: &'static str,
}

/// The verified plaintext as JSON, or the bank page when a browser asked for it.
pub(super) fn answer(verified: Verified, wants_html: bool) -> Result<Reply, GatewayError> {
    if wants_html {
        let fields = verified.fields();
        if h5::wants_form(&fields) {
            let page = h5::render(&fields).map_err(GatewayError::Form)?;
            return Ok(Reply { body: Bytes::from(page.body), content_type: page.content_type, csp: Some(page.csp) });
        }
    }
    Ok(Reply { body: Bytes::from(verified.plaintext), content_type: JSON.into(), csp: None })
}

pub(super) async fn write_reply(
    session: &mut Session,
    ex: &Exchange,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", http::HeaderValue::from(body.len()))?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", ex.request_id.as_str())?;
    resp.insert_header(DELIVERY_HEADER, ex.delivery.as_str())?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}
