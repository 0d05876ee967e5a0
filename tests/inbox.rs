//! The durable inbox end to end, with real processes: the sandbox notifies the gateway, which
//! stores each verified notification (SQLite, or a real PostgreSQL server) before it
//! acknowledges, and delivers it from there to an internal target (a recording server) at
//! least once — through target outages, `kill -9`, a stopped database and a second replica.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http_server;
use common::postgres::Postgres;
use common::*;
use serde_json::Value;

const ROUTE: &str = "/notify/bindcard";
const LEASE_MS: u64 = 3000;

/// An internal target that records every delivery (notification id, order, when) and answers
/// the status set in `status`.
struct Target {
    server: http_server::Server,
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Target {
    fn start(status: u16, delay: Duration) -> Target {
        let status = Arc::new(AtomicU16::new(status));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (st, g) = (status.clone(), got.clone());
        let server = http_server::start(Arc::new(move |r| {
            // The target's own slowness (what a replica is killed in the middle of).
            std::thread::sleep(delay);
            let id = r.header("X-Paysign-Notification-Id").unwrap_or("").to_string();
            let order = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["orderNo"].as_str().map(String::from));
            g.lock().unwrap().push((id, order.unwrap_or_default(), Instant::now()));
            (st.load(Ordering::SeqCst), "text/plain".into(), b"ok".to_vec())
        }));
        Target { server, status, got }
    }

    /// Orders delivered with a 2xx… or at all: every attempt the target saw.
    fn attempts(&self) -> Vec<(String, String, Instant)> {
        self.got.lock().unwrap().clone()
    }

    fn orders_seen(&self) -> BTreeSet<String> {
        self.attempts().into_iter().map(|(_, o, _)| o).collect()
    }
}

/// The `notify` section with an inbox in `store` (a YAML line such as `sqlite_path: …`).
fn notify_yaml(notify_port: u16, target: u16, store: &str, key: &Path, extra: &str) -> String {
    format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  forward_timeout_ms: 1000\n  routes:\n    - path: {ROUTE}\n      target: http://127.0.0.1:{target}/internal/bind-notified\n  inbox:\n    {store}\n    key_file: {}\n    retry_first_ms: 200\n    retry_max_interval_ms: 400\n    lease_ms: {LEASE_MS}\n{extra}",
        key.display()
    )
}

/// A 256-bit inbox key in a file of its own (mode 0600), test-only.
fn key_file() -> PathBuf {
    let dir = temp_dir();
    let path = dir.join("inbox.key");
    write_secret(&path, &format!("{}\n", "3c".repeat(32)));
    path
}

/// The sandbox sends one notification of `order` for `merchant` to the gateway; its answer
/// (`status`, `body`, and `sent`: the exact bytes).
fn notify(sandbox: u16, notify_port: u16, merchant: &str, order: &str) -> Value {
    let req = serde_json::json!({"customerNo": merchant, "orderNo": order, "url": format!("http://127.0.0.1:{notify_port}{ROUTE}")});
    request(sandbox, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
}

fn acknowledged(v: &Value) -> bool {
    v["status"] == 200 && v["body"] == "SUCCESS"
}

fn metric(stack_admin: u16, series: &str) -> f64 {
    let m = request(stack_admin, "GET", "/metrics", &[], b"").text();
    sample(&m, series).unwrap_or(0.0)
}

fn admin(stack: &Stack, method: &str, path: &str) -> Response {
    request(stack.admin, method, path, &[], b"")
}

fn start(store: &str, target: &Target, under_test: UnderTest, extra: &str) -> (Stack, u16) {
    let notify_port = free_port();
    let key = key_file();
    let stack = Stack::start(Options {
        gateway_extra: notify_yaml(notify_port, target.server.port, store, &key, extra),
        under_test,
        ..Options::default()
    });
    wait_listening(notify_port);
    (stack, notify_port)
}

/// Restarts the gateway of `stack` on its configuration (after `kill -9`).
fn restart(stack: &mut Stack) {
    let config = stack.dir.join("paysign.yaml");
    stack.gateway = spawn(&["run", "-c", config.to_str().unwrap()], stack.dir.join("gateway-2.log"));
    wait_ready(stack.admin, "/readyz");
}

fn kill9(stack: &mut Stack) {
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(stack.gateway.pid() as i32, libc::SIGKILL) };
    assert!(eventually(10, || !stack.gateway.is_running()), "the gateway survived SIGKILL");
}

fn stored_then_delivered_and_resends_recognised(under_test: UnderTest) {
    let target = Target::start(503, Duration::ZERO);
    let (stack, notify_port) = start("sqlite_path: data/inbox.sqlite", &target, under_test, "");

    // The target is failing: the notification is still acknowledged — it is stored.
    let first = notify(stack.sandbox_port, notify_port, RSA_MERCHANT, "INBOX-1");
    assert!(acknowledged(&first), "{first}");
    assert!(stack.dir.join("data/inbox.sqlite").is_file());
    for (f, mode) in [("data", 0o700), ("data/inbox.sqlite", 0o600), ("data/inbox.sqlite-wal", 0o600)] {
        let m = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(stack.dir.join(f)).unwrap().permissions()) & 0o777;
        assert_eq!(m, mode, "{f}: {m:o}");
    }
    // Tried, and tried again on the schedule, while the target fails.
    assert!(eventually(15, || target.attempts().len() >= 2), "{:?}", target.attempts());
    target.status.store(200, Ordering::SeqCst);
    let series = |o: &str| format!(r#"paysign_inbox_deliveries_total{{outcome="{o}",route="{ROUTE}"}}"#);
    assert!(eventually(15, || metric(stack.admin, &series("delivered")) == 1.0), "{}", stack.metrics());
    assert!(metric(stack.admin, &series("retry")) >= 1.0);
    let id = target.attempts()[0].0.clone();
    assert_eq!(id.len(), 32);
    assert!(target.attempts().iter().all(|(i, o, _)| *i == id && o == "INBOX-1"));

    // The platform re-sends the same bytes: acknowledged again, recognised before any
    // private-key work (no decryption), nothing stored or delivered twice.
    let executed = r#"paysign_private_key_jobs_total{outcome="executed"}"#;
    let before = metric(stack.admin, executed);
    let again = request(notify_port, "POST", ROUTE, &[("Content-Type", "application/json")], first["sent"].as_str().unwrap().as_bytes());
    assert_eq!((again.status, again.text()), (200, "SUCCESS".to_string()));
    assert_eq!(metric(stack.admin, executed), before, "a recognised re-send cost a private-key operation");
    assert_eq!(metric(stack.admin, r#"paysign_inbox_stored_total{result="recognised"}"#), 1.0);
    // Re-encrypted (a new sealing of the same content): the same id, a duplicate.
    let resealed = notify(stack.sandbox_port, notify_port, RSA_MERCHANT, "INBOX-1");
    assert!(acknowledged(&resealed), "{resealed}");
    assert_eq!(metric(stack.admin, r#"paysign_inbox_stored_total{result="duplicate"}"#), 1.0);
    assert_eq!(metric(stack.admin, r#"paysign_inbox_stored_total{result="stored"}"#), 1.0);
    // A new notification is delivered; the re-sends never were.
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "INBOX-2")));
    assert!(eventually(15, || metric(stack.admin, &series("delivered")) == 2.0), "{}", stack.metrics());
    let delivered_once: Vec<String> = target.attempts().into_iter().filter(|(i, _, _)| *i != id).map(|(_, o, _)| o).collect();
    assert_eq!(delivered_once, ["INBOX-2"]);

    let m = stack.metrics();
    assert_eq!(sample(&m, &format!(r#"paysign_notifications_total{{outcome="stored",route="{ROUTE}"}}"#)), Some(2.0), "{m}");
    assert_eq!(sample(&m, &format!(r#"paysign_notifications_total{{outcome="duplicate",route="{ROUTE}"}}"#)), Some(2.0));
    // The operator's view.
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 2), "{}", admin(&stack, "GET", "/inbox").text());
    let depth = admin(&stack, "GET", "/inbox").json();
    assert_eq!(
        (depth["pending"].as_u64(), depth["dead"].as_u64(), depth["oldest_undelivered_age_seconds"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    // No payload, nor any personal data, in the log at info.
    let logs = stack.settled_logs();
    for secret in ["13912345678", "110101199003077777", "bindStatus", "reqmsg"] {
        assert!(!logs.contains(secret), "{secret} in the log");
    }
    assert!(logs.lines().any(|l| l.contains(r#""kind":"delivery""#) && l.contains(r#""outcome":"delivered""#)), "{logs}");
}

#[test]
fn a_notification_is_stored_before_it_is_acknowledged_delivered_with_retries_and_resends_are_recognised() {
    stored_then_delivered_and_resends_recognised(UnderTest::Binary);
}

#[test]
fn the_embedding_example_stores_and_delivers_like_the_binary() {
    stored_then_delivered_and_resends_recognised(UnderTest::Example);
}

/// With the target down, notifications arrive and are acknowledged; the gateway is killed
/// with SIGKILL in the middle of them, restarted, and the target comes back: every
/// acknowledged notification is delivered, a repeat only ever with the same id.
fn nothing_acknowledged_is_lost_to_kill_9(store: &str) {
    let target = Target::start(503, Duration::ZERO);
    let (mut stack, notify_port) = start(store, &target, UnderTest::Binary, "");
    let mut acked = BTreeSet::new();
    for i in 0..30 {
        if i == 20 {
            kill9(&mut stack);
        }
        let order = format!("CRASH-{i}");
        let merchant = if i % 3 == 0 { RSA_MERCHANT } else { MD5_MERCHANT };
        let v = notify(stack.sandbox_port, notify_port, merchant, &order);
        if acknowledged(&v) {
            acked.insert(order);
        }
    }
    assert_eq!(acked.len(), 20, "the first 20 (before the kill) are acknowledged, none after");
    restart(&mut stack);
    target.status.store(200, Ordering::SeqCst);
    assert!(eventually(30, || acked.is_subset(&target.orders_seen())), "missing: {:?}", acked.difference(&target.orders_seen()));
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (id, order, _) in target.attempts() {
        assert_eq!(ids.entry(order.clone()).or_insert(id.clone()), &id, "{order} delivered under two ids");
    }
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 20), "{}", admin(&stack, "GET", "/inbox").text());
}

#[test]
fn sqlite_nothing_acknowledged_is_lost_to_kill_9() {
    nothing_acknowledged_is_lost_to_kill_9("sqlite_path: data/inbox.sqlite");
}

#[test]
fn postgres_nothing_acknowledged_is_lost_to_kill_9() {
    let pg = Postgres::start();
    nothing_acknowledged_is_lost_to_kill_9(&format!("postgres_url: {}", pg.url()));
}

/// Two replicas share one PostgreSQL database; notifications arrive at both; one is killed
/// with SIGKILL while it delivers (the target is slow): everything is delivered, and a
/// notification the killed replica held is delivered again only after its lease ran out.
#[test]
fn two_replicas_share_postgres_and_a_killed_one_loses_nothing() {
    let pg = Postgres::start();
    let target = Target::start(200, Duration::from_millis(300));
    let store = format!("postgres_url: {}", pg.url());
    // One delivery at a time per replica: the recording target handles one request at a time,
    // so each attempt is recorded within ~0.3 s of its claim.
    let (mut a, notify_a) = start(&store, &target, UnderTest::Binary, "    deliverers: 1\n");
    let (b, notify_b) = start(&store, &target, UnderTest::Binary, "    deliverers: 1\n");
    let mut orders = BTreeSet::new();
    for i in 0..16 {
        let order = format!("REPLICA-{i}");
        let port = if i % 2 == 0 { notify_a } else { notify_b };
        let v = notify(b.sandbox_port, port, MD5_MERCHANT, &order);
        assert!(acknowledged(&v), "{order}: {v}");
        orders.insert(order);
    }
    // Kill A while deliveries are in flight (the target takes 300 ms each).
    assert!(eventually(15, || !target.attempts().is_empty()));
    kill9(&mut a);
    let killed_at = Instant::now();
    assert!(eventually(60, || orders.is_subset(&target.orders_seen())), "missing: {:?}", orders.difference(&target.orders_seen()));
    // A repeat is the killed replica's attempt and the survivor's after the lease — never two
    // replicas delivering within one lease.
    let mut by_id: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for (id, _, at) in target.attempts() {
        by_id.entry(id).or_default().push(at);
    }
    for (id, times) in &by_id {
        for pair in times.windows(2) {
            let apart = pair[1].duration_since(pair[0]);
            // An attempt is recorded within forward_timeout_ms (1 s) of its claim; the next
            // claim of the same notification comes a lease (3 s) after the first at the earliest.
            assert!(apart >= Duration::from_millis(LEASE_MS - 1000), "{id} delivered twice {apart:?} apart (lease {LEASE_MS} ms)");
            assert!(pair[1] > killed_at, "{id} delivered twice before the kill");
        }
    }
    assert!(eventually(15, || admin(&b, "GET", "/inbox").json()["delivered"] == 16), "{}", admin(&b, "GET", "/inbox").text());
}

/// The database stops: notifications are not acknowledged (the platform's retries keep them);
/// once it is back — no restart of paysign — the platform's next retry is stored and delivered.
#[test]
fn with_the_database_stopped_nothing_is_acknowledged_and_it_recovers_without_a_restart() {
    let mut pg = Postgres::start();
    let target = Target::start(200, Duration::ZERO);
    let notify_port = free_port();
    let key = key_file();
    let stack = Stack::start(Options {
        gateway_extra: notify_yaml(notify_port, target.server.port, &format!("postgres_url: {}", pg.url()), &key, ""),
        // The platform retries every 300 ms (a real one: minutes).
        sandbox_extra:
            "notify_retry_ms: [300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300]\n".into(),
        ..Options::default()
    });
    wait_listening(notify_port);
    pg.stop();
    let v = notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "DBDOWN-1");
    assert_eq!((v["status"].as_u64(), v["body"].as_str()), (Some(503), Some("FAIL")), "{v}");
    assert_eq!(metric(stack.admin, &format!(r#"paysign_notifications_total{{outcome="store_failed",route="{ROUTE}"}}"#)), 1.0);
    // A bound card whose notification the platform retries until acknowledged.
    let mut b = bindcard("DBDOWN-2");
    b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{notify_port}{ROUTE}"));
    assert_eq!(stack.post_json(MD5_MERCHANT, &b).json()["errCode"], "0000");
    assert!(eventually(15, || stack.sandbox_stats()["notifications_retried"].as_u64() >= Some(2)), "{}", stack.sandbox_stats());
    assert_eq!(stack.sandbox_stats()["notifications_acked"], 0);
    assert!(target.attempts().is_empty());
    pg.restart();
    assert!(eventually(30, || stack.sandbox_stats()["notifications_acked"] == 1), "{}", stack.sandbox_stats());
    assert!(eventually(15, || target.orders_seen().contains("DBDOWN-2")), "{:?}", target.attempts());
}

/// Ordering per orderNo, the dead-letter state, and the operator's endpoints.
#[test]
fn ordered_notifications_wait_their_turn_and_dead_letters_are_listed_redelivered_and_purged() {
    let target = Target::start(503, Duration::ZERO);
    let (stack, notify_port) =
        start("sqlite_path: data/inbox.sqlite", &target, UnderTest::Binary, "    ordered: true\n    give_up_after_secs: 2\n");
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "ORDER-A")));
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "ORDER-B")));
    // Both fail until they are dead-lettered (2 s after they were received).
    assert!(eventually(20, || admin(&stack, "GET", "/inbox").json()["dead"] == 2), "{}", admin(&stack, "GET", "/inbox").text());
    let dead = admin(&stack, "GET", "/inbox/dead");
    assert_eq!(dead.status, 200);
    let list = dead.json()["dead"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let mut orders: Vec<&str> = list.iter().map(|d| d["order_no"].as_str().unwrap()).collect();
    orders.sort_unstable();
    assert_eq!(orders, ["ORDER-A", "ORDER-B"]);
    for d in &list {
        assert_eq!(d["route"], ROUTE);
        assert!(d["attempts"].as_u64().unwrap() >= 1);
        assert_eq!(d["last_error"], "the target answered non-2xx (503)");
        assert_eq!(d["id"].as_str().unwrap().len(), 32);
    }
    assert!(!dead.text().contains("bindStatus") && !dead.text().contains("SUCCESS"), "a payload in the dead-letter list");
    assert!(stack.metrics().contains(r#"paysign_inbox_deliveries_total{outcome="dead_lettered",route="/notify/bindcard"} 2"#));

    // Redeliver one; purge the other.
    let (a, b) = (list[0]["id"].as_str().unwrap().to_string(), list[1]["id"].as_str().unwrap().to_string());
    target.status.store(200, Ordering::SeqCst);
    let r = admin(&stack, "POST", &format!("/inbox/redeliver?id={a}"));
    assert_eq!((r.status, r.json()["redelivered"].as_u64()), (200, Some(1)), "{}", r.text());
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 1));
    let r = admin(&stack, "POST", &format!("/inbox/purge?id={b}"));
    assert_eq!((r.status, r.json()["purged"].as_u64()), (200, Some(1)), "{}", r.text());
    let depth = admin(&stack, "GET", "/inbox").json();
    assert_eq!((depth["dead"].as_u64(), depth["delivered"].as_u64()), (Some(0), Some(1)));
    // Bad requests to the admin: a clear JSON error, nothing done.
    let refused = |method: &str, path: &str| {
        let r = admin(&stack, method, path);
        assert_eq!(r.json()["result"], "refused", "{path}: {}", r.text());
        (r.status, r.json()["error"].as_str().unwrap().to_string())
    };
    assert_eq!(refused("POST", "/inbox/redeliver?id=nope"), (400, "id must be a notification id (32 hex digits)".into()));
    assert_eq!(refused("GET", "/inbox/redeliver"), (405, "/inbox/redeliver takes POST".into()));
    assert_eq!(refused("POST", "/inbox/purge?what=all"), (400, "unknown parameter \"what\" (this endpoint takes: id)".into()));
    assert_eq!(refused("GET", &format!("/inbox/dead?id={a}")), (400, "unknown parameter \"id\" (this endpoint takes: limit)".into()));
    assert_eq!(refused("POST", &format!("/inbox/purge?id={a}&id={a}")), (400, "id is given twice".into()));
    // The delivered one is no dead letter any more: 404, not "ok, 0".
    assert_eq!(
        refused("POST", &format!("/inbox/redeliver?id={a}")),
        (404, format!("{a} is not a dead letter (GET /inbox/dead lists them)"))
    );
    assert_eq!(refused("GET", "/inbox/nope").0, 404);
    assert_eq!(admin(&stack, "GET", "/inbox/dead?limit=1").json()["dead"].as_array().unwrap().len(), 0);
}

/// Ordering: the second notification of an order (PROCESSING, then SUCCESS) is not delivered
/// before the first one was; another order's is not held up.
#[test]
fn with_ordering_the_next_notification_of_an_order_waits_for_the_previous_one() {
    let target = Target::start(503, Duration::ZERO);
    let (stack, notify_port) = start("sqlite_path: data/inbox.sqlite", &target, UnderTest::Binary, "    ordered: true\n");
    let send = |order: &str, status: &str| {
        let req = serde_json::json!({"customerNo": MD5_MERCHANT, "orderNo": order, "bindStatus": status,
                                     "url": format!("http://127.0.0.1:{notify_port}{ROUTE}")});
        let v = request(stack.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json();
        assert!(acknowledged(&v), "{v}");
    };
    send("SEQ-1", "PROCESSING");
    send("SEQ-1", "SUCCESS");
    send("SEQ-2", "SUCCESS");
    // The first of SEQ-1 fails again and again; SEQ-2 is tried meanwhile, the second of SEQ-1 never.
    assert!(eventually(15, || target.attempts().iter().filter(|(_, o, _)| o == "SEQ-1").count() >= 3), "{:?}", target.attempts());
    let ids =
        |order: &str| -> BTreeSet<String> { target.attempts().into_iter().filter(|(_, o, _)| o == order).map(|(i, _, _)| i).collect() };
    assert_eq!(ids("SEQ-1").len(), 1, "the second notification of SEQ-1 was tried before the first was delivered");
    assert!(!ids("SEQ-2").is_empty(), "another order was held up");
    let first = ids("SEQ-1").into_iter().next().unwrap();
    target.status.store(200, Ordering::SeqCst);
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 3), "{}", admin(&stack, "GET", "/inbox").text());
    // In the order received: every attempt of the first before any of the second.
    let seq1: Vec<String> = target.attempts().into_iter().filter(|(_, o, _)| o == "SEQ-1").map(|(i, _, _)| i).collect();
    let switch = seq1.iter().position(|i| *i != first).expect("the second was delivered");
    assert!(seq1[..switch].iter().all(|i| *i == first) && seq1[switch..].iter().all(|i| *i != first), "{seq1:?}");
}

/// A mounted tmpfs of `size`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` where this process may not mount (not root, or no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = temp_dir().join("small-disk");
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The data directory's disk fills up: a notification is not acknowledged (503, the platform
/// retries) and nothing stored before is lost; once there is room again — no restart — the
/// next one is stored, acknowledged and delivered.
#[test]
fn with_the_disk_full_nothing_is_acknowledged_and_it_recovers_without_a_restart() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("SKIPPED: this process cannot mount a tmpfs (needs root), so the disk-full fault is not exercised here");
        return;
    };
    let target = Target::start(503, Duration::ZERO);
    let store = format!("sqlite_path: {}/inbox.sqlite", disk.0.display());
    let (stack, notify_port) = start(&store, &target, UnderTest::Binary, "");
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "DISK-1")));
    // Fill the disk.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    for i in 0..3 {
        let v = notify(stack.sandbox_port, notify_port, MD5_MERCHANT, &format!("DISK-FULL-{i}"));
        assert_eq!((v["status"].as_u64(), v["body"].as_str()), (Some(503), Some("FAIL")), "{v}");
    }
    assert_eq!(metric(stack.admin, r#"paysign_inbox_stored_total{result="failed"}"#), 3.0);
    std::fs::remove_file(&filler).unwrap();
    let v = notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "DISK-FULL-0");
    assert!(acknowledged(&v), "{v}");
    target.status.store(200, Ordering::SeqCst);
    assert!(
        eventually(15, || target.orders_seen().is_superset(&["DISK-1", "DISK-FULL-0"].map(String::from).into())),
        "{:?}",
        target.orders_seen()
    );
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 2), "{}", admin(&stack, "GET", "/inbox").text());
    drop(stack);
}

/// `paysign migrate`: the store's tables made ahead of a rollout (SQLite file, PostgreSQL
/// database), and a clear failure when there is nothing to migrate or the database is down.
#[test]
fn paysign_migrate_prepares_the_store_and_says_why_it_cannot() {
    let dir = temp_dir();
    let key = key_file();
    let conf = |store: &str| {
        let path = dir.join(format!("paysign-{}.yaml", store.len()));
        let yaml = format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nplatform:\n  base_url: http://127.0.0.1:9\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: {}\n    md5_key_file: {}\n{}",
            free_port(),
            free_port(),
            dir.join("keys/platform_public.pem").display(),
            dir.join("keys/md5.key").display(),
            if store.is_empty() { String::new() } else { notify_yaml(free_port(), 9, store, &key, "") }
        );
        write(&path, &yaml);
        path
    };
    let sqlite = conf(&format!("sqlite_path: {}/db/inbox.sqlite", dir.display()));
    let (code, out, err) = run_paysign(&["migrate", "-c", sqlite.to_str().unwrap()], &[], "");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("notify.inbox: the SQLite file {}/db/inbox.sqlite is ready\n", dir.display()));
    assert!(dir.join("db/inbox.sqlite").is_file());

    let mut pg = Postgres::start();
    let postgres = conf(&format!("postgres_url: {}", pg.url()));
    let (code, out, err) = run_paysign(&["migrate", "-c", postgres.to_str().unwrap()], &[], "");
    assert_eq!(
        (code, out.as_str()),
        (0, "notify.inbox: the PostgreSQL database (notify.inbox.postgres_url) is ready (schema version 2)\n"),
        "{err}"
    );
    pg.stop();
    let (code, _, err) = run_paysign(&["migrate", "-c", postgres.to_str().unwrap()], &[], "");
    assert_eq!(code, 1);
    assert!(err.contains("notify.inbox: the inbox is unavailable"), "{err}");
    assert!(!err.contains("postgresql://"), "the URL (it may carry a password) was printed: {err}");

    let none = conf("");
    let (code, _, err) = run_paysign(&["migrate", "-c", none.to_str().unwrap()], &[], "");
    assert_eq!(code, 1);
    assert!(err.contains("notify.inbox is not configured: there is nothing to migrate"), "{err}");
}

/// SIGTERM while a delivery is at the target: the attempt finishes and its result is recorded
/// before the process exits (nothing delivered twice after the restart); a reload in between
/// changes nothing for the inbox.
#[test]
fn sigterm_lets_an_attempt_in_flight_finish_and_a_reload_keeps_delivering() {
    let target = Target::start(200, Duration::from_millis(800));
    let (mut stack, notify_port) = start("sqlite_path: data/inbox.sqlite", &target, UnderTest::Binary, "");
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "TERM-1")));
    assert!(eventually(15, || admin(&stack, "GET", "/inbox").json()["delivered"] == 1));
    // A reload: the inbox (opened once) goes on.
    assert_eq!(admin(&stack, "POST", "/-/reload").status, 200);
    assert!(acknowledged(&notify(stack.sandbox_port, notify_port, MD5_MERCHANT, "TERM-2")));
    // The attempt has reached the target (it answers after 0.8 s): SIGTERM now.
    assert!(eventually(15, || target.orders_seen().contains("TERM-2")));
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(stack.gateway.pid() as i32, libc::SIGTERM) };
    assert!(eventually(30, || !stack.gateway.is_running()), "the gateway did not exit");
    restart(&mut stack);
    let depth = admin(&stack, "GET", "/inbox").json();
    assert_eq!((depth["delivered"].as_u64(), depth["pending"].as_u64(), depth["leased"].as_u64()), (Some(2), Some(0), Some(0)), "{depth}");
    let attempts: Vec<String> = target.attempts().into_iter().map(|(_, o, _)| o).collect();
    assert_eq!(attempts, ["TERM-1", "TERM-2"], "an attempt was cut or repeated");
}
