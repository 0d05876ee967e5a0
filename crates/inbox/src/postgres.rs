//! The shared inbox: several paysign replicas on one PostgreSQL database.
//!
//! - Work is claimed with `FOR UPDATE SKIP LOCKED`: two replicas never lease the same row, and
//!   neither waits for the other's locks. A lease ends at `lease_until` (the database's clock,
//!   the same for every replica); each lease increments `attempts`, and a result is recorded
//!   only with the attempt number of the lease (`WHERE attempts = $n AND state = 'leased'`), so a
//!   replica that lost its lease (paused, partitioned, killed) cannot record anything.
//! - A stored notification `NOTIFY`s `paysign_inbox` in its own transaction (sent at commit);
//!   every replica `LISTEN`s, so deliverers wake at once rather than at their next poll.
//! - The schema is created and migrated by paysign ([`PgInbox::migrate`], at start-up and by
//!   `paysign migrate`), under an advisory lock so replicas starting together do it once.
//! - A lost connection (database restarted, network) is opened again on the next operation;
//!   until then every operation is [`StoreError::Unavailable`] and no notification is
//!   acknowledged.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::Mutex;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::{Cipher, Claim, DeadLetter, Depth, Inbox, NewNotification, StoreError, Stored};

/// The schema version this code writes; [`PgInbox::migrate`] brings older ones up to it.
pub const SCHEMA_VERSION: i32 = 2;

/// The longest one database operation may take before it is given up (and the connection with it).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with a bounded connect and TCP keepalives (a dead peer is noticed in about a minute).
async fn connect(
    url: &str,
) -> Result<(Client, tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>), StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
    config.connect_timeout(Duration::from_secs(5)).keepalives(true).keepalives_idle(Duration::from_secs(30));
    config.connect(NoTls).await.map_err(unavailable)
}

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE paysign_notifications (
    seq         BIGSERIAL UNIQUE,
    id          TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    customer_no TEXT NOT NULL,
    order_no    TEXT,
    order_key   TEXT,
    payload     BYTEA NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    state       TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'delivered', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ,
    lease_owner TEXT,
    last_error  TEXT,
    done_at     TIMESTAMPTZ
);
CREATE INDEX paysign_notifications_due ON paysign_notifications (state, next_at);
CREATE INDEX paysign_notifications_order ON paysign_notifications (order_key, received_at, seq) WHERE order_key IS NOT NULL;
CREATE TABLE paysign_digests (
    digest BYTEA PRIMARY KEY,
    id     TEXT NOT NULL
);
CREATE INDEX paysign_digests_id ON paysign_digests (id);
",
    "
CREATE INDEX paysign_notifications_done ON paysign_notifications (state, done_at);
",
];

/// The shared inbox (see the module documentation).
pub struct PgInbox {
    url: String,
    /// The runtime the connections' tasks run on (the one `connect` ran on, for good).
    runtime: tokio::runtime::Handle,
    cipher: Cipher,
    client: Mutex<Option<Client>>,
    woken: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never shown.
        f.write_str("PgInbox")
    }
}

/// The error and its cause ("error connecting to server: Connection refused"); never the URL.
fn unavailable(e: tokio_postgres::Error) -> StoreError {
    match std::error::Error::source(&e) {
        Some(cause) => StoreError::Unavailable(format!("{e}: {cause}")),
        None => StoreError::Unavailable(e.to_string()),
    }
}

impl PgInbox {
    /// Connects to `url` (a libpq connection string or `postgresql://` URL), migrates the schema
    /// and starts listening for other replicas' notifications.
    pub async fn connect(url: &str, cipher: Cipher) -> Result<Self, StoreError> {
        let inbox = PgInbox {
            url: url.to_string(),
            runtime: tokio::runtime::Handle::current(),
            cipher,
            client: Mutex::new(None),
            woken: std::sync::Arc::new(tokio::sync::Notify::new()),
        };
        inbox.migrate().await?;
        inbox.listen().await?;
        Ok(inbox)
    }

    /// Creates or upgrades the schema to [`SCHEMA_VERSION`]; safe to run by several replicas at
    /// once and again on every start. Returns the version found before.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut guard = self.client().await?;
        let Some(client) = guard.as_mut() else { return Err(StoreError::Closed) };
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(7254696); CREATE TABLE IF NOT EXISTS paysign_schema (version INTEGER NOT NULL);")
            .await
            .map_err(unavailable)?;
        let found: i32 = tx.query_opt("SELECT version FROM paysign_schema", &[]).await.map_err(unavailable)?.map_or(0, |r| r.get(0));
        if found > SCHEMA_VERSION {
            // A newer paysign migrated it: this one must not write its older version over it.
            return Err(StoreError::Unavailable(format!(
                "the inbox schema is at version {found}, newer than this paysign's {SCHEMA_VERSION}: run the newer paysign"
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
            tx.batch_execute(m).await.map_err(unavailable)?;
            tracing::info!("inbox schema migrated to version {}", i + 1);
        }
        tx.execute("DELETE FROM paysign_schema", &[]).await.map_err(unavailable)?;
        tx.execute("INSERT INTO paysign_schema (version) VALUES ($1)", &[&SCHEMA_VERSION]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(found)
    }

    /// A dedicated connection that `LISTEN`s; it wakes [`Inbox::wait`], and is opened again
    /// (once a second) when lost — the deliverers poll meanwhile.
    async fn listen(&self) -> Result<(), StoreError> {
        let (woken, url) = (self.woken.clone(), self.url.clone());
        let first = connect(&url).await?;
        // Answered once the first LISTEN is in force: nothing stored after `connect` returns is
        // missed.
        let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
        let mut listening_tx = Some(listening_tx);
        tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                if let Some((client, mut connection)) = next.take() {
                    let woken_by_db = woken.clone();
                    let messages = async move {
                        let mut stream = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
                        while let Some(Ok(m)) = stream.next().await {
                            if let AsyncMessage::Notification(_) = m {
                                woken_by_db.notify_one();
                            }
                        }
                    };
                    // The client lives as long as the LISTEN should: dropping it closes the
                    // connection.
                    let first_listen = listening_tx.take();
                    let listening = async {
                        match client.batch_execute("LISTEN paysign_inbox").await {
                            Ok(()) => {
                                // Woken once: whatever was stored while not listening is due.
                                woken.notify_one();
                                if let Some(tx) = first_listen {
                                    let _ = tx.send(Ok(()));
                                }
                            }
                            Err(e) => {
                                tracing::warn!("inbox LISTEN failed: {e}");
                                if let Some(tx) = first_listen {
                                    let _ = tx.send(Err(unavailable(e)));
                                }
                            }
                        }
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        () = messages => {}
                        () = listening => {}
                    }
                    woken.notify_one();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                next = connect(&url).await.ok();
            }
        });
        listening_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The operations' connection, opened again when it was lost.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = connect(&self.url).await?;
            self.runtime.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("inbox database connection lost: {e}");
                }
            });
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// One operation, bounded by [`OPERATION_TIMEOUT`]: a database that stops answering (a
    /// failover, a partition) costs a notification 10 s and a 503, not the kernel's TCP
    /// timeout; the connection is dropped and opened again by the next operation.
    async fn with<T>(&self, f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        let no_answer = || StoreError::Unavailable(format!("the database did not answer within {OPERATION_TIMEOUT:?}"));
        let mut guard = tokio::time::timeout(OPERATION_TIMEOUT, self.client()).await.map_err(|_| no_answer())??;
        let Some(client) = guard.as_ref() else { return Err(StoreError::Closed) };
        let done = tokio::time::timeout(OPERATION_TIMEOUT, f(client)).await;
        match done {
            Ok(r) => r.map_err(unavailable),
            Err(_) => {
                *guard = None;
                Err(no_answer())
            }
        }
    }
}

#[async_trait]
impl Inbox for PgInbox {
    async fn store(&self, n: NewNotification) -> Result<Stored, StoreError> {
        let payload = self.cipher.seal(&n.id, &n.body);
        if payload.is_empty() {
            return Err(StoreError::Unavailable("the payload could not be sealed (system random source)".into()));
        }
        let order_key = n.ordered.then(|| n.order_no.as_ref().map(|o| format!("{}\n{}", n.customer_no, o))).flatten();
        let digest = n.raw_digest.to_vec();
        let inserted = self
            .with(async |c| {
                // One statement, one transaction: the row, its digest and the wake-up commit together.
                c.query_one(
                    "WITH n AS (
                         INSERT INTO paysign_notifications (id, route, customer_no, order_no, order_key, payload, state)
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (id) DO NOTHING RETURNING id),
                     d AS (INSERT INTO paysign_digests (digest, id) VALUES ($7, $1) ON CONFLICT (digest) DO NOTHING),
                     w AS (SELECT pg_notify('paysign_inbox', '') FROM n)
                     SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM w)",
                    &[&n.id, &n.route, &n.customer_no, &n.order_no, &order_key, &payload, &digest],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
            })
            .await?;
        Ok(if inserted == 1 { Stored::New } else { Stored::Duplicate })
    }

    async fn recognise(&self, raw_digest: [u8; 32]) -> Result<Option<String>, StoreError> {
        let digest = raw_digest.to_vec();
        self.with(async |c| c.query_opt("SELECT id FROM paysign_digests WHERE digest = $1", &[&digest]).await)
            .await
            .map(|r| r.map(|r| r.get(0)))
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: usize) -> Result<Vec<Claim>, StoreError> {
        let lease_secs = lease.as_secs_f64();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .with(async |c| {
                c.query(
                    "UPDATE paysign_notifications n
                     SET state = 'leased', attempts = n.attempts + 1,
                         lease_until = now() + $2::float8 * interval '1 second', lease_owner = $3
                     WHERE n.id IN (
                         SELECT c.id FROM paysign_notifications c
                         WHERE ((c.state = 'pending' AND c.next_at <= now()) OR (c.state = 'leased' AND c.lease_until <= now()))
                           AND (c.order_key IS NULL OR NOT EXISTS (
                                SELECT 1 FROM paysign_notifications p
                                WHERE p.order_key = c.order_key AND p.state IN ('pending', 'leased')
                                  AND (p.received_at, p.seq) < (c.received_at, c.seq)))
                         ORDER BY c.next_at LIMIT $1
                         FOR UPDATE SKIP LOCKED)
                     RETURNING n.id, n.attempts, n.route, n.customer_no, n.order_no, n.payload, n.received_at",
                    &[&limit, &lease_secs, &owner],
                )
                .await
            })
            .await?;
        let mut claims = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let payload: Vec<u8> = r.get(5);
            let attempt: i32 = r.get(1);
            let Some(body) = self.cipher.open(&id, &payload) else {
                // Never blocks the others, nor its order: a dead letter saying why (fenced by
                // the attempt, as a result is).
                tracing::error!(notification_id = %id, "inbox: {}: dead-lettered", crate::UNDECRYPTABLE);
                self.failed(&id, u32::try_from(attempt).unwrap_or(0), crate::UNDECRYPTABLE, None).await?;
                continue;
            };
            claims.push(Claim {
                attempt: u32::try_from(attempt).unwrap_or(0),
                route: r.get(2),
                customer_no: r.get(3),
                order_no: r.get(4),
                body,
                received_at: r.get(6),
                id,
            });
        }
        Ok(claims)
    }

    async fn delivered(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        self.with(async |c| {
            c.execute(
                "UPDATE paysign_notifications SET state = 'delivered', done_at = now(), lease_until = NULL, lease_owner = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'leased'",
                &[&id, &attempt],
            )
            .await
        })
        .await
        .map(|n| n == 1)
    }

    async fn failed(&self, id: &str, attempt: u32, error: &str, retry_in: Option<Duration>) -> Result<bool, StoreError> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        // Due on the database's clock, the same for every replica.
        let retry_secs = retry_in.map(|d| d.as_secs_f64());
        self.with(async |c| {
            c.execute(
                "UPDATE paysign_notifications SET state = CASE WHEN $3::float8 IS NULL THEN 'dead' ELSE 'pending' END,
                     next_at = COALESCE(now() + $3::float8 * interval '1 second', next_at),
                     done_at = CASE WHEN $3::float8 IS NULL THEN now() END,
                     last_error = $4, lease_until = NULL, lease_owner = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'leased'",
                &[&id, &attempt, &retry_secs, &error],
            )
            .await
        })
        .await
        .map(|n| n == 1)
    }

    async fn depth(&self) -> Result<Depth, StoreError> {
        let (rows, oldest) = self
            .with(async |c| {
                let rows = c.query("SELECT state, count(*) FROM paysign_notifications GROUP BY state", &[]).await?;
                let oldest =
                    c.query_one("SELECT min(received_at) FROM paysign_notifications WHERE state IN ('pending', 'leased')", &[]).await?;
                Ok((rows, oldest.get::<_, Option<SystemTime>>(0)))
            })
            .await?;
        let mut d = Depth { oldest_undelivered: oldest, ..Depth::default() };
        for r in rows {
            let n = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
            match r.get::<_, &str>(0) {
                "pending" => d.pending = n,
                "leased" => d.leased = n,
                "delivered" => d.delivered = n,
                "dead" => d.dead = n,
                _ => {} // ok: the CHECK constraint admits no other state
            }
        }
        Ok(d)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .with(async |c| {
                c.query(
                    "SELECT id, route, order_no, attempts, last_error, received_at FROM paysign_notifications
                     WHERE state = 'dead' ORDER BY received_at, seq LIMIT $1",
                    &[&limit],
                )
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                route: r.get(1),
                order_no: r.get(2),
                attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                last_error: r.get(4),
                received_at: r.get(5),
            })
            .collect())
    }

    async fn redeliver(&self, id: Option<&str>) -> Result<u64, StoreError> {
        self.with(async |c| {
            c.execute(
                "WITH r AS (UPDATE paysign_notifications SET state = 'pending', next_at = now(), done_at = NULL
                            WHERE state = 'dead' AND ($1::text IS NULL OR id = $1) RETURNING id),
                      w AS (SELECT pg_notify('paysign_inbox', '') WHERE EXISTS (SELECT 1 FROM r))
                 SELECT 1 FROM r, (SELECT count(*) FROM w) AS n",
                &[&id],
            )
            .await
        })
        .await
    }

    async fn purge_delivered(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.with(async |c| {
            c.execute(
                "WITH gone AS (DELETE FROM paysign_notifications WHERE id IN
                         (SELECT id FROM paysign_notifications WHERE state = 'delivered' AND done_at < $1 LIMIT 5000) RETURNING id),
                      d AS (DELETE FROM paysign_digests WHERE id IN (SELECT id FROM gone))
                 SELECT 1 FROM gone",
                &[&before],
            )
            .await
        })
        .await
    }

    async fn purge_dead(&self, id: Option<&str>) -> Result<u64, StoreError> {
        self.with(async |c| {
            c.execute(
                "WITH gone AS (DELETE FROM paysign_notifications WHERE state = 'dead' AND ($1::text IS NULL OR id = $1) RETURNING id),
                      d AS (DELETE FROM paysign_digests WHERE id IN (SELECT id FROM gone))
                 SELECT 1 FROM gone",
                &[&id],
            )
            .await
        })
        .await
    }

    async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.woken.notified()).await;
    }
}
