//! Where a verified notification goes: the [`NotificationTarget`] seam, and its HTTP
//! implementation (the internal service of each route).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::{Notify, NotifyRoute};
use crate::http_client::{Client, Route, SendError, DEFAULT_POOL_SIZE};

/// What an internal target answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetAnswer {
    /// Its HTTP status (or the equivalent): only a 2xx is acknowledged to the platform.
    pub status: u16,
}

/// Why a target took no answerable delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing reached the target (no connection could be made).
    #[error("the target could not be reached")]
    NotSent,
    /// The target may have received it but did not answer (timeout, TLS, a broken answer).
    #[error("the target did not answer")]
    Failed,
}

/// Where verified notifications go: the seam for a durable inbox. `deliver` is called once per
/// verified notification, with its route, the headers paysign adds (`Content-Type`,
/// [`NOTIFICATION_ID_HEADER`](super::NOTIFICATION_ID_HEADER), `X-Paysign-Merchant`, `X-Request-Id`) and the verified plaintext;
/// the platform is acknowledged only when it returns a 2xx [`TargetAnswer`].
#[async_trait]
pub trait NotificationTarget: Send + Sync {
    /// Hands one verified notification on (see the trait's doc).
    async fn deliver(&self, route: &NotifyRoute, headers: &[(&'static str, &str)], body: Bytes) -> Result<TargetAnswer, TargetError>;
}

/// The internal HTTP services of `notify.routes[].target`: a POST of the plaintext to each
/// route's target. Its connection pool is kept across reloads ([`HttpTarget::reloaded`]).
pub struct HttpTarget {
    client: Arc<Client>,
    peers: HashMap<String, Route>,
}

impl HttpTarget {
    /// The targets of `notify`'s routes, with a new connection pool.
    pub fn new(notify: &Notify) -> Self {
        Self::with_client(notify, Arc::new(Client::new(None, None, DEFAULT_POOL_SIZE)))
    }

    /// The targets of a reloaded `notify`, keeping this one's connection pool.
    pub fn reloaded(&self, notify: &Notify) -> Self {
        Self::with_client(notify, self.client.clone())
    }

    fn with_client(notify: &Notify, client: Arc<Client>) -> Self {
        let peers = notify
            .routes
            .iter()
            .map(|r| (r.path.clone(), Route::new(r.target.clone(), notify.forward_timeout, notify.forward_timeout, true)))
            .collect();
        HttpTarget { client, peers }
    }
}

#[async_trait]
impl NotificationTarget for HttpTarget {
    async fn deliver(&self, route: &NotifyRoute, headers: &[(&'static str, &str)], body: Bytes) -> Result<TargetAnswer, TargetError> {
        let Some(peer) = self.peers.get(&route.path) else {
            return Err(TargetError::NotSent);
        };
        let path = if route.target.path.is_empty() { "/" } else { route.target.path.as_str() };
        match self.client.post(peer, path, headers, body, || {}).await {
            Ok(a) => Ok(TargetAnswer { status: a.status }),
            Err(SendError::NotSent) => Err(TargetError::NotSent),
            Err(SendError::Tls(_) | SendError::Unknown | SendError::Timeout | SendError::TooLarge(_)) => Err(TargetError::Failed),
        }
    }
}
