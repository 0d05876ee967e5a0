//! SIGHUP in an embedder's process: the plugin's reload service (a pingora background service)
//! takes the signal over at construction and reloads what it was given; the process lives on.
//! (Issue 27: the handler was private to the binary, so SIGHUP ended an embedded gateway.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use paysign_plugin::{Reload, ReloadOnSighup};
use pingora::services::background::BackgroundService;

mod common;
use common::eventually;

struct Counted(AtomicUsize);

impl Reload for Counted {
    fn reload(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn sighup_reloads_every_target_and_the_process_lives_on() {
    let (a, b) = (Arc::new(Counted(AtomicUsize::new(0))), Arc::new(Counted(AtomicUsize::new(0))));
    // Constructed outside any runtime, as before `Server::run_forever`.
    let service = Arc::new(ReloadOnSighup::new(vec![a.clone(), b.clone()]).expect("SIGHUP can be handled"));
    // Sent before the service runs: the process is not ended, and the reload follows once it does.
    // SAFETY: kill(2) on this process with a plain signal number.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (stop, watch) = tokio::sync::watch::channel(false);
    let running = service.clone();
    let thread = std::thread::spawn(move || runtime.block_on(async move { running.start(watch).await }));
    assert!(eventually(10, || a.0.load(Ordering::SeqCst) == 1 && b.0.load(Ordering::SeqCst) == 1), "the early SIGHUP was not acted on");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    assert!(eventually(10, || a.0.load(Ordering::SeqCst) == 2 && b.0.load(Ordering::SeqCst) == 2), "the second SIGHUP");

    // pingora's shutdown ends the service.
    stop.send(true).unwrap();
    thread.join().unwrap();
    assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (2, 2));
}
