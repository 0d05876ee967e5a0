//! Validation: a [`GatewayFile`] (from YAML or from the builder) into the runtime [`Config`],
//! every problem collected, each naming its setting and, where one is involved, its file. Pure
//! but for reading the key files the configuration names: no host name is looked up and no
//! PKCS#11 token opened here. What needs the network or the HSM is left in a [`Pending`] for
//! [`super::online`], which the loader runs only when the configuration is loaded to run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::runtime::{sha256, Caller, Config, InboxSettings, InboxStore, Notify, NotifyRoute, Upstream, Validated};
use super::schema::*;
use super::{ConfigError, Mode};
use crate::crypto::{segmented, Backend, PublicKey, Secret};
use crate::http_client::{self, Target};
use crate::pkcs11;
use crate::protocol::{Merchant, MerchantKeys, Rollover};
use paysign_settings::{check_customer_no, check_listen, files_for, Files};

/// The files of a gateway configuration ([`Files`], shared with the sandbox's configuration)
/// and what validation leaves for later: what a key in a PKCS#11 token becomes — opened later
/// ([`Mode::Run`]), a warning ([`Mode::Check`]) or an error ([`Mode::Offline`]) — and the host
/// names to look up.
pub struct Ctx<'a> {
    files: Files<'a>,
    mode: Mode,
    pending: RefCell<Pending>,
}

impl<'a> std::ops::Deref for Ctx<'a> {
    type Target = Files<'a>;
    fn deref(&self) -> &Files<'a> {
        &self.files
    }
}

/// What validation leaves for [`super::online`]: the host names to look up and the keys to
/// open in a PKCS#11 token.
#[derive(Default)]
pub(crate) struct Pending {
    pub lookups: Vec<Lookup>,
    pub keys: Vec<TokenKey>,
    /// Notification routes (index, `customer_no`) whose merchant's key is one of `keys`.
    pub route_merchants: Vec<(usize, String)>,
}

/// A host name to look up, and where its addresses go.
pub(crate) struct Lookup {
    pub setting: String,
    pub host: String,
    pub port: u16,
    pub place: Place,
    /// How many warnings there were when it was named: `check` reports a name that does not
    /// resolve there, in the file's order.
    pub warnings_before: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Platform,
    /// The `host:port` as written (error messages quote it).
    EgressProxy(String),
    NotifyRoute(usize),
}

/// A merchant whose private key is in a PKCS#11 token: everything but that key, checked.
pub(crate) struct TokenKey {
    pub setting: String,
    pub open: OpenLater,
    pub customer_no: String,
    pub platform_public: Arc<PublicKey>,
    pub chunk_size: usize,
    pub rollover: Option<Rollover>,
}

/// What opening a key in a token takes.
pub(crate) struct OpenLater {
    pub uri: String,
    pub module: PathBuf,
    pub pin: Secret,
    pub allow_weak: bool,
}

impl Ctx<'_> {
    /// A URL setting, its host name not looked up here: the address is 0.0.0.0 until
    /// [`super::online`] looks it up and puts the addresses at `lookup` (`None`: fixed addresses).
    pub(crate) fn url(&self, setting: &str, url: &str, lookup: Option<Place>) -> Result<Target, ConfigError> {
        let target = http_client::parse_url_with(url, false).map_err(|m| self.err(setting, None, m.to_string()))?;
        if let Some(place) = lookup.filter(|_| !target.is_ip_literal()) {
            let host = target.host.clone();
            let warnings_before = self.warning_count();
            let lookup = Lookup { setting: setting.into(), host, port: target.port, place, warnings_before };
            self.pending.borrow_mut().lookups.push(lookup);
        }
        Ok(target)
    }

    pub(crate) fn take_pending(&self) -> Pending {
        std::mem::take(&mut self.pending.borrow_mut())
    }
}

/// The context for a configuration file (its folder resolves relative paths).
pub fn ctx_for(path: &Path, allow_weak: bool, backend: Backend) -> Ctx<'_> {
    Ctx { files: files_for(path, allow_weak, backend), mode: Mode::Run, pending: RefCell::default() }
}

/// [`ctx_for`] in a mode (what a key in a token becomes).
pub(crate) fn ctx_in(path: &Path, allow_weak: bool, backend: Backend, mode: Mode) -> Ctx<'_> {
    Ctx { mode, ..ctx_for(path, allow_weak, backend) }
}

/// The problems found so far: validation goes on after each one, so that a file's problems
/// are all reported at once.
pub(crate) struct Found {
    pub errors: Vec<ConfigError>,
}

impl Found {
    fn ok<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.errors.push(e)).ok()
    }
    fn check(&mut self, r: Result<(), ConfigError>) {
        self.ok(r);
    }
}

/// `None` when anything was refused (the problems are in `found`), or a key was left in its
/// token by [`Mode::Check`]. Keys in a token for [`Mode::Run`] wait in the context's [`Pending`].
pub(crate) fn validate(file: GatewayFile, ctx: &Ctx, found: &mut Found) -> Option<Config> {
    let before = found.errors.len();
    found.check(check_listen(ctx, "listen", &file.listen));
    found.check(check_listen(ctx, "admin_listen", &file.admin_listen));
    if file.listen == file.admin_listen {
        found.check(Err(ctx.err("admin_listen", None, "must differ from listen")));
    }
    // Without a token, reloads and GET /config are accepted from 127.0.0.1/::1 only: an admin
    // listener that others can reach would be refused to everyone, or (behind a sidecar that
    // connects from 127.0.0.x) open to everyone.
    let admin_reachable = file.admin_listen.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback());
    if admin_reachable && file.admin_token_file.is_none() {
        found.check(Err(ctx.err(
            "admin_token_file",
            None,
            format!("is required when admin_listen ({}) is not a loopback address", file.admin_listen),
        )));
    }
    if file.threads == 0 {
        found.check(Err(ctx.err("threads", None, "must be at least 1")));
    }
    if file.max_body_bytes == 0 {
        found.check(Err(ctx.err("max_body_bytes", None, "must be at least 1")));
    }
    let upstream = found.ok(upstream(ctx, &file.platform));
    if file.merchants.is_empty() {
        found.check(Err(ctx.err("merchants", None, "at least one merchant is required")));
    }
    let mut merchants = HashMap::new();
    // Every customer_no named, built or not: references to it are then not reported twice.
    let mut known = std::collections::HashSet::new();
    let mut unopened = false;
    for (i, m) in file.merchants.iter().enumerate() {
        let at = format!("merchants[{i}]");
        if found.ok(check_customer_no(ctx, &at, &m.customer_no)).is_none() {
            continue;
        }
        if !known.insert(m.customer_no.clone()) {
            found.check(Err(ctx.err(format!("{at}.customer_no"), None, format!("{} is configured twice", m.customer_no))));
            continue;
        }
        match merchant(ctx, &at, m, file.pkcs11.as_ref(), file.allow_weak_keys, found) {
            Some(Some(merchant)) => {
                merchants.insert(m.customer_no.clone(), Arc::new(merchant));
            }
            // Run: opened by `online` once validation is over; check: left in its token.
            Some(None) => unopened |= ctx.mode == Mode::Check,
            None => {}
        }
    }
    let notify = file.notify.as_ref().and_then(|n| found.ok(notify(ctx, n, &merchants, &known, &[&file.listen, &file.admin_listen])));
    let callers = found.ok(callers(ctx, &file.callers, &known));
    let admin_token_sha256 = match &file.admin_token_file {
        Some(f) => found.ok(admin_token(ctx, f)).map(Some),
        None => Some(None),
    };
    if file.max_in_flight == 0 {
        found.check(Err(ctx.err("max_in_flight", None, "must be at least 1")));
    }
    if file.max_connections == 0 {
        found.check(Err(ctx.err("max_connections", None, "must be at least 1")));
    }
    if file.header_timeout_ms == 0 {
        found.check(Err(ctx.err("header_timeout_ms", None, "must be positive")));
    }
    let private_key_workers = match file.private_key_workers {
        Some(0) => {
            found.check(Err(ctx.err("private_key_workers", None, "must be at least 1")));
            0
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if !(1024..=MAX_HEADER_BYTES_LIMIT).contains(&file.max_header_bytes) {
        found.check(Err(ctx.err("max_header_bytes", None, format!("must be between 1024 and {MAX_HEADER_BYTES_LIMIT}"))));
    }
    if found.errors.len() > before || unopened {
        return None;
    }
    let notify = notify.map(|mut n| {
        n.body_timeout = Duration::from_millis(file.client_body_timeout_ms.max(1));
        n
    });
    Some(Config {
        notify,
        callers: callers?,
        admin_token_sha256: admin_token_sha256?,
        max_in_flight: file.max_in_flight,
        max_connections: file.max_connections,
        header_timeout: Duration::from_millis(file.header_timeout_ms),
        max_header_bytes: file.max_header_bytes,
        private_key_queue: file.private_key_queue,
        crypto_backend: file.crypto_backend,
        offload_private_key_ops: file.offload_private_key_ops,
        private_key_workers,
        source: ctx.config.to_path_buf(),
        listen: file.listen,
        admin_listen: file.admin_listen,
        threads: file.threads,
        grace_period_seconds: file.grace_period_seconds,
        upgrade_sock: file.upgrade_sock.clone(),
        max_body_bytes: file.max_body_bytes,
        client_body_timeout: Duration::from_millis(file.client_body_timeout_ms.max(1)),
        upstream: upstream?,
        merchants,
        warnings: Vec::new(),
        _validated: Validated,
    })
}

/// One merchant: `None` when refused (the problems are in `found`), `Some(None)` when its key
/// is in a token that `paysign check` does not open.
fn merchant(
    ctx: &Ctx,
    at: &str,
    m: &MerchantFile,
    p11: Option<&Pkcs11File>,
    allow_weak: bool,
    found: &mut Found,
) -> Option<Option<Merchant>> {
    let before = found.errors.len();
    let platform_public = found.ok(ctx.public_key(&format!("{at}.platform_public_key"), &m.platform_public_key));
    let keys = match m.profile {
        ProfileName::Md5 => {
            found.check(ctx.not_for_profile(at, "merchant_private_key", m.merchant_private_key.is_some(), "md5"));
            let md5_key = found.ok(ctx.md5_key(at, &m.md5_key_file, &m.md5_key_env));
            match (md5_key, &platform_public) {
                (Some(md5_key), Some(p)) => Some(MerchantKeys::Md5 { md5_key, platform_public: p.clone() }),
                _ => None,
            }
        }
        ProfileName::Rsa => {
            found.check(ctx.not_for_profile(at, "md5_key_file", m.md5_key_file.is_some(), "rsa"));
            found.check(ctx.not_for_profile(at, "md5_key_env", m.md5_key_env.is_some(), "rsa"));
            let setting = format!("{at}.merchant_private_key");
            let merchant_private = match m.merchant_private_key.as_ref().and_then(|p| p.to_str()).filter(|p| pkcs11::is_uri(p)) {
                // In a token: opened once validation is over (by `check`, not at all); the rest
                // is checked now.
                Some(uri) => {
                    let later = found.ok(token_key(ctx, &setting, uri, p11, allow_weak))?;
                    let rest = found.ok(rollover_and_chunk(ctx, at, m, platform_public.as_ref()));
                    if let (Some(open), Some((rollover, chunk_size)), Some(platform_public)) = (later, rest, platform_public) {
                        let customer_no = m.customer_no.clone();
                        let key = TokenKey { setting, open, customer_no, platform_public, chunk_size, rollover };
                        ctx.pending.borrow_mut().keys.push(key);
                    }
                    return (found.errors.len() == before).then_some(None);
                }
                None => found.ok(ctx.private_key(&setting, &m.merchant_private_key)),
            };
            match (merchant_private, &platform_public) {
                (Some(merchant_private), Some(p)) => Some(MerchantKeys::Rsa { merchant_private, platform_public: p.clone() }),
                _ => None,
            }
        }
    };
    let rollover = found.ok(rollover_and_chunk(ctx, at, m, platform_public.as_ref()));
    if found.errors.len() > before {
        return None;
    }
    let (rollover, chunk_size) = rollover?;
    Some(Some(Merchant { customer_no: m.customer_no.clone(), keys: keys?, chunk_size, rollover }))
}

/// The merchant's key rollover and the chunk size its sealing key allows.
fn rollover_and_chunk(
    ctx: &Ctx,
    at: &str,
    m: &MerchantFile,
    platform_public: Option<&Arc<PublicKey>>,
) -> Result<(Option<Rollover>, usize), ConfigError> {
    let rollover = match (&m.next_platform_public_key, m.seal_with) {
        (None, SealWith::Current) => None,
        (None, SealWith::Next) => return Err(ctx.err(format!("{at}.seal_with"), None, "next needs next_platform_public_key")),
        (Some(_), seal_with) => Some(Rollover {
            next: ctx.public_key(&format!("{at}.next_platform_public_key"), &m.next_platform_public_key)?,
            seal_with_next: seal_with == SealWith::Next,
        }),
    };
    let sealing_key = match (&rollover, platform_public) {
        (Some(Rollover { next, seal_with_next: true }), _) => next,
        (_, Some(p)) => p,
        // The platform key was refused (and reported): nothing to size chunks by.
        (_, None) => return Ok((rollover, 0)),
    };
    let chunk_size = segmented::chunk_size_for(sealing_key, m.chunk_size).map_err(|e| ctx.err(format!("{at}.chunk_size"), None, e))?;
    Ok((rollover, chunk_size))
}

fn admin_token(ctx: &Ctx, f: &Path) -> Result<[u8; 32], ConfigError> {
    let path = ctx.resolve(f);
    ctx.secret_mode("admin_token_file", &path)?;
    let mut token = String::new();
    std::fs::File::open(&path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut token))
        .map_err(|e| ctx.err("admin_token_file", Some(&path), format!("cannot read file: {e}")))?;
    let token = token.trim_end_matches(['\r', '\n']);
    if token.len() < 16 {
        return Err(ctx.err("admin_token_file", Some(&path), "the token must be at least 16 characters"));
    }
    Ok(sha256(token.as_bytes()))
}

/// A merchant key in a PKCS#11 token (see `pkcs11.rs`): what opening it takes, for
/// [`super::online`] when running; checked but not opened by `paysign check` (`None`, with a
/// warning); refused when validating offline.
fn token_key(
    ctx: &Ctx,
    setting: &str,
    uri: &str,
    settings: Option<&Pkcs11File>,
    allow_weak: bool,
) -> Result<Option<OpenLater>, ConfigError> {
    let p = settings.ok_or_else(|| ctx.err(setting, None, "a pkcs11: key needs the pkcs11 settings (module, pin_file or pin_env)"))?;
    pkcs11::Pkcs11Uri::parse(uri).map_err(|e| ctx.err(setting, None, e.to_string()))?;
    let pin = ctx.secret("pkcs11.pin", "a pkcs11: key", "the PIN", &p.pin_file, &p.pin_env)?;
    let module = ctx.resolve(&p.module);
    match ctx.mode {
        Mode::Run => Ok(Some(OpenLater { uri: uri.into(), module, pin, allow_weak })),
        Mode::Check => {
            if !module.is_file() {
                return Err(ctx.err("pkcs11.module", Some(&module), "file does not exist"));
            }
            ctx.warn(setting, None, "the key in the PKCS#11 token is not opened by check (`paysign keys check --pkcs11-module` opens it)");
            Ok(None)
        }
        Mode::Offline => Err(ctx.err(setting, None, "PKCS#11 keys are opened only when the configuration is loaded for real")),
    }
}

fn callers(ctx: &Ctx, files: &[CallerFile], merchants: &std::collections::HashSet<String>) -> Result<Vec<Caller>, ConfigError> {
    let mut out: Vec<Caller> = Vec::with_capacity(files.len());
    for (i, c) in files.iter().enumerate() {
        let at = format!("callers[{i}]");
        if c.name.is_empty() || c.name.len() > 64 || !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ctx.err(format!("{at}.name"), None, "1-64 letters, digits, '-', '_' or '.'"));
        }
        let hex = c.token_sha256.trim();
        let mut hash = [0u8; 32];
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ctx.err(format!("{at}.token_sha256"), None, "must be 64 hex digits (the SHA-256 of the token, not the token)"));
        }
        for (j, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).map_err(|_| ctx.err(format!("{at}.token_sha256"), None, "not hex"))?;
        }
        if out.iter().any(|o| o.token_sha256 == hash || o.name == c.name) {
            return Err(ctx.err(at.clone(), None, "name and token must differ from every other caller's"));
        }
        let all = |v: &[String]| v.len() == 1 && v[0] == "*";
        for m in c.merchants.iter().filter(|m| *m != "*") {
            if !merchants.contains(m) {
                return Err(ctx.err(format!("{at}.merchants"), None, format!("{m} is not a configured merchant")));
            }
        }
        for e in c.endpoints.iter().filter(|e| *e != "*") {
            if !e.starts_with("/api/") {
                return Err(ctx.err(format!("{at}.endpoints"), None, format!("'{e}' is not a /api/… path")));
            }
        }
        if c.merchants.is_empty() || c.endpoints.is_empty() {
            return Err(ctx.err(at.clone(), None, "merchants and endpoints must each name at least one (or \"*\")"));
        }
        out.push(Caller {
            name: c.name.clone(),
            token_sha256: hash,
            merchants: (!all(&c.merchants)).then(|| c.merchants.clone()),
            endpoints: (!all(&c.endpoints)).then(|| c.endpoints.clone()),
        });
    }
    Ok(out)
}

fn cidrs(ctx: &Ctx, at: &str, list: &[String]) -> Result<Vec<crate::cidr::Cidr>, ConfigError> {
    list.iter().map(|c| crate::cidr::Cidr::parse(c).map_err(|m| ctx.err(at, None, m.to_string()))).collect()
}

fn notify(
    ctx: &Ctx,
    n: &NotifyFile,
    merchants: &HashMap<String, Arc<Merchant>>,
    known: &std::collections::HashSet<String>,
    taken: &[&String],
) -> Result<Notify, ConfigError> {
    check_listen(ctx, "notify.listen", &n.listen)?;
    // Without an allow-list, anyone who reaches a non-loopback listener can spend its capacity
    // (forged notifications cost decryptions) and shed the platform's genuine ones.
    if n.allow_from.is_empty() && n.listen.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
        ctx.warn(
            "notify.allow_from",
            None,
            format!("is empty while notify.listen ({}) is not a loopback address: list the platform's callback addresses", n.listen),
        );
    }
    if taken.contains(&&n.listen) {
        return Err(ctx.err("notify.listen", None, "must differ from listen and admin_listen"));
    }
    if n.ack.is_empty() {
        return Err(ctx.err("notify.ack", None, "must not be empty"));
    }
    if n.forward_timeout_ms == 0 || n.max_body_bytes == 0 {
        return Err(ctx.err("notify.forward_timeout_ms", None, "limits must be positive"));
    }
    if n.routes.is_empty() {
        return Err(ctx.err("notify.routes", None, "at least one route is required"));
    }
    let mut routes: Vec<NotifyRoute> = Vec::new();
    for (i, r) in n.routes.iter().enumerate() {
        let at = format!("notify.routes[{i}]");
        if !r.path.starts_with('/') || r.path.contains(['?', '#', ' ']) {
            return Err(ctx.err(format!("{at}.path"), None, "must be a path like /notify/bindcard"));
        }
        if routes.iter().any(|x| x.path == r.path) {
            return Err(ctx.err(format!("{at}.path"), None, format!("{} is routed twice", r.path)));
        }
        let target = ctx.url(&format!("{at}.target"), &r.target, Some(Place::NotifyRoute(i)))?;
        let merchant = match &r.merchant {
            Some(c) if !known.contains(c) => {
                return Err(ctx.err(format!("{at}.merchant"), None, format!("{c} is not a configured merchant")))
            }
            // Not built when its key was refused (reported), left in its token by `check`, or
            // is opened from its token after validation (then put here by `online`).
            Some(c) => {
                let m = merchants.get(c).cloned();
                if m.is_none() {
                    ctx.pending.borrow_mut().route_merchants.push((i, c.clone()));
                }
                m
            }
            None => None,
        };
        routes.push(NotifyRoute { path: r.path.clone(), target, merchant });
    }
    Ok(Notify {
        listen: n.listen.clone(),
        ack: n.ack.clone(),
        max_body_bytes: n.max_body_bytes,
        forward_timeout: Duration::from_millis(n.forward_timeout_ms),
        max_blocks: n.max_blocks.max(1),
        allow_from: cidrs(ctx, "notify.allow_from", &n.allow_from)?,
        trusted_proxies: cidrs(ctx, "notify.trusted_proxies", &n.trusted_proxies)?,
        body_timeout: Duration::from_millis(default_client_body_timeout()),
        routes,
        inbox: match &n.inbox {
            // A lease shorter than an attempt would let a second deliverer take a notification
            // whose first attempt is still running.
            Some(i) if i.lease_ms <= n.forward_timeout_ms => {
                return Err(ctx.err(
                    "notify.inbox.lease_ms",
                    None,
                    format!("must be longer than notify.forward_timeout_ms ({} ms)", n.forward_timeout_ms),
                ))
            }
            Some(i) => Some(inbox(ctx, i)?),
            None => None,
        },
    })
}

/// `notify.inbox`: exactly one store, a 256-bit key, a schedule that ends.
fn inbox(ctx: &Ctx, i: &InboxFile) -> Result<InboxSettings, ConfigError> {
    let url =
        match (&i.postgres_url, &i.postgres_url_env) {
            (Some(_), Some(_)) => return Err(ctx.err("notify.inbox.postgres_url", None, "set postgres_url or postgres_url_env, not both")),
            (Some(u), None) => Some(u.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                ctx.err("notify.inbox.postgres_url_env", None, format!("environment variable {var} is not set or not UTF-8"))
            })?),
            (None, None) => None,
        };
    let store = match (&i.sqlite_path, url) {
        (Some(p), None) => InboxStore::Sqlite(ctx.resolve(p)),
        (None, Some(u)) if u.starts_with("postgres://") || u.starts_with("postgresql://") || u.contains("host=") => InboxStore::Postgres(u),
        (None, Some(_)) => return Err(ctx.err("notify.inbox.postgres_url", None, "is not a PostgreSQL URL (postgresql://user@host/db)")),
        (Some(_), Some(_)) => return Err(ctx.err("notify.inbox.sqlite_path", None, "set sqlite_path or postgres_url, not both")),
        (None, None) => return Err(ctx.err("notify.inbox.sqlite_path", None, "the inbox needs sqlite_path or postgres_url")),
    };
    let key = ctx.secret("notify.inbox.key", "the inbox", "the inbox key", &i.key_file, &i.key_env)?;
    let at = if i.key_file.is_some() { "notify.inbox.key_file" } else { "notify.inbox.key_env" };
    paysign_inbox::Cipher::from_hex(key.expose()).map_err(|e| ctx.err(at, None, e.to_string()))?;
    let positive = [
        ("notify.inbox.retry_first_ms", i.retry_first_ms),
        ("notify.inbox.retry_max_interval_ms", i.retry_max_interval_ms),
        ("notify.inbox.give_up_after_secs", i.give_up_after_secs),
        ("notify.inbox.lease_ms", i.lease_ms),
        ("notify.inbox.deliverers", i.deliverers as u64),
    ];
    if let Some((setting, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(ctx.err(*setting, None, "must be positive"));
    }
    if i.retry_max_interval_ms < i.retry_first_ms {
        return Err(ctx.err("notify.inbox.retry_max_interval_ms", None, "must be at least retry_first_ms"));
    }
    if i.lease_ms > 3_600_000 {
        return Err(ctx.err("notify.inbox.lease_ms", None, "at most 3600000 (an hour)"));
    }
    if i.deliverers > 1024 {
        return Err(ctx.err("notify.inbox.deliverers", None, "at most 1024"));
    }
    if i.give_up_after_secs > 366 * 24 * 3600 {
        return Err(ctx.err("notify.inbox.give_up_after_secs", None, "at most a year"));
    }
    if i.retention_hours > 24 * 366 * 10 {
        return Err(ctx.err("notify.inbox.retention_hours", None, "at most ten years"));
    }
    Ok(InboxSettings {
        store,
        key,
        schedule: paysign_inbox::Schedule {
            first: Duration::from_millis(i.retry_first_ms),
            max_interval: Duration::from_millis(i.retry_max_interval_ms),
            give_up_after: Duration::from_secs(i.give_up_after_secs),
            jitter: 0.2,
        },
        ordered: i.ordered,
        retention: Duration::from_secs(i.retention_hours * 3600),
        lease: Duration::from_millis(i.lease_ms),
        deliverers: i.deliverers,
    })
}

fn upstream(ctx: &Ctx, p: &PlatformFile) -> Result<Upstream, ConfigError> {
    // Resolved once at start-up: pingora's peer would otherwise do a blocking lookup (and
    // panic on failure) on the request path.
    // With fixed addresses the name is never looked up.
    let target = ctx.url("platform.base_url", &p.base_url, p.addresses.is_empty().then_some(Place::Platform))?;
    if target.path.contains('?') {
        return Err(ctx.err("platform.base_url", None, "must not carry a query string"));
    }
    let ca_file = match &p.ca_file {
        Some(f) => {
            let path = ctx.resolve(f);
            if !path.is_file() {
                return Err(ctx.err("platform.ca_file", Some(&path), "file does not exist"));
            }
            Some(path)
        }
        None => None,
    };
    if p.connect_timeout_ms == 0 || p.read_timeout_ms == 0 {
        return Err(ctx.err("platform.read_timeout_ms", None, "timeouts must be positive"));
    }
    if p.max_response_bytes == 0 {
        return Err(ctx.err("platform.max_response_bytes", None, "must be at least 1"));
    }
    let client_cert =
        ctx.file_pair(("platform.client_cert_file", &p.client_cert_file), ("platform.client_key_file", &p.client_key_file))?;
    let egress_proxy_uds = p.egress_proxy_uds.as_ref().map(|f| ctx.resolve(f));
    let egress_proxy = match &p.egress_proxy {
        Some(_) if egress_proxy_uds.is_some() => {
            return Err(ctx.err("platform.egress_proxy", None, "set egress_proxy or egress_proxy_uds, not both"))
        }
        Some(hp) => {
            let t = ctx
                .url("platform.egress_proxy", &format!("http://{hp}"), Some(Place::EgressProxy(hp.clone())))
                .map_err(|e| ctx.err("platform.egress_proxy", None, format!("'{hp}' is not host:port: {}", e.message)))?;
            if !t.path.is_empty() || !hp.contains(':') {
                return Err(ctx.err("platform.egress_proxy", None, format!("'{hp}' is not host:port")));
            }
            Some(t.addrs[0])
        }
        None => None,
    };
    let mut target = target;
    let fixed = !p.addresses.is_empty() || target.is_ip_literal();
    if !p.addresses.is_empty() {
        target.addrs = p
            .addresses
            .iter()
            .map(|a| a.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, target.port)))
            .collect::<Result<_, _>>()
            .map_err(|_| ctx.err("platform.addresses", None, "each entry must be an IP address (no port, no name)"))?;
    }
    let dns_refresh = (!fixed && p.dns_refresh_secs > 0).then(|| Duration::from_secs(p.dns_refresh_secs));
    Ok(Upstream {
        target,
        client_cert,
        egress_proxy_uds,
        egress_proxy,
        tls_verify: p.tls_verify,
        ca_file,
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        read_timeout: Duration::from_millis(p.read_timeout_ms),
        connect_retries: p.connect_retries,
        dns_refresh,
        max_response_bytes: p.max_response_bytes,
        pool_idle_timeout: Duration::from_secs(p.pool_idle_timeout_secs),
    })
}
