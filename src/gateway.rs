//! The binary's `ProxyHttp`: paysign's exchange ([`Paysign::request_filter`]) and nothing but
//! routing — every other path is paysign's own 404. An embedder's gateway is the same with its
//! own routes in place of the 404 (examples/my_gateway.rs).

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use paysign_plugin::{Exchange, Paysign};

pub struct Gateway {
    paysign: Paysign,
}

impl Gateway {
    pub fn new(paysign: Paysign) -> Self {
        Gateway { paysign }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Exchange;

    fn new_ctx(&self) -> Exchange {
        Exchange::default()
    }

    /// Default: nothing. Here: the head is complete (its deadline and size bound end), and
    /// pipelined requests are answered in order (pingora's default drops the second one).
    async fn early_request_filter(&self, session: &mut Session, _ex: &mut Exchange) -> pingora::Result<()> {
        paysign_plugin::request_parsed(session);
        Ok(())
    }

    /// Default: continue to `upstream_peer`. Here: paysign answers every request (`Ok(true)`).
    async fn request_filter(&self, session: &mut Session, ex: &mut Exchange) -> pingora::Result<bool> {
        if self.paysign.request_filter(session, ex).await? {
            return Ok(true);
        }
        self.paysign.not_found(session, ex).await
    }

    /// Never reached: `request_filter` always answers.
    async fn upstream_peer(&self, _session: &mut Session, _ex: &mut Exchange) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(ErrorType::InternalError, "paysign answers every request in request_filter"))
    }

    /// Default: nothing. Here: the access line and the request metrics.
    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ex: &mut Exchange) {
        self.paysign.logging(session, e, ex);
    }
}
