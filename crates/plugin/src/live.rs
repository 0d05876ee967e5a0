//! The reloadable part of a running gateway: configuration, keys, platform client, notification
//! routes. Each request takes the current [`Runtime`] once (an `Arc` clone) and keeps it to the
//! end, so a reload never changes keys under a request in flight; new requests get the new set.
//! A reload that fails (bad YAML, a missing or wrong key, a changed listener) changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::executor::PrivateKeyExecutor;
use crate::metrics;
use crate::notify::NotifyState;
use crate::reload::Reloadable;
use crate::upstream::PlatformClient;

/// Everything a request needs, built once per (re)load.
pub struct Runtime {
    pub config: Config,
    /// Shared across reloads while the platform settings stay the same (warm connection pool).
    pub client: Arc<PlatformClient>,
    /// The one executor for private-key work (kept across reloads: one bound per process).
    pub executor: Arc<PrivateKeyExecutor>,
    /// Admission of proxied requests (`max_in_flight`, kept across reloads).
    pub admission: Arc<tokio::sync::Semaphore>,
    pub notify: Option<NotifyState>,
    pub generation: u64,
}

impl Runtime {
    fn new(config: Config, generation: u64, previous: Option<&Runtime>) -> Self {
        let client = match previous {
            Some(p) if p.config.upstream == config.upstream => p.client.clone(),
            _ => Arc::new(PlatformClient::new(&config.upstream, config.max_in_flight)),
        };
        let (executor, admission) = match previous {
            Some(p) => (p.executor.clone(), p.admission.clone()),
            None => (
                Arc::new(PrivateKeyExecutor::new(config.private_key_workers, config.private_key_queue, config.offload_private_key_ops)),
                Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
            ),
        };
        let notify = NotifyState::new(&config);
        Runtime { config, client, executor, admission, notify, generation }
    }
}

/// Why a reload was refused; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate (the setting and file are named).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Settings that only a restart (or an upgrade) can change.
    #[error("{0} cannot change on reload; restart (or upgrade) instead")]
    NeedsRestart(&'static str),
}

pub struct Live {
    path: PathBuf,
    /// One reload at a time: each reads the file after the previous one has been swapped in,
    /// so the last reload to answer `ok` is the configuration in force.
    state: Reloadable<Runtime>,
}

impl Live {
    pub fn new(path: PathBuf, config: Config) -> Self {
        metrics::set_config(&config);
        metrics::CONFIG_GENERATION.set(1);
        Live { path, state: Reloadable::new(Runtime::new(config, 1, None)) }
    }

    /// The runtime for one request.
    pub fn current(&self) -> Arc<Runtime> {
        self.state.current()
    }

    /// Loads the configuration file again and swaps it in, or leaves everything as it was.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let result = self
            .state
            .reload_and(
                |old| self.next(old),
                // Once it is in force, before the next reload: the metrics follow the swaps in order.
                |rt| {
                    metrics::set_config(&rt.config);
                    metrics::CONFIG_GENERATION.set(rt.generation as i64);
                },
            )
            .map(|rt| rt.generation);
        match &result {
            Ok(generation) => {
                metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                tracing::info!("configuration reloaded from {}: generation {generation}", self.path.display());
            }
            Err(e) => {
                metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                tracing::error!("configuration reload refused, the running configuration stays in force: {e}");
            }
        }
        result
    }

    /// The next runtime: the file read again, checked against what cannot change on reload.
    fn next(&self, old: &Arc<Runtime>) -> Result<Runtime, ReloadError> {
        let new = config::load(&self.path)?;
        let o = &old.config;
        let listeners = |c: &Config| (c.listen.clone(), c.admin_listen.clone(), c.notify.as_ref().map(|n| n.listen.clone()));
        if listeners(o) != listeners(&new) {
            return Err(ReloadError::NeedsRestart("listen, admin_listen and notify.listen"));
        }
        if o.threads != new.threads || o.grace_period_seconds != new.grace_period_seconds {
            tracing::warn!("threads and grace_period_seconds take effect at the next restart");
        }
        if (o.private_key_workers, o.private_key_queue, o.max_in_flight, o.offload_private_key_ops)
            != (new.private_key_workers, new.private_key_queue, new.max_in_flight, new.offload_private_key_ops)
        {
            tracing::warn!(
                "private_key_workers, private_key_queue, max_in_flight and offload_private_key_ops take effect at the next restart"
            );
        }
        Ok(Runtime::new(new, old.generation + 1, Some(old)))
    }
}
