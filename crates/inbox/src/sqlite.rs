//! The embedded inbox: one SQLite file (WAL, `synchronous=FULL`), one writer thread.
//!
//! Every operation is a command to that thread. It takes whatever commands have arrived
//! together (up to [`BATCH`]) and runs them in **one** transaction, so a burst of
//! notifications costs one commit (one `fsync` of the WAL) rather than one each — group
//! commit — and a store is answered only after that commit returned. A commit that fails
//! (disk full, read-only file system) answers every command of the batch with
//! [`StoreError::Unavailable`]; nothing of the batch is kept and nothing was acknowledged.
//!
//! One process owns the file: at open, leases of a previous process (killed while delivering)
//! are released, so its work is due again at once.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::{from_millis, millis, Cipher, Claim, DeadLetter, Depth, Inbox, NewNotification, StoreError, Stored};

/// The most commands one transaction takes.
const BATCH: usize = 256;
/// The most delivered notifications one purge deletes.
const PURGE_BATCH: i64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id          TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    customer_no TEXT NOT NULL,
    order_no    TEXT,
    order_key   TEXT,
    payload     BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'delivered', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    lease_until INTEGER,
    lease_owner TEXT,
    last_error  TEXT,
    done_at     INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE INDEX IF NOT EXISTS notifications_order ON notifications (order_key, received_at) WHERE order_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS notifications_done ON notifications (state, done_at);
CREATE TABLE IF NOT EXISTS digests (
    digest BLOB PRIMARY KEY,
    id     TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS digests_id ON digests (id);
PRAGMA user_version = 1;
";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Store(NewNotification, Reply<Stored>),
    Recognise([u8; 32], Reply<Option<String>>),
    Claim { owner: String, lease: Duration, limit: usize, reply: Reply<Vec<Claim>> },
    Delivered(String, u32, Reply<bool>),
    Failed { id: String, attempt: u32, error: String, retry_in: Option<Duration>, reply: Reply<bool> },
    Depth(Reply<Depth>),
    DeadLetters(usize, Reply<Vec<DeadLetter>>),
    Redeliver(Option<String>, Reply<u64>),
    PurgeDelivered(SystemTime, Reply<u64>),
    PurgeDead(Option<String>, Reply<u64>),
}

/// The embedded inbox (see the module documentation).
pub struct SqliteInbox {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
    stored: tokio::sync::Notify,
}

impl std::fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteInbox").field("path", &self.path).finish()
    }
}

impl SqliteInbox {
    /// Opens (creating if needed) the inbox file at `path`, releases the leases of a previous
    /// process and starts the writer thread.
    pub fn open(path: &Path, cipher: Cipher) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        // The leases of a process that is gone (killed while delivering) are due at once; those
        // of one still running (the old process of a graceful upgrade, finishing its attempts)
        // run out on their own.
        let owners: Vec<String> = conn
            .prepare("SELECT DISTINCT lease_owner FROM notifications WHERE state = 'leased' AND lease_owner IS NOT NULL")
            .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
            .map_err(unavailable)?;
        for owner in owners.iter().filter(|o| !crate::owner_may_live(o)) {
            conn.execute(
                "UPDATE notifications SET state = 'pending', lease_until = NULL, lease_owner = NULL WHERE state = 'leased' AND lease_owner = ?1",
                [owner],
            )
            .map_err(unavailable)?;
        }
        let (tx, rx) = mpsc::channel();
        let writer = Writer { conn, cipher };
        std::thread::Builder::new()
            .name("paysign inbox".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the inbox thread: {e}")))?;
        Ok(SqliteInbox { tx, path: path.to_path_buf(), stored: tokio::sync::Notify::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

struct Writer {
    conn: Connection,
    cipher: Cipher,
}

/// A command's reply, held until the batch's commit says whether it stands.
enum Answer {
    Store(Reply<Stored>, Result<Stored, StoreError>),
    Recognise(Reply<Option<String>>, Result<Option<String>, StoreError>),
    Claim(Reply<Vec<Claim>>, Result<Vec<Claim>, StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    Depth(Reply<Depth>, Result<Depth, StoreError>),
    Dead(Reply<Vec<DeadLetter>>, Result<Vec<DeadLetter>, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
}

impl Answer {
    /// Sends the answer, or `failed` in place of a success when the commit failed.
    fn send(self, failed: Option<&str>) {
        fn pick<T>(r: Result<T, StoreError>, failed: Option<&str>) -> Result<T, StoreError> {
            match failed {
                Some(e) => Err(StoreError::Unavailable(e.to_string())),
                None => r,
            }
        }
        // A caller that stopped waiting is no error of the store's.
        match self {
            Answer::Store(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Recognise(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Claim(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Bool(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Depth(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Dead(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Count(tx, r) => drop(tx.send(pick(r, failed))),
        }
    }
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&mut self, batch: Vec<Command>) {
        let tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = e.to_string();
                for c in batch {
                    answer_unavailable(c, &e);
                }
                return;
            }
        };
        let now = SystemTime::now();
        let answers: Vec<Answer> = batch.into_iter().map(|c| execute(&tx, &self.cipher, c, now)).collect();
        match tx.commit() {
            Ok(()) => answers.into_iter().for_each(|a| a.send(None)),
            Err(e) => {
                let e = e.to_string();
                tracing::error!("inbox commit failed: {e}");
                answers.into_iter().for_each(|a| a.send(Some(&e)));
            }
        }
    }
}

fn answer_unavailable(c: Command, e: &str) {
    fn err<T>(e: &str) -> Result<T, StoreError> {
        Err(StoreError::Unavailable(e.to_string()))
    }
    match c {
        Command::Store(_, r) => drop(r.send(err(e))),
        Command::Recognise(_, r) => drop(r.send(err(e))),
        Command::Claim { reply, .. } => drop(reply.send(err(e))),
        Command::Delivered(_, _, r) => drop(r.send(err(e))),
        Command::Failed { reply, .. } => drop(reply.send(err(e))),
        Command::Depth(r) => drop(r.send(err(e))),
        Command::DeadLetters(_, r) => drop(r.send(err(e))),
        Command::Redeliver(_, r) | Command::PurgeDelivered(_, r) | Command::PurgeDead(_, r) => drop(r.send(err(e))),
    }
}

fn execute(db: &Connection, cipher: &Cipher, c: Command, now: SystemTime) -> Answer {
    let u = |r: rusqlite::Result<usize>| r.map(|n| n as u64).map_err(unavailable);
    match c {
        Command::Store(n, r) => Answer::Store(r, store(db, cipher, &n, now)),
        Command::Recognise(d, r) => Answer::Recognise(
            r,
            db.query_row("SELECT id FROM digests WHERE digest = ?1", [&d[..]], |row| row.get(0)).optional().map_err(unavailable),
        ),
        Command::Claim { owner, lease, limit, reply } => Answer::Claim(reply, claim(db, cipher, &owner, lease, limit, now)),
        Command::Delivered(id, attempt, r) => Answer::Bool(
            r,
            u(db.execute(
                "UPDATE notifications SET state = 'delivered', done_at = ?3, lease_until = NULL, lease_owner = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'leased'",
                params![id, attempt, millis(now)],
            ))
            .map(|n| n == 1),
        ),
        Command::Failed { id, attempt, error, retry_in, reply } => {
            Answer::Bool(reply, u(failed(db, &id, attempt, &error, retry_in, now)).map(|n| n == 1))
        }
        Command::Depth(r) => Answer::Depth(r, depth(db)),
        Command::DeadLetters(limit, r) => Answer::Dead(r, dead_letters(db, limit)),
        Command::Redeliver(id, r) => Answer::Count(
            r,
            u(db.execute(
                "UPDATE notifications SET state = 'pending', next_at = ?2, done_at = NULL
                 WHERE state = 'dead' AND (?1 IS NULL OR id = ?1)",
                params![id, millis(now)],
            )),
        ),
        // In batches: a first purge of a long retention never holds the writer for long.
        Command::PurgeDelivered(before, r) => Answer::Count(
            r,
            u(db.execute(
                "DELETE FROM notifications WHERE rowid IN
                     (SELECT rowid FROM notifications WHERE state = 'delivered' AND done_at < ?1 LIMIT ?2)",
                params![millis(before), PURGE_BATCH],
            )),
        ),
        Command::PurgeDead(id, r) => {
            Answer::Count(r, u(db.execute("DELETE FROM notifications WHERE state = 'dead' AND (?1 IS NULL OR id = ?1)", params![id])))
        }
    }
}

/// A failed attempt recorded under its lease: due again `retry_in` from `now`, or dead.
fn failed(db: &Connection, id: &str, attempt: u32, error: &str, retry_in: Option<Duration>, now: SystemTime) -> rusqlite::Result<usize> {
    db.execute(
        "UPDATE notifications SET state = CASE WHEN ?3 IS NULL THEN 'dead' ELSE 'pending' END,
             next_at = COALESCE(?3, next_at), done_at = CASE WHEN ?3 IS NULL THEN ?5 END,
             last_error = ?4, lease_until = NULL, lease_owner = NULL
         WHERE id = ?1 AND attempts = ?2 AND state = 'leased'",
        params![id, attempt, retry_in.map(|d| millis(now + d)), error, millis(now)],
    )
}

fn store(db: &Connection, cipher: &Cipher, n: &NewNotification, now: SystemTime) -> Result<Stored, StoreError> {
    let payload = cipher.seal(&n.id, &n.body);
    if payload.is_empty() {
        return Err(StoreError::Unavailable("the payload could not be sealed (system random source)".into()));
    }
    let order_key = n.ordered.then(|| n.order_no.as_ref().map(|o| format!("{}\n{}", n.customer_no, o))).flatten();
    let inserted = db
        .execute(
            "INSERT INTO notifications (id, route, customer_no, order_no, order_key, payload, received_at, state, next_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7) ON CONFLICT (id) DO NOTHING",
            params![n.id, n.route, n.customer_no, n.order_no, order_key, payload, millis(now)],
        )
        .map_err(unavailable)?;
    db.execute("INSERT INTO digests (digest, id) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING", params![&n.raw_digest[..], n.id])
        .map_err(unavailable)?;
    Ok(if inserted == 1 { Stored::New } else { Stored::Duplicate })
}

fn claim(db: &Connection, cipher: &Cipher, owner: &str, lease: Duration, limit: usize, now: SystemTime) -> Result<Vec<Claim>, StoreError> {
    let now_ms = millis(now);
    // Due, and (for an ordered notification) no earlier one of its order still undelivered.
    let mut select = db
        .prepare_cached(
            "SELECT id FROM notifications n
             WHERE ((state = 'pending' AND next_at <= ?1) OR (state = 'leased' AND lease_until <= ?1))
               AND (order_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM notifications p
                    WHERE p.order_key = n.order_key AND p.state IN ('pending', 'leased')
                      AND (p.received_at < n.received_at OR (p.received_at = n.received_at AND p.rowid < n.rowid))))
             ORDER BY next_at LIMIT ?2",
        )
        .map_err(unavailable)?;
    let ids: Vec<String> = select
        .query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    let until = millis(now + lease);
    let mut claims = Vec::with_capacity(ids.len());
    for id in ids {
        let row = db
            .query_row(
                "UPDATE notifications SET state = 'leased', attempts = attempts + 1, lease_until = ?2, lease_owner = ?3
                 WHERE id = ?1 RETURNING attempts, route, customer_no, order_no, payload, received_at",
                params![id, until, owner],
                |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .map_err(unavailable)?;
        let (attempt, route, customer_no, order_no, payload, received) = row;
        let Some(body) = cipher.open(&id, &payload) else {
            tracing::error!(notification_id = %id, "inbox: {}: dead-lettered", crate::UNDECRYPTABLE);
            failed(db, &id, attempt, crate::UNDECRYPTABLE, None, now).map_err(unavailable)?;
            continue;
        };
        claims.push(Claim { id, attempt, route, customer_no, order_no, body, received_at: from_millis(received) });
    }
    Ok(claims)
}

fn depth(db: &Connection) -> Result<Depth, StoreError> {
    let mut d = Depth::default();
    let mut q = db.prepare_cached("SELECT state, count(*) FROM notifications GROUP BY state").map_err(unavailable)?;
    let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))).map_err(unavailable)?;
    for row in rows {
        let (state, n) = row.map_err(unavailable)?;
        match state.as_str() {
            "pending" => d.pending = n,
            "leased" => d.leased = n,
            "delivered" => d.delivered = n,
            "dead" => d.dead = n,
            _ => {} // ok: the CHECK constraint admits no other state
        }
    }
    d.oldest_undelivered = db
        .query_row("SELECT min(received_at) FROM notifications WHERE state IN ('pending', 'leased')", [], |r| r.get::<_, Option<i64>>(0))
        .map_err(unavailable)?
        .map(from_millis);
    Ok(d)
}

fn dead_letters(db: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut q = db
        .prepare_cached(
            "SELECT id, route, order_no, attempts, last_error, received_at FROM notifications
             WHERE state = 'dead' ORDER BY received_at LIMIT ?1",
        )
        .map_err(unavailable)?;
    let rows = q
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                route: r.get(1)?,
                order_no: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                received_at: from_millis(r.get(5)?),
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

#[async_trait]
impl Inbox for SqliteInbox {
    async fn store(&self, n: NewNotification) -> Result<Stored, StoreError> {
        let stored = self.ask(|r| Command::Store(n, r)).await?;
        if stored == Stored::New {
            self.stored.notify_one();
        }
        Ok(stored)
    }
    async fn recognise(&self, raw_digest: [u8; 32]) -> Result<Option<String>, StoreError> {
        self.ask(|r| Command::Recognise(raw_digest, r)).await
    }
    async fn claim(&self, owner: &str, lease: Duration, limit: usize) -> Result<Vec<Claim>, StoreError> {
        self.ask(|reply| Command::Claim { owner: owner.to_string(), lease, limit, reply }).await
    }
    async fn delivered(&self, id: &str, attempt: u32) -> Result<bool, StoreError> {
        self.ask(|r| Command::Delivered(id.to_string(), attempt, r)).await
    }
    async fn failed(&self, id: &str, attempt: u32, error: &str, retry_in: Option<Duration>) -> Result<bool, StoreError> {
        self.ask(|reply| Command::Failed { id: id.to_string(), attempt, error: error.to_string(), retry_in, reply }).await
    }
    async fn depth(&self) -> Result<Depth, StoreError> {
        self.ask(Command::Depth).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.ask(|r| Command::DeadLetters(limit, r)).await
    }
    async fn redeliver(&self, id: Option<&str>) -> Result<u64, StoreError> {
        self.ask(|r| Command::Redeliver(id.map(str::to_string), r)).await
    }
    async fn purge_delivered(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.ask(|r| Command::PurgeDelivered(before, r)).await
    }
    async fn purge_dead(&self, id: Option<&str>) -> Result<u64, StoreError> {
        self.ask(|r| Command::PurgeDead(id.map(str::to_string), r)).await
    }
    async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.stored.notified()).await;
    }
}
