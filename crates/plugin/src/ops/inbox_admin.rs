//! The inbox's admin endpoints (behind the admin's authorization): what an operator needs
//! when notifications pile up or die — never a payload.
//!
//! - `GET /inbox`: depth by state and the age of the oldest undelivered notification;
//! - `GET /inbox/dead[?limit=N]`: dead-lettered notifications (id, route, order, attempts,
//!   last error, received in Unix seconds), at most `limit` (100 by default, 1000 at most);
//! - `POST /inbox/redeliver[?id=ID]`: one dead-lettered notification (or all) due again now;
//! - `POST /inbox/purge[?id=ID]`: one dead-lettered notification (or all) deleted.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::live::Live;

/// The most dead letters one `GET /inbox/dead` lists.
const MAX_LIST: usize = 1000;

/// The answer to an inbox admin request: status and JSON body.
pub struct InboxAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON.
    pub body: Value,
}

fn answer(status: u16, body: Value) -> InboxAnswer {
    InboxAnswer { status, body }
}

/// The inbox's answer to `method path?query` (a path under `/inbox`), or `None` for another
/// path. The caller has authorized the request.
pub async fn inbox_admin(live: &Live, method: &http::Method, path: &str, query: Option<&str>) -> Option<InboxAnswer> {
    let op = match path {
        "/inbox" => Op::Depth,
        "/inbox/dead" => Op::Dead,
        "/inbox/redeliver" => Op::Redeliver,
        "/inbox/purge" => Op::Purge,
        p if p.starts_with("/inbox/") => {
            let known = "/inbox, /inbox/dead, POST /inbox/redeliver, POST /inbox/purge";
            return Some(answer(404, json!({"result": "refused", "error": format!("not found: {known}")})));
        }
        _ => return None,
    };
    let expected = if matches!(op, Op::Depth | Op::Dead) { http::Method::GET } else { http::Method::POST };
    if *method != expected {
        return Some(answer(405, json!({"result": "refused", "error": format!("{path} takes {expected}")})));
    }
    let Some(cell) = live.inbox() else {
        return Some(answer(404, json!({"result": "refused", "error": "no inbox: notify.inbox is not configured"})));
    };
    let params = match Params::parse(query, op) {
        Ok(p) => p,
        Err(e) => return Some(answer(400, json!({"result": "refused", "error": e}))),
    };
    let inbox = match cell.get().await {
        Ok(i) => i,
        Err(e) => return Some(answer(503, json!({"result": "failed", "error": e.to_string()}))),
    };
    let done = match op {
        Op::Depth => inbox.depth().await.map(|d| {
            let age = d.oldest_age(SystemTime::now()).as_secs();
            json!({"pending": d.pending, "leased": d.leased, "delivered": d.delivered, "dead": d.dead,
                   "oldest_undelivered_age_seconds": age})
        }),
        Op::Dead => inbox.dead_letters(params.limit.unwrap_or(100).min(MAX_LIST)).await.map(|list| {
            let list: Vec<Value> = list
                .into_iter()
                .map(|d| {
                    json!({"id": d.id, "route": d.route, "order_no": d.order_no, "attempts": d.attempts,
                           "last_error": d.last_error, "received_at": epoch(d.received_at)})
                })
                .collect();
            json!({"dead": list})
        }),
        Op::Redeliver => inbox.redeliver(params.id.as_deref()).await.map(|n| json!({"result": "ok", "redelivered": n})),
        Op::Purge => inbox.purge_dead(params.id.as_deref()).await.map(|n| json!({"result": "ok", "purged": n})),
    };
    // One id that names no dead letter: say so, rather than "ok, 0".
    let none = |b: &Value| ["redelivered", "purged"].iter().any(|k| b[*k] == 0);
    if let (Some(id), Ok(body)) = (&params.id, &done) {
        if none(body) {
            return Some(answer(
                404,
                json!({"result": "refused", "error": format!("{id} is not a dead letter (GET /inbox/dead lists them)")}),
            ));
        }
    }
    Some(match done {
        Ok(body) => {
            if matches!(op, Op::Redeliver | Op::Purge) {
                tracing::warn!("admin: inbox {path} {}: {body}", params.id.as_deref().unwrap_or("(all dead letters)"));
            }
            answer(200, body)
        }
        Err(e) => answer(503, json!({"result": "failed", "error": e.to_string()})),
    })
}

#[derive(Clone, Copy)]
enum Op {
    Depth,
    Dead,
    Redeliver,
    Purge,
}

#[derive(Default)]
struct Params {
    id: Option<String>,
    limit: Option<usize>,
}

impl Params {
    /// The parameters `op` takes (`limit` for the list, `id` for redeliver and purge), each
    /// once; anything else is refused.
    fn parse(query: Option<&str>, op: Op) -> Result<Params, String> {
        let mut p = Params::default();
        let takes: &[&str] = match op {
            Op::Depth => &[],
            Op::Dead => &["limit"],
            Op::Redeliver | Op::Purge => &["id"],
        };
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !takes.contains(&k) {
                return Err(format!("unknown parameter {k:?} (this endpoint takes: {})", if takes.is_empty() { "none" } else { takes[0] }));
            }
            let repeated = match k {
                // Ids are 32 hex digits (notification_id): nothing else reaches the store.
                "id" if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => p.id.replace(v.to_ascii_lowercase()).is_some(),
                "id" => return Err("id must be a notification id (32 hex digits)".into()),
                _ => p.limit.replace(v.parse().map_err(|_| "limit must be a number".to_string())?).is_some(),
            };
            if repeated {
                return Err(format!("{k} is given twice"));
            }
        }
        Ok(p)
    }
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
