//! # paysign-inbox
//!
//! The durable notification inbox. A verified notification is **stored** (committed and
//! synced) before the platform gets its acknowledgement; a deliverer then hands it to its
//! internal target **at least once**, retrying on a [`Schedule`] that spans days, and moves it to
//! a dead-letter state only after that. Nothing acknowledged can be lost to a crash, a restart
//! or a target that is down longer than the platform's own retries.
//!
//! - [`Inbox`]: what the gateway needs of a store — [`Inbox::store`] (idempotent by the
//!   notification's stable id), [`Inbox::recognise`] (a re-send recognised before decryption),
//!   [`Inbox::claim`] / [`Inbox::delivered`] / [`Inbox::failed`] (leases with the attempt number
//!   as fencing token), and the operator's view ([`Inbox::depth`], [`Inbox::dead_letters`],
//!   [`Inbox::redeliver`], [`Inbox::purge_delivered`]).
//! - [`sqlite::SqliteInbox`]: the embedded default — one file, WAL, `synchronous=FULL`, one
//!   writer thread that commits whatever arrived together in one transaction (group commit).
//! - [`postgres::PgInbox`]: several replicas on one PostgreSQL database — work claimed with
//!   `FOR UPDATE SKIP LOCKED` and a lease, `LISTEN/NOTIFY` waking the deliverers.
//! - [`Cipher`]: payloads carry personal data, so they are stored sealed with AES-256-GCM (the
//!   id as associated data: a payload moved to another row does not open).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

mod cipher;
pub mod postgres;
mod schedule;
pub mod sqlite;

pub use cipher::{Cipher, KeyError};
pub use schedule::Schedule;

/// A verified notification, ready to be stored.
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// The stable id (the same for every re-send of the same notification).
    pub id: String,
    /// SHA-256 of the bytes the platform sent, so that an identical re-send is recognised before
    /// anything is decrypted ([`Inbox::recognise`]).
    pub raw_digest: [u8; 32],
    /// The notification route (its path), which names the internal target.
    pub route: String,
    pub customer_no: String,
    /// `orderNo`, when the notification has one: the dead-letter list names it, and with ordering
    /// on, notifications of one order are delivered in the order received.
    pub order_no: Option<String>,
    /// Whether this notification waits for earlier ones of the same order.
    pub ordered: bool,
    /// The verified plaintext handed to the target (stored sealed, see [`Cipher`]).
    pub body: Vec<u8>,
}

/// What [`Inbox::store`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new row, durable.
    New,
    /// The id was stored already (a platform retry): nothing new was written but the digest.
    Duplicate,
}

/// A notification leased to one deliverer until `lease_until`.
#[derive(Clone, Debug)]
pub struct Claim {
    pub id: String,
    /// The attempt this lease is for (1 for the first): the fencing token that
    /// [`Inbox::delivered`] and [`Inbox::failed`] must present.
    pub attempt: u32,
    pub route: String,
    pub customer_no: String,
    pub order_no: Option<String>,
    pub body: Vec<u8>,
    pub received_at: SystemTime,
}

/// How many notifications are in each state, and how old the oldest undelivered one is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: u64,
    pub leased: u64,
    pub delivered: u64,
    pub dead: u64,
    /// When the oldest notification not yet delivered (nor dead) was received.
    pub oldest_undelivered: Option<SystemTime>,
}

impl Depth {
    /// How long the oldest undelivered notification has waited at `now` (zero: none).
    pub fn oldest_age(&self, now: SystemTime) -> Duration {
        self.oldest_undelivered.and_then(|t| now.duration_since(t).ok()).unwrap_or_default()
    }
}

/// A dead-lettered notification, as an operator sees it: never the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub route: String,
    pub order_no: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub received_at: SystemTime,
}

/// Why the store could not do what was asked. Every one of them means "not stored" for
/// [`Inbox::store`]: the platform gets no acknowledgement and sends again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed (disk full, read-only, connection lost): retryable.
    #[error("the inbox is unavailable: {0}")]
    Unavailable(String),
    /// The inbox's writer has stopped (the process is shutting down).
    #[error("the inbox is closed")]
    Closed,
}

/// A durable store of notifications.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Stores a verified notification durably; `Ok` only once it cannot be lost.
    async fn store(&self, n: NewNotification) -> Result<Stored, StoreError>;
    /// The id of a stored notification the platform sent with exactly these bytes before.
    async fn recognise(&self, raw_digest: [u8; 32]) -> Result<Option<String>, StoreError>;
    /// Leases up to `limit` notifications that are due (or whose lease ran out) to `owner`.
    async fn claim(&self, owner: &str, lease: Duration, limit: usize) -> Result<Vec<Claim>, StoreError>;
    /// Records a delivery; `false` when the lease was lost (another attempt owns the row).
    async fn delivered(&self, id: &str, attempt: u32) -> Result<bool, StoreError>;
    /// Records a failed attempt: due again `retry_in` from now (the store's clock), or
    /// dead-lettered when `None`. `false` when the lease was lost.
    async fn failed(&self, id: &str, attempt: u32, error: &str, retry_in: Option<Duration>) -> Result<bool, StoreError>;
    async fn depth(&self) -> Result<Depth, StoreError>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Makes dead-lettered notifications due now: one (`Some(id)`) or all; returns how many.
    async fn redeliver(&self, id: Option<&str>) -> Result<u64, StoreError>;
    /// Deletes delivered notifications delivered before `before`; returns how many.
    async fn purge_delivered(&self, before: SystemTime) -> Result<u64, StoreError>;
    /// Deletes dead-lettered notifications: one (`Some(id)`) or all; returns how many.
    async fn purge_dead(&self, id: Option<&str>) -> Result<u64, StoreError>;
    /// Returns when a notification may have been stored (by this process, or — on a shared
    /// database — by another replica) since the last `wait` returned, or after `max` at the
    /// latest. A store while nobody waits is remembered: the next `wait` returns at once.
    async fn wait(&self, max: Duration);
}

/// This process's name in the leases it takes: `host:pid:random`.
pub fn owner_name() -> String {
    format!("{}:{}:{:08x}", host_name(), std::process::id(), rand::random::<u32>())
}

/// Whether the process that took a lease as `owner` ([`owner_name`]) may still be running: it
/// is on another host, or its pid is alive here. Only a lease whose owner is surely gone is
/// released early (SQLite, at open); any other waits for its `lease_until`.
pub fn owner_may_live(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_random, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) if host == host_name() => {
            pid != std::process::id() && std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => true,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// What a notification whose payload does not open becomes: a dead letter saying why (it never
/// blocks the others, nor its order).
pub(crate) const UNDECRYPTABLE: &str = "the stored payload does not open with the inbox key (another key, or tampered)";

/// Milliseconds since the epoch (the stores' time column).
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
