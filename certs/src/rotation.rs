//! When to renew, and how to back off when renewing fails.

use std::time::{Duration, SystemTime};

use crate::identity::WorkloadIdentity;
use crate::provider;

/// Renewal timing, as pilot-agent does it: renew when `ratio ± jitter` of the lifetime is
/// left (`SECRET_GRACE_PERIOD_RATIO` 0.5, `SECRET_GRACE_PERIOD_RATIO_JITTER` 0.01), and retry
/// failures with exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationPolicy {
    /// Fraction of the lifetime left when renewal starts.
    pub grace_ratio: f64,
    /// Largest random deviation from `grace_ratio`, so a fleet does not renew in lockstep.
    pub grace_jitter: f64,
    /// First wait after a failure.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// How often file-mounted certificates are checked for changes.
    pub file_poll_interval: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            grace_ratio: 0.5,
            grace_jitter: 0.01,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            file_poll_interval: Duration::from_secs(5),
        }
    }
}

impl RotationPolicy {
    /// The moment to renew `identity`: `not_after - lifetime × (ratio + uniform(-jitter, jitter))`,
    /// the ratio clamped to `[0, 1]`.
    pub fn renew_at(&self, identity: &WorkloadIdentity) -> SystemTime {
        let lifetime = identity
            .not_after()
            .duration_since(identity.not_before())
            .unwrap_or_default();
        let ratio = (self.grace_ratio + self.grace_jitter * unit_random()).clamp(0.0, 1.0);
        identity.not_after() - lifetime.mul_f64(ratio)
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            next: self.backoff_initial,
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
    }
}

/// Doubling delays between failed attempts, reset by a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (d * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A uniform value in `[-1, 1]` from the crypto provider's RNG (no extra dependency; if the
/// RNG fails, no jitter is better than no renewal).
fn unit_random() -> f64 {
    let mut buf = [0u8; 8];
    if provider().secure_random.fill(&mut buf).is_err() {
        return 0.0;
    }
    let x = u64::from_le_bytes(buf) >> 11; // 53 random bits
    (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// Sleeps until the wall clock reaches `deadline`, waking at least every `step` to look at the
/// clock again: tokio's timers follow the monotonic clock, which stands still while a VM is
/// suspended, but certificates expire by the wall clock.
pub(crate) async fn sleep_until_wall(deadline: SystemTime, step: Duration) {
    // Bounded: each pass sleeps `step` or up to the deadline.
    while let Ok(left) = deadline.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(step)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let policy = RotationPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            ..RotationPolicy::default()
        };
        let mut b = policy.backoff();
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn unit_random_stays_in_range() {
        for _ in 0..1000 {
            let r = unit_random();
            assert!((-1.0..=1.0).contains(&r), "{r}");
        }
    }
}
