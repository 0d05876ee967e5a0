//! The durable inbox as the notification flow uses it: [`InboxCell`] opens the configured store
//! once per process (SQLite in-process; PostgreSQL with its connections on a thread of their
//! own) and keeps it across reloads; a store that cannot be opened is tried again at the next
//! notification, which meanwhile gets a 503 (never an acknowledgement).

use std::sync::{Arc, OnceLock};

use paysign_inbox::postgres::PgInbox;
use paysign_inbox::sqlite::SqliteInbox;
use paysign_inbox::{Cipher, Inbox, StoreError};

use crate::config::{InboxSettings, InboxStore};

/// The inbox of one `Paysign` instance, opened on first use (or at start, [`InboxCell::open_now`]).
pub struct InboxCell {
    settings: InboxSettings,
    opened: tokio::sync::OnceCell<Arc<dyn Inbox>>,
    /// The runtime PostgreSQL's connections live on (a thread of its own, for the process's life).
    pg_runtime: OnceLock<tokio::runtime::Handle>,
}

impl std::fmt::Debug for InboxCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxCell").field("store", &self.settings.store).field("open", &self.opened.initialized()).finish()
    }
}

impl InboxCell {
    /// The inbox of `settings`, not opened yet.
    pub fn new(settings: InboxSettings) -> Self {
        InboxCell { settings, opened: tokio::sync::OnceCell::new(), pg_runtime: OnceLock::new() }
    }

    /// The settings it was opened with (a reload cannot change them: they need a restart).
    pub fn settings(&self) -> &InboxSettings {
        &self.settings
    }

    /// The store, opening it if it is not open yet.
    pub async fn get(&self) -> Result<Arc<dyn Inbox>, StoreError> {
        self.opened
            .get_or_try_init(|| async {
                let inbox: Arc<dyn Inbox> = match &self.settings.store {
                    InboxStore::Sqlite(path) => Arc::new(open_sqlite(path, self.cipher()?)?),
                    InboxStore::Postgres(url) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        self.connect_pg(url, move |r| drop(tx.send(r)))?;
                        Arc::new(rx.await.map_err(|_| StoreError::Closed)??)
                    }
                };
                self.announce();
                Ok(inbox)
            })
            .await
            .cloned()
    }

    /// Opens the store now, blocking this thread (which may be inside an async runtime: no
    /// `block_on`): start-up refuses a store it cannot open (a wrong path, an unreachable
    /// database), naming it.
    pub fn open_now(&self) -> Result<(), StoreError> {
        if self.opened.initialized() {
            return Ok(());
        }
        let inbox: Arc<dyn Inbox> = match &self.settings.store {
            InboxStore::Sqlite(path) => Arc::new(open_sqlite(path, self.cipher()?)?),
            InboxStore::Postgres(url) => {
                let (tx, rx) = std::sync::mpsc::channel();
                self.connect_pg(url, move |r| drop(tx.send(r)))?;
                Arc::new(rx.recv().map_err(|_| StoreError::Closed)??)
            }
        };
        if self.opened.set(inbox).is_ok() {
            self.announce();
        }
        Ok(())
    }

    /// Connects to PostgreSQL on the inbox's own runtime (its connections' tasks live there for
    /// good) and hands the result to `done`.
    fn connect_pg(&self, url: &str, done: impl FnOnce(Result<PgInbox, StoreError>) + Send + 'static) -> Result<(), StoreError> {
        let (url, cipher) = (url.to_string(), self.cipher()?);
        self.pg_runtime()?.spawn(async move { done(PgInbox::connect(&url, cipher).await) });
        Ok(())
    }

    /// Says where notifications are kept (never the database URL: it may carry a password).
    fn announce(&self) {
        match &self.settings.store {
            InboxStore::Sqlite(p) => tracing::info!("notification inbox: SQLite file {}", p.display()),
            InboxStore::Postgres(_) => tracing::info!("notification inbox: PostgreSQL database (notify.inbox.postgres_url, not shown)"),
        }
    }

    fn cipher(&self) -> Result<Cipher, StoreError> {
        // Checked by validation: this only fails on a defect.
        Cipher::from_hex(self.settings.key.expose()).map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn pg_runtime(&self) -> Result<tokio::runtime::Handle, StoreError> {
        if let Some(h) = self.pg_runtime.get() {
            return Ok(h.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("paysign inbox db".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the inbox database thread: {e}")))?;
        let handle = rx
            .recv()
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Unavailable(format!("cannot start the inbox database runtime: {e}")))?;
        Ok(self.pg_runtime.get_or_init(|| handle).clone())
    }
}

/// Creates the file's folder (owner-only) and opens the file.
fn open_sqlite(path: &std::path::Path, cipher: Cipher) -> Result<SqliteInbox, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    // The file (and so its -wal and -shm, which SQLite creates with the file's mode) is the
    // owner's only.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", path.display())))?;
    }
    SqliteInbox::open(path, cipher).map_err(|e| match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{}: {m}", path.display())),
        other => other,
    })
}
