//! The reloadable part of a running gateway: configuration, keys, platform client, notification
//! routes. Each request takes the current [`Runtime`] once (an `Arc` clone) and keeps it to the
//! end, so a reload never changes keys under a request in flight; new requests get the new set.
//! A reload that fails (bad YAML, a missing or wrong key, a changed listener) changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::executor::PrivateKeyExecutor;
use crate::metrics::{Known, Metrics, ReloadResult};
use crate::notify::{InboxCell, NotifyState};
use crate::reload::Reloadable;
use crate::upstream::PlatformClient;

/// Everything a request needs, built once per (re)load.
pub struct Runtime {
    /// The configuration in force (settings fixed at start keep their running values).
    pub config: Config,
    /// Shared across reloads while the platform settings stay the same (warm connection pool).
    pub client: Arc<PlatformClient>,
    /// The one executor for private-key work (kept across reloads: one bound per process).
    pub executor: Arc<PrivateKeyExecutor>,
    /// Admission of proxied requests (`max_in_flight`, kept across reloads).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// The notification routes and target; `None` without a `notify` section.
    pub notify: Option<NotifyState>,
    /// Which load this is: 1 at start-up, one more for each reload (`paysign_config_generation`).
    pub generation: u64,
    /// Settings whose value in the file differs from the one in force, which only a restart
    /// (or an upgrade) applies; `config` holds the values in force.
    pub needs_restart: Vec<&'static str>,
    /// The instance's metrics (the same across reloads).
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    fn new(config: Config, generation: u64, previous: Option<&Runtime>, inbox: Option<&Arc<InboxCell>>, metrics: &Arc<Metrics>) -> Self {
        let client = match previous {
            Some(p) if p.config.upstream == config.upstream => p.client.clone(),
            _ => Arc::new(PlatformClient::new(&config.upstream, config.max_in_flight, metrics.upstream_connections_opened.clone())),
        };
        let (executor, admission) = match previous {
            Some(p) => (p.executor.clone(), p.admission.clone()),
            None => (
                Arc::new(PrivateKeyExecutor::new(
                    config.private_key_workers,
                    config.private_key_queue,
                    config.offload_private_key_ops,
                    metrics.executor(),
                )),
                Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
            ),
        };
        // The notification target's connection pool survives the reload, like the platform's.
        let notify = NotifyState::new(&config, executor.clone(), previous.and_then(|p| p.notify.as_ref()), inbox.cloned(), metrics);
        Runtime { config, client, executor, admission, notify, generation, needs_restart: Vec::new(), metrics: metrics.clone() }
    }
}

/// Where a reload takes the next configuration from.
pub enum ReloadSource {
    /// The configuration file, read again (the binary's `POST /-/reload` and SIGHUP).
    File(PathBuf),
    /// A configuration the embedder makes, e.g. with [`Config::builder`] from its own settings
    /// store; an error refuses the reload (the running configuration stays in force).
    Fn(Box<dyn Fn() -> Result<Config, ReloadError> + Send + Sync>),
}

impl ReloadSource {
    /// A closure that returns the next configuration.
    pub fn from_fn(f: impl Fn() -> Result<Config, ReloadError> + Send + Sync + 'static) -> Self {
        ReloadSource::Fn(Box::new(f))
    }

    /// The next configuration, with every problem named.
    fn next(&self) -> Result<Config, ReloadError> {
        match self {
            ReloadSource::File(path) => {
                let report = config::load_report(path, config::Mode::Run);
                match report.config {
                    Some(c) if report.errors.is_empty() => Ok(c),
                    _ => Err(ReloadError::Invalid(report.errors)),
                }
            }
            ReloadSource::Fn(f) => f(),
        }
    }

    /// What log lines name as the source.
    fn describe(&self) -> String {
        match self {
            ReloadSource::File(path) => path.display().to_string(),
            ReloadSource::Fn(_) => "the embedder's reload source".into(),
        }
    }
}

impl From<PathBuf> for ReloadSource {
    fn from(path: PathBuf) -> Self {
        ReloadSource::File(path)
    }
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadSource::File(path) => f.debug_tuple("File").field(path).finish(),
            ReloadSource::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

/// Why a reload was refused; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate (the setting and file are named).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Every problem of a file that does not validate, each naming its setting and file.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<config::ConfigError>),
    /// A [`ReloadSource::Fn`] refused for a reason of its own.
    #[error("{0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// A listener that only a restart (or an upgrade) can change.
    #[error("{0}")]
    NeedsRestart(ListenerChange),
}

/// A reload that would move a listener: the file, the setting, the address in force and the
/// one in the file.
#[derive(Debug)]
pub struct ListenerChange {
    /// The new configuration's file (for the builder: its `source`).
    pub config: PathBuf,
    /// The setting that changed: `listen`, `admin_listen` or `notify.listen`.
    pub setting: &'static str,
    /// The address in force (`(none)` for `notify.listen` without a `notify` section).
    pub running: String,
    /// The address in the new configuration (`(none)` likewise).
    pub file: String,
}

impl std::fmt::Display for ListenerChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: cannot change on reload ({} in force, {} in the file); restart (or upgrade) instead",
            self.config.display(),
            self.setting,
            self.running,
            self.file
        )
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation now in force.
    pub generation: u64,
    /// Changed in the file but not applied: they need a restart.
    pub needs_restart: Vec<&'static str>,
}

impl From<config::ConfigErrors> for ReloadError {
    fn from(e: config::ConfigErrors) -> Self {
        ReloadError::Invalid(e.0)
    }
}

/// One gateway instance's reloadable state: the [`Runtime`] in force, where the next
/// configuration comes from, and the instance's metrics.
pub struct Live {
    source: ReloadSource,
    /// One reload at a time: each reads the file after the previous one has been swapped in,
    /// so the last reload to answer `ok` is the configuration in force.
    state: Reloadable<Runtime>,
    /// This instance's metrics, handed to every part it builds.
    metrics: Arc<Metrics>,
    /// Notifications in flight and the refusal-line limiter of this instance's listener.
    pub(crate) notifications: NotifyCounters,
    /// The inbox of `notify.inbox` as configured at start (a reload cannot change it).
    pub(crate) inbox: Option<Arc<InboxCell>>,
}

impl Live {
    /// `config` in force, reloaded from `source` (a [`PathBuf`] for a file); `metrics`: this
    /// instance's, built into the embedder's registry ([`Metrics::new`]).
    pub fn new(source: impl Into<ReloadSource>, config: Config, metrics: Arc<Metrics>) -> Self {
        set_metrics(&metrics, &config);
        metrics.config_generation.set(1);
        let inbox = inbox_of(&config).map(|s| Arc::new(InboxCell::new(s)));
        let state = Reloadable::new(Runtime::new(config, 1, None, inbox.as_ref(), &metrics));
        Live { source: source.into(), state, metrics, notifications: Default::default(), inbox }
    }

    /// Opens the inbox of `notify.inbox` now, if there is one (start-up refuses a store it
    /// cannot open); otherwise it is opened at the first notification.
    pub fn open_inbox(&self) -> Result<(), paysign_inbox::StoreError> {
        self.inbox.as_ref().map_or(Ok(()), |c| c.open_now())
    }

    /// The inbox, when `notify.inbox` is configured (the admin's view).
    pub fn inbox(&self) -> Option<&Arc<InboxCell>> {
        self.inbox.as_ref()
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Notifications being handled or delivered from the inbox now (the drain after SIGTERM
    /// waits for them as for calls).
    pub fn notifications_in_flight(&self) -> i64 {
        self.notifications.in_flight() + self.notifications.deliveries_in_flight.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The runtime for one request.
    pub fn current(&self) -> Arc<Runtime> {
        self.state.current()
    }

    /// Takes the next configuration from the source (the file read again, or the embedder's
    /// closure) and swaps it in, or leaves everything as it was.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self
            .state
            .reload_and(
                |old| self.next(old),
                // Once it is in force, before the next reload: the metrics follow the swaps in order.
                |rt| {
                    set_metrics(&self.metrics, &rt.config);
                    self.metrics.config_generation.set(rt.generation as i64);
                },
            )
            .map(|rt| {
                for w in &rt.config.warnings {
                    tracing::warn!("configuration: {w}");
                }
                Reloaded { generation: rt.generation, needs_restart: rt.needs_restart.clone() }
            });
        match &result {
            Ok(Reloaded { generation, needs_restart }) if needs_restart.is_empty() => {
                self.metrics.reloaded(ReloadResult::Ok);
                tracing::info!("configuration reloaded from {}: generation {generation}", self.source.describe());
            }
            Ok(Reloaded { generation, needs_restart }) => {
                self.metrics.reloaded(ReloadResult::Ok);
                tracing::warn!(
                    "configuration reloaded from {}: generation {generation}; needs a restart: {} (the running values stay in force)",
                    self.source.describe(),
                    needs_restart.join(", ")
                );
            }
            Err(e) => {
                self.metrics.reloaded(ReloadResult::Failed);
                tracing::error!("configuration reload refused, the running configuration stays in force: {e}");
            }
        }
        result
    }

    /// The next runtime: the source's configuration, checked against what cannot change on
    /// reload. Settings fixed at start keep their running values, named as needing a restart.
    fn next(&self, old: &Arc<Runtime>) -> Result<Runtime, ReloadError> {
        let mut new = self.source.next()?;
        let o = &old.config;
        let listeners = [
            ("listen", o.listen.clone(), new.listen.clone()),
            ("admin_listen", o.admin_listen.clone(), new.admin_listen.clone()),
            ("notify.listen", listen_of(o), listen_of(&new)),
        ];
        if let Some((setting, running, file)) = listeners.into_iter().find(|(_, a, b)| a != b) {
            return Err(ReloadError::NeedsRestart(ListenerChange { config: new.source.clone(), setting, running, file }));
        }
        let mut needs_restart = Vec::new();
        // Each is read once at start (pingora's server, the listeners' limits, the executor
        // and admission kept across reloads).
        macro_rules! at_restart {
            ($($field:ident => $name:literal),* $(,)?) => {$(
                if new.$field != o.$field {
                    needs_restart.push($name);
                    new.$field = o.$field.clone();
                }
            )*};
        }
        at_restart!(
            threads => "threads",
            grace_period_seconds => "grace_period_seconds",
            upgrade_sock => "upgrade_sock",
            max_connections => "max_connections",
            header_timeout => "header_timeout_ms",
            max_header_bytes => "max_header_bytes",
            private_key_workers => "private_key_workers",
            private_key_queue => "private_key_queue",
            max_in_flight => "max_in_flight",
            offload_private_key_ops => "offload_private_key_ops",
        );
        // The inbox is opened once per process: its store, key and settings need a restart.
        if inbox_of(&new) != inbox_of(o) {
            needs_restart.push("notify.inbox");
            if let Some(n) = new.notify.as_mut() {
                n.inbox = inbox_of(o);
            }
        }
        let mut next = Runtime::new(new, old.generation + 1, Some(old), self.inbox.as_ref(), &self.metrics);
        next.needs_restart = needs_restart;
        Ok(next)
    }
}

fn inbox_of(c: &Config) -> Option<crate::config::InboxSettings> {
    c.notify.as_ref().and_then(|n| n.inbox.clone())
}

fn listen_of(c: &Config) -> String {
    c.notify.as_ref().map_or_else(|| "(none)".into(), |n| n.listen.clone())
}

/// The metrics that follow a (re)loaded configuration: `paysign_merchants_configured`, and
/// the zero-valued series of everything it names ([`Metrics::configured`]). Here, not in
/// `metrics`, which the configuration's own modules use (no import cycle).
fn set_metrics(metrics: &Metrics, config: &Config) {
    metrics.set_merchants(config.merchants.values().map(|m| &**m));
    // The compiled-in table cannot fail but on a build defect (its unit tests catch it).
    let table = crate::protocol::schema::Endpoints::builtin().ok();
    metrics.configured(&Known {
        endpoints: table.iter().flat_map(|t| t.iter().map(|e| e.name.as_str())).collect(),
        merchants: config.merchants.keys().map(String::as_str).collect(),
        routes: config.notify.iter().flat_map(|n| n.routes.iter().map(|r| r.path.as_str())).collect(),
        callers: config.callers.iter().map(|c| c.name.as_str()).collect(),
        notify: config.notify.is_some(),
    });
}

/// One instance's notification listener state that outlives reloads (used by
/// `notifications.rs`; here so that it imports `live`, not the other way round).
#[derive(Default)]
pub struct NotifyCounters {
    /// Notifications being handled (read, opened, forwarded, acknowledged): the drain after
    /// SIGTERM waits for them as for calls, since a forward cut midway may have reached the
    /// target.
    pub(crate) in_flight: std::sync::atomic::AtomicI64,
    /// Deliveries from the inbox in flight (the drain waits for them too).
    pub(crate) deliveries_in_flight: std::sync::atomic::AtomicI64,
    /// At most one refusal line a second.
    pub(crate) refusal_lines: OncePerSecond,
}

impl NotifyCounters {
    /// Notifications being handled now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Lets one event a second through and counts the rest.
#[derive(Default)]
pub(crate) struct OncePerSecond {
    /// The first refusal's time: seconds are counted from it.
    start: std::sync::OnceLock<std::time::Instant>,
    /// The second (since the first refusal) of the last line, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
    /// Refusals since the last line, the one being logged included.
    pending: std::sync::atomic::AtomicU64,
}

impl OncePerSecond {
    /// Counts one event; `Some(n)` when a line is due now (`n` events since the last one).
    pub(crate) fn take(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.pending.fetch_add(1, Ordering::AcqRel);
        let now = self.start.get_or_init(std::time::Instant::now).elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Acquire);
        if now > last && self.last.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The count this line reports; later events start the next count.
            return Some(self.pending.swap(0, Ordering::AcqRel).max(1));
        }
        None
    }
}
