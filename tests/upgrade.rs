//! pingora's graceful upgrade, kept working: a new process started with `--upgrade` takes the
//! listening sockets from the running one when it gets SIGQUIT; under continuous load no
//! request fails and no connection is refused.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

#[test]
fn sockets_are_handed_to_a_new_process_without_failing_a_request() {
    let dir_sock = std::env::temp_dir().join(format!("paysign-upgrade-{}.sock", std::process::id()));
    let mut s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        grace: 2,
        gateway_extra: format!("upgrade_sock: {}\n", dir_sock.display()),
        ..Options::default()
    });
    let old_pid = s.gateway_pid();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, done, failures, port) = (stop.clone(), done.clone(), failures.clone(), s.proxy);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = bindcard(&format!("UPG-{n}")).to_string();
                match try_request(port, "POST", BINDCARD, &[], body.as_bytes()) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.lock().unwrap().push(format!("UPG-{n}: {} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(format!("UPG-{n}: {e}")),
                }
                n += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    assert!(eventually(20, || done.load(Ordering::SeqCst) >= 20));

    // The new process waits for the sockets on upgrade_sock…
    let config = s.dir.join("paysign.yaml");
    let new = spawn(&["run", "-c", config.to_str().unwrap(), "--upgrade"], s.dir.join("gateway-new.log"));
    assert!(eventually(20, || dir_sock.exists()), "the new process never opened {}", dir_sock.display());
    // …and the old one hands them over on SIGQUIT, then drains and exits.
    assert!(Command::new("kill").args(["-QUIT", &old_pid.to_string()]).status().unwrap().success());
    assert!(eventually(30, || !s.gateway.is_running()), "the old process did not exit");
    let after_handover = done.load(Ordering::SeqCst);
    assert!(eventually(20, || done.load(Ordering::SeqCst) >= after_handover + 20));

    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // The new process serves, on the same ports.
    let m = s.metrics();
    let served = sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{MD5_MERCHANT}",outcome="verified"}}"#)).unwrap();
    assert!(served >= 20.0, "{m}");
    assert!(new.logs().contains("paysign 0.1.0 loaded"));
    drop(new);
    let _ = std::fs::remove_file(&dir_sock);
}
