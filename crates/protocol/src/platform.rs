//! The platform's side of the protocol: open a sealed request, seal a response. The sandbox
//! is built on it; tests use it to check our sealing the way the platform would.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::canonical::canonicalize;
use super::envelope::{OpenError, Profile};
use crate::crypto::{segmented, signature, CryptoError, PrivateKey, PublicKey, Secret};

/// What the platform knows about one merchant.
#[derive(Debug, Clone)]
pub enum PlatformMerchantKeys {
    Md5 { md5_key: Secret },
    Rsa { merchant_public: Arc<PublicKey> },
}

#[derive(Debug, Clone)]
pub struct PlatformMerchant {
    pub customer_no: String,
    pub keys: PlatformMerchantKeys,
    /// During a key rotation: the keys being retired, still accepted.
    pub previous: Option<PlatformMerchantKeys>,
}

impl PlatformMerchant {
    /// The same merchant seen with its previous keys as current (to answer a request made
    /// with them in their own keys).
    pub fn with_previous_keys(&self) -> Option<PlatformMerchant> {
        let keys = self.previous.clone()?;
        Some(PlatformMerchant { customer_no: self.customer_no.clone(), keys, previous: None })
    }
}

impl PlatformMerchant {
    pub fn profile(&self) -> Profile {
        match self.keys {
            PlatformMerchantKeys::Md5 { .. } => Profile::Md5,
            PlatformMerchantKeys::Rsa { .. } => Profile::Rsa,
        }
    }
}

/// The platform's key pair.
#[derive(Debug, Clone)]
pub struct Platform {
    pub private: Arc<PrivateKey>,
    /// During the platform's own key rollover: the key pair being retired, still accepted for
    /// requests sealed with its public key.
    pub previous: Option<Arc<PrivateKey>>,
}

impl Platform {
    /// Decrypts a request's `reqmsg` with the platform private key and verifies its `sign`.
    /// Returns the plaintext text and its fields.
    pub fn open_request(&self, m: &PlatformMerchant, reqmsg: &str) -> Result<(String, Map<String, Value>), OpenError> {
        self.open_request_rotating(m, reqmsg).map(|(t, f, _)| (t, f))
    }

    /// Like [`Self::open_request`], also accepting the merchant's previous keys during a
    /// rotation; the flag says whether the previous keys verified it.
    pub fn open_request_rotating(&self, m: &PlatformMerchant, reqmsg: &str) -> Result<(String, Map<String, Value>, bool), OpenError> {
        let mut result = self.open_request_with(&self.private, m, reqmsg);
        if let (Err(_), Some(previous)) = (&result, &self.previous) {
            // Sealed with the retiring public key: decryption under the current one produced
            // implicit-rejection noise, which failed above.
            result = self.open_request_with(previous, m, reqmsg);
        }
        result
    }

    fn open_request_with(
        &self,
        private: &PrivateKey,
        m: &PlatformMerchant,
        reqmsg: &str,
    ) -> Result<(String, Map<String, Value>, bool), OpenError> {
        let raw = segmented::decrypt(private, reqmsg).map_err(OpenError::Ciphertext)?;
        let text = String::from_utf8(raw).map_err(|_| OpenError::NotUtf8)?;
        let fields = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(f)) => f,
            _ => return Err(OpenError::Plaintext),
        };
        let sign = fields.get("sign").and_then(Value::as_str).ok_or(OpenError::Signature)?;
        // From the text as received (numbers as the merchant wrote them), as paysign does.
        let canonical = crate::envelope::Business::parse(text.as_bytes()).map_err(|_| OpenError::Plaintext)?.canonical();
        let verifies = |keys: &PlatformMerchantKeys| match keys {
            PlatformMerchantKeys::Md5 { md5_key } => signature::md5_verify(&canonical, md5_key, sign),
            PlatformMerchantKeys::Rsa { merchant_public } => signature::rsa_verify(merchant_public, &canonical, sign),
        };
        if verifies(&m.keys) {
            return Ok((text, fields, false));
        }
        if m.previous.as_ref().is_some_and(verifies) {
            return Ok((text, fields, true));
        }
        Err(OpenError::Signature)
    }

    /// Computes the response `sign` for `fields` (md5: shared key; rsa: platform private key).
    pub fn sign(&self, m: &PlatformMerchant, fields: &Map<String, Value>) -> Result<String, CryptoError> {
        self.sign_canonical(m, &canonicalize(fields))
    }

    /// The response `sign` over a canonical string made elsewhere (e.g. from JSON text whose
    /// numbers must keep their exact text).
    pub fn sign_canonical(&self, m: &PlatformMerchant, canonical: &str) -> Result<String, CryptoError> {
        match &m.keys {
            PlatformMerchantKeys::Md5 { md5_key } => Ok(signature::md5_sign(canonical, md5_key)),
            PlatformMerchantKeys::Rsa { .. } => signature::rsa_sign(&self.private, canonical),
        }
    }

    /// Encrypts a response plaintext into `reqmsg`: md5 = type-1 with the platform private key,
    /// rsa = type-2 with the merchant's public key.
    pub fn encrypt(&self, m: &PlatformMerchant, plaintext: &[u8]) -> Result<String, CryptoError> {
        match &m.keys {
            PlatformMerchantKeys::Md5 { .. } => segmented::seal_type1(&self.private, plaintext, self.private.public().max_chunk()),
            PlatformMerchantKeys::Rsa { merchant_public } => segmented::encrypt(merchant_public, plaintext, merchant_public.max_chunk()),
        }
    }

    /// Signs `fields`, encrypts them and wraps them in the success envelope.
    pub fn seal_response(&self, m: &PlatformMerchant, mut fields: Map<String, Value>) -> Result<Vec<u8>, CryptoError> {
        let sign = self.sign(m, &fields)?;
        fields.insert("sign".into(), Value::String(sign));
        let plaintext = Value::Object(fields).to_string();
        let reqmsg = self.encrypt(m, plaintext.as_bytes())?;
        Ok(envelope(&m.customer_no, &reqmsg))
    }
}

/// `{"code":"200","success":true,"data":"{\"customerNo\":…,\"reqmsg\":…}","msg":"操作成功"}`
pub fn envelope(customer_no: &str, reqmsg: &str) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("customerNo".into(), Value::String(customer_no.into()));
    data.insert("reqmsg".into(), Value::String(reqmsg.into()));
    let mut outer = Map::new();
    outer.insert("code".into(), Value::String("200".into()));
    outer.insert("success".into(), Value::Bool(true));
    outer.insert("data".into(), Value::String(Value::Object(data).to_string()));
    outer.insert("msg".into(), Value::String("操作成功".into()));
    Value::Object(outer).to_string().into_bytes()
}

/// A platform-level failure: `{"code":…,"success":false,"data":null,"msg":…}`.
pub fn failure(code: &str, msg: &str) -> Vec<u8> {
    let mut outer = Map::new();
    outer.insert("code".into(), Value::String(code.into()));
    outer.insert("success".into(), Value::Bool(false));
    outer.insert("data".into(), Value::Null);
    outer.insert("msg".into(), Value::String(msg.into()));
    Value::Object(outer).to_string().into_bytes()
}
