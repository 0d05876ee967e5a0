//! Sealing requests and opening responses, per profile (PROTOCOL.md, "Profiles" and
//! "A call, end to end"). Pure functions over bytes: no I/O, no pingora.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::canonical::{canonical_of, push_compact, Part};
use crate::crypto::{segmented, signature, CryptoError, PrivateKey, PublicKey, Secret};

/// Which signing/encryption scheme a merchant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Md5,
    Rsa,
}

impl Profile {
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Md5 => "md5",
            Profile::Rsa => "rsa",
        }
    }
}

/// The merchant-side key material of one profile.
#[derive(Debug, Clone)]
pub enum MerchantKeys {
    /// Shared MD5 key + the platform's public key. No private key on our side.
    Md5 { md5_key: Secret, platform_public: Arc<PublicKey> },
    /// Our private key (sign requests, decrypt responses) + the platform's public key.
    Rsa { merchant_private: Arc<PrivateKey>, platform_public: Arc<PublicKey> },
}

/// One configured merchant, ready to seal and open.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub customer_no: String,
    pub keys: MerchantKeys,
    /// Bytes of plaintext per encrypted block for requests (`k - 11` unless overridden).
    pub chunk_size: usize,
    /// During a platform-key rollover: the platform's announced next key.
    pub rollover: Option<Rollover>,
}

/// A platform-key rollover in progress: answers and notifications verify under the current
/// key or the next one; requests are sealed with the one the configuration designates (never
/// chosen by guessing).
#[derive(Debug, Clone)]
pub struct Rollover {
    pub next: Arc<PublicKey>,
    /// Seal requests with `next` (the platform has switched) instead of the current key.
    pub seal_with_next: bool,
}

/// Which of the platform's keys verified an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformKey {
    Current,
    Next,
}

impl PlatformKey {
    pub const fn as_str(self) -> &'static str {
        match self {
            PlatformKey::Current => "current",
            PlatformKey::Next => "next",
        }
    }
}

/// A sealed request, ready to send.
pub struct Sealed {
    /// `{"customerNo":…,"reqmsg":…}`
    pub body: Vec<u8>,
}

/// What opening a platform response produced.
#[derive(Debug)]
pub enum Opened {
    /// Opened and verified: `plaintext` is exactly the bytes inside `reqmsg`, a JSON object
    /// ([`fields_of`] gives its members); `err_code` is its `errCode` member, when a string.
    Verified { plaintext: String, err_code: Option<String> },
    /// The platform answered `code` ≠ 200 or `success` false (no `reqmsg` to open).
    PlatformFailure { code: String, msg: String },
}

/// Why a response could not be opened and verified. Outside paysign all of these look the
/// same; the variant feeds the `reason` label of the verification-failure metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("response envelope is malformed: {0}")]
    Envelope(&'static str),
    #[error("response names another customerNo")]
    CustomerMismatch,
    #[error("reqmsg does not decode: {0}")]
    Ciphertext(CryptoError),
    #[error("opened reqmsg is not UTF-8")]
    NotUtf8,
    #[error("opened reqmsg is not a JSON object")]
    Plaintext,
    #[error("sign is missing or does not verify")]
    Signature,
    /// Verified, but not shaped as a notification (an answer posing as one).
    #[error("verified, but not a notification (an answer's shape, or a notification's fields missing)")]
    NotANotification,
}

impl OpenError {
    /// Fixed label set for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Envelope(_) => "envelope",
            OpenError::CustomerMismatch => "customer_mismatch",
            OpenError::Ciphertext(CryptoError::Encoding) => "encoding",
            OpenError::Ciphertext(_) => "padding",
            OpenError::NotUtf8 => "not_utf8",
            OpenError::Plaintext => "plaintext",
            OpenError::NotANotification => "not_notification",
            OpenError::Signature => "signature",
        }
    }
}

/// Why a request could not be sealed (key or RNG trouble: a gateway fault, nothing sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealing failed: {0}")]
pub struct SealError(pub CryptoError);

/// Receives how long each step of sealing and opening took (`op`: `canonicalize`,
/// `md5_sign`, `rsa_sign`, `encrypt`, `open_type1`, `decrypt`, `md5_verify`, `rsa_verify`):
/// the gateway records them as metrics; `()` ignores them.
pub trait Observer {
    fn crypto(&self, op: &'static str, elapsed: Duration);

    /// Which platform key verified an answer or a notification (see [`Rollover`]).
    fn platform_key(&self, _customer_no: &str, _key: PlatformKey) {}
}

impl Observer for () {
    fn crypto(&self, _: &'static str, _: Duration) {}
}

fn timed<T>(obs: &dyn Observer, op: &'static str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    obs.crypto(op, start.elapsed());
    out
}

/// `{"customerNo":…,"reqmsg":…}` (the members in this order; `reqmsg` is base64, which JSON
/// needs no escape for, but both go through the JSON string writer all the same).
fn wrap(customer_no: &str, reqmsg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(customer_no.len() + reqmsg.len() + 32);
    out.extend_from_slice(b"{\"customerNo\":");
    let _ = serde_json::to_writer(&mut out, customer_no);
    out.extend_from_slice(b",\"reqmsg\":");
    let _ = serde_json::to_writer(&mut out, reqmsg);
    out.push(b'}');
    out
}

/// `data`'s two members, each `None` when missing or not a string.
struct DataMembers<'a> {
    customer_no: Option<Cow<'a, str>>,
    reqmsg: Option<Cow<'a, str>>,
}

/// The members of a verified plaintext (a JSON object) as a map. The plaintext is read again:
/// opening an answer reads only what verifying it needs.
pub fn fields_of(plaintext: &str) -> Map<String, Value> {
    match serde_json::from_str(plaintext) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A JSON object read member by member without building a map (the envelope, its `data`, an
/// answer's plaintext, a caller's business fields): sorted by name, a member given twice
/// counted with its last value at its first place (as in a parsed map).
struct Object<'a>(Vec<Named<'a>>);

/// One member: its name, its value, and its place in the text (the first, if given twice).
struct Named<'a> {
    name: Cow<'a, str>,
    value: Member<'a>,
    at: usize,
}

/// A member's value: a string (borrowed unless it holds escapes), or any other JSON value as
/// its text exactly as written (borrowed): a number keeps the sender's text (Java writes
/// `1.0E10`, which serde_json's own reading would turn into `1.0e+10`), and that text is what
/// the sender signed.
enum Member<'a> {
    Str(Cow<'a, str>),
    Json(Cow<'a, str>),
}

/// Why a text is not one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnObject {
    /// Not JSON at all (or more than one value).
    NotJson,
    /// One JSON value, but not an object.
    OtherValue,
}

impl<'a> Object<'a> {
    /// The members of `json`, which must be exactly one JSON object.
    fn parse(json: &'a [u8]) -> Result<Self, NotAnObject> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let Ok(members) = de.deserialize_map(AllMembers).and_then(|m| de.end().map(|()| m)) else {
            // The rare case, told apart by reading the text once more.
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
                Ok(_) => NotAnObject::OtherValue,
                Err(_) => NotAnObject::NotJson,
            });
        };
        Ok(Object::sorted(members))
    }

    /// `members` in text order, sorted by name; of equal names the first keeps its place and
    /// takes the last one's value.
    fn sorted(mut members: Vec<Named<'a>>) -> Self {
        // Stable: equal names stay in text order.
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.dedup_by(|later, kept| {
            let same = later.name == kept.name;
            if same {
                std::mem::swap(&mut later.value, &mut kept.value);
            }
            same
        });
        Object(members)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.0.binary_search_by(|m| m.name.as_ref().cmp(name)).ok()
    }

    fn get(&self, name: &str) -> Option<&Member<'a>> {
        Some(&self.0[self.find(name)?].value)
    }

    /// A member, taken out.
    fn take(&mut self, name: &str) -> Option<Member<'a>> {
        let i = self.find(name)?;
        Some(self.0.remove(i).value)
    }

    /// A string member's value, taken out (`None` when missing or not a string).
    fn take_str(&mut self, name: &str) -> Option<Cow<'a, str>> {
        match self.take(name)? {
            Member::Str(s) => Some(s),
            Member::Json(_) => None,
        }
    }

    /// The canonical string `sign` covers (the same as [`crate::canonicalize`] over the parsed map).
    fn canonical(&self) -> String {
        canonical_of(self.0.iter().map(|m| (m.name.as_ref(), m.value.part())))
    }
}

/// The caller's business fields, what [`Merchant::seal`] takes: one JSON object read once,
/// member by member (no map built), names and strings borrowed from the caller's text unless
/// they hold escapes. A name given twice counts with its last value at its first place, as in
/// a parsed map.
pub struct Business<'a>(Object<'a>);

impl<'a> Business<'a> {
    /// The members of `json`, which must be exactly one JSON object.
    pub fn parse(json: &'a [u8]) -> Result<Self, NotAnObject> {
        Object::parse(json).map(Business)
    }

    /// The members of a parsed map, in its order (names and strings borrowed, other values
    /// copied).
    pub fn from_map(map: &'a Map<String, Value>) -> Self {
        let members = map
            .iter()
            .enumerate()
            .map(|(at, (name, value))| {
                let value = match value {
                    Value::String(s) => Member::Str(Cow::Borrowed(s.as_str())),
                    other => Member::Json(Cow::Owned(other.to_string())),
                };
                Named { name: Cow::Borrowed(name.as_str()), value, at }
            })
            .collect();
        Business(Object::sorted(members))
    }

    /// A member's value as the canonical string and the schema read it.
    pub fn get(&self, name: &str) -> Option<Part<'_>> {
        self.0.get(name).map(Member::part)
    }

    /// The canonical string `sign` covers (any `sign` member left out).
    pub fn canonical(&self) -> String {
        self.0.canonical()
    }

    /// Leaves `name` out; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.0.take(name).is_some()
    }

    /// The same fields, owning their text (to be sealed on another thread).
    pub fn into_owned(self) -> Business<'static> {
        let members = self.0 .0.into_iter().map(|m| Named { name: Cow::Owned(m.name.into_owned()), value: m.value.into_owned(), at: m.at });
        Business(Object(members.collect()))
    }

    /// How many members there are.
    fn len(&self) -> usize {
        self.0 .0.len()
    }

    /// Compact JSON of the members in the caller's order (any `sign` left out), then `"sign"`:
    /// the plaintext that is encrypted into `reqmsg`, written into one buffer of about
    /// `capacity` bytes.
    fn signed_json(&self, sign: &str, capacity: usize) -> Vec<u8> {
        let mut in_order: Vec<&Named> = self.0 .0.iter().filter(|m| m.name != "sign").collect();
        in_order.sort_unstable_by_key(|m| m.at);
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        // Writing strings and JSON values to a Vec cannot fail.
        for m in in_order {
            let _ = serde_json::to_writer(&mut out, m.name.as_ref());
            out.push(b':');
            match &m.value {
                Member::Str(s) => {
                    let _ = serde_json::to_writer(&mut out, s.as_ref());
                }
                // The caller's number text is what is signed, so it is what is sent.
                Member::Json(text) => {
                    let mut compact = String::with_capacity(text.len());
                    push_compact(&mut compact, text);
                    out.extend_from_slice(compact.as_bytes());
                }
            }
            out.push(b',');
        }
        out.extend_from_slice(b"\"sign\":");
        let _ = serde_json::to_writer(&mut out, sign);
        out.push(b'}');
        out
    }
}

impl Member<'_> {
    fn part(&self) -> Part<'_> {
        match self {
            Member::Str(s) => Part::Text(s),
            Member::Json(t) => Part::Json(t),
        }
    }

    fn into_owned(self) -> Member<'static> {
        match self {
            Member::Str(s) => Member::Str(Cow::Owned(s.into_owned())),
            Member::Json(t) => Member::Json(Cow::Owned(t.into_owned())),
        }
    }
}

impl crate::schema::Fields for Business<'_> {
    fn field(&self, name: &str) -> Option<Part<'_>> {
        self.get(name)
    }
}

struct AllMembers;

impl<'de> Visitor<'de> for AllMembers {
    type Value = Vec<Named<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            let at = members.len();
            members.push(Named { name, value: map.next_value::<Member<'de>>()?, at });
        }
        Ok(members)
    }
}

/// A JSON string, borrowed unless it holds escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Every value is first taken as its raw text (borrowed from the input); a string is then
/// decoded (borrowed when it holds no escape), anything else kept as written.
impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(de)?.get();
        match raw.as_bytes().first() {
            Some(b'"') => match raw.get(1..raw.len() - 1) {
                Some(inner) if !inner.contains('\\') => Ok(Member::Str(Cow::Borrowed(inner))),
                _ => serde_json::from_str::<String>(raw).map(|s| Member::Str(Cow::Owned(s))).map_err(serde::de::Error::custom),
            },
            _ => Ok(Member::Json(Cow::Borrowed(raw))),
        }
    }
}

impl Merchant {
    pub fn profile(&self) -> Profile {
        match self.keys {
            MerchantKeys::Md5 { .. } => Profile::Md5,
            MerchantKeys::Rsa { .. } => Profile::Rsa,
        }
    }

    /// How many RSA blocks a `reqmsg` holds (from its length alone, before any decoding), for
    /// capping the work an unauthenticated message can cause.
    pub fn ciphertext_blocks(&self, reqmsg: &str) -> usize {
        let block = match &self.keys {
            MerchantKeys::Md5 { platform_public, .. } => platform_public.size(),
            MerchantKeys::Rsa { merchant_private, .. } => merchant_private.size(),
        };
        (reqmsg.trim_end_matches('=').len() * 3 / 4).div_ceil(block.max(1))
    }

    fn platform_public(&self) -> &PublicKey {
        match &self.keys {
            MerchantKeys::Md5 { platform_public, .. } | MerchantKeys::Rsa { platform_public, .. } => platform_public,
        }
    }

    /// The key requests are encrypted with: the next one once the configuration says so.
    fn sealing_key(&self) -> &PublicKey {
        match &self.rollover {
            Some(Rollover { next, seal_with_next: true }) => next,
            _ => self.platform_public(),
        }
    }

    /// The platform keys answers may verify under, current first.
    fn verifying_keys(&self) -> impl Iterator<Item = (PlatformKey, &PublicKey)> {
        std::iter::once((PlatformKey::Current, self.platform_public())).chain(self.rollover.as_ref().map(|r| (PlatformKey::Next, &*r.next)))
    }

    /// Computes `sign` over `business` (any `sign` it holds is left out), appends it, encrypts
    /// the plaintext into `reqmsg` with the platform's public key, and wraps it with our
    /// `customerNo`.
    pub fn seal(&self, business: Business<'_>) -> Result<Sealed, SealError> {
        self.seal_observed(business, &())
    }

    /// [`Self::seal`], reporting each step's duration to `obs`.
    pub fn seal_observed(&self, business: Business<'_>, obs: &dyn Observer) -> Result<Sealed, SealError> {
        let canonical = timed(obs, "canonicalize", || business.canonical());
        let sign = match &self.keys {
            MerchantKeys::Md5 { md5_key, .. } => timed(obs, "md5_sign", || signature::md5_sign(&canonical, md5_key)),
            MerchantKeys::Rsa { merchant_private, .. } => {
                timed(obs, "rsa_sign", || signature::rsa_sign(merchant_private, &canonical)).map_err(SealError)?
            }
        };
        let plaintext = business.signed_json(&sign, canonical.len() + 6 * business.len() + 64);
        let reqmsg = timed(obs, "encrypt", || segmented::encrypt(self.sealing_key(), &plaintext, self.chunk_size)).map_err(SealError)?;
        Ok(Sealed { body: wrap(&self.customer_no, &reqmsg) })
    }

    /// Opens a platform response body: envelope checks, `data`, `reqmsg`, `customerNo`, `sign`.
    pub fn open_response(&self, body: &[u8]) -> Result<Opened, OpenError> {
        self.open_response_observed(body, &())
    }

    /// [`Self::open_response`], reporting each step's duration to `obs`.
    ///
    /// The envelope and its `data` are read member by member (no maps built; strings borrowed
    /// from the body unless escaped).
    pub fn open_response_observed(&self, body: &[u8], obs: &dyn Observer) -> Result<Opened, OpenError> {
        let mut outer = Object::parse(body).map_err(|e| {
            OpenError::Envelope(match e {
                NotAnObject::NotJson => "body is not JSON",
                NotAnObject::OtherValue => "body is not a JSON object",
            })
        })?;
        let code_ok = match outer.get("code") {
            Some(Member::Str(s)) => s == "200",
            Some(Member::Json(n)) => n == "200",
            None => false,
        };
        let success = matches!(outer.get("success"), Some(Member::Json(t)) if t == "true");
        if !code_ok || !success {
            let code = match outer.get("code") {
                Some(Member::Str(s)) => s.to_string(),
                Some(Member::Json(t)) if t == "null" => String::new(),
                None => String::new(),
                Some(Member::Json(other)) => {
                    let mut code = String::with_capacity(other.len());
                    push_compact(&mut code, other);
                    code
                }
            };
            let msg = match outer.get("msg") {
                Some(Member::Str(s)) => s.to_string(),
                _ => String::new(),
            };
            if code.is_empty() && outer.get("success").is_none() {
                return Err(OpenError::Envelope("no code/success members"));
            }
            return Ok(Opened::PlatformFailure { code, msg });
        }
        let text = match outer.take("data") {
            Some(Member::Str(text)) => text,
            // Already an object: its text as received, read below like a string's.
            Some(Member::Json(text)) if text.starts_with('{') => text,
            _ => return Err(OpenError::Envelope("data is missing")),
        };
        let mut data = Object::parse(text.as_bytes()).map_err(|e| {
            OpenError::Envelope(match e {
                NotAnObject::NotJson => "data is not JSON text",
                NotAnObject::OtherValue => "data is not a JSON object",
            })
        })?;
        self.open_members(DataMembers { customer_no: data.take_str("customerNo"), reqmsg: data.take_str("reqmsg") }, obs)
    }

    /// Opens `{"customerNo", "reqmsg"}` (a response's `data`, or a notification body).
    pub fn open_data(&self, data: &Map<String, Value>) -> Result<Opened, OpenError> {
        self.open_data_observed(data, &())
    }

    /// [`Self::open_data`], reporting each step's duration to `obs`.
    pub fn open_data_observed(&self, data: &Map<String, Value>, obs: &dyn Observer) -> Result<Opened, OpenError> {
        let member = |name| data.get(name).and_then(Value::as_str).map(Cow::Borrowed);
        self.open_members(DataMembers { customer_no: member("customerNo"), reqmsg: member("reqmsg") }, obs)
    }

    /// Opens `data` from its two members: `customerNo` checked, `reqmsg` opened and verified.
    fn open_members(&self, data: DataMembers<'_>, obs: &dyn Observer) -> Result<Opened, OpenError> {
        self.open_members_as(data, obs, None)
    }

    /// [`Self::open_members`], then (when `kind` is given) the verified plaintext's shape.
    fn open_members_as(&self, data: DataMembers<'_>, obs: &dyn Observer, kind: Option<Domain>) -> Result<Opened, OpenError> {
        match data.customer_no.as_deref() {
            Some(c) if c == self.customer_no => {}
            Some(_) => return Err(OpenError::CustomerMismatch),
            None => return Err(OpenError::Envelope("data.customerNo is missing")),
        }
        let reqmsg = data.reqmsg.as_deref().ok_or(OpenError::Envelope("data.reqmsg is missing"))?;

        // md5 profile: the platform's private key made the blocks, so the key that opens them
        // (strict type-1 padding: a wrong key fails) is the one that verified.
        let (raw, mut verified_by) = match &self.keys {
            MerchantKeys::Md5 { .. } => {
                let mut opened = Err(CryptoError::Padding);
                for (which, key) in self.verifying_keys() {
                    opened = timed(obs, "open_type1", || segmented::open_type1(key, reqmsg)).map(|raw| (raw, which));
                    if opened.is_ok() || opened == Err(CryptoError::Encoding) {
                        break;
                    }
                }
                opened
            }
            MerchantKeys::Rsa { merchant_private, .. } => {
                timed(obs, "decrypt", || segmented::decrypt(merchant_private, reqmsg)).map(|raw| (raw, PlatformKey::Current))
            }
        }
        .map_err(OpenError::Ciphertext)?;
        // md5: the bytes came out of valid type-1 blocks, so the platform really sent them and
        // a charset problem gets its own reason. rsa: implicit rejection turns a forged block
        // into random bytes, so bytes that are not UTF-8 are what a forgery looks like.
        let mut plaintext = String::from_utf8(raw).map_err(|_| match self.keys {
            MerchantKeys::Md5 { .. } => OpenError::NotUtf8,
            MerchantKeys::Rsa { .. } => OpenError::Plaintext,
        })?;
        // Java writers may put a UTF-8 BOM first; `sign` covers the canonical string, not the
        // bytes, so skipping one weakens nothing (and the plaintext handed on starts with `{`).
        if plaintext.starts_with(BOM) {
            plaintext.drain(..BOM.len_utf8());
        }
        let answer = Object::parse(plaintext.as_bytes()).map_err(|_| OpenError::Plaintext)?;
        match answer.get("customerNo") {
            None => {}
            Some(Member::Json(t)) if t == "null" => {}
            Some(Member::Str(c)) if *c == self.customer_no => {}
            Some(_) => return Err(OpenError::CustomerMismatch),
        }
        let sign = match answer.get("sign") {
            Some(Member::Str(s)) if !s.is_empty() => s,
            _ => return Err(OpenError::Signature),
        };
        let canonical = timed(obs, "canonicalize", || answer.canonical());
        let ok = match &self.keys {
            MerchantKeys::Md5 { md5_key, .. } => timed(obs, "md5_verify", || signature::md5_verify(&canonical, md5_key, sign)),
            // rsa profile: the platform's signature says which key made it.
            MerchantKeys::Rsa { .. } => self.verifying_keys().any(|(which, key)| {
                verified_by = which;
                timed(obs, "rsa_verify", || signature::rsa_verify(key, &canonical, sign))
            }),
        };
        if !ok {
            return Err(OpenError::Signature);
        }
        let err_code = match answer.get("errCode") {
            Some(Member::Str(c)) => Some(c.to_string()),
            _ => None,
        };
        if let Some(kind) = kind {
            kind.check(&answer)?;
        }
        drop(answer);
        obs.platform_key(&self.customer_no, verified_by);
        Ok(Opened::Verified { plaintext, err_code })
    }

    /// Opens a notification body `{"customerNo", "reqmsg"}` like an answer's `data`, and
    /// accepts it only when its verified plaintext is shaped as a notification (see
    /// [`NOTIFICATION_REQUIRED`]): an answer, which is signed by the same key, cannot pose
    /// as one. The gateway's notification listener and `paysign open` both use this.
    pub fn open_notification_observed(&self, data: &Map<String, Value>, obs: &dyn Observer) -> Result<Opened, OpenError> {
        let member = |name| data.get(name).and_then(Value::as_str).map(Cow::Borrowed);
        self.open_members_as(DataMembers { customer_no: member("customerNo"), reqmsg: member("reqmsg") }, obs, Some(Domain::Notification))
    }
}

/// A leading byte-order mark, as some Java writers emit before JSON.
const BOM: char = '\u{feff}';

/// Members a verified notification must carry (non-empty): a bindCard notification's result.
/// The platform's answers never carry `bindStatus`.
pub const NOTIFICATION_REQUIRED: &[&str] = &["orderNo", "bindStatus"];

/// Members only an answer carries (the bank form of a bindCard answer): a message holding any
/// of them is never a notification.
pub const ANSWER_ONLY: &[&str] = &["submitUrl", "submitMethod", "submitParams"];

/// Which kind of signed message is expected, where the kinds must not be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Notification,
}

impl Domain {
    fn check(self, fields: &Object<'_>) -> Result<(), OpenError> {
        match self {
            Domain::Notification => {
                if ANSWER_ONLY.iter().any(|name| fields.get(name).is_some()) {
                    return Err(OpenError::NotANotification);
                }
                let present = |name: &&str| fields.get(name).is_some_and(|m| !m.part().is_absent());
                if !NOTIFICATION_REQUIRED.iter().all(present) {
                    return Err(OpenError::NotANotification);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonicalize;

    /// The request plaintext: the caller's members as `serde_json` writes them (escapes,
    /// non-ASCII, number text as received) in the caller's order, the caller's `sign` left
    /// out and ours appended — the same text as the parsed map with `sign` moved to the end.
    #[test]
    fn request_plaintext_is_the_callers_members_and_sign() {
        let text = r#"{"b":"x\"y\\z\n","a":"中文 €","sign":"caller's","n":1.50,"m":-0,"o":{"k":[1,true,null]},"a2":"\u0041"}"#;
        let business = Business::parse(text.as_bytes()).unwrap();
        let plaintext = String::from_utf8(business.signed_json("AB", 0)).unwrap();
        assert_eq!(plaintext, r#"{"b":"x\"y\\z\n","a":"中文 €","n":1.50,"m":-0,"o":{"k":[1,true,null]},"a2":"A","sign":"AB"}"#);
        let mut map = fields_of(text);
        map.shift_remove("sign");
        map.insert("sign".into(), Value::String("AB".into()));
        assert_eq!(Value::Object(map.clone()).to_string(), plaintext);
        // The same fields from a map: the same plaintext and the same canonical string.
        map.shift_remove("sign");
        let from_map = Business::from_map(&map);
        assert_eq!(String::from_utf8(from_map.signed_json("AB", 0)).unwrap(), plaintext);
        assert_eq!(from_map.0.canonical(), canonicalize(&map));
        assert_eq!(business.0.canonical(), canonicalize(&map));
        // Owned for another thread: unchanged.
        assert_eq!(String::from_utf8(business.into_owned().signed_json("AB", 0)).unwrap(), plaintext);
    }

    /// What the schema and the reserved-field checks read, and leaving a member out.
    #[test]
    fn business_members() {
        let mut b = Business::parse(br#"{"customerNo":"1","n":null,"e":"","x":"a","x":"b","j":{"k":1}}"#).unwrap();
        assert!(matches!(b.get("x"), Some(Part::Text("b"))));
        assert!(matches!(b.get("n"), Some(Part::Json("null"))));
        assert!(matches!(b.get("e"), Some(Part::Text(""))));
        assert!(matches!(b.get("j"), Some(Part::Json(r#"{"k":1}"#))));
        assert!(b.get("missing").is_none());
        assert!(b.remove("customerNo"));
        assert!(!b.remove("customerNo"));
        assert_eq!(String::from_utf8(b.signed_json("S", 0)).unwrap(), r#"{"n":null,"e":"","x":"b","j":{"k":1},"sign":"S"}"#);
        assert_eq!(Business::parse(b"[1]").err(), Some(NotAnObject::OtherValue));
        assert_eq!(Business::parse(b"{").err(), Some(NotAnObject::NotJson));
    }

    /// How an object's members are read, and how a text that is not one object is told apart.
    #[test]
    fn object_members_and_what_is_not_an_object() {
        let mut o = Object::parse(br#"{"b":[1, {"c":2}],"\u0061":"x","a":"y\/z","n":12.50,"t":true,"f":"ab"}"#).unwrap();
        let Some(Member::Json(b)) = o.get("b") else { panic!("b is not read as JSON") };
        assert_eq!(b, r#"[1, {"c":2}]"#, "kept as written");
        let Some(Member::Json(n)) = o.get("n") else { panic!("n is not read as JSON") };
        assert_eq!(n.to_string(), "12.50");
        assert!(matches!(o.get("t"), Some(Member::Json(Cow::Borrowed("true")))));
        assert!(matches!(o.get("f"), Some(Member::Str(Cow::Borrowed("ab")))));
        assert_eq!(o.take_str("a"), Some(Cow::Owned::<str>("y/z".into())));
        assert_eq!((o.take_str("a"), o.take_str("b"), o.take_str("missing")), (None, None, None));
        for (text, why) in [
            ("", NotAnObject::NotJson),
            ("{} x", NotAnObject::NotJson),
            ("[1,", NotAnObject::NotJson),
            (r#"{"a":1,}"#, NotAnObject::NotJson),
            ("[1]", NotAnObject::OtherValue),
            ("\"s\"", NotAnObject::OtherValue),
            (" 12 ", NotAnObject::OtherValue),
        ] {
            assert_eq!(Object::parse(text.as_bytes()).err(), Some(why), "{text}");
        }
    }

    /// Reading the answer member by member gives what the parsed map gives: the canonical
    /// string, and the members verification looks at.
    #[test]
    fn plaintext_members_agree_with_the_parsed_map() {
        let texts = [
            r#"{"errCode":"0000","sign":"AB","customerNo":"1","orderNo":"O-1"}"#,
            r#"{ "b" : "2" , "a" : "x&y" , "c" : "" , "n" : 10 , "z" : null , "sign" : "s" }"#,
            r#"{"a":"first","b":1,"a":"last","sign":"x","sign":""}"#,
            r#"{"\u0061":"escaped name","a\"q":"v\n\u4e2d","€":"non-ascii 中文","A":"upper"}"#,
            r#"{"amt":1.50,"neg":-0,"exp":2e+2,"t":true,"f":false,"o":{"k": [1, {"x": 2.50}], "e": {}},"arr":[ ]}"#,
            r#"{"errCode":1000,"customerNo":null}"#,
            r#"{}"#,
        ];
        for text in texts {
            let map = fields_of(text);
            let members = Object::parse(text.as_bytes()).unwrap();
            assert_eq!(members.canonical(), canonicalize(&map), "{text}");
            for name in ["customerNo", "sign", "errCode", "a", "amt", "o", "missing"] {
                let ours = members.get(name).map(|m| m.part().to_value());
                assert_eq!(ours.as_ref(), map.get(name), "{text}: {name}");
            }
        }
        for not_an_object in ["", "[]", "\"s\"", "{} {}", r#"{"a":1,}"#, r#"{"a":1"#, "{\"a\":\"\\x\"}"] {
            assert!(Object::parse(not_an_object.as_bytes()).is_err(), "{not_an_object}");
            assert!(serde_json::from_str::<Map<String, Value>>(not_an_object).is_err(), "{not_an_object}");
        }
    }

    #[test]
    fn wrap_writes_the_envelope_exactly() {
        assert_eq!(wrap("202112090603", "AAEC+/8="), br#"{"customerNo":"202112090603","reqmsg":"AAEC+/8="}"#);
        // A customerNo that needs escaping is escaped (configuration is checked, but the
        // envelope never depends on that).
        assert_eq!(wrap("a\"b", "QQ=="), br#"{"customerNo":"a\"b","reqmsg":"QQ=="}"#);
    }

    /// Numbers as Java prints doubles keep their text: in the canonical string (what the
    /// platform signed) and in a request's plaintext (what the caller signed through us).
    #[test]
    fn exponent_numbers_keep_the_text_as_written() {
        let text = r#"{"amount":1.0E10,"rate":5.0E-4,"limits":{"max":2.5E3, "min":1e2},"n":-1E+2,"orderNo":"J1","sign":"S"}"#;
        let o = Object::parse(text.as_bytes()).unwrap();
        assert_eq!(o.canonical(), r#"amount=1.0E10&limits={"max":2.5E3,"min":1e2}&n=-1E+2&orderNo=J1&rate=5.0E-4"#);
        // A parsed map cannot say it: the reason messages are verified from their text.
        assert_eq!(canonicalize(&fields_of(text)), r#"amount=1.0e+10&limits={"max":2.5e+3,"min":1e+2}&n=-1e+2&orderNo=J1&rate=5.0e-4"#);
        let business = Business::parse(text.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(business.signed_json("X", 0)).unwrap(),
            r#"{"amount":1.0E10,"rate":5.0E-4,"limits":{"max":2.5E3,"min":1e2},"n":-1E+2,"orderNo":"J1","sign":"X"}"#
        );
    }

    #[cfg(feature = "platform")]
    fn md5_pair() -> (Merchant, crate::platform::Platform, crate::platform::PlatformMerchant) {
        // The test-only platform key of tests/fixtures (compiled in: this crate does no I/O).
        let pem = include_str!("../../../tests/fixtures/keys/platform_private.pem");
        let private = Arc::new(crate::crypto::keys::load_private(pem, false).unwrap());
        let public = Arc::new(private.public().clone());
        let key = Secret::new("k".into());
        let m = Merchant {
            customer_no: "C1".into(),
            keys: MerchantKeys::Md5 { md5_key: key.clone(), platform_public: public },
            chunk_size: 245,
            rollover: None,
        };
        let p = crate::platform::Platform { private, previous: None };
        let pm = crate::platform::PlatformMerchant {
            customer_no: "C1".into(),
            keys: crate::platform::PlatformMerchantKeys::Md5 { md5_key: key },
            previous: None,
        };
        (m, p, pm)
    }

    /// Signs `text` (JSON without `sign`) over its own canonical string, as the platform would.
    #[cfg(feature = "platform")]
    fn platform_message(
        p: &crate::platform::Platform,
        pm: &crate::platform::PlatformMerchant,
        text: &str,
        bom: bool,
    ) -> Map<String, Value> {
        let canonical = Object::parse(text.as_bytes()).unwrap().canonical();
        let sign = p.sign_canonical(pm, &canonical).unwrap();
        let mut signed = format!("{},\"sign\":\"{sign}\"}}", &text[..text.len() - 1]);
        if bom {
            signed.insert(0, BOM);
        }
        let reqmsg = p.encrypt(pm, signed.as_bytes()).unwrap();
        let mut data = Map::new();
        data.insert("customerNo".into(), Value::String("C1".into()));
        data.insert("reqmsg".into(), Value::String(reqmsg));
        data
    }

    #[cfg(feature = "platform")]
    #[test]
    fn java_numbers_a_bom_and_the_notification_domain() {
        let (m, p, pm) = md5_pair();
        let answer = r#"{"orderNo":"J1","customerNo":"C1","errCode":"0000","submitUrl":"https://b","amount":1.0E10}"#;
        let notification = r#"{"orderNo":"J1","customerNo":"C1","bindStatus":"SUCCESS","errCode":"0000","rate":5.0E-4}"#;
        for bom in [false, true] {
            let Ok(Opened::Verified { plaintext, err_code }) = m.open_data(&platform_message(&p, &pm, answer, bom)) else {
                panic!("the answer does not verify (bom {bom})")
            };
            assert!(plaintext.starts_with("{\"orderNo\":\"J1\"") && plaintext.contains("\"amount\":1.0E10,"), "{plaintext}");
            assert_eq!(err_code.as_deref(), Some("0000"));
            // The same answer offered as a notification: refused after verifying.
            assert_eq!(
                m.open_notification_observed(&platform_message(&p, &pm, answer, bom), &()).unwrap_err(),
                OpenError::NotANotification
            );
            assert!(matches!(
                m.open_notification_observed(&platform_message(&p, &pm, notification, bom), &()),
                Ok(Opened::Verified { .. })
            ));
        }
        // An answer without the bank form (a 2104) lacks the notification's own fields.
        let repeated = r#"{"orderNo":"J1","customerNo":"C1","errCode":"2104","errMessage":"dup"}"#;
        assert_eq!(
            m.open_notification_observed(&platform_message(&p, &pm, repeated, false), &()).unwrap_err(),
            OpenError::NotANotification
        );
        // A customerNo that is a number is another merchant's, however it is written.
        let numeric = r#"{"orderNo":"J1","customerNo":1,"bindStatus":"SUCCESS"}"#;
        assert_eq!(m.open_data(&platform_message(&p, &pm, numeric, false)).unwrap_err(), OpenError::CustomerMismatch);
        // Two BOMs are not JSON; bytes that are not UTF-8 (md5: genuinely sent) have their own reason.
        let mut two = platform_message(&p, &pm, notification, true);
        let twice = format!("{BOM}{BOM}{notification}");
        two.insert("reqmsg".into(), Value::String(p.encrypt(&pm, twice.as_bytes()).unwrap()));
        assert_eq!(m.open_data(&two).unwrap_err(), OpenError::Plaintext);
        let mut gbk = two;
        gbk.insert("reqmsg".into(), Value::String(p.encrypt(&pm, b"{\"a\":\"\xd6\xd0\"}").unwrap()));
        assert_eq!(m.open_data(&gbk).unwrap_err().reason(), "not_utf8");
    }
}
