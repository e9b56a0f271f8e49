//! Reconnect delays: exponential with jitter, so that many proxies cut off together do not
//! come back together.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Exponential backoff between `base` and `max`; each delay is drawn uniformly from the upper
/// half of the current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Envoy's defaults for the ADS stream: 500 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// The running state of a [`Backoff`].
#[derive(Debug)]
pub(crate) struct Retry {
    policy: Backoff,
    step: Duration,
    random: RandomState,
    draws: u64,
}

impl Retry {
    pub(crate) fn new(policy: Backoff) -> Retry {
        Retry {
            policy,
            step: policy.base,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The next delay; the step doubles up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.policy.max);
        self.step = step.saturating_mul(2).min(self.policy.max);
        self.draws += 1;
        // RandomState is seeded per process from the OS; hashing a counter gives a fresh
        // uniform value per draw without a random-number crate.
        let r = self.random.hash_one(self.draws);
        let half = step / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if spread == 0 { 0 } else { r % (spread + 1) };
        half + Duration::from_nanos(extra)
    }

    /// A stream that got a response was healthy: the next failure starts from `base` again.
    pub(crate) fn reset(&mut self) {
        self.step = self.policy.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_reset() {
        let policy = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(800),
        };
        let mut retry = Retry::new(policy);
        let bounds = [(50, 100), (100, 200), (200, 400), (400, 800), (400, 800)];
        for (lo, hi) in bounds {
            let d = retry.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..={hi} ms"
            );
        }
        retry.reset();
        assert!(retry.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered() {
        let mut retry = Retry::new(Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
        });
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| retry.next_delay()).collect();
        assert!(delays.len() > 1, "{delays:?}");
    }
}
