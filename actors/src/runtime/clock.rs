//! Where controllers get the time. The real clock reads the system's; a fake one is moved
//! by hand, so the arithmetic of back-offs, deadlines, TTLs and cron schedules is tested
//! without waiting, and an integration test can make a CronJob fire by moving time.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The time, as a controller sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// The longest a controller may sleep before looking at this clock again: unbounded
    /// for the real clock, short for a fake one, whose time jumps when a test moves it
    /// while the controller's timers run on real time.
    fn max_sleep(&self) -> Option<Duration> {
        None
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<DateTime<Utc>>,
}

impl FakeClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        FakeClock {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_sleep(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

/// A clock to hand around (configuration, controllers): the system's by default.
#[derive(Clone)]
pub struct SharedClock(pub Arc<dyn Clock>);

impl SharedClock {
    pub fn fake(now: DateTime<Utc>) -> (SharedClock, Arc<FakeClock>) {
        let fake = Arc::new(FakeClock::new(now));
        (SharedClock(fake.clone()), fake)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }

    /// `wait`, shortened to what the clock allows between looks.
    pub fn sleep_for(&self, wait: Duration) -> Duration {
        match self.0.max_sleep() {
            Some(max) => wait.min(max),
            None => wait,
        }
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        SharedClock(Arc::new(SystemClock))
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedClock").field(&self.0.now()).finish()
    }
}

/// A `metav1.Time` (second precision, as Kubernetes keeps it) of `t`.
pub fn to_time(t: DateTime<Utc>) -> Time {
    let ts = k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// The instant a `metav1.Time` names.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told_and_bounds_sleeps() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-08T01:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let (shared, fake) = SharedClock::fake(t0);
        assert_eq!(shared.now(), t0);
        fake.advance(Duration::from_secs(90));
        assert_eq!((shared.now() - t0).num_seconds(), 90);
        assert_eq!(
            shared.sleep_for(Duration::from_secs(60)),
            Duration::from_millis(200)
        );
        assert_eq!(
            SharedClock::default().sleep_for(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
