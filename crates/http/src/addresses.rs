//! Every address of a host name, for connecting.
//!
//! Platforms publish several addresses (A and AAAA records, several data centres), and a fresh
//! Debian's `localhost` is both `::1` and `127.0.0.1`. An [`AddressBook`] holds all of them:
//!
//! - a connection is tried on each address in turn, starting with the one that answered last
//!   (connection set-up is safe to retry; a request that may have been sent never is);
//! - the name is looked up again every `refresh` interval (in the background, one lookup at a
//!   time, never on the request path) and whenever no address could be reached, so that DNS
//!   changes take effect without a restart;
//! - a lookup that fails or finds nothing keeps the addresses already known.
//!
//! Addresses given as IP literals (or pinned in the configuration) are never looked up.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A blocking name lookup (`getaddrinfo` by default; tests pass their own).
pub type Lookup = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// The system resolver, every address it returns, in its order, without duplicates.
pub fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in (host, port).to_socket_addrs()? {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// The addresses of one name, and which one answered last.
pub struct AddressBook {
    host: String,
    port: u16,
    /// Looked up again (`None`: fixed addresses, never looked up).
    refresh: Option<Duration>,
    lookup: Lookup,
    addrs: RwLock<Arc<[SocketAddr]>>,
    /// Index into `addrs` of the address that answered last.
    preferred: AtomicUsize,
    resolved_at: Mutex<Instant>,
    /// One lookup at a time.
    looking_up: AtomicBool,
    /// Serialises lookups that a caller waits for.
    lookup_gate: tokio::sync::Mutex<()>,
}

impl AddressBook {
    /// `addrs` are what the start-up lookup found (never empty); `refresh` is `None` for fixed
    /// addresses.
    pub fn new(host: &str, port: u16, addrs: Vec<SocketAddr>, refresh: Option<Duration>, lookup: Lookup) -> Self {
        AddressBook {
            host: host.to_string(),
            port,
            refresh,
            lookup,
            addrs: RwLock::new(addrs.into()),
            preferred: AtomicUsize::new(0),
            resolved_at: Mutex::new(Instant::now()),
            looking_up: AtomicBool::new(false),
            lookup_gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The addresses in the order to try them: the one that answered last first, then the
    /// others in the resolver's order.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let addrs = self.current();
        let first = self.preferred.load(Ordering::Relaxed).min(addrs.len().saturating_sub(1));
        addrs[first..].iter().chain(addrs[..first].iter()).copied().collect()
    }

    /// Every address known now, in the resolver's order.
    pub fn current(&self) -> Arc<[SocketAddr]> {
        match self.addrs.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `addr` answered: try it first from now on.
    pub fn answered(&self, addr: SocketAddr) {
        if let Some(i) = self.current().iter().position(|a| *a == addr) {
            self.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// Starts a background lookup when the last one is older than the refresh interval (and
    /// none is running); returns its task.
    pub fn refresh_if_due(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.refresh?;
        let due = self.resolved_at.lock().map(|t| t.elapsed() >= every).unwrap_or(true);
        if !due {
            return None;
        }
        self.refresh_in_background()
    }

    /// Starts a background lookup now, unless one is running or the addresses are fixed.
    pub fn refresh_in_background(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.refresh.is_none() || self.looking_up.swap(true, Ordering::AcqRel) {
            return None;
        }
        let book = self.clone();
        Some(tokio::spawn(async move {
            book.lookup_now().await;
            book.looking_up.store(false, Ordering::Release);
        }))
    }

    /// Looks the name up now (no address answered) and waits for it, at most `limit`.
    /// Returns whether the set of addresses changed.
    pub async fn refresh_after_failure(&self, limit: Duration) -> bool {
        if self.refresh.is_none() {
            return false;
        }
        tokio::time::timeout(limit, self.lookup_now()).await.unwrap_or(false)
    }

    async fn lookup_now(&self) -> bool {
        let _one_at_a_time = self.lookup_gate.lock().await;
        let (host, port, lookup) = (self.host.clone(), self.port, self.lookup);
        let found = tokio::task::spawn_blocking(move || lookup(&host, port)).await;
        if let Ok(mut t) = self.resolved_at.lock() {
            *t = Instant::now();
        }
        match found {
            Ok(Ok(addrs)) if !addrs.is_empty() => self.replace(addrs),
            Ok(Ok(_)) => {
                tracing::warn!("{} resolves to no address now; keeping the {} known", self.host, self.current().len());
                false
            }
            Ok(Err(e)) => {
                tracing::warn!("looking up {} failed ({e}); keeping the {} known addresses", self.host, self.current().len());
                false
            }
            Err(_) => false,
        }
    }

    fn replace(&self, addrs: Vec<SocketAddr>) -> bool {
        let old = self.current();
        if *old == *addrs {
            return false;
        }
        let keep = old.get(self.preferred.load(Ordering::Relaxed)).and_then(|p| addrs.iter().position(|a| a == p));
        tracing::info!("{} now resolves to {} address(es) (was {})", self.host, addrs.len(), old.len());
        match self.addrs.write() {
            Ok(mut a) => *a = addrs.into(),
            Err(poisoned) => *poisoned.into_inner() = addrs.into(),
        }
        self.preferred.store(keep.unwrap_or(0), Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    static ANSWER: AtomicU32 = AtomicU32::new(0);
    fn scripted(_host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match ANSWER.load(Ordering::SeqCst) {
            0 => Err(io::Error::other("SERVFAIL")),
            1 => Ok(vec![]),
            n => Ok((0..n).map(|i| SocketAddr::from(([10, 0, 0, i as u8], port))).collect()),
        }
    }

    #[test]
    fn the_address_that_answered_is_tried_first_then_the_others_in_order() {
        let book = AddressBook::new("p", 443, vec![a("[::1]:443"), a("127.0.0.1:443"), a("10.0.0.1:443")], None, scripted);
        assert_eq!(book.candidates(), vec![a("[::1]:443"), a("127.0.0.1:443"), a("10.0.0.1:443")]);
        book.answered(a("127.0.0.1:443"));
        assert_eq!(book.candidates(), vec![a("127.0.0.1:443"), a("10.0.0.1:443"), a("[::1]:443")]);
        book.answered(a("192.0.2.1:443")); // unknown: no change
        assert_eq!(book.candidates()[0], a("127.0.0.1:443"));
    }

    #[tokio::test]
    async fn lookups_after_a_failure_replace_the_addresses_and_keep_them_when_dns_fails() {
        let book = AddressBook::new("p", 443, vec![a("192.0.2.1:443")], Some(Duration::from_secs(3600)), scripted);
        ANSWER.store(0, Ordering::SeqCst);
        assert!(!book.refresh_after_failure(Duration::from_secs(5)).await);
        assert_eq!(book.candidates(), vec![a("192.0.2.1:443")]);
        ANSWER.store(1, Ordering::SeqCst);
        assert!(!book.refresh_after_failure(Duration::from_secs(5)).await);
        assert_eq!(book.candidates(), vec![a("192.0.2.1:443")]);
        ANSWER.store(3, Ordering::SeqCst);
        assert!(book.refresh_after_failure(Duration::from_secs(5)).await);
        assert_eq!(book.candidates(), vec![a("10.0.0.0:443"), a("10.0.0.1:443"), a("10.0.0.2:443")]);
        // The preferred address survives a lookup that still lists it.
        book.answered(a("10.0.0.2:443"));
        ANSWER.store(4, Ordering::SeqCst);
        assert!(book.refresh_after_failure(Duration::from_secs(5)).await);
        assert_eq!(book.candidates()[0], a("10.0.0.2:443"));
        assert_eq!(book.current().len(), 4);
        // Fixed addresses are never looked up.
        let fixed = AddressBook::new("p", 443, vec![a("192.0.2.1:443")], None, scripted);
        assert!(!fixed.refresh_after_failure(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_due_refresh_runs_in_the_background() {
        static CALLS: AtomicU32 = AtomicU32::new(0);
        fn counting(_h: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            Ok(vec![SocketAddr::from(([10, 9, 9, 9], port))])
        }
        let book = Arc::new(AddressBook::new("p", 443, vec![a("192.0.2.1:443")], Some(Duration::ZERO), counting));
        book.refresh_if_due().expect("due").await.unwrap();
        assert_eq!(&*book.current(), &[a("10.9.9.9:443")]);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        // Not due, or fixed: nothing starts.
        let quiet = Arc::new(AddressBook::new("p", 443, vec![a("192.0.2.1:443")], Some(Duration::from_secs(3600)), counting));
        assert!(quiet.refresh_if_due().is_none());
        let fixed = Arc::new(AddressBook::new("p", 443, vec![a("192.0.2.1:443")], None, counting));
        assert!(fixed.refresh_if_due().is_none());
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    }
}
