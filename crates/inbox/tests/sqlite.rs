//! The embedded inbox on a real SQLite file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paysign_inbox::sqlite::SqliteInbox;
use paysign_inbox::{Cipher, Inbox, NewNotification, Stored};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("paysign-inbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn key() -> Cipher {
    Cipher::from_hex(&"5a".repeat(32)).unwrap()
}

fn note(id: &str, order: Option<&str>, ordered: bool) -> NewNotification {
    NewNotification {
        id: id.into(),
        raw_digest: sha(id),
        route: "/notify/bindcard".into(),
        customer_no: "202112090603".into(),
        order_no: order.map(str::to_string),
        ordered,
        body: format!("{{\"orderNo\":\"{}\",\"certNo\":\"110101199003077777\",\"id\":\"{id}\"}}", order.unwrap_or("-")).into_bytes(),
    }
}

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_notification_is_stored_once_claimed_and_delivered_with_its_fencing_token() {
    let d = dir("basic");
    let inbox = SqliteInbox::open(&d.join("inbox.db"), key()).unwrap();
    assert_eq!(inbox.store(note("n1", Some("O1"), false)).await.unwrap(), Stored::New);
    // The platform's retry: same id, other bytes (re-encrypted) — no second row.
    let mut again = note("n1", Some("O1"), false);
    again.raw_digest = sha("n1 re-encrypted");
    assert_eq!(inbox.store(again).await.unwrap(), Stored::Duplicate);
    // Both byte strings are recognised before decryption from now on; others are not.
    assert_eq!(inbox.recognise(sha("n1")).await.unwrap().as_deref(), Some("n1"));
    assert_eq!(inbox.recognise(sha("n1 re-encrypted")).await.unwrap().as_deref(), Some("n1"));
    assert_eq!(inbox.recognise(sha("forged")).await.unwrap(), None);

    let claims = inbox.claim("a", LEASE, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    let c = &claims[0];
    assert_eq!((c.id.as_str(), c.attempt, c.route.as_str(), c.order_no.as_deref()), ("n1", 1, "/notify/bindcard", Some("O1")));
    assert_eq!(c.body, note("n1", Some("O1"), false).body);
    // Leased: nobody else gets it.
    assert!(inbox.claim("b", LEASE, 10).await.unwrap().is_empty());
    // A wrong attempt number cannot record anything.
    assert!(!inbox.delivered("n1", 2).await.unwrap());
    assert!(inbox.delivered("n1", 1).await.unwrap());
    assert!(!inbox.delivered("n1", 1).await.unwrap());
    let depth = inbox.depth().await.unwrap();
    assert_eq!((depth.pending, depth.leased, depth.delivered, depth.dead), (0, 0, 1, 0));
    assert_eq!(depth.oldest_undelivered, None);
    // Delivered rows go after the retention.
    assert_eq!(inbox.purge_delivered(SystemTime::now() + Duration::from_secs(1)).await.unwrap(), 1);
    assert_eq!(inbox.depth().await.unwrap().delivered, 0);
    assert_eq!(inbox.recognise(sha("n1")).await.unwrap(), None);
}

#[tokio::test]
async fn the_payload_is_encrypted_at_rest() {
    let d = dir("rest");
    let path = d.join("inbox.db");
    let inbox = SqliteInbox::open(&path, key()).unwrap();
    inbox.store(note("n1", Some("O1"), false)).await.unwrap();
    drop(inbox);
    let mut bytes = Vec::new();
    for f in std::fs::read_dir(&d).unwrap() {
        bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    assert!(bytes.windows(b"O1".len()).any(|w| w == b"O1"), "the order number is stored in clear (operators list it)");
    assert!(!bytes.windows(18).any(|w| w == b"110101199003077777"), "certNo found in clear");
    // Another key cannot open it: instead of delivering garbage (or jamming the others), it is
    // dead-lettered with the reason.
    let other = SqliteInbox::open(&path, Cipher::from_hex(&"a5".repeat(32)).unwrap()).unwrap();
    assert!(other.claim("a", LEASE, 10).await.unwrap().is_empty());
    let dead = other.dead_letters(10).await.unwrap();
    assert_eq!((dead.len(), dead[0].id.as_str()), (1, "n1"));
    assert_eq!(dead[0].last_error.as_deref(), Some("the stored payload does not open with the inbox key (another key, or tampered)"));
}

#[tokio::test]
async fn failures_retry_when_due_then_dead_letter_and_redeliver() {
    let d = dir("retry");
    let inbox = SqliteInbox::open(&d.join("inbox.db"), key()).unwrap();
    inbox.store(note("n1", Some("O1"), false)).await.unwrap();
    let c = inbox.claim("a", LEASE, 10).await.unwrap().remove(0);
    // Due in an hour: not claimable now.
    assert!(inbox.failed("n1", c.attempt, "target answered 503", Some(Duration::from_secs(3600))).await.unwrap());
    assert!(inbox.claim("a", LEASE, 10).await.unwrap().is_empty());
    let depth = inbox.depth().await.unwrap();
    assert_eq!((depth.pending, depth.leased), (1, 0));
    assert!(depth.oldest_undelivered.is_some());
    // Due now: claimed again as attempt 2.
    inbox.redeliver(None).await.unwrap();
    assert!(inbox.failed("n1", 1, "stale", Some(Duration::ZERO)).await.is_ok_and(|applied| !applied));
    // Make it due by failing with a retry in the past: lease first.
    let d2 = dir("retry2");
    let inbox2 = SqliteInbox::open(&d2.join("inbox.db"), key()).unwrap();
    inbox2.store(note("n2", None, false)).await.unwrap();
    let c = inbox2.claim("a", LEASE, 10).await.unwrap().remove(0);
    assert!(inbox2.failed("n2", c.attempt, "connection refused", Some(Duration::ZERO)).await.unwrap());
    let c = inbox2.claim("a", LEASE, 10).await.unwrap().remove(0);
    assert_eq!(c.attempt, 2);
    // Out of schedule: dead-lettered, listed without its payload.
    assert!(inbox2.failed("n2", 2, "target answered 500", None).await.unwrap());
    assert!(inbox2.claim("a", LEASE, 10).await.unwrap().is_empty());
    let dead = inbox2.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].last_error.as_deref()), ("n2", 2, Some("target answered 500")));
    assert!(!format!("{dead:?}").contains("certNo"));
    assert_eq!(inbox2.depth().await.unwrap().dead, 1);
    // Redelivered by the operator: due at once, attempt 3.
    assert_eq!(inbox2.redeliver(Some("n2")).await.unwrap(), 1);
    assert_eq!(inbox2.claim("a", LEASE, 10).await.unwrap().remove(0).attempt, 3);
    assert!(inbox2.failed("n2", 3, "again", None).await.unwrap());
    assert_eq!(inbox2.purge_dead(Some("n2")).await.unwrap(), 1);
    assert_eq!(inbox2.depth().await.unwrap(), paysign_inbox::Depth::default());
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_old_holder_is_fenced_off() {
    let d = dir("lease");
    let inbox = SqliteInbox::open(&d.join("inbox.db"), key()).unwrap();
    inbox.store(note("n1", None, false)).await.unwrap();
    let first = inbox.claim("a", Duration::ZERO, 10).await.unwrap().remove(0);
    let second = inbox.claim("b", LEASE, 10).await.unwrap().remove(0);
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert!(!inbox.delivered("n1", first.attempt).await.unwrap(), "a lost lease recorded a result");
    assert!(inbox.delivered("n1", second.attempt).await.unwrap());
}

#[tokio::test]
async fn a_restart_releases_the_leases_of_a_process_that_is_gone_and_only_those() {
    let d = dir("restart");
    let path = d.join("inbox.db");
    let inbox = SqliteInbox::open(&path, key()).unwrap();
    for i in 0..4 {
        inbox.store(note(&format!("n{i}"), None, false)).await.unwrap();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    // A killed process (no such pid), and one still running (the old process of an upgrade:
    // our parent here).
    let gone = format!("{host}:999999999:0000abcd");
    let alive = format!("{host}:{}:0000abcd", std::os::unix::process::parent_id());
    assert_eq!(inbox.claim(&gone, LEASE, 2).await.unwrap().len(), 2);
    assert_eq!(inbox.claim(&alive, LEASE, 1).await.unwrap().len(), 1);
    drop(inbox);
    let reopened = SqliteInbox::open(&path, key()).unwrap();
    let mut ids: Vec<_> = reopened.claim("b", LEASE, 10).await.unwrap().into_iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(ids, ["n0", "n1", "n3"], "the live process's lease (n2) is kept until it runs out");
    assert!(paysign_inbox::owner_may_live(&alive) && !paysign_inbox::owner_may_live(&gone));
    assert!(paysign_inbox::owner_may_live("another-host:1:00000000"), "another host's process is never presumed gone");
}

#[tokio::test]
async fn an_order_is_delivered_in_the_order_received() {
    let d = dir("order");
    let inbox = SqliteInbox::open(&d.join("inbox.db"), key()).unwrap();
    inbox.store(note("first", Some("O1"), true)).await.unwrap();
    inbox.store(note("second", Some("O1"), true)).await.unwrap();
    inbox.store(note("other", Some("O2"), true)).await.unwrap();
    inbox.store(note("loose", Some("O1"), false)).await.unwrap();
    let mut ids: Vec<_> = inbox.claim("a", LEASE, 10).await.unwrap().into_iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(ids, ["first", "loose", "other"], "the second of O1 waits for the first");
    assert!(inbox.claim("a", LEASE, 10).await.unwrap().is_empty());
    // The first dead-lettered: the second may go.
    assert!(inbox.failed("first", 1, "gave up", None).await.unwrap());
    let next = inbox.claim("a", LEASE, 10).await.unwrap();
    assert_eq!(next.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["second"]);
}

#[tokio::test]
async fn concurrent_stores_are_all_durable_and_counted_once() {
    let d = dir("burst");
    let path = d.join("inbox.db");
    let inbox = Arc::new(SqliteInbox::open(&path, key()).unwrap());
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let inbox = inbox.clone();
            // Every notification twice, concurrently: one New, one Duplicate.
            tokio::spawn(async move { inbox.store(note(&format!("n{}", i % 200), None, false)).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap() == Stored::New {
            new += 1;
        }
    }
    assert_eq!(new, 200);
    drop(inbox);
    let reopened = SqliteInbox::open(&path, key()).unwrap();
    assert_eq!(reopened.depth().await.unwrap().pending, 200);
}
