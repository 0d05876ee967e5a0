//! Small helpers shared by paysign's own HTTP apps (admin, notification listener, sandbox):
//! a bounded request-body reader and a response with an exact `Content-Length`.

use http::Response;
use pingora::protocols::http::ServerSession;

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit; the rest is left unread, so the connection is not reused.
    TooLarge,
    /// The client went away or sent a malformed body.
    Unreadable,
}

/// Reads the whole request body, at most `limit` bytes.
pub async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= limit => body.extend_from_slice(&chunk),
            Ok(Some(_)) => {
                session.set_keepalive(None);
                return Err(BodyError::TooLarge);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(BodyError::Unreadable),
        }
    }
}

/// A complete response.
pub fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_default()
}
