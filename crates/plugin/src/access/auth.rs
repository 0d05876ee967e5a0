//! Which internal caller this is, and whether it may use this merchant and endpoint: the one
//! place for both, used by the gateway and by [`crate::exchange::Paysign::call_as`]. With no
//! `callers` configured, authentication is off. Refusals are counted by caller and reason.

use crate::bearer::{self, Presented};
use crate::config::{Caller, Config};
use crate::error::GatewayError;
use crate::metrics::{CallerRefusal, Metrics};

/// The caller a presented bearer token names; `None` when no callers are configured.
pub fn authenticate<'a>(config: &'a Config, metrics: &Metrics, presented: Presented<'_>) -> Result<Option<&'a Caller>, GatewayError> {
    if config.callers.is_empty() {
        return Ok(None);
    }
    let refuse = |reason: CallerRefusal| {
        metrics.caller_refused("anonymous", reason);
        GatewayError::Unauthenticated
    };
    let token = match presented {
        Presented::Missing => return Err(refuse(CallerRefusal::Missing)),
        Presented::Malformed => return Err(refuse(CallerRefusal::Malformed)),
        Presented::Token(t) => t,
    };
    let presented = crate::config::sha256(token.as_bytes());
    // Every caller is compared, in constant time, whichever matches.
    let mut found = None;
    for c in &config.callers {
        if bearer::same(&presented, &c.token_sha256) {
            found = Some(c);
        }
    }
    found.map(Some).ok_or_else(|| refuse(CallerRefusal::UnknownToken))
}

/// Whether `caller` (when authentication is on) may call `path` for `merchant`.
pub fn authorize(metrics: &Metrics, caller: Option<&Caller>, path: &str, merchant: &str) -> Result<(), GatewayError> {
    match caller {
        Some(c) if !c.may_call(path) || !c.may_use(merchant) => {
            metrics.caller_refused(&c.name, CallerRefusal::Forbidden);
            Err(GatewayError::Forbidden)
        }
        _ => Ok(()),
    }
}
