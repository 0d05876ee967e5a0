//! Merchant private keys that never leave a PKCS#11 token (an HSM; SoftHSM2 for trials).
//!
//! `merchant_private_key: "pkcs11:token=paysign;object=merchant"` (RFC 7512) names the key;
//! the module and the PIN come from the `pkcs11:` settings (a file or an environment variable,
//! never the YAML itself). SHA256withRSA signing (`CKM_SHA256_RSA_PKCS`) and the raw RSA
//! operation of decryption (`CKM_RSA_X_509`) run inside the token; only the public half is
//! read out.
//!
//! - **No oracle**: the token does only the raw operation, which has nothing to refuse about
//!   padding; paysign removes the PKCS#1 v1.5 padding with implicit rejection
//!   ([`RejectionKey`]: constant-time, synthetic bytes for a bad block), so a badly padded
//!   block costs the same and ends the same as a good one. (With `CKM_RSA_PKCS` SoftHSM2
//!   refused bad padding with `CKR_GENERAL_ERROR` in a tenth of the time: a timing oracle.)
//!   Any other refusal of one block becomes [`ExternalError::Rejected`] and synthetic bytes:
//!   every block is still decrypted.
//! - **Sessions are pooled**: an operation takes a logged-in session (with its key handle) from
//!   the pool and puts it back; at most one per concurrent operation, which the private-key
//!   executor bounds to `private_key_workers`.
//! - **A token that goes away** fails the operations that need it ([`ExternalError::Unavailable`]:
//!   signing → 500 `not-sent`, opening an answer → 502 `sent`) and its sessions are closed;
//!   the next operation finds the token again (by label), logs in and goes on — no restart.
//!   "Gone" is decided by the return code *and* a health check of the session
//!   (`C_GetSessionInfo`, `C_GetTokenInfo`): a code like `CKR_GENERAL_ERROR` on a session that
//!   is still fine is a refusal of that input, and the session goes back to the pool.
//! - `paysign_pkcs11_sessions` counts the sessions paysign holds open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use once_cell::sync::Lazy;

use crate::crypto::keys;
use crate::crypto::{ExternalError, ExternalKey, PrivateKey, RejectionKey, Secret};

/// A parsed `pkcs11:` URI (the path attributes paysign uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the label of the token to find the key in (required).
    pub token: String,
    /// `object=`: the key's label (`CKA_LABEL`); at least one of `object` and `id` is given.
    pub object: Option<String>,
    /// `id=`: the key's `CKA_ID`, percent-decoded bytes.
    pub id: Option<Vec<u8>>,
}

impl Pkcs11Uri {
    /// RFC 7512: `pkcs11:token=…;object=…;id=%01;type=private`. A PIN in the URI is refused
    /// (it would sit in the configuration file).
    pub fn parse(uri: &str) -> Result<Self, Pkcs11Error> {
        Self::parse_text(uri).map_err(Pkcs11Error::Uri)
    }

    fn parse_text(uri: &str) -> Result<Self, String> {
        let rest = uri.strip_prefix("pkcs11:").ok_or("a PKCS#11 URI starts with pkcs11:")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut id) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr.split_once('=').ok_or_else(|| format!("'{attr}' is not name=value"))?;
            let v = percent_decode(v)?;
            match k {
                "token" => token = Some(String::from_utf8(v).map_err(|_| "token is not UTF-8")?),
                "object" => object = Some(String::from_utf8(v).map_err(|_| "object is not UTF-8")?),
                "id" => id = Some(v),
                "type" if v == b"private" => {}
                "type" => return Err("type must be private (the merchant's private key)".into()),
                "pin-value" | "pin-source" => return Err("no PIN in the URI: use pkcs11.pin_file or pkcs11.pin_env".into()),
                // Other attributes narrow the match (manufacturer, model, serial, library-*):
                // paysign finds the token by its label.
                _ => {}
            }
        }
        for q in query.split('&').filter(|q| !q.is_empty()) {
            if q.starts_with("pin-value=") || q.starts_with("pin-source=") {
                return Err("no PIN in the URI: use pkcs11.pin_file or pkcs11.pin_env".into());
            }
        }
        let token = token.ok_or("the URI must name the token (token=…)")?;
        if object.is_none() && id.is_none() {
            return Err("the URI must name the key (object=… or id=…)".into());
        }
        Ok(Pkcs11Uri { token, object, id })
    }

    /// The URI again, for logs (no secrets are ever in it).
    pub fn display(&self) -> String {
        let mut s = format!("pkcs11:token={}", self.token);
        if let Some(o) = &self.object {
            s.push_str(&format!(";object={o}"));
        }
        if let Some(id) = &self.id {
            s.push_str(";id=");
            id.iter().for_each(|b| s.push_str(&format!("%{b:02x}")));
        }
        s
    }
}

fn percent_decode(v: &str) -> Result<Vec<u8>, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = v.get(i + 1..i + 3).ok_or("a % escape needs two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % escape needs two hex digits")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// One initialised context per module for the whole process (C_Initialize runs once; reloads
/// reuse it).
static MODULES: Lazy<Mutex<HashMap<PathBuf, Pkcs11>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Every PKCS#11 call holds this for reading; re-initialising a module (C_Finalize and
/// C_Initialize, so that a token that came back is seen again) holds it for writing.
static GATE: RwLock<()> = RwLock::new(());
/// Bumped by every re-initialisation: pooled sessions from before it are invalid, and are
/// forgotten rather than closed (their handle numbers may belong to new sessions by then; the
/// module freed them in `C_Finalize`).
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// At most one re-initialisation per second, however many requests find the token missing.
static LAST_REINIT: Mutex<Option<Instant>> = Mutex::new(None);

/// Finalises and initialises `ctx` again: some modules (SoftHSM among them) only see a token
/// that went away and came back after this.
fn reinitialize(ctx: &Pkcs11) {
    {
        let mut last = LAST_REINIT.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
    }
    let _exclusive = GATE.write().unwrap_or_else(|p| p.into_inner());
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let _ = ctx.clone().finalize();
    if let Err(e) = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        tracing::error!("re-initialising the PKCS#11 module failed: {e}");
    }
}

fn module(path: &Path) -> Result<Pkcs11, String> {
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("cannot initialise the PKCS#11 module {}: {e}", path.display())),
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Sessions open in this process's modules (a module is loaded once per process, whichever
/// `Paysign` instance opened the key): every instance's `paysign_pkcs11_sessions` shows it.
static SESSIONS: AtomicI64 = AtomicI64::new(0);

/// How many PKCS#11 sessions paysign holds open in this process (pooled or in use).
pub fn sessions_open() -> i64 {
    SESSIONS.load(Ordering::Acquire)
}

/// A private key in a token, usable from any thread.
struct TokenKey {
    ctx: Pkcs11,
    uri: Pkcs11Uri,
    pin: Secret,
    /// Logged-in sessions with the key's handle in them (and the module epoch they were
    /// opened in), ready for the next operation.
    idle: Mutex<Vec<Pooled>>,
    /// The secret a badly padded block's synthetic bytes come from.
    rejection: RejectionKey,
}

struct Pooled {
    session: Session,
    key: ObjectHandle,
    epoch: u64,
}

impl TokenKey {
    /// A session on the token named by the URI (found again each time: a re-inserted or
    /// re-initialised token may sit in another slot), logged in, with the key found in it.
    fn open_session(&self) -> Result<Pooled, OpenError> {
        let epoch = EPOCH.load(Ordering::SeqCst);
        let slots = self.ctx.get_slots_with_token().map_err(|e| OpenError::NoToken(format!("listing slots: {e}")))?;
        let slot = slots
            .into_iter()
            .find(|s| self.ctx.get_token_info(*s).is_ok_and(|t| t.label() == self.uri.token))
            .ok_or_else(|| OpenError::NoToken(format!("no token labelled '{}'", self.uri.token)))?;
        let session = self.ctx.open_ro_session(slot).map_err(|e| format!("opening a session: {e}"))?;
        match session.login(UserType::User, Some(&AuthPin::from(self.pin.expose().to_string()))) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(format!("logging in to token '{}': {e}", self.uri.token).into()),
        }
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(KeyType::RSA)];
        if let Some(o) = &self.uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session.find_objects(&template).map_err(|e| format!("finding the key: {e}"))?;
        match found.as_slice() {
            [key] => {
                SESSIONS.fetch_add(1, Ordering::AcqRel);
                Ok(Pooled { session, key: *key, epoch })
            }
            [] => Err(format!("no RSA private key matches {}", self.uri.display()).into()),
            _ => Err(format!("{} matches {} keys; name one (object= and id=)", self.uri.display(), found.len()).into()),
        }
    }

    /// An idle session of the current epoch, or a new one; when the token cannot be found the
    /// module is re-initialised once and the token looked for again.
    fn session(&self) -> Result<Pooled, String> {
        loop {
            let Some(p) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() else { break };
            if p.epoch == EPOCH.load(Ordering::SeqCst) {
                return Ok(p);
            }
            discard(p);
        }
        let first = {
            let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
            self.open_session()
        };
        match first {
            Ok(p) => Ok(p),
            Err(OpenError::NoToken(_)) => {
                reinitialize(&self.ctx);
                let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
                self.open_session().map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the session and its token still answer (the health check behind "the token is
    /// gone": a module may report a refused input as `CKR_GENERAL_ERROR`).
    fn healthy(&self, session: &Session) -> bool {
        let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
        session.get_session_info().is_ok_and(|info| self.ctx.get_token_info(info.slot_id()).is_ok_and(|t| t.label() == self.uri.token))
    }

    fn give_back(&self, p: Pooled) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(p);
    }

    /// Runs `op` on an idle session (or a new one). The session goes back to the pool unless
    /// the token failed; `op` says whether its error means the token itself is unusable.
    fn with_session<T>(&self, op: impl FnOnce(&Session, ObjectHandle) -> Result<T, P11Error>) -> Result<T, ExternalError> {
        let pooled = self.session().map_err(|e| {
            tracing::error!("PKCS#11 key {} unavailable: {e}", self.uri.display());
            ExternalError::Unavailable
        })?;
        let result = {
            let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
            op(&pooled.session, pooled.key)
        };
        match result {
            Ok(v) => {
                self.give_back(pooled);
                Ok(v)
            }
            Err(P11Error::Pkcs11(rv, _)) if token_gone(rv) && !self.healthy(&pooled.session) => {
                // This session and every idle one belong to a token that went away.
                let idle: Vec<Pooled> = self.idle.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
                std::iter::once(pooled).chain(idle).for_each(discard);
                tracing::error!("PKCS#11 token '{}' failed ({rv}); its sessions are closed and it is looked for again", self.uri.token);
                Err(ExternalError::Unavailable)
            }
            Err(_) => {
                self.give_back(pooled);
                Err(ExternalError::Rejected)
            }
        }
    }
}

/// A key given up (a reload replaced it, or it could not be used) closes its sessions.
impl Drop for TokenKey {
    fn drop(&mut self) {
        let idle: Vec<Pooled> = self.idle.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        idle.into_iter().for_each(discard);
    }
}

/// Ends a pooled session: closed when it belongs to the module's current epoch (a session left
/// open stays allocated in the module: hundreds of bytes each in SoftHSM2), forgotten when the
/// module was re-initialised since (its handle may name a newer session by now).
fn discard(p: Pooled) {
    SESSIONS.fetch_sub(1, Ordering::AcqRel);
    let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
    if p.epoch == EPOCH.load(Ordering::SeqCst) {
        let _ = p.session.close();
    } else {
        std::mem::forget(p.session);
    }
}

/// Why a session could not be opened.
enum OpenError {
    /// No token with the URI's label: it may come back (see [`reinitialize`]).
    NoToken(String),
    Other(String),
}

impl From<String> for OpenError {
    fn from(s: String) -> Self {
        OpenError::Other(s)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoToken(s) | OpenError::Other(s) => f.write_str(s),
        }
    }
}

/// Errors that may mean the session or the token is gone rather than that the input was
/// refused; [`TokenKey::healthy`] decides.
fn token_gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError
    )
}

impl ExternalKey for TokenKey {
    fn decrypt_block(&self, block: &[u8]) -> Result<Vec<u8>, ExternalError> {
        // The raw operation only: its time and outcome do not depend on the padding, which
        // is checked here with implicit rejection.
        let em = self.with_session(|s, key| s.decrypt(&Mechanism::RsaX509, key, block))?;
        self.rejection.unpad(&em, block).ok_or(ExternalError::Rejected)
    }

    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, ExternalError> {
        // A refused signature is as much a failure of the key as a lost token.
        self.with_session(|s, key| s.sign(&Mechanism::Sha256RsaPkcs, key, message)).map_err(|_| ExternalError::Unavailable)
    }

    fn describe(&self) -> String {
        self.uri.display()
    }
}

/// Opens the key a URI names: finds the token, logs in, finds the key, reads its public half
/// (the modulus and exponent; the private half never leaves the token).
pub fn open_key(uri: &str, module_path: &Path, pin: &Secret, allow_weak: bool) -> Result<PrivateKey, Pkcs11Error> {
    let uri = Pkcs11Uri::parse(uri)?;
    open_parsed(uri, module_path, pin, allow_weak).map_err(Pkcs11Error::Token)
}

fn open_parsed(uri: Pkcs11Uri, module_path: &Path, pin: &Secret, allow_weak: bool) -> Result<PrivateKey, String> {
    let ctx = module(module_path)?;
    let token = TokenKey { ctx, uri, pin: pin.clone(), idle: Mutex::new(Vec::new()), rejection: RejectionKey::new(rand::random()) };
    let pooled = token.session()?;
    let public = public_half(&pooled, allow_weak);
    // A key that cannot be used is refused, but its session is sound: back to the pool.
    token.give_back(pooled);
    Ok(PrivateKey::external(public?, Arc::new(token)))
}

/// The key's public half, read from the token, once it has shown it decrypts with the raw
/// operation paysign needs (see the module doc).
fn public_half(pooled: &Pooled, allow_weak: bool) -> Result<keys::PublicKey, String> {
    let attrs = pooled
        .session
        .get_attributes(pooled.key, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .map_err(|e| format!("reading the key: {e}"))?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let (Some(n), Some(e)) = (n, e) else {
        return Err("the token does not show the key's modulus and public exponent".into());
    };
    let public = keys::public_from_components(&n, &e, allow_weak).map_err(|e| e.to_string())?;
    // 1^d = 1: the raw operation is offered for this key, and right.
    let mut one = vec![0u8; public.size()];
    if let Some(last) = one.last_mut() {
        *last = 1;
    }
    let raw = {
        let _shared = GATE.read().unwrap_or_else(|p| p.into_inner());
        pooled.session.decrypt(&Mechanism::RsaX509, pooled.key, &one)
    };
    match raw {
        Ok(m) if m.last() == Some(&1) && m.iter().rev().skip(1).all(|b| *b == 0) => Ok(public),
        Ok(_) => Err("the token's raw RSA decryption (CKM_RSA_X_509) gives wrong results".into()),
        Err(e) => Err(format!("the token does not decrypt with raw RSA (CKM_RSA_X_509), which paysign needs: {e}")),
    }
}

/// Why a key in a token cannot be used (the messages say what to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs11Error {
    /// The URI does not name a key paysign can use.
    #[error("{0}")]
    Uri(String),
    /// The module, the token, the login or the key failed.
    #[error("{0}")]
    Token(String),
}

/// Whether a `merchant_private_key` value names a key in a token (starts with `pkcs11:`)
/// rather than a file.
pub fn is_uri(s: &str) -> bool {
    s.starts_with("pkcs11:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = Pkcs11Uri::parse("pkcs11:token=paysign;object=merchant").unwrap();
        assert_eq!(u, Pkcs11Uri { token: "paysign".into(), object: Some("merchant".into()), id: None });
        let u = Pkcs11Uri::parse("pkcs11:token=my%20hsm;id=%01%a0;type=private?module-path=/x.so").unwrap();
        assert_eq!(u, Pkcs11Uri { token: "my hsm".into(), object: None, id: Some(vec![1, 0xa0]) });
        assert_eq!(u.display(), "pkcs11:token=my hsm;id=%01%a0");
        for (bad, why) in [
            ("file:x", "a PKCS#11 URI starts with pkcs11:"),
            ("pkcs11:object=m", "the URI must name the token (token=…)"),
            ("pkcs11:token=t", "the URI must name the key (object=… or id=…)"),
            ("pkcs11:token=t;object=m;pin-value=1234", "no PIN in the URI: use pkcs11.pin_file or pkcs11.pin_env"),
            ("pkcs11:token=t;object=m?pin-value=1234", "no PIN in the URI: use pkcs11.pin_file or pkcs11.pin_env"),
            ("pkcs11:token=t;object=m;type=public", "type must be private (the merchant's private key)"),
            ("pkcs11:token=t;id=%zz", "a % escape needs two hex digits"),
        ] {
            assert_eq!(Pkcs11Uri::parse(bad).unwrap_err(), Pkcs11Error::Uri(why.into()), "{bad}");
        }
    }
}
