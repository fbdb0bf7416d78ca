//! The work queue: keys to reconcile, deduplicated, with at most one reconcile per key in
//! flight (a key that changes while it is being reconciled is queued again after), and the
//! retry delay of a failed key as client-go's default controller rate limiter computes
//! it: the larger of a per-key exponential backoff and an overall token bucket, so that
//! one broken object backs off alone while a failure of everything (the API server down)
//! cannot turn into a storm of retries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The overall limit on retries: `qps` per second on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    /// client-go's default: 10 retries a second, bursts of 100.
    fn default() -> Self {
        RateLimit {
            qps: 10.0,
            burst: 100,
        }
    }
}

/// A token bucket: each retry takes a token; once they are gone a retry waits for the
/// next one to be earned (reserving it, so waits queue up rather than collide).
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            at: None,
        }
    }

    /// Take a token at `now`; how long until it is really there.
    fn reserve(&mut self, now: Instant) -> Duration {
        let qps = self.limit.qps.max(f64::MIN_POSITIVE);
        if let Some(at) = self.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * qps;
            self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        }
        self.at = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // Rounded up, so that the wait never ends before the token is earned.
            Duration::from_nanos((-self.tokens / qps * 1e9).ceil() as u64)
        }
    }
}

#[derive(Debug)]
pub struct WorkQueue {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    in_flight: HashSet<String>,
    /// Keys that changed while in flight: queued again when their reconcile ends.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    base: Duration,
    max: Duration,
    bucket: Bucket,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::new(Duration::from_millis(50), Duration::from_secs(60))
    }
}

impl WorkQueue {
    /// Per-key backoff from `base`, doubling up to `max`; the default overall limit.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::with_rate_limit(base, max, RateLimit::default())
    }

    pub fn with_rate_limit(base: Duration, max: Duration, limit: RateLimit) -> Self {
        WorkQueue {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            base,
            max,
            bucket: Bucket::new(limit),
        }
    }

    pub fn add(&mut self, key: String) {
        if self.in_flight.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    /// The next key to reconcile, marked in flight.
    pub fn pop(&mut self) -> Option<String> {
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        self.in_flight.insert(key.clone());
        Some(key)
    }

    /// A reconcile ended; `ok` resets the key's backoff.
    pub fn done(&mut self, key: &str, ok: bool) {
        self.in_flight.remove(key);
        if ok {
            self.failures.remove(key);
        }
        if self.dirty.remove(key) {
            self.add(key.to_string());
        }
    }

    /// How long to wait before retrying a key that just failed.
    pub fn backoff(&mut self, key: &str) -> Duration {
        self.backoff_at(key, Instant::now())
    }

    /// [`backoff`](Self::backoff) at a given instant (for tests with a fake clock).
    pub fn backoff_at(&mut self, key: &str, now: Instant) -> Duration {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        let per_key = (self.base * factor).min(self.max);
        per_key.max(self.bucket.reserve(now))
    }

    /// Failures in a row of `key` (0 once it succeeded).
    pub fn failures(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Keys waiting (not counting those in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_once_however_often_it_is_added() {
        let mut q = WorkQueue::default();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_key_changed_during_its_reconcile_runs_again_afterwards_not_concurrently() {
        let mut q = WorkQueue::default();
        q.add("a".into());
        let k = q.pop().expect("key");
        q.add("a".into());
        assert!(
            q.pop().is_none(),
            "no second reconcile of the same key in flight"
        );
        assert_eq!(q.in_flight(), 1);
        q.done(&k, true);
        assert_eq!(q.pop().as_deref(), Some("a"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let mut q = WorkQueue::new(Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<_> = (0..5).map(|_| q.backoff("a").as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 50, 50]);
        assert_eq!(q.failures("a"), 5);
        q.add("a".into());
        let k = q.pop().expect("key");
        q.done(&k, true);
        assert_eq!(q.failures("a"), 0);
        assert_eq!(q.backoff("a").as_millis(), 10);
    }

    #[test]
    fn one_failing_key_does_not_slow_the_others() {
        let mut q = WorkQueue::new(Duration::from_millis(10), Duration::from_secs(60));
        for _ in 0..8 {
            q.backoff("broken");
        }
        assert_eq!(q.backoff("fine").as_millis(), 10);
    }

    #[test]
    fn the_overall_limit_spaces_retries_once_the_burst_is_spent() {
        let limit = RateLimit {
            qps: 10.0,
            burst: 3,
        };
        let mut q = WorkQueue::with_rate_limit(Duration::ZERO, Duration::ZERO, limit);
        let t0 = Instant::now();
        // Many keys failing at once (the API server is down): the burst goes at once...
        let waits: Vec<u128> = (0..6)
            .map(|i| q.backoff_at(&format!("k{i}"), t0).as_millis())
            .collect();
        // ...then one retry per 100 ms, each reserving its own slot.
        assert_eq!(waits, vec![0, 0, 0, 100, 200, 300]);
        // A second later the bucket has refilled (up to its burst).
        let later = t0 + Duration::from_secs(1);
        let waits: Vec<u128> = (0..3)
            .map(|i| q.backoff_at(&format!("m{i}"), later).as_millis())
            .collect();
        assert_eq!(waits, vec![0, 0, 0]);
    }

    #[test]
    fn the_longer_of_the_key_backoff_and_the_overall_limit_wins() {
        let limit = RateLimit { qps: 1.0, burst: 1 };
        let mut q =
            WorkQueue::with_rate_limit(Duration::from_millis(300), Duration::from_secs(9), limit);
        let t0 = Instant::now();
        assert_eq!(
            q.backoff_at("a", t0).as_millis(),
            300,
            "key backoff, token free"
        );
        assert_eq!(
            q.backoff_at("b", t0).as_millis(),
            1000,
            "no token left for a second"
        );
    }
}
