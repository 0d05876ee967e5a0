//! Test harness: starts the real `paysign` binary (gateway and/or sandbox) — or, for the
//! gateway, the embedding example (`Options::under_test`) — on free loopback ports with configs
//! written to a temporary directory, waits for readiness, and speaks HTTP/1.1 over plain
//! sockets. Processes are killed when the harness is dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MD5_MERCHANT: &str = "202112090603";
pub const RSA_MERCHANT: &str = "202112090604";
pub const MD5_KEY: &str = "test-md5-key-0123456789abcdef";
pub mod fault_server;
pub mod http_server;
pub mod postgres;

pub const BINDCARD: &str = "/api/vborder/shortcut/bindCard/create";

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fresh directory with the test keys copied in.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paysign-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for entry in std::fs::read_dir(fixtures().join("keys")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join("keys").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join("keys/md5.key"), format!("{MD5_KEY}\n")).unwrap();
    // Secrets readable by their owner only: paysign warns about others-readable ones and
    // refuses group/other-writable ones (whatever the umask of the checkout).
    for entry in std::fs::read_dir(dir.join("keys")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// A port that was free a moment ago (the OS picks it; we release it for the child), never
/// one this test process handed out before: tests run in parallel, and a port released for
/// one test's child must not be given to another test before that child binds it.
pub fn free_port() -> u16 {
    bind_unclaimed().local_addr().unwrap().port()
}

/// A loopback listener on a port no other test of this process was given (for servers the
/// test itself runs).
pub fn bind_unclaimed() -> TcpListener {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return listener;
        }
    }
}

pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// `paysign` with `args`, logging at `info`, its stdout discarded.
fn paysign(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paysign"));
    cmd.args(args).env("PAYSIGN_LOG", "info").stdout(Stdio::null());
    cmd
}

pub fn spawn(args: &[&str], log: PathBuf) -> Proc {
    let out = std::fs::File::create(&log).unwrap();
    let child = paysign(args).stderr(Stdio::from(out)).spawn().unwrap();
    Proc { child, log }
}

/// Polls `GET path` until it answers 200 (readiness, not a fixed sleep), for at most 20 s.
pub fn wait_ready(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut backoff = Duration::from_millis(5);
    loop {
        if let Ok(r) = try_request(port, "GET", path, &[], b"") {
            if r.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "port {port}{path} never became ready");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn try_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).ok()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(port, method, path, headers, body).unwrap()
}

/// A valid bindCard/create business object.
pub fn bindcard(order_no: &str) -> Value {
    serde_json::json!({
        "orderNo": order_no,
        "userType": "EMAIL",
        "identifyId": "ident-7f3a@example.test",
        "bankCardType": "DEBIT",
        "bankCode": "ICBC",
        "bankCardName": "王小明",
        "certType": "ID",
        "certNo": "110101199003077777",
        "mobile": "13912345678",
        "expiredTime": "2030-01-01 12:05:01",
        "bindNotifyUrl": "http://merchant.example.test/notify",
        "pageReturnUrl": "http://merchant.example.test/return"
    })
}

pub struct Options {
    pub sandbox: bool,
    pub read_timeout_ms: u64,
    pub stall_ms: u64,
    pub max_body_bytes: usize,
    pub merchants: &'static [&'static str],
    /// The bank form target the sandbox puts into successful answers.
    pub submit_url: String,
    /// Extra YAML appended to the gateway config (e.g. a `notify:` section).
    pub gateway_extra: String,
    /// Extra YAML appended to the sandbox config.
    pub sandbox_extra: String,
    /// `crypto_backend` of the gateway (`aws-lc` or `rsa`).
    pub backend: &'static str,
    /// Point the gateway at this port instead of the sandbox (a fault server).
    pub platform_port: Option<u16>,
    /// `grace_period_seconds` of the gateway.
    pub grace: u64,
    /// The sandbox serves HTTPS (its cert and key in `sandbox_extra`); the gateway uses https://.
    pub tls: bool,
    /// `platform.connect_timeout_ms` of the gateway.
    pub connect_timeout_ms: u64,
    /// Host name in the gateway's base URL (for TLS host-name checks).
    pub platform_host: &'static str,
    /// The sandbox listens on this address (`[::1]` for IPv6).
    pub sandbox_host: &'static str,
    /// What serves the gateway's listeners: the `paysign` binary or the embedding example.
    pub under_test: UnderTest,
    /// The example's `--upstream` (its ordinary routes' server); ignored for the binary.
    pub example_upstream: Option<u16>,
}

/// The gateway a contract test runs against: both start from the same `paysign.yaml` and serve
/// `listen`, `admin_listen` (`/metrics`, `/readyz`) and `notify.listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderTest {
    /// `paysign run -c paysign.yaml`.
    Binary,
    /// `examples/my_gateway.rs -c paysign.yaml`: someone else's pingora gateway with paysign inside.
    Example,
}

/// The embedding example's executable, built once per test process (`cargo test --test …`
/// does not build examples, and would run a stale one; a no-op build when it is up to date).
pub fn example_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_paysign"));
            let release = bin.parent().unwrap().ends_with("release");
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--example", "my_gateway"]).current_dir(env!("CARGO_MANIFEST_DIR"));
            // Without what cargo set for this test process: a build script that reads one of
            // them (ring: CARGO_MANIFEST_DIR) would otherwise be rebuilt, with its dependants,
            // on every run — a minute each time.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                let set_for_tests =
                    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_", "CARGO_TARGET_TMPDIR"];
                if set_for_tests.iter().any(|p| k.starts_with(p)) || k == "OUT_DIR" {
                    cargo.env_remove(k.as_ref());
                }
            }
            if release {
                cargo.arg("--release");
            }
            assert!(cargo.status().unwrap().success(), "cargo build --example my_gateway");
            bin.parent().unwrap().join("examples/my_gateway")
        })
        .clone()
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sandbox: true,
            read_timeout_ms: 10_000,
            stall_ms: 5_000,
            max_body_bytes: 65_536,
            merchants: &[MD5_MERCHANT, RSA_MERCHANT],
            submit_url: "https://bank.example.test/epcc/bind".into(),
            gateway_extra: String::new(),
            sandbox_extra: String::new(),
            backend: "aws-lc",
            platform_port: None,
            grace: 0,
            tls: false,
            connect_timeout_ms: 1000,
            platform_host: "127.0.0.1",
            sandbox_host: "127.0.0.1",
            under_test: UnderTest::Binary,
            example_upstream: None,
        }
    }
}

/// A running gateway (and, unless disabled, a running sandbox it points at).
pub struct Stack {
    pub dir: PathBuf,
    pub proxy: u16,
    pub admin: u16,
    pub sandbox_port: u16,
    pub gateway: Proc,
    pub sandbox: Option<Proc>,
}

fn merchant_yaml(c: &str) -> String {
    if c == MD5_MERCHANT {
        format!("  - customer_no: \"{c}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n")
    } else {
        format!("  - customer_no: \"{c}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/merchant_private.pem\n")
    }
}

impl Stack {
    pub fn start(o: Options) -> Stack {
        let dir = temp_dir();
        let (proxy, admin, sandbox_port) = (free_port(), free_port(), free_port());
        let sandbox = if o.sandbox {
            std::fs::write(
                dir.join("sandbox.yaml"),
                format!(
                    "listen: \"{}:{sandbox_port}\"\nplatform_private_key: keys/platform_private.pem\nstall_ms: {}\nsubmit_url: {}\n{}merchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    md5_key_file: keys/md5.key\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    merchant_public_key: keys/merchant_public.pem\n",
                    o.sandbox_host, o.stall_ms, o.submit_url, o.sandbox_extra
                ),
            )
            .unwrap();
            let p = spawn(&["sandbox", "-c", dir.join("sandbox.yaml").to_str().unwrap()], dir.join("sandbox.log"));
            if o.sandbox_host != "127.0.0.1" {
                wait_listening_on(o.sandbox_host.trim_start_matches('[').trim_end_matches(']'), sandbox_port);
            } else if o.tls {
                wait_listening(sandbox_port);
            } else {
                wait_ready(sandbox_port, "/healthz");
            }
            Some(p)
        } else {
            None
        };
        let merchants: String = o.merchants.iter().map(|c| merchant_yaml(c)).collect();
        let sandbox_port = o.platform_port.unwrap_or(sandbox_port);
        std::fs::write(
            dir.join("paysign.yaml"),
            format!(
                "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: {}\ncrypto_backend: {}\nmax_body_bytes: {}\nplatform:\n  base_url: {}://{}:{sandbox_port}\n  read_timeout_ms: {}\n  connect_timeout_ms: {}\n{}merchants:\n{merchants}",
                o.grace, o.backend, o.max_body_bytes, if o.tls { "https" } else { "http" }, o.platform_host, o.read_timeout_ms, o.connect_timeout_ms, o.gateway_extra
            ),
        )
        .unwrap();
        let config = dir.join("paysign.yaml");
        let gateway = match o.under_test {
            UnderTest::Binary => spawn(&["run", "-c", config.to_str().unwrap()], dir.join("gateway.log")),
            UnderTest::Example => {
                let log = dir.join("gateway.log");
                let out = std::fs::File::create(&log).unwrap();
                let mut cmd = Command::new(example_binary());
                cmd.args(["-c", config.to_str().unwrap()]);
                if let Some(port) = o.example_upstream {
                    cmd.args(["--upstream", &format!("127.0.0.1:{port}")]);
                }
                cmd.env("PAYSIGN_LOG", "info").stdout(Stdio::null()).stderr(Stdio::from(out));
                Proc { child: cmd.spawn().unwrap(), log }
            }
        };
        wait_ready(admin, "/readyz");
        Stack { dir, proxy, admin, sandbox_port, gateway, sandbox }
    }

    pub fn post(&self, path: &str, merchant: Option<&str>, body: &[u8]) -> Response {
        post_to(self.proxy, path, merchant, body)
    }

    pub fn post_json(&self, merchant: &str, v: &Value) -> Response {
        self.post(BINDCARD, Some(merchant), v.to_string().as_bytes())
    }

    pub fn sandbox_stats(&self) -> Value {
        request(self.sandbox_port, "GET", "/__sandbox/stats", &[], b"").json()
    }

    /// The gateway's log with every line of what happened before in it (see [`settled_logs`]).
    pub fn settled_logs(&self) -> String {
        settled_logs(&self.gateway, self.proxy)
    }

    pub fn metrics(&self) -> String {
        let r = request(self.admin, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        r.text()
    }
}

/// A JSON `POST` to a gateway on `proxy`, for `merchant` when given.
pub fn post_to(proxy: u16, path: &str, merchant: Option<&str>, body: &[u8]) -> Response {
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(m) = merchant {
        h.push(("X-Paysign-Merchant", m));
    }
    request(proxy, "POST", path, &h, body)
}

/// The value of one sample line `name{labels} value` (labels in Prometheus' sorted order).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A secret file (a key, a token, a PIN): `text`, readable and writable by its owner only.
pub fn write_secret(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// Waits (bounded) until something accepts connections on `port`.
pub fn wait_listening(port: u16) {
    wait_listening_on("127.0.0.1", port)
}

/// Waits (bounded) until something accepts connections on `host:port`.
pub fn wait_listening_on(host: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut backoff = Duration::from_millis(5);
    while TcpStream::connect((host, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

/// Polls `check` until it returns true, for at most `secs` (for effects another process
/// produces asynchronously, such as a notification acknowledgement).
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut backoff = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

/// Runs the `paysign` binary to completion with `env` added and `stdin` fed in: (exit code,
/// stdout, stderr).
pub fn run_paysign(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paysign"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A gateway's log once every line logged before this call has been written. Lines leave in
/// batches through one writer thread, in the order they were logged: ask the gateway on
/// `proxy` for a marker (a 404 with a request id of our own) and wait for the marker's access
/// line.
pub fn settled_logs(gateway: &Proc, proxy: u16) -> String {
    let id = format!("log-marker-{}", SEQ.fetch_add(1, Ordering::SeqCst));
    let r = request(proxy, "GET", "/log-marker", &[("X-Request-Id", id.as_str())], b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let marker = format!(r#""request_id":"{id}""#);
    let mut logs = String::new();
    assert!(
        eventually(20, || {
            logs = gateway.logs();
            logs.contains(&marker)
        }),
        "the marker {id} never reached the log: {logs}"
    );
    logs
}

/// Spawns `paysign` with its stderr to a pipe whose read end is returned, unread (the log
/// consumer of the test); killed on drop.
pub fn spawn_with_stderr_pipe(args: &[&str]) -> (Proc, std::process::ChildStderr) {
    let mut child = paysign(args).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    (Proc { child, log: PathBuf::new() }, stderr)
}

/// One number from `/proc/<pid>/status`: `VmHWM` (peak RSS, KiB), `Threads`, …
pub fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Spawns any command with stdout and stderr to `log`; killed on drop.
pub fn spawn_cmd(cmd: &mut Command, log: PathBuf) -> Proc {
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().unwrap();
    Proc { child, log }
}

impl Stack {
    pub fn gateway_pid(&self) -> u32 {
        self.gateway.child.id()
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code once the process has exited (None while it runs, or when a signal ended it).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }
}

/// Continuous bindCard/create calls from a background thread (unique order numbers, the
/// merchants taken in turn) until [`Load::finish`]; every answer other than a verified `0000`,
/// and every connection error, is recorded as a failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, prefix: &'static str, merchants: &'static [&'static str]) -> Load {
        use std::sync::atomic::Ordering;
        let load = Load { stop: Default::default(), done: Default::default(), failures: Default::default(), thread: None };
        let (stop, done, failures) = (load.stop.clone(), load.done.clone(), load.failures.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let merchant = merchants[n % merchants.len()];
                let body = bindcard(&format!("{prefix}-{n}")).to_string();
                match try_request(port, "POST", BINDCARD, &[("X-Paysign-Merchant", merchant)], body.as_bytes()) {
                    Ok(r) if r.status == 200 && r.json()["errCode"] == "0000" => {}
                    Ok(r) => failures.lock().unwrap().push(format!("{merchant} {prefix}-{n}: {} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(format!("{merchant} {prefix}-{n}: {e}")),
                }
                n += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
        Load { thread: Some(thread), ..load }
    }

    pub fn done(&self) -> usize {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (bounded) until `by` more calls have completed.
    pub fn progress(&self, by: usize) {
        let from = self.done();
        assert!(eventually(30, || self.done() >= from + by), "the load stopped");
    }

    /// Stops the load; returns (calls made, failures).
    pub fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.done(), self.failures.lock().unwrap().clone())
    }
}
