//! pingora's graceful upgrade, made safe: `paysign upgrade -c FILE` starts a new process that
//! takes the listening sockets from the running one (named by its pid file) once it waits for
//! them; under continuous load no request fails and no connection is refused.

mod common;

use std::process::Command;

use common::*;

/// `paysign upgrade -c config`, its output (and the new gateway's log, inherited) in `log`.
fn upgrade(config: &std::path::Path, log: std::path::PathBuf) -> Proc {
    spawn_cmd(Command::new(env!("CARGO_BIN_EXE_paysign")).args(["upgrade", "-c", config.to_str().unwrap()]).env("PAYSIGN_LOG", "info"), log)
}

/// Ends the gateway the pid file names (the upgrade's new process is not a child of the test).
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
    }
}

#[test]
fn sockets_are_handed_to_a_new_process_without_failing_a_request() {
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], grace: 2, ..Options::default() });
    let old_pid = s.gateway_pid();
    let pid_file = s.dir.join(".paysign-run/paysign.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), old_pid.to_string());

    let load = Load::start(s.proxy, "UPG", &[MD5_MERCHANT]);
    load.progress(20);

    let config = s.dir.join("paysign.yaml");
    let mut cmd = upgrade(&config, s.dir.join("upgrade.log"));
    assert!(eventually(60, || cmd.exit_code().is_some()), "the upgrade command did not finish: {}", cmd.logs());
    assert_eq!(cmd.exit_code(), Some(0), "{}", cmd.logs());
    let new_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let _new = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    assert!(cmd.logs().contains(&format!("upgraded: pid {new_pid} serves; pid {old_pid} finishes its calls and exits")), "{}", cmd.logs());
    // The old process drains and exits on its own.
    assert!(eventually(30, || !s.gateway.is_running()), "the old process did not exit");
    assert_eq!(s.gateway.exit_code(), Some(0));
    load.progress(20);
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // The new process serves, on the same ports.
    let m = s.metrics();
    let served =
        sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{MD5_MERCHANT}",outcome="verified"}}"#))
            .unwrap();
    assert!(served >= 20.0, "{m}");
    let new_logs = settled_logs(&cmd, s.proxy);
    assert!(new_logs.contains("paysign 0.1.0 loaded"));
    // Waiting for the sockets ("No incoming socket transfer") is what an upgrade does, not an error.
    assert!(!new_logs.contains(r#""level":"error""#), "{new_logs}");
    assert!(new_logs.contains(&format!("listening on 127.0.0.1:{} (listen)", s.proxy)), "{new_logs}");
    // Every call has its access line, in the old process's log or the new one's: the old one
    // wrote what was still waiting in its log writer when it exited.
    let calls = |logs: &str| logs.matches(r#""order_no":"UPG-"#).count();
    let old_logs = s.gateway.logs();
    assert_eq!(calls(&old_logs) + calls(&new_logs), done, "old: {old_logs}");
    assert!(old_logs.contains("SIGQUIT: handing the listening sockets to the new process on "), "{old_logs}");
}

#[test]
fn an_upgrade_whose_new_process_cannot_start_leaves_the_old_one_serving() {
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let old_pid = s.gateway_pid();
    // The new process reads the configuration again: a broken one fails it before any hand-off.
    let config = s.dir.join("paysign.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    let broken = s.dir.join("broken.yaml");
    write(&broken, &good.replace("keys/md5.key", "keys/missing.key"));
    // Same directory, so the same pid file and socket.
    let mut cmd = upgrade(&broken, s.dir.join("upgrade.log"));
    assert!(eventually(60, || cmd.exit_code().is_some()), "{}", cmd.logs());
    assert_eq!(cmd.exit_code(), Some(1), "{}", cmd.logs());
    assert!(cmd.logs().contains("missing.key") && cmd.logs().contains("nothing was changed"), "{}", cmd.logs());
    assert!(s.gateway.is_running());
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("AFTER-FAILED-UPGRADE")).status, 200);
    assert_eq!(std::fs::read_to_string(s.dir.join(".paysign-run/paysign.pid")).unwrap().trim(), old_pid.to_string());
}
