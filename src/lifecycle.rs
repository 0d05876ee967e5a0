//! The process's life around pingora's `Server::run`: fail fast at start-up (every listener
//! bindable, one JSON line otherwise; a panic anywhere is a JSON line and exit 1), say when each
//! listener listens, exit as soon as nothing is in flight after SIGTERM, refuse a SIGQUIT that no
//! new process is waiting for, and the files a graceful upgrade needs (socket and pid file in a
//! private directory).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use paysign_plugin::logging;
use paysign_plugin::ReadyState;

/// A panic anywhere (a service thread included) is one JSON error line and exit 1: a process
/// with a dead service thread must not stay up looking healthy.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map_or_else(|| "unknown".to_string(), |l| format!("{}:{}", l.file(), l.line()));
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!("panic in thread '{thread}' at {at}: {what}; exiting");
        exit(1);
    }));
}

/// Writes what the log writer still holds, then ends the process.
pub fn exit(code: i32) -> ! {
    logging::flush(logging::EXIT_WAIT);
    std::process::exit(code)
}

/// A listener of this process: the setting that names it and its address.
#[derive(Clone, Debug)]
pub struct Listen {
    pub setting: &'static str,
    pub addr: String,
}

impl Listen {
    fn resolve(&self) -> Result<SocketAddr, String> {
        self.addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{}: {} is not an address to listen on", self.setting, self.addr))
    }
}

/// Binds each address once and lets it go, before pingora binds it: a taken port is one line
/// naming its setting, not pingora's retries and a panic. (pingora, too, sets SO_REUSEADDR, so a
/// port this probe just released is bindable again at once.)
pub fn probe(listeners: &[Listen]) -> Result<(), String> {
    for l in listeners {
        let addr = l.resolve()?;
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(format!("cannot listen on {} ({}): {e}", l.addr, l.setting));
        }
    }
    Ok(())
}

/// The addresses this process's listening TCP sockets are bound to (read from its own file
/// descriptors: no connection is made, so nothing is counted or logged by the listener).
fn listening_addrs() -> Vec<SocketAddr> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if !std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        if let Some(addr) = listening_on(fd) {
            found.push(addr);
        }
    }
    found
}

/// The local address of `fd` when it is a listening TCP socket. Only asks the kernel about
/// the descriptor; a descriptor closed meanwhile just answers EBADF.
fn listening_on(fd: i32) -> Option<SocketAddr> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`, which is that large.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut accepting as *mut libc::c_int).cast(), &mut len) };
    if rc != 0 || accepting == 0 {
        return None;
    }
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe { libc::getsockname(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((std::net::Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// pingora binds in its service threads (retrying a taken port); this much time for all of
/// them to listen is generous, and past it the process is not serving what it was told to.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);
const LISTEN_POLL: Duration = Duration::from_millis(10);

/// Watches the listeners come up: one line per listener once it listens; when all do and
/// signals are handled, `/readyz` turns ready, the pid file is written and systemd is told
/// (`READY=1`, `MAINPID=`).
pub fn announce_when_listening(listeners: Vec<Listen>, ready: Arc<ReadyState>, pid_file: Option<PathBuf>) -> Result<(), String> {
    let mut pending: Vec<(Listen, SocketAddr)> = Vec::new();
    for l in listeners {
        let addr = l.resolve()?;
        pending.push((l, addr));
    }
    std::thread::Builder::new()
        .name("paysign listeners".into())
        .spawn(move || {
            let start = Instant::now();
            while !pending.is_empty() {
                let up = listening_addrs();
                pending.retain(|(l, addr)| {
                    if up.contains(addr) {
                        tracing::info!("listening on {} ({})", l.addr, l.setting);
                        false
                    } else {
                        true
                    }
                });
                if pending.is_empty() {
                    break;
                }
                if start.elapsed() > LISTEN_DEADLINE {
                    for (l, _) in &pending {
                        tracing::error!("{} ({}) is not listening {} s after start; exiting", l.addr, l.setting, LISTEN_DEADLINE.as_secs());
                    }
                    exit(1);
                }
                std::thread::sleep(LISTEN_POLL);
            }
            // Named in the pid file (and so signalled by `paysign upgrade`) only once signals are
            // handled: until then SIGQUIT or SIGTERM would end the process at once.
            while !ready.signals_handled() {
                if start.elapsed() > LISTEN_DEADLINE {
                    tracing::error!("signals are not handled {} s after start; exiting", LISTEN_DEADLINE.as_secs());
                    exit(1);
                }
                std::thread::sleep(LISTEN_POLL);
            }
            if let Some(pid_file) = &pid_file {
                // Whole or not at all (written aside, then renamed): a reader never sees it empty.
                let aside = pid_file.with_extension("pid.new");
                let written = std::fs::write(&aside, format!("{}\n", std::process::id())).and_then(|()| std::fs::rename(&aside, pid_file));
                if let Err(e) = written {
                    tracing::error!("cannot write the pid file {}: {e}", pid_file.display());
                }
            }
            // Ready (`/readyz` 200) only now: listening, signals handled, the pid file naming us.
            ready.set_listening();
            notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) when there is a socket to tell: the new
/// process of an upgrade names itself the main process, so systemd follows the hand-off.
fn notify_systemd(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| -> io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)?;
        } else {
            sock.send_to(msg.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Where a gateway's upgrade socket and pid file live.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub upgrade_sock: PathBuf,
    pub pid_file: PathBuf,
}

impl RunFiles {
    /// `upgrade_sock` as configured, or by default `$RUNTIME_DIRECTORY/upgrade.sock` (systemd's
    /// private runtime directory), else `.paysign-run/upgrade.sock` next to the configuration
    /// file when that directory is writable, else `paysign-UID/upgrade.sock` in the temporary
    /// directory (a read-only configuration mount, as in Kubernetes; [`RunFiles::prepare`]
    /// refuses it unless it is this user's and private). The pid file sits next to the socket.
    /// Paths are made absolute: the old process and the new one must name the same file
    /// whatever their working directory.
    pub fn of(upgrade_sock: &Path, config: &Path) -> RunFiles {
        let sock = if upgrade_sock.as_os_str().is_empty() {
            // `paysign.yaml` alone has the parent "", which is the working directory.
            let parent = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let config_dir = std::path::absolute(parent).unwrap_or_default();
            let dir = match std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
                // systemd may list several directories, separated by colons: the first is ours.
                Some(d) => PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()),
                None if writable(&config_dir) => config_dir.join(".paysign-run"),
                // SAFETY: geteuid has no preconditions and cannot fail.
                None => std::env::temp_dir().join(format!("paysign-{}", unsafe { libc::geteuid() })),
            };
            dir.join("upgrade.sock")
        } else {
            upgrade_sock.to_path_buf()
        };
        let sock = std::path::absolute(&sock).unwrap_or(sock);
        let pid_file = sock.with_file_name("paysign.pid");
        RunFiles { upgrade_sock: sock, pid_file }
    }

    fn dir(&self) -> &Path {
        self.upgrade_sock.parent().unwrap_or(Path::new("/"))
    }

    /// Creates the directory (0700) when missing, and refuses one this user does not own or
    /// that others may write to: whoever can create the socket there receives the listeners.
    pub fn prepare(&self) -> Result<(), String> {
        let dir = self.dir();
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("upgrade_sock: cannot create the directory {}: {e}", dir.display()))?;
        }
        private_dir(dir)
    }
}

/// This process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// `dir` belongs to this user and no one else may write to it.
fn private_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("upgrade_sock: {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("upgrade_sock: the directory {} belongs to uid {}, not to this user ({me})", dir.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "upgrade_sock: the directory {} is writable by others (mode {:o}): use a private directory (0700)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Is a new process of this user listening on `sock`, waiting for the sockets? Checked without
/// connecting (pingora's new process accepts exactly one connection: the hand-off): the socket
/// file is this user's, in a private directory, and the kernel lists it as listening.
pub fn waiting(sock: &Path) -> Result<(), String> {
    private_dir(sock.parent().unwrap_or(Path::new("/")))?;
    let meta = std::fs::symlink_metadata(sock).map_err(|e| format!("no new process is waiting on {}: {e}", sock.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_socket() || meta.uid() != me {
        return Err(format!("{} is not a socket of this user", sock.display()));
    }
    let table = std::fs::read_to_string("/proc/net/unix").map_err(|e| format!("/proc/net/unix: {e}"))?;
    let path = sock.to_string_lossy();
    // Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 (__SO_ACCEPTCON): listening.
    let listening = table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8 && cols[7] == path && u32::from_str_radix(cols[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    });
    if listening {
        Ok(())
    } else {
        Err(format!("no new process is listening on {}", sock.display()))
    }
}

/// pingora's signals, with SIGQUIT checked first: the sockets are handed over (and this process
/// stops serving) only when a new process is waiting for them; otherwise it keeps serving.
pub struct Signals {
    /// `None` when the upgrade directory could not be prepared (the reason was logged).
    pub upgrade_sock: Option<PathBuf>,
    pub ready: Arc<ReadyState>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = streams else {
            tracing::error!("cannot handle signals; exiting");
            exit(1);
        };
        self.ready.set_signals_handled();
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    let check = match &self.upgrade_sock {
                        Some(sock) => waiting(sock).map(|()| sock),
                        None => Err("graceful upgrade is unavailable (see the upgrade_sock line at start-up)".to_string()),
                    };
                    match check {
                        Ok(sock) => {
                            tracing::info!("SIGQUIT: handing the listening sockets to the new process on {}", sock.display());
                            self.ready.set_draining();
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Err(why) => tracing::error!("SIGQUIT: not upgrading, still serving: {why}"),
                    }
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: no new connections; finishing the calls in flight");
                    self.ready.set_draining();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

/// The plugin's drain ([`paysign_plugin::drain::when_drained`]), then the pid file removed (if
/// still ours) and the process ended.
pub fn exit_when_drained(
    phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    in_flight: impl Fn() -> i64 + Send + 'static,
    stop_sending: impl Fn() + Send + 'static,
    deadline: Duration,
    pid_file: Option<PathBuf>,
) -> Result<(), String> {
    paysign_plugin::drain::when_drained(phases, in_flight, stop_sending, deadline, move || {
        if let Some(pid_file) = &pid_file {
            remove_pid_file_if_ours(pid_file);
        }
        exit(0);
    })
    .map_err(|e| e.to_string())
}

/// After an upgrade the pid file names the new process: leave it.
fn remove_pid_file_if_ours(pid_file: &Path) {
    let ours = std::fs::read_to_string(pid_file).is_ok_and(|t| t.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(pid_file);
    }
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// The process runs the same program as this one (by file name: an upgraded binary shows as
/// `paysign (deleted)`) with `run`.
fn is_paysign(pid: i32) -> bool {
    let name = |p: PathBuf| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    let ours = std::env::current_exe().ok().and_then(name);
    let theirs = std::fs::read_link(format!("/proc/{pid}/exe")).ok().and_then(name);
    let runs = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"run"));
    ours.is_some() && ours == theirs && runs
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// How long `paysign upgrade` waits for each step (the new process to wait for the sockets; then
/// to take them and listen). pingora's new process itself waits about 6 s for the hand-off.
const UPGRADE_STEP: Duration = Duration::from_secs(20);

/// `paysign upgrade -c FILE`: starts `paysign run -c FILE --upgrade`, waits until it waits for
/// the sockets, signals the running process named by the pid file, and waits until the new
/// process listens (it then writes the pid file). Ok(message) or Err(why) for the exit code.
pub fn upgrade(config: &Path, files: &RunFiles) -> Result<String, String> {
    let old =
        read_pid(&files.pid_file).ok_or_else(|| format!("no running paysign: cannot read the pid file {}", files.pid_file.display()))?;
    if !alive(old) {
        return Err(format!("no running paysign: pid {old} (from {}) is not running", files.pid_file.display()));
    }
    // A stale pid file may name a recycled pid: SIGQUIT would end (core-dump) whatever runs there.
    if !is_paysign(old) {
        return Err(format!("no running paysign: pid {old} (from {}) is not a paysign process", files.pid_file.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut new = std::process::Command::new(exe);
    new.arg("run").arg("-c").arg(config).arg("--upgrade").stdin(std::process::Stdio::null());
    // Its own process group: an interrupt of this command must not stop the new gateway.
    std::os::unix::process::CommandExt::process_group(&mut new, 0);
    let mut child = new.spawn().map_err(|e| format!("cannot start the new process: {e}"))?;
    let new_pid = child.id();
    let gone = |child: &mut std::process::Child| -> Option<String> {
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("the new process {new_pid} exited ({status}); pid {old} keeps serving")),
            Ok(None) => None,
            Err(e) => Some(format!("the new process {new_pid}: {e}")),
        }
    };
    let give_up = |child: &mut std::process::Child, why: String| -> Result<String, String> {
        let _ = child.kill();
        let _ = child.wait();
        Err(why)
    };

    let start = Instant::now();
    while waiting(&files.upgrade_sock).is_err() {
        if let Some(why) = gone(&mut child) {
            return Err(why);
        }
        if start.elapsed() > UPGRADE_STEP {
            return give_up(
                &mut child,
                format!("the new process never waited on {}; pid {old} keeps serving", files.upgrade_sock.display()),
            );
        }
        std::thread::sleep(LISTEN_POLL);
    }
    // SAFETY: sending a signal has no memory-safety preconditions.
    if unsafe { libc::kill(old, libc::SIGQUIT) } != 0 {
        let e = io::Error::last_os_error();
        return give_up(&mut child, format!("cannot signal pid {old}: {e}"));
    }
    let start = Instant::now();
    while read_pid(&files.pid_file) != Some(new_pid as i32) {
        if let Some(why) = gone(&mut child) {
            return Err(why);
        }
        if start.elapsed() > UPGRADE_STEP {
            return give_up(&mut child, format!("the new process {new_pid} did not take the sockets; see pid {old}'s log"));
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(format!("upgraded: pid {new_pid} serves; pid {old} finishes its calls and exits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paysign-lifecycle-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The hook, in a real process: this test binary runs itself again with the hook installed
    /// and panics in a thread of its own (as a pingora service thread would).
    #[test]
    fn a_panic_in_any_thread_is_one_json_error_line_and_exit_1() {
        const NAME: &str = "lifecycle::tests::a_panic_in_any_thread_is_one_json_error_line_and_exit_1";
        if std::env::var_os("PAYSIGN_TEST_PANIC_CHILD").is_some() {
            #[allow(clippy::let_unit_value)]
            let _ = paysign_plugin::logging::init();
            install_panic_hook();
            let _ = std::thread::Builder::new().name("service".into()).spawn(|| panic!("boom")).map(|t| t.join());
            // Not reached: the hook ends the process from the panicking thread.
            std::process::exit(3);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
            .env("PAYSIGN_TEST_PANIC_CHILD", "1")
            .env("PAYSIGN_LOG", "info")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert_eq!(lines[0]["level"], "error");
        let msg = lines[0]["msg"].as_str().unwrap();
        assert!(msg.starts_with("panic in thread 'service' at src/lifecycle.rs:") && msg.ends_with(": boom; exiting"), "{msg}");
        // Nothing but JSON lines from the process itself (no Rust panic text).
        assert!(!stderr.contains("panicked at"), "{stderr}");
    }

    #[test]
    fn a_configured_socket_is_used_as_is_with_the_pid_file_next_to_it() {
        let f = RunFiles::of(Path::new("/run/paysign/up.sock"), Path::new("/etc/paysign/paysign.yaml"));
        assert_eq!(f.upgrade_sock, Path::new("/run/paysign/up.sock"));
        assert_eq!(f.pid_file, Path::new("/run/paysign/paysign.pid"));
    }

    #[test]
    fn by_default_the_socket_is_next_to_the_configuration_even_one_named_alone() {
        if std::env::var_os("RUNTIME_DIRECTORY").is_some() {
            return; // systemd's directory wins; nothing to check here
        }
        let dir = scratch("default");
        let f = RunFiles::of(Path::new(""), &dir.join("paysign.yaml"));
        assert_eq!(f.upgrade_sock, dir.join(".paysign-run/upgrade.sock"));
        let cwd = std::env::current_dir().unwrap();
        let f = RunFiles::of(Path::new(""), Path::new("paysign.yaml"));
        assert_eq!(f.upgrade_sock, cwd.join(".paysign-run/upgrade.sock"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_directory_is_created_private_and_one_others_may_write_is_refused() {
        let dir = scratch("prepare");
        let files = RunFiles::of(&dir.join("run/upgrade.sock"), Path::new("/x/paysign.yaml"));
        files.prepare().unwrap();
        assert_eq!(std::fs::metadata(dir.join("run")).unwrap().permissions().mode() & 0o777, 0o700);

        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = files.prepare().unwrap_err();
        assert!(e.contains("is writable by others (mode 1777)"), "{e}");
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(files.prepare().unwrap_err().contains("(mode 770)"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_listening_socket_of_this_user_counts_as_a_new_process_waiting() {
        let dir = scratch("waiting");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = dir.join("upgrade.sock");
        assert!(waiting(&sock).unwrap_err().contains("no new process is waiting"));
        // A stale socket file nobody listens on (what a process that gave up leaves behind).
        let bound = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(waiting(&sock).is_ok());
        drop(bound);
        assert!(waiting(&sock).unwrap_err().contains("no new process is listening"), "{:?}", waiting(&sock));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn listening_tcp_sockets_of_this_process_are_found_by_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening_addrs().contains(&addr));
        // A connected (not listening) socket is not a listener.
        let c = std::net::TcpStream::connect(addr).unwrap();
        assert!(!listening_addrs().contains(&c.local_addr().unwrap()));
        drop(l);
        assert!(!listening_addrs().contains(&addr));
    }
}
