//! How a supervised actor comes back after a failure: at once the first time, then after
//! a delay that doubles with each failure in a row, up to a cap, so an actor that panics
//! on one bad object it meets at every start does not restart in a hot loop. An actor that
//! ran long enough without failing starts over from no delay. Restarts are counted per
//! actor for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Restarts of every supervised actor in this process, by actor name.
static RESTARTS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Count one restart of `actor`.
pub fn record_restart(actor: &'static str) {
    *RESTARTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(actor)
        .or_default() += 1;
}

/// Restarts so far, by actor (for `skiff_actor_restarts_total`).
pub fn restarts() -> Vec<(&'static str, u64)> {
    RESTARTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect()
}

#[derive(Debug, Clone)]
pub struct RestartBackoff {
    base: Duration,
    cap: Duration,
    /// Running this long without a failure clears the record.
    reset_after: Duration,
    in_a_row: u32,
    last: Option<Instant>,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff::new(
            Duration::from_millis(200),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }
}

impl RestartBackoff {
    pub fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        RestartBackoff {
            base,
            cap,
            reset_after,
            in_a_row: 0,
            last: None,
        }
    }

    /// A restart at `now`: how long to wait before resuming work.
    pub fn on_restart(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) >= self.reset_after)
        {
            self.in_a_row = 0;
        }
        self.last = Some(now);
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row == 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(self.in_a_row - 2);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Failures in a row so far.
    pub fn in_a_row(&self) -> u32 {
        self.in_a_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_in_a_row_back_off_doubling_to_the_cap_and_a_quiet_spell_resets_them() {
        let mut b = RestartBackoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..7)
            .map(|i| b.on_restart(t0 + Duration::from_millis(i * 10)))
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.in_a_row(), 7);
        // A minute without failing: the next failure restarts at once again.
        assert_eq!(b.on_restart(t0 + Duration::from_secs(120)), Duration::ZERO);
        assert_eq!(
            b.on_restart(t0 + Duration::from_secs(121)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn restarts_are_counted_per_actor() {
        record_restart("TestActorA");
        record_restart("TestActorA");
        let n = restarts()
            .into_iter()
            .find(|(a, _)| *a == "TestActorA")
            .map(|(_, n)| n);
        assert_eq!(n, Some(2));
    }
}
