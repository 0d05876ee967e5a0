//! The HTTP side of intake: the body (bounded, timed), the headers that may appear once, the
//! deadline, the request id, and what the access line keeps of the request.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::{DEADLINE_HEADER, REQUEST_ID_HEADER};
use crate::error::GatewayError;
use crate::logging;
use crate::protocol::canonical::Part;
use crate::protocol::envelope::NotAnObject;
use crate::protocol::Business;
use crate::serve::Gathered;

/// The request body's fields: UTF-8 text of one JSON object, read once (see [`Business`]).
pub(super) fn business_of(body: &[u8]) -> Result<Business<'_>, GatewayError> {
    std::str::from_utf8(body).map_err(|_| GatewayError::BadBody("is not UTF-8"))?;
    Business::parse(body).map_err(|e| {
        GatewayError::BadBody(match e {
            NotAnObject::NotJson => "is not JSON",
            NotAnObject::OtherValue => "is not a JSON object",
        })
    })
}

/// An errCode for the access line as the caller got it (at most 64 characters).
pub(super) fn log_code(code: &str) -> String {
    code.chars().take(64).collect()
}

/// `orderNo` for the access line (at most 64 characters).
pub(super) fn order_no(business: &Business<'_>) -> Option<String> {
    match business.get("orderNo") {
        Some(Part::Text(s)) => Some(s.chars().take(64).collect()),
        _ => None,
    }
}

/// Resolves when the caller closes its connection (the request body has been read); pends
/// otherwise.
pub(super) async fn caller_gone(session: &mut Session) {
    if session.read_body_or_idle(true).await.is_ok() {
        // Pipelined bytes, not a close: keep waiting for the work.
        std::future::pending::<()>().await
    }
}

/// A header that may appear at most once.
pub(super) fn single_header<'a>(req: &'a RequestHeader, name: &'static str) -> Result<Option<&'a http::HeaderValue>, GatewayError> {
    let mut all = req.headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(GatewayError::DuplicateHeader(name));
    }
    Ok(first)
}

/// `X-Paysign-Deadline-Ms`: whole milliseconds, at most a day.
pub(super) fn deadline(req: &RequestHeader) -> Result<Option<Duration>, GatewayError> {
    match single_header(req, DEADLINE_HEADER)? {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms <= 86_400_000)
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or(GatewayError::BadHeader(DEADLINE_HEADER)),
    }
}

pub(super) async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared =
        session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // The body stays unread, so this connection cannot be reused.
        session.set_keepalive(None);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = Gathered::new(limit);
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.push(chunk).is_err() {
                    session.set_keepalive(None);
                    return Err(GatewayError::BodyTooLarge { limit });
                }
            }
            Ok(None) => return Ok(body.finish()),
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::BadBody("could not be read"));
            }
        }
    }
}

pub(super) fn request_id(session: &Session) -> String {
    let given = session.req_header().headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
    match given {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) => {
            id.to_string()
        }
        _ => logging::new_request_id(),
    }
}
