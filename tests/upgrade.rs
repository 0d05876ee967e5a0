//! pingora's graceful upgrade, kept working: a new process started with `--upgrade` takes the
//! listening sockets from the running one when it gets SIGQUIT; under continuous load no
//! request fails and no connection is refused.

mod common;

use std::process::Command;

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

    let load = Load::start(s.proxy, "UPG", &[MD5_MERCHANT]);
    load.progress(20);

    // The new process waits for the sockets on upgrade_sock…
    let config = s.dir.join("paysign.yaml");
    let new = spawn(&["run", "-c", config.to_str().unwrap(), "--upgrade"], s.dir.join("gateway-new.log"));
    assert!(eventually(20, || dir_sock.exists()), "the new process never opened {}", dir_sock.display());
    // …and the old one hands them over on SIGQUIT, then drains and exits.
    assert!(Command::new("kill").args(["-QUIT", &old_pid.to_string()]).status().unwrap().success());
    assert!(eventually(30, || !s.gateway.is_running()), "the old process did not exit");
    load.progress(20);
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // The new process serves, on the same ports.
    let m = s.metrics();
    let served =
        sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{MD5_MERCHANT}",outcome="verified"}}"#))
            .unwrap();
    assert!(served >= 20.0, "{m}");
    let new_logs = settled_logs(&new, s.proxy);
    assert!(new_logs.contains("paysign 0.1.0 loaded"));
    // Every call has its access line, in the old process's log or the new one's: the old one
    // wrote what was still waiting in its log writer when it exited.
    let calls = |logs: &str| logs.matches(r#""order_no":"UPG-"#).count();
    let old_logs = s.gateway.logs();
    assert_eq!(calls(&old_logs) + calls(&new_logs), done, "old: {old_logs}");
    drop(new);
    let _ = std::fs::remove_file(&dir_sock);
}
