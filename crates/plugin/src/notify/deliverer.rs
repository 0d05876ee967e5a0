//! The deliverer: a pingora background service that hands stored notifications to their
//! route's target, at least once. Its steps, in a loop: claim what is due (a lease each, the
//! attempt number as fencing token) → deliver each through the route's target (the same
//! headers as a direct delivery) → record the result (delivered, or due again on the schedule,
//! or dead-lettered after its last attempt) → wait for a new notification or the next due one.
//! Every few seconds it samples the inbox's depth into the metrics and purges what the
//! retention let go.
//!
//! At shutdown it claims nothing more and lets the attempts in flight finish (each bounded by
//! `notify.forward_timeout_ms`); whatever a killed process held is due again when its lease
//! runs out (SQLite: at the next start).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;

use paysign_inbox::{Claim, Inbox};

use super::TargetError;
use crate::live::Live;
use crate::logging;
use crate::metrics::{DeliveryOutcome, InboxState};

/// How long the loop sleeps at most before looking for due retries.
const POLL: Duration = Duration::from_secs(1);
/// How often depth is sampled and the retention applied.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// The deliverer of one `Paysign` instance (see the module documentation); add it with
/// `server.add_service(background_service("paysign deliverer", deliverer))`, or take it ready
/// from [`crate::Paysign::deliverer_service`].
pub struct Deliverer {
    live: Arc<Live>,
    /// This process's name in leases (host, pid and a random part).
    owner: String,
}

impl Deliverer {
    /// The deliverer of `live`'s inbox (it does nothing when `notify.inbox` is not configured).
    pub fn new(live: Arc<Live>) -> Self {
        Deliverer { live, owner: paysign_inbox::owner_name() }
    }

    async fn run(&self, shutdown: &mut ShutdownWatch) {
        let Some(cell) = self.live.inbox.clone() else { return };
        let settings = cell.settings().clone();
        let inbox = loop {
            match cell.get().await {
                Ok(i) => break i,
                Err(e) => {
                    tracing::warn!("inbox: cannot open the store, trying again in 1 s: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(POLL) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        // Due retries are looked for at least this often (sooner when the schedule's first
        // retry is shorter than the usual second).
        let poll = settings.schedule.first.min(POLL);
        let mut attempts: JoinSet<()> = JoinSet::new();
        let mut housekeeping = Instant::now();
        let mut claim_failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            while attempts.try_join_next().is_some() {}
            let free = settings.deliverers.saturating_sub(attempts.len());
            let mut claimed = 0;
            if free > 0 {
                // Counted for the drain from before the claim: a process never exits between
                // taking leases and starting their attempts.
                let in_flight = &self.live.notifications.deliveries_in_flight;
                in_flight.fetch_add(1, Ordering::AcqRel);
                let claimed_now = inbox.claim(&self.owner, settings.lease, free).await;
                if let Ok(claims) = &claimed_now {
                    in_flight.fetch_add(i64::try_from(claims.len()).unwrap_or(0), Ordering::AcqRel);
                }
                in_flight.fetch_sub(1, Ordering::AcqRel);
                match claimed_now {
                    Ok(claims) => {
                        claim_failures = 0;
                        claimed = claims.len();
                        for claim in claims {
                            let (live, inbox) = (self.live.clone(), inbox.clone());
                            let (schedule, lease) = (settings.schedule.clone(), settings.lease);
                            attempts.spawn(async move {
                                attempt(&live, &*inbox, claim, &schedule, lease).await;
                                live.notifications.deliveries_in_flight.fetch_sub(1, Ordering::AcqRel);
                            });
                        }
                    }
                    Err(e) => {
                        claim_failures += 1;
                        // One line when the store goes away, then one a minute.
                        if claim_failures == 1 || claim_failures.is_multiple_of(60) {
                            tracing::warn!("inbox: cannot claim notifications to deliver ({claim_failures} tries): {e}");
                        }
                    }
                }
            }
            if housekeeping.elapsed() >= HOUSEKEEPING {
                housekeeping = Instant::now();
                self.housekeep(&*inbox, settings.retention).await;
            }
            if claimed > 0 && claimed == free {
                continue; // there may be more due
            }
            tokio::select! {
                () = inbox.wait(poll), if attempts.len() < settings.deliverers => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Shutting down: nothing new is claimed; the attempts in flight finish.
        while attempts.join_next().await.is_some() {}
    }

    /// Depth and age into the metrics; delivered notifications past the retention purged.
    async fn housekeep(&self, inbox: &dyn Inbox, retention: Duration) {
        let metrics = self.live.metrics();
        if let Ok(d) = inbox.depth().await {
            let set =
                |s: InboxState, v: u64| metrics.inbox_depth.with_label_values(&[s.as_str()]).set(i64::try_from(v).unwrap_or(i64::MAX));
            set(InboxState::Pending, d.pending);
            set(InboxState::Leased, d.leased);
            set(InboxState::Delivered, d.delivered);
            set(InboxState::Dead, d.dead);
            let age = d.oldest_age(SystemTime::now()).as_secs();
            metrics.inbox_oldest_age.set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        if let Some(before) = SystemTime::now().checked_sub(retention) {
            match inbox.purge_delivered(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("inbox: purged {n} notifications delivered more than {} h ago", retention.as_secs() / 3600),
                Err(e) => tracing::warn!("inbox: purging delivered notifications failed: {e}"),
            }
        }
    }
}

/// One delivery attempt of one claimed notification, and its result recorded.
/// An attempt ends within four fifths of its lease (the rest to record its result): a second
/// deliverer never takes a notification whose attempt is still running, whatever the target's
/// addresses and timeouts add up to.
async fn attempt(live: &Live, inbox: &dyn Inbox, mut claim: Claim, schedule: &paysign_inbox::Schedule, lease: Duration) {
    let rt = live.current();
    let request_id = logging::new_request_id();
    let start = Instant::now();
    let state = rt.notify.as_ref();
    let (sent, status) = match state.and_then(|s| s.route(&claim.route).map(|r| (s, r))) {
        None => (Err("the route is no longer configured"), None),
        Some((state, route)) => {
            let bound = lease.mul_f64(0.8);
            let body = Bytes::from(std::mem::take(&mut claim.body));
            match tokio::time::timeout(bound, state.forward(route, &claim.id, &claim.customer_no, &request_id, body)).await {
                Ok(Ok(a)) if (200..300).contains(&a.status) => (Ok(()), Some(a.status)),
                Ok(Ok(a)) => (Err("the target answered non-2xx"), Some(a.status)),
                Ok(Err(TargetError::NotSent)) => (Err("the target could not be reached"), None),
                Ok(Err(TargetError::Failed)) => (Err("the target did not answer"), None),
                Err(_) => (Err("the target did not answer within the lease"), None),
            }
        }
    };
    let recorded = match sent {
        Ok(()) => {
            inbox
                .delivered(&claim.id, claim.attempt)
                .await
                .map(|kept| if kept { DeliveryOutcome::Delivered } else { DeliveryOutcome::LeaseLost })
        }
        Err(why) => {
            let error = match status {
                Some(s) => format!("{why} ({s})"),
                None => why.to_string(),
            };
            let next = schedule.delay(claim.attempt, claim.received_at, SystemTime::now());
            let outcome = if next.is_some() { DeliveryOutcome::Retry } else { DeliveryOutcome::DeadLettered };
            inbox.failed(&claim.id, claim.attempt, &error, next).await.map(|kept| if kept { outcome } else { DeliveryOutcome::LeaseLost })
        }
    };
    let outcome = match recorded {
        Ok(o) => o,
        Err(e) => {
            // The result could not be recorded: the lease runs out and it is tried again.
            tracing::warn!(kind = "delivery", notification_id = %claim.id, "inbox: the delivery's result was not recorded: {e}");
            DeliveryOutcome::LeaseLost
        }
    };
    live.metrics().inbox_deliveries.with_label_values(&[&claim.route, outcome.as_str()]).inc();
    let latency_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let level = match outcome {
        DeliveryOutcome::Delivered => tracing::Level::INFO,
        DeliveryOutcome::Retry | DeliveryOutcome::LeaseLost | DeliveryOutcome::DeadLettered => tracing::Level::WARN,
    };
    let order = claim.order_no.as_deref().unwrap_or("");
    let status = status.map_or_else(String::new, |s| s.to_string());
    if level == tracing::Level::INFO {
        tracing::info!(kind = "delivery", notification_id = %claim.id, route = %claim.route, order_no = order, attempt = claim.attempt, outcome = outcome.as_str(), target_status = %status, request_id = %request_id, latency_ms, "delivery");
    } else {
        tracing::warn!(kind = "delivery", notification_id = %claim.id, route = %claim.route, order_no = order, attempt = claim.attempt, outcome = outcome.as_str(), target_status = %status, request_id = %request_id, latency_ms, "delivery");
    }
}

#[async_trait]
impl BackgroundService for Deliverer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.run(&mut shutdown).await;
    }
}
