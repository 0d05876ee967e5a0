//! Small helpers shared by paysign's own HTTP apps (admin, notification listener, sandbox):
//! a bounded request-body reader and a response with an exact `Content-Length`; and the
//! bounded gathering of a body's chunks that every body paysign reads goes through (these
//! apps', the proxy's and the platform client's).

use bytes::{Bytes, BytesMut};
use http::Response;
use pingora::protocols::http::ServerSession;

/// A body gathered from the chunks a session yields, never more than `limit` bytes. One chunk
/// (the usual case) is kept as it came; several are joined into one buffer.
pub struct Gathered {
    limit: usize,
    first: Bytes,
    joined: Option<BytesMut>,
}

/// Taking the chunk would put the body over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit;

impl Gathered {
    pub fn new(limit: usize) -> Self {
        Gathered { limit, first: Bytes::new(), joined: None }
    }

    pub fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the next chunk, unless the body would then exceed the limit.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), OverLimit> {
        let size = self.len() + chunk.len();
        if size > self.limit {
            return Err(OverLimit);
        }
        match &mut self.joined {
            Some(joined) => joined.extend_from_slice(&chunk),
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let mut joined = BytesMut::with_capacity(size);
                joined.extend_from_slice(&self.first);
                joined.extend_from_slice(&chunk);
                self.joined = Some(joined);
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Bytes {
        self.joined.map_or(self.first, BytesMut::freeze)
    }
}

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
    let mut body = Gathered::new(limit);
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.push(chunk).is_err() {
                    session.set_keepalive(None);
                    return Err(BodyError::TooLarge);
                }
            }
            Ok(None) => return Ok(Vec::from(body.finish())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_kept_as_it_came_and_several_are_joined_within_the_limit() {
        let chunk = Bytes::from_static(b"0123456789");
        let mut one = Gathered::new(10);
        one.push(chunk.clone()).unwrap();
        let kept = one.finish();
        assert_eq!(kept, chunk);
        assert_eq!(kept.as_ptr(), chunk.as_ptr(), "one chunk is not copied");

        let mut several = Gathered::new(10);
        for piece in [&b""[..], b"0123", b"", b"45", b"6789"] {
            several.push(Bytes::copy_from_slice(piece)).unwrap();
        }
        assert_eq!(several.len(), 10);
        assert_eq!(several.push(Bytes::from_static(b"x")), Err(OverLimit));
        assert_eq!(several.finish(), Bytes::from_static(b"0123456789"));

        let mut over = Gathered::new(9);
        assert_eq!(over.push(chunk), Err(OverLimit));
        assert!(over.is_empty());
        assert_eq!(Gathered::new(0).finish(), Bytes::new());
    }
}
