//! The pingora services a [`Paysign`] instance brings besides the exchange, each with the
//! instance's configuration, metrics and safeguards already applied: what an embedder adds to
//! its `Server` next to its own proxy.

use std::sync::Arc;

use pingora::apps::ServerApp;
use pingora::server::configuration::ServerConf;
use pingora::server::ExecutionPhase;
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;

use crate::exchange::Paysign;
use crate::listener::{safeguarded_service, tcp_listener, Limited, Limits};
use crate::metrics::Listener;
use crate::notify::{Deliverer, Notifications};
use crate::ops::sighup::{Reload, ReloadOnSighup};

impl Paysign {
    /// pingora's server settings for this configuration, as the binary uses them: `threads`
    /// event loops, and a grace period that outlasts the drain ([`Self::exit_when_drained`]).
    /// Without them `threads` and `grace_period_seconds` do nothing and pingora waits out its
    /// own default grace (300 s) at every SIGTERM. Start from these and add your own:
    /// `Server::new_with_opt_and_conf(opt, paysign.server_conf())`.
    pub fn server_conf(&self) -> ServerConf {
        crate::drain::server_conf(&self.live().current().config)
    }

    /// After SIGTERM (`phases` is `server.watch_execution_phase()`): ends the process as soon as
    /// no call or notification of this instance is in flight — at the latest at the drain
    /// deadline, where every call not yet sent is answered 503 `not-sent` first — as the binary
    /// does. Call it once, before `server.run_forever()`; it takes a thread that waits.
    pub fn exit_when_drained(&self, phases: tokio::sync::broadcast::Receiver<ExecutionPhase>) -> std::io::Result<()> {
        let deadline = crate::drain::deadline(&self.live().current().config);
        let (counted, stopper) = (self.clone(), self.clone());
        tracing::info!("shutdown: the drain deadline is {} s", deadline.as_secs());
        crate::drain::when_drained(
            phases,
            move || counted.live().metrics().in_flight.get() + counted.live().notifications_in_flight(),
            move || stopper.stop_sending(),
            deadline,
            || {
                crate::logging::flush(crate::logging::EXIT_WAIT);
                std::process::exit(0)
            },
        )
    }

    /// `app` (your `ProxyHttp` wrapped by pingora, or any other pingora app) listening on
    /// `addr` behind paysign's safeguards: at most `max_connections` connections (refused in
    /// the accept loop), a request head within `header_timeout_ms` and `max_header_bytes`,
    /// counted under `listener` in this instance's metrics. The head deadline ends when the
    /// app says the head is parsed: [`Paysign::request_filter`] does for every request it sees;
    /// an app that does not call it calls [`crate::request_parsed`] in its
    /// `early_request_filter`, or a slow body is cut at the head deadline.
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

    /// The inbox's deliverer (`notify.inbox`), as a pingora background service, or `None`
    /// without an inbox: add it next to [`Self::notification_service`], or stored
    /// notifications are never delivered.
    pub fn deliverer_service(&self) -> Option<GenBackgroundService<Deliverer>> {
        self.live().inbox()?;
        Some(pingora::services::background::background_service("paysign deliverer", Deliverer::new(self.live().clone())))
    }

    /// SIGHUP reloads this instance's configuration (and keys) instead of ending the process,
    /// as a pingora background service. SIGHUP is taken over when this is called: call it
    /// before `server.run_forever()`.
    pub fn reload_on_sighup(&self) -> std::io::Result<GenBackgroundService<ReloadOnSighup>> {
        let live: Arc<dyn Reload> = self.live().clone();
        Ok(ReloadOnSighup::new(vec![live])?.service())
    }
}
