//! Per-container exponential backoff, as the kubelet keeps for crashed containers
//! (CrashLoopBackOff) and failed image pulls (ImagePullBackOff): the first wait is `base`,
//! each further one doubles, capped at `max`.
//!
//! Time is passed in (`now`) rather than read, so the decisions are testable without
//! sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// How many waits have been handed out since the last reset.
    steps: u32,
    /// The end of the current wait.
    until: Option<Instant>,
    /// The length of the current wait (what `back-off 20s` reports).
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            steps: 0,
            until: None,
            current: Duration::ZERO,
        }
    }

    /// Start the next wait at `now`; returns its length.
    pub fn start(&mut self, now: Instant) -> Duration {
        let factor = 2u32.saturating_pow(self.steps.min(30));
        let wait = self.base.saturating_mul(factor).min(self.max);
        self.steps = self.steps.saturating_add(1);
        self.current = wait;
        self.until = Some(now + wait);
        wait
    }

    /// Whether a wait is running at `now`.
    pub fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the current wait ends, if one was started.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// The length of the last wait started.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Forget the history: the next wait is `base` again.
    pub fn reset(&mut self) {
        self.steps = 0;
        self.until = None;
        self.current = Duration::ZERO;
    }
}

/// A duration the way Go prints one (`10s`, `1m20s`, `5m0s`, `250ms`), because the
/// kubelet's messages (`back-off 20s restarting failed container=...`) use that form and
/// users grep for it.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_millis();
        if ms > 0 && d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{ms}ms");
        }
        return format!("{}µs", d.as_micros());
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let frac = d.subsec_millis();
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_ten_seconds_up_to_five_minutes() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let now = Instant::now();
        let waits: Vec<u64> = (0..7).map(|_| b.start(now).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_wait_ends_at_its_deadline() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let now = Instant::now();
        assert!(!b.waiting(now), "no wait before the first failure");
        b.start(now);
        assert!(b.waiting(now + Duration::from_secs(9)));
        assert!(!b.waiting(now + Duration::from_secs(10)));
    }

    #[test]
    fn a_reset_starts_again_from_the_base() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let now = Instant::now();
        b.start(now);
        b.start(now);
        b.reset();
        assert_eq!(b.start(now), Duration::from_secs(10));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
