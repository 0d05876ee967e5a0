//! The shared inbox on a real PostgreSQL server (started by the test, see common/postgres.rs):
//! claims by two replicas, leases and fencing, LISTEN/NOTIFY, the database going away and
//! coming back.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::postgres::Postgres;
use paysign_inbox::postgres::PgInbox;
use paysign_inbox::{Cipher, Inbox, NewNotification, StoreError, Stored};

fn key() -> Cipher {
    Cipher::from_hex(&"5a".repeat(32)).unwrap()
}

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn note(id: &str, order: Option<&str>, ordered: bool) -> NewNotification {
    NewNotification {
        id: id.into(),
        raw_digest: sha(id),
        route: "/notify/bindcard".into(),
        customer_no: "202112090603".into(),
        order_no: order.map(str::to_string),
        ordered,
        body: format!("{{\"id\":\"{id}\",\"mobile\":\"13800000000\"}}").into_bytes(),
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn the_postgres_inbox_stores_once_claims_fences_orders_and_dead_letters() {
    let pg = Postgres::start();
    runtime().block_on(async {
        let inbox = PgInbox::connect(&pg.url(), key()).await.unwrap();
        // Migrating again (another replica starting) finds the current version and changes nothing.
        assert_eq!(inbox.migrate().await.unwrap(), paysign_inbox::postgres::SCHEMA_VERSION);

        assert_eq!(inbox.store(note("n1", Some("O1"), true)).await.unwrap(), Stored::New);
        let mut again = note("n1", Some("O1"), true);
        again.raw_digest = sha("re-encrypted");
        assert_eq!(inbox.store(again).await.unwrap(), Stored::Duplicate);
        assert_eq!(inbox.recognise(sha("re-encrypted")).await.unwrap().as_deref(), Some("n1"));
        assert_eq!(inbox.recognise(sha("forged")).await.unwrap(), None);
        assert_eq!(inbox.store(note("n2", Some("O1"), true)).await.unwrap(), Stored::New);

        // n2 waits for n1 (same order).
        let claims = inbox.claim("a", LEASE, 10).await.unwrap();
        assert_eq!(claims.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["n1"]);
        assert_eq!(claims[0].body, note("n1", None, false).body);
        assert_eq!(claims[0].attempt, 1);
        assert!(!inbox.delivered("n1", 2).await.unwrap());
        assert!(inbox.delivered("n1", 1).await.unwrap());
        let c = inbox.claim("a", LEASE, 10).await.unwrap().remove(0);
        assert_eq!(c.id, "n2");
        assert!(inbox.failed("n2", c.attempt, "target answered 503", None).await.unwrap());
        let dead = inbox.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].last_error.as_deref()), ("n2", 1, Some("target answered 503")));
        let depth = inbox.depth().await.unwrap();
        assert_eq!((depth.pending, depth.leased, depth.delivered, depth.dead), (0, 0, 1, 1));
        assert_eq!(inbox.redeliver(Some("n2")).await.unwrap(), 1);
        assert_eq!(inbox.claim("a", LEASE, 10).await.unwrap().remove(0).attempt, 2);
        assert_eq!(inbox.purge_delivered(SystemTime::now() + Duration::from_secs(60)).await.unwrap(), 1);
        assert_eq!(inbox.recognise(sha("n1")).await.unwrap(), None, "purged with its row");
    });
}

#[test]
fn two_replicas_never_hold_one_notification_and_a_lost_lease_records_nothing() {
    let pg = Postgres::start();
    runtime().block_on(async {
        let a = Arc::new(PgInbox::connect(&pg.url(), key()).await.unwrap());
        let b = Arc::new(PgInbox::connect(&pg.url(), key()).await.unwrap());
        for i in 0..200 {
            a.store(note(&format!("n{i:03}"), None, false)).await.unwrap();
        }
        // Both claim at once, in small batches, until nothing is left.
        let drain = |inbox: Arc<PgInbox>, owner: &'static str| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = inbox.claim(owner, LEASE, 7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.id));
                }
            })
        };
        let (ta, tb) = (drain(a.clone(), "a"), drain(b.clone(), "b"));
        let (ma, mb) = (ta.await.unwrap(), tb.await.unwrap());
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (ma.iter().cloned().collect(), mb.iter().cloned().collect());
        assert_eq!(sa.len() + sb.len(), 200, "a claimed {} and b {}", sa.len(), sb.len());
        assert!(sa.is_disjoint(&sb), "both replicas held {:?}", sa.intersection(&sb).collect::<Vec<_>>());
        assert!(!sa.is_empty() && !sb.is_empty(), "one replica did all the work: a {} b {}", sa.len(), sb.len());

        // A lease that ran out is claimed by the other replica; the first cannot record.
        a.store(note("late", None, false)).await.unwrap();
        let first = a.claim("a", Duration::ZERO, 1).await.unwrap().remove(0);
        let second = b.claim("b", LEASE, 1).await.unwrap().remove(0);
        assert_eq!((first.id.as_str(), first.attempt, second.attempt), ("late", 1, 2));
        assert!(!a.delivered("late", 1).await.unwrap());
        assert!(!a.failed("late", 1, "late answer", None).await.unwrap());
        assert!(b.delivered("late", 2).await.unwrap());
    });
}

#[test]
fn a_store_by_one_replica_wakes_the_other_at_once() {
    let pg = Postgres::start();
    runtime().block_on(async {
        let a = Arc::new(PgInbox::connect(&pg.url(), key()).await.unwrap());
        let b = PgInbox::connect(&pg.url(), key()).await.unwrap();
        // b's wake-up from its own LISTEN starting is taken first.
        b.wait(Duration::from_secs(60)).await;
        a.store(note("w", None, false)).await.unwrap();
        // b waits up to a minute; a's store (NOTIFY, committed before it returned) ends it.
        let started = Instant::now();
        b.wait(Duration::from_secs(60)).await;
        let woken = started.elapsed();
        assert!(woken < Duration::from_secs(30), "woken after {woken:?}");
        assert!(!b.claim("b", LEASE, 1).await.unwrap().is_empty());
    });
}

#[test]
fn while_the_database_is_down_nothing_is_stored_and_it_recovers_without_a_restart() {
    let mut pg = Postgres::start();
    let rt = runtime();
    let inbox = rt.block_on(async {
        let inbox = PgInbox::connect(&pg.url(), key()).await.unwrap();
        inbox.store(note("before", None, false)).await.unwrap();
        inbox
    });
    pg.stop();
    rt.block_on(async {
        let e = inbox.store(note("during", None, false)).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    });
    pg.restart();
    rt.block_on(async {
        assert_eq!(inbox.store(note("after", None, false)).await.unwrap(), Stored::New);
        let mut ids: Vec<_> = inbox.claim("a", LEASE, 10).await.unwrap().into_iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, ["after", "before"], "the stored survived an immediate shutdown; the refused was not stored");
    });
}
