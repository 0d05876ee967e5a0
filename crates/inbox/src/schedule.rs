//! When a failed delivery is tried again: exponential backoff with jitter, for days.

use std::time::{Duration, SystemTime};

/// Retry intervals double from `first` up to `max_interval`, each spread by ±`jitter` (a
/// fraction) so that a target coming back is not hit by every deliverer at once; after
/// `give_up_after` since the notification was received it is dead-lettered.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub first: Duration,
    pub max_interval: Duration,
    pub give_up_after: Duration,
    pub jitter: f64,
}

impl Default for Schedule {
    /// 5 s, 10 s, 20 s … doubling to one attempt an hour, for 96 hours: longer than every
    /// platform's own retry window (Alipay ~25 h, WeChat Pay ~24 h), about 100 attempts.
    fn default() -> Self {
        Schedule {
            first: Duration::from_secs(5),
            max_interval: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(96 * 3600),
            jitter: 0.2,
        }
    }
}

impl Schedule {
    /// The interval after failed attempt number `attempt` (1 for the first), before jitter.
    pub fn interval(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(40);
        self.first.saturating_mul(1u32 << doublings.min(31)).min(self.max_interval)
    }

    /// How long to wait before trying again after failed attempt `attempt`, or `None`:
    /// dead-letter it. A delay, not a time: the store adds it to its own clock (PostgreSQL's,
    /// the same for every replica).
    pub fn delay(&self, attempt: u32, received_at: SystemTime, now: SystemTime) -> Option<Duration> {
        let base = self.interval(attempt).as_secs_f64();
        let spread = if self.jitter > 0.0 { rand::random_range(-self.jitter..=self.jitter) } else { 0.0 };
        let delay = Duration::from_secs_f64((base * (1.0 + spread)).max(0.0));
        (now + delay <= received_at + self.give_up_after).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spans_more_than_72_hours() {
        let s = Schedule { jitter: 0.0, ..Schedule::default() };
        let received = SystemTime::UNIX_EPOCH;
        let (mut now, mut attempts) = (received, 1);
        while let Some(delay) = s.delay(attempts, received, now) {
            now += delay;
            attempts += 1;
        }
        let span = now.duration_since(received).unwrap();
        assert!(span >= Duration::from_secs(72 * 3600), "{span:?}");
        assert!(span <= Duration::from_secs(96 * 3600));
        assert_eq!(s.interval(1), Duration::from_secs(5));
        assert_eq!(s.interval(2), Duration::from_secs(10));
        assert_eq!(s.interval(30), Duration::from_secs(3600));
        // 10 doubling intervals (5 s … 2,560 s: 1.4 h), then hourly to 96 h: 105 attempts.
        assert_eq!(attempts, 105);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let s = Schedule::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for _ in 0..200 {
            let d = s.delay(3, t, t).unwrap().as_secs_f64();
            assert!((16.0..=24.0).contains(&d), "{d}");
        }
    }
}
