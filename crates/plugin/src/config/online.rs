//! What a configuration needs beyond its files, done once validation has passed and only when
//! it is loaded to run: the host names looked up (the platform, the egress proxy, the
//! notification targets) and the merchant keys in a PKCS#11 token opened. `paysign check` only
//! tries the lookups, and reports a name that does not resolve as a warning.

use std::sync::Arc;

use super::runtime::Config;
use super::validate::{Ctx, Pending, Place};
use super::ConfigError;
use crate::http_client;
use crate::pkcs11;
use crate::protocol::{Merchant, MerchantKeys};

/// Looks the pending names up and opens the pending keys into `config`; every failure,
/// each naming its setting.
pub(crate) fn complete(config: &mut Config, pending: Pending, ctx: &Ctx) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for l in pending.lookups {
        let addrs = match http_client::lookup(&l.host, l.port) {
            Ok(a) => a,
            Err(e) => {
                let message = match &l.place {
                    Place::EgressProxy(hp) => format!("'{hp}' is not host:port: {e}"),
                    _ => e.to_string(),
                };
                errors.push(ctx.err(l.setting, None, message));
                continue;
            }
        };
        match l.place {
            Place::Platform => config.upstream.target.addrs = addrs,
            Place::EgressProxy(_) => config.upstream.egress_proxy = addrs.first().copied(),
            Place::NotifyRoute(i) => {
                if let Some(r) = config.notify.as_mut().and_then(|n| n.routes.get_mut(i)) {
                    r.target.addrs = addrs;
                }
            }
        }
    }
    for k in pending.keys {
        let o = &k.open;
        match pkcs11::open_key(&o.uri, &o.module, &o.pin, o.allow_weak) {
            Ok(key) => {
                let keys = MerchantKeys::Rsa { merchant_private: Arc::new(key), platform_public: k.platform_public };
                let merchant = Merchant { customer_no: k.customer_no.clone(), keys, chunk_size: k.chunk_size, rollover: k.rollover };
                config.merchants.insert(k.customer_no, Arc::new(merchant));
            }
            Err(e) => errors.push(ctx.err(k.setting, Some(&o.module), e.to_string())),
        }
    }
    // Routes that name a merchant whose key was in its token get it now that it is open.
    if let Some(n) = config.notify.as_mut() {
        for (i, customer_no) in pending.route_merchants {
            if let (Some(r), Some(m)) = (n.routes.get_mut(i), config.merchants.get(&customer_no)) {
                r.merchant = Some(m.clone());
            }
        }
    }
    errors
}

/// `paysign check`: each pending name looked up now, a failure a warning (it must resolve
/// when paysign starts, not when it is checked).
/// Each warning goes where validation named the host, as if looked up then.
pub(crate) fn try_lookups(pending: &Pending, ctx: &Ctx) {
    let mut added = 0;
    for l in &pending.lookups {
        if let Err(e) = crate::addresses::system_lookup(&l.host, l.port) {
            let message = format!("cannot resolve {} now ({e}); it must resolve when paysign starts", l.host);
            ctx.warn_at(l.warnings_before + added, ctx.err(l.setting.as_str(), None, message));
            added += 1;
        }
    }
}
