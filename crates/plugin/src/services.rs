//! The pingora services a [`Paysign`] instance brings besides the exchange, each with the
//! instance's configuration, metrics and safeguards already applied: what an embedder adds to
//! its `Server` next to its own proxy.

use std::sync::Arc;

use pingora::apps::ServerApp;
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;

use crate::exchange::Paysign;
use crate::listener::{safeguarded_service, tcp_listener, Limited, Limits};
use crate::metrics::Listener;
use crate::notify::Notifications;
use crate::ops::sighup::{Reload, ReloadOnSighup};

impl Paysign {
    /// `app` (your `ProxyHttp` wrapped by pingora, or any other pingora app) listening on
    /// `addr` behind paysign's safeguards: at most `max_connections` connections (refused in
    /// the accept loop), a request head within `header_timeout_ms` and `max_header_bytes`,
    /// counted under `listener` in this instance's metrics.
    pub fn safeguarded<A: ServerApp + Send + Sync + 'static>(
        &self,
        name: &str,
        listener: Listener,
        addr: &str,
        app: A,
    ) -> Service<Limited<A>> {
        let limits = Limits::of(&self.live().current().config);
        let mut service = safeguarded_service(name, listener, app, limits, self.live().metrics());
        service.add_listener(tcp_listener(addr));
        service
    }

    /// The platform's notifications on `notify.listen` (safeguarded, `allow_from` checked at
    /// accept), or `None` when the configuration has no `notify`.
    pub fn notification_service(&self) -> Option<Service<Limited<Notifications>>> {
        Notifications::new(self.live().clone()).service()
    }

    /// SIGHUP reloads this instance's configuration (and keys) instead of ending the process,
    /// as a pingora background service. SIGHUP is taken over when this is called: call it
    /// before `server.run_forever()`.
    pub fn reload_on_sighup(&self) -> std::io::Result<GenBackgroundService<ReloadOnSighup>> {
        let live: Arc<dyn Reload> = self.live().clone();
        Ok(ReloadOnSighup::new(vec![live])?.service())
    }
}
