//! SIGHUP as "reload": a pingora background service that reloads every [`Reload`] it was given
//! (the gateway's [`Live`], a sandbox, an embedder's own state) each time the process gets
//! SIGHUP. Without a handler SIGHUP ends the process — an embedded gateway too.
//!
//! The signal is taken over when the service is constructed, not when pingora starts it:
//! build it before `Server::run_forever`, and from then on a SIGHUP can no longer kill the
//! process (a SIGHUP that comes before the service runs is acted on once it does).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::live::Live;

/// Something SIGHUP reloads. `reload` logs its own outcome (a failed reload keeps what is in
/// force and says why); it runs on the service's thread, so it may block briefly (file reads,
/// key parsing).
pub trait Reload: Send + Sync {
    /// Loads again and swaps in, or keeps what is in force (and says why).
    fn reload(&self);
}

impl Reload for Live {
    fn reload(&self) {
        // `Live::reload` logs the outcome (one line), counts it, and keeps the running
        // configuration on failure.
        let _ = Live::reload(self);
    }
}

/// The background service (`server.add_service(background_service("reload", …))`, or
/// [`ReloadOnSighup::service`]).
pub struct ReloadOnSighup {
    /// Taken by the service's one run.
    hup: Mutex<Option<Signal>>,
    targets: Vec<Arc<dyn Reload>>,
}

impl ReloadOnSighup {
    /// Takes SIGHUP over now (see the module doc) for `targets`, reloaded in this order.
    /// Fails only when the signal handler cannot be installed.
    pub fn new(targets: Vec<Arc<dyn Reload>>) -> std::io::Result<Self> {
        let hangup = || signal(SignalKind::hangup());
        // tokio registers a signal through a runtime; outside one (before pingora runs) a
        // throwaway one does. The handler stays installed for the process, and the stream is
        // woken by the runtime that polls it.
        let hup = match tokio::runtime::Handle::try_current() {
            Ok(_) => hangup()?,
            Err(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async { hangup() })?,
        };
        Ok(ReloadOnSighup { hup: Mutex::new(Some(hup)), targets })
    }

    /// As a pingora service, ready for `server.add_service`.
    pub fn service(self) -> pingora::services::background::GenBackgroundService<Self> {
        pingora::services::background::background_service("paysign reload", self)
    }

    fn reload_all(&self) {
        tracing::info!("SIGHUP: reloading");
        for t in &self.targets {
            t.reload();
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.hup.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut hup) = taken else { return };
        loop {
            tokio::select! {
                got = hup.recv() => match got {
                    Some(()) => self.reload_all(),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
