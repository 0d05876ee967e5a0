//! A real PostgreSQL server for a test: Debian's `postgresql` package (installed by
//! `scripts/setup test`), a temporary data directory, run as a non-root user (PostgreSQL refuses
//! root: as root the server runs as `postgres`, or `nobody`), on a loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Postgres {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The directory of Debian's server programs (/usr/lib/postgresql/N/bin, the newest), or the
/// one on PATH that has them all.
fn bin_dir() -> PathBuf {
    let tools = ["initdb", "postgres", "pg_isready"];
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| tools.iter().all(|t| d.join(t).exists()))
        .collect();
    versions.sort();
    if let Some(dir) = versions.pop() {
        return dir;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| tools.iter().all(|t| d.join(t).exists())))
        .expect("PostgreSQL is not installed: run scripts/setup test")
}

/// The user the server runs as (name, uid, gid): none (this one) unless this is root, then
/// `postgres` (Debian's package creates it) or `nobody`.
fn server_user() -> Option<(&'static str, u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for (name, cname) in [("postgres", c"postgres"), ("nobody", c"nobody")] {
        // SAFETY: a NUL-terminated name; the record is read at once, before any other call.
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null record from getpwnam.
            return Some(unsafe { (name, (*pw).pw_uid, (*pw).pw_gid) });
        }
    }
    panic!("running as root and neither user postgres nor nobody exists");
}

/// `program args…` as the server user, killed if the test that started it dies (so no server
/// outlives a killed test run), configured by `setup` (stdio). Ways to switch user, in order:
/// this process's own (setuid in the child), `setpriv`, `runuser`; the first that starts
/// wins, and if none does every way's error is reported.
fn spawn_as_server_user(program: &Path, args: &[String], setup: impl Fn(&mut Command)) -> Child {
    use std::os::unix::process::CommandExt;
    let Some((name, uid, gid)) = server_user() else {
        let mut c = Command::new(program);
        c.args(args).env_remove("LD_LIBRARY_PATH");
        setup(&mut c);
        return c.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    };
    let mut direct = Command::new(program);
    direct.args(args).uid(uid).gid(gid);
    // SAFETY: prctl is async-signal-safe; runs in the child after the uid change (which would
    // clear the setting) and before exec.
    unsafe {
        direct.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "--pdeathsig=KILL".into(), "--".into()])
        .arg(program)
        .args(args);
    let mut runuser = Command::new("runuser");
    runuser.args(["-u", name, "--"]).arg(program).args(args);
    let mut errors = Vec::new();
    for (way, mut c) in [("setuid", direct), ("setpriv", setpriv), ("runuser", runuser)] {
        // Not this test process's environment: cargo's LD_LIBRARY_PATH names folders under the
        // project (in /root on a fresh machine), which the server's user may not read, and the
        // loader then failed on libpq ("Permission denied").
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C.UTF-8");
        setup(&mut c);
        match c.spawn() {
            Ok(child) => {
                if !errors.is_empty() {
                    eprintln!("postgres harness: started {} as {name} with {way} after: {}", program.display(), errors.join("; "));
                }
                return child;
            }
            Err(e) => errors.push(format!("{way}: {e}")),
        }
    }
    panic!("cannot start {} as {name} (uid {uid}): {}", program.display(), errors.join("; "))
}

impl Postgres {
    /// initdb + start; returns once the server accepts connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("paysign-pg-{}-{}", std::process::id(), super::free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((_, uid, gid)) = server_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        let args = ["-D", data.to_str().unwrap(), "-A", "trust", "-U", "paysign", "--no-sync", "-E", "UTF8"].map(String::from);
        let initdb = spawn_as_server_user(&bin.join("initdb"), &args, |c| {
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        });
        let out = initdb.wait_with_output().unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { child: None, dir, port: super::free_port(), bin };
        pg.run();
        pg
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let args = [
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-k",
            self.dir.to_str().unwrap(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
        ]
        .map(String::from);
        let child = spawn_as_server_user(&self.bin.join("postgres"), &args, |c| {
            c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log.try_clone().expect("the server log"));
        });
        self.child = Some(child);
        let ready = super::eventually(30, || {
            Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "paysign", "-d", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ready, "PostgreSQL did not start: {}", std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default());
    }

    /// A connection URL for database `postgres` as user `paysign`.
    pub fn url(&self) -> String {
        format!("postgresql://paysign@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
