//! From the metrics' recommendation to the replicas the autoscaler sets, as Kubernetes'
//! HPA controller does it, free of I/O so that a fake clock can drive it:
//!
//! - without a `behavior` (`normalizeDesiredReplicas`): the highest recommendation of the
//!   controller's downscale stabilization window, then the HPA's bounds and a scale-up of
//!   at most double (or 4) at once;
//! - with one (`normalizeDesiredReplicasWithBehaviors`): recommendations stabilized over
//!   each direction's window, then the scale-up and scale-down policies (Pods or Percent
//!   per period, the Max, Min or none of them) applied against the scale events of each
//!   policy's period.
//!
//! Both report the AbleToScale and ScalingLimited reasons Kubernetes gives.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling::v2;

use crate::api::validation::parse_quantity;

/// How the policies of one direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: i64,
}

/// One direction's rules, complete (the API defaulted what the HPA left out, the
/// controller its scale-down window).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window_seconds: i64,
    pub select: Select,
    pub policies: Vec<Policy>,
    /// The tolerance of this direction, when the HPA sets one.
    pub tolerance: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

impl Rules {
    fn from_spec(r: Option<&v2::HPAScalingRules>, default_window: i64) -> Rules {
        let select = match r.and_then(|r| r.select_policy.as_deref()) {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        };
        let policies = r
            .and_then(|r| r.policies.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| Policy {
                        kind: if p.type_ == "Percent" {
                            PolicyKind::Percent
                        } else {
                            PolicyKind::Pods
                        },
                        value: p.value,
                        period_seconds: i64::from(p.period_seconds),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Rules {
            window_seconds: r
                .and_then(|r| r.stabilization_window_seconds)
                .map_or(default_window, i64::from),
            select,
            policies,
            tolerance: r
                .and_then(|r| r.tolerance.as_ref())
                .and_then(|t| parse_quantity(&t.0)),
        }
    }

    fn longest_period(&self) -> i64 {
        self.policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0)
    }
}

impl Behavior {
    /// The behavior of a (defaulted) HPA spec; a scale-down without a window gets the
    /// controller's (`maybeInitScaleDownStabilizationWindow`).
    pub fn from_spec(b: &v2::HorizontalPodAutoscalerBehavior, downscale_window: Duration) -> Self {
        Behavior {
            up: Rules::from_spec(b.scale_up.as_ref(), 0),
            down: Rules::from_spec(b.scale_down.as_ref(), downscale_window.as_secs() as i64),
        }
    }
}

/// The replicas to set and why, as the AbleToScale and ScalingLimited conditions say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    pub able_reason: &'static str,
    pub able_message: &'static str,
    pub limited: bool,
    pub limit_reason: &'static str,
    pub limit_message: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    at: DateTime<Utc>,
    replicas: i32,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    at: DateTime<Utc>,
    change: i32,
    outdated: bool,
}

/// The recommendations and scale events of every autoscaler, by key, kept in memory as
/// Kubernetes keeps them (a restarted controller starts with none).
#[derive(Debug, Default)]
pub struct History {
    recommendations: HashMap<String, Vec<Recommendation>>,
    scale_ups: HashMap<String, Vec<ScaleEvent>>,
    scale_downs: HashMap<String, Vec<ScaleEvent>>,
}

const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);

fn seconds_before(now: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    now - chrono::Duration::seconds(secs)
}

/// The net change of `events` within the last `period_seconds` (`getReplicasChangePerPeriod`).
fn change_in_period(events: &[ScaleEvent], now: DateTime<Utc>, period_seconds: i64) -> i32 {
    let cutoff = seconds_before(now, period_seconds);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

impl History {
    pub fn forget(&mut self, key: &str) {
        self.recommendations.remove(key);
        self.scale_ups.remove(key);
        self.scale_downs.remove(key);
    }

    /// Record `recommended`, replacing a sample that is older than every window.
    fn record(&mut self, key: &str, now: DateTime<Utc>, recommended: i32, old: Option<usize>) {
        let recs = self.recommendations.entry(key.to_string()).or_default();
        let rec = Recommendation {
            at: now,
            replicas: recommended,
        };
        match old {
            Some(i) => recs[i] = rec,
            None => recs.push(rec),
        }
    }

    /// The replicas for `desired` (what the metrics recommend) given `current`.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        behavior: Option<&Behavior>,
        downscale_window: Duration,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Decision {
        match behavior {
            None => self.normalize_classic(key, now, downscale_window, current, desired, min, max),
            Some(b) => self.normalize_with_behavior(key, now, b, current, desired, min, max),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn normalize_classic(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        window: Duration,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Decision {
        let cutoff = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let mut stabilized = desired;
        let mut old = None;
        for (i, r) in self
            .recommendations
            .get(key)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if r.at < cutoff {
                old = Some(i);
            } else {
                stabilized = stabilized.max(r.replicas);
            }
        }
        self.record(key, now, desired, old);
        let (able_reason, able_message) = if stabilized != desired {
            DOWN_STABILIZED
        } else {
            READY
        };
        // A scale-up of at most double (or 4) at once, so that a bogus usage spike cannot
        // multiply the pods in one step (`calculateScaleUpLimit`).
        let up_limit = (2 * current).max(4);
        let (upper, upper_why) = if max > up_limit {
            (up_limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, (limit_reason, limit_message)) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > upper {
            (upper, upper_why)
        } else {
            (stabilized, WITHIN)
        };
        Decision {
            replicas,
            able_reason,
            able_message,
            limited: replicas != stabilized,
            limit_reason,
            limit_message,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn normalize_with_behavior(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        b: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Decision {
        // Stabilize: the lowest recommendation of the scale-up window bounds from below,
        // the highest of the scale-down window from above (`stabilizeRecommendationWithBehaviors`).
        let up_cutoff = seconds_before(now, b.up.window_seconds);
        let down_cutoff = seconds_before(now, b.down.window_seconds);
        let (mut up, mut down) = (desired, desired);
        let mut old = None;
        for (i, r) in self
            .recommendations
            .get(key)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if r.at > up_cutoff {
                up = up.min(r.replicas);
            }
            if r.at > down_cutoff {
                down = down.max(r.replicas);
            }
            if r.at < up_cutoff && r.at < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up).min(down);
        self.record(key, now, desired, old);
        let (able_reason, able_message) = if stabilized == desired {
            READY
        } else if desired >= current {
            UP_STABILIZED
        } else {
            DOWN_STABILIZED
        };
        // Rate-limit by the policies (`convertDesiredReplicasWithBehaviorRate`).
        let ups = self
            .scale_ups
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let downs = self
            .scale_downs
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (replicas, (limit_reason, limit_message)) = if stabilized > current {
            let limit = scale_up_limit(current, ups, downs, &b.up, now).max(current);
            let (allowed, why) = if max > limit {
                (limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if stabilized > allowed {
                (allowed, why)
            } else {
                (stabilized, WITHIN)
            }
        } else if stabilized < current {
            let limit = scale_down_limit(current, ups, downs, &b.down, now).min(current);
            let (allowed, why) = if min < limit {
                (limit, DOWN_LIMIT)
            } else {
                (min, TOO_FEW)
            };
            if stabilized < allowed {
                (allowed, why)
            } else {
                (stabilized, WITHIN)
            }
        } else {
            (stabilized, WITHIN)
        };
        Decision {
            replicas,
            able_reason,
            able_message,
            limited: replicas != stabilized,
            limit_reason,
            limit_message,
        }
    }

    /// Remember a rescale from `prev` to `new` for the policies' periods
    /// (`storeScaleEvent`): only autoscalers with a behavior keep them.
    pub fn record_scale(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        behavior: Option<&Behavior>,
        prev: i32,
        new: i32,
    ) {
        let Some(b) = behavior else { return };
        let (events, rules, change) = if new > prev {
            (&mut self.scale_ups, &b.up, new - prev)
        } else {
            (&mut self.scale_downs, &b.down, prev - new)
        };
        let events = events.entry(key.to_string()).or_default();
        // Events older than the longest period are spent: their slots are reused.
        let cutoff = seconds_before(now, rules.longest_period());
        for e in events.iter_mut() {
            if e.at < cutoff {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            at: now,
            change,
            outdated: false,
        };
        match events.iter_mut().find(|e| e.outdated) {
            Some(slot) => *slot = event,
            None => events.push(event),
        }
    }
}

/// The most replicas the scale-up policies allow now (`calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(
    current: i32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    rules: &Rules,
    now: DateTime<Utc>,
) -> i32 {
    let proposals = rules.policies.iter().map(|p| {
        let start = current - change_in_period(ups, now, p.period_seconds)
            + change_in_period(downs, now, p.period_seconds);
        match p.kind {
            PolicyKind::Pods => start + p.value,
            // Rounded up, or a small target could never grow.
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        }
    });
    match rules.select {
        Select::Disabled => current,
        Select::Min => proposals.fold(i32::MAX, i32::min),
        Select::Max => proposals.fold(i32::MIN, i32::max),
    }
}

/// The fewest replicas the scale-down policies allow now (`calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(
    current: i32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    rules: &Rules,
    now: DateTime<Utc>,
) -> i32 {
    let proposals = rules.policies.iter().map(|p| {
        let start = current - change_in_period(ups, now, p.period_seconds)
            + change_in_period(downs, now, p.period_seconds);
        match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        }
    });
    match rules.select {
        Select::Disabled => current,
        Select::Min => proposals.fold(i32::MIN, i32::max),
        Select::Max => proposals.fold(i32::MAX, i32::min),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    struct FakeClock(DateTime<Utc>);

    impl FakeClock {
        fn new() -> Self {
            FakeClock(
                DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                    .expect("t")
                    .into(),
            )
        }
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
        fn advance(&mut self, secs: i64) {
            self.0 += chrono::Duration::seconds(secs);
        }
    }

    const WINDOW: Duration = Duration::from_secs(300);

    fn pods(value: i32, period: i64) -> Policy {
        Policy {
            kind: PolicyKind::Pods,
            value,
            period_seconds: period,
        }
    }

    fn percent(value: i32, period: i64) -> Policy {
        Policy {
            kind: PolicyKind::Percent,
            value,
            period_seconds: period,
        }
    }

    fn rules(window: i64, select: Select, policies: Vec<Policy>) -> Rules {
        Rules {
            window_seconds: window,
            select,
            policies,
            tolerance: None,
        }
    }

    /// Kubernetes' defaults: up 4 pods or 100% per 15 s (Max), down 100% per 15 s.
    fn default_behavior(down_window: i64) -> Behavior {
        Behavior {
            up: rules(0, Select::Max, vec![pods(4, 15), percent(100, 15)]),
            down: rules(down_window, Select::Max, vec![percent(100, 15)]),
        }
    }

    /// Normalize and, like the controller, record the rescale it leads to.
    fn step(
        h: &mut History,
        clock: &FakeClock,
        b: &Behavior,
        current: i32,
        desired: i32,
    ) -> Decision {
        let d = h.normalize(
            "ns/web",
            clock.now(),
            Some(b),
            WINDOW,
            current,
            desired,
            1,
            100,
        );
        if d.replicas != current {
            h.record_scale("ns/web", clock.now(), Some(b), current, d.replicas);
        }
        d
    }

    #[test]
    fn without_a_behavior_scale_down_waits_for_the_window_and_scale_up_is_at_most_double() {
        let mut clock = FakeClock::new();
        let mut h = History::default();
        let n = |h: &mut History, clock: &FakeClock, cur, des| {
            h.normalize("ns/web", clock.now(), None, WINDOW, cur, des, 1, 20)
        };
        assert_eq!(n(&mut h, &clock, 3, 3).replicas, 3);
        clock.advance(60);
        let d = n(&mut h, &clock, 3, 1);
        assert_eq!((d.replicas, d.able_reason), (3, "ScaleDownStabilized"));
        clock.advance(241);
        assert_eq!(n(&mut h, &clock, 3, 1).replicas, 1);
        // 1 -> 10 is held to 4 (double, but at least 4), and says so.
        let d = n(&mut h, &clock, 1, 10);
        assert_eq!(
            (d.replicas, d.limited, d.limit_reason),
            (4, true, "ScaleUpLimit")
        );
        let d = n(&mut h, &clock, 10, 30);
        assert_eq!((d.replicas, d.limit_reason), (20, "TooManyReplicas"));
        // Each autoscaler has its own window.
        let other = h.normalize("ns/other", clock.now(), None, WINDOW, 3, 1, 1, 20);
        assert_eq!(other.replicas, 1);
    }

    #[test]
    fn a_pods_policy_limits_scale_up_per_period_from_the_scale_events() {
        let mut clock = FakeClock::new();
        let mut h = History::default();
        let b = Behavior {
            up: rules(0, Select::Max, vec![pods(1, 30)]),
            down: rules(0, Select::Max, vec![percent(100, 15)]),
        };
        let d = step(&mut h, &clock, &b, 1, 5);
        assert_eq!((d.replicas, d.limit_reason), (2, "ScaleUpLimit"));
        assert!(d.limited);
        // Within the same 30 s period the one pod is spent: nothing more.
        clock.advance(15);
        assert_eq!(step(&mut h, &clock, &b, 2, 5).replicas, 2);
        // Once the period has passed since that scale-up, one more.
        clock.advance(16);
        assert_eq!(step(&mut h, &clock, &b, 2, 5).replicas, 3);
        clock.advance(31);
        assert_eq!(step(&mut h, &clock, &b, 3, 5).replicas, 4);
    }

    #[test]
    fn max_and_min_select_the_most_and_least_permissive_policy() {
        let clock = FakeClock::new();
        let up = |select| Behavior {
            up: rules(0, select, vec![pods(4, 60), percent(100, 60)]),
            down: rules(0, Select::Max, vec![percent(100, 15)]),
        };
        // From 10: Pods allows 14, Percent allows 20.
        let mut h = History::default();
        assert_eq!(step(&mut h, &clock, &up(Select::Max), 10, 50).replicas, 20);
        let mut h = History::default();
        assert_eq!(step(&mut h, &clock, &up(Select::Min), 10, 50).replicas, 14);
        let mut h = History::default();
        let d = step(&mut h, &clock, &up(Select::Disabled), 10, 50);
        assert_eq!((d.replicas, d.limit_reason), (10, "ScaleUpLimit"));
    }

    #[test]
    fn scale_down_policies_count_the_period_from_its_start() {
        let mut clock = FakeClock::new();
        let mut h = History::default();
        let b = Behavior {
            up: rules(0, Select::Max, vec![pods(4, 15)]),
            down: rules(0, Select::Max, vec![percent(50, 60)]),
        };
        let d = step(&mut h, &clock, &b, 10, 1);
        assert_eq!((d.replicas, d.limit_reason), (5, "ScaleDownLimit"));
        // 10 s later the period still started at 10: 50% of 10 is spent.
        clock.advance(10);
        assert_eq!(step(&mut h, &clock, &b, 5, 1).replicas, 5);
        clock.advance(51);
        assert_eq!(step(&mut h, &clock, &b, 5, 1).replicas, 2);
        // The minimum wins over a policy that would go lower.
        clock.advance(61);
        let d = h.normalize("ns/web", clock.now(), Some(&b), WINDOW, 2, 1, 2, 100);
        assert_eq!((d.replicas, d.limit_reason), (2, "TooFewReplicas"));
    }

    #[test]
    fn stabilization_windows_hold_each_direction() {
        let mut clock = FakeClock::new();
        let mut h = History::default();
        let b = Behavior {
            up: rules(60, Select::Max, vec![percent(100, 15)]),
            down: rules(120, Select::Max, vec![percent(100, 15)]),
        };
        assert_eq!(step(&mut h, &clock, &b, 2, 2).replicas, 2);
        // A spike to 6 is held while a lower recommendation is within the up window.
        clock.advance(10);
        let d = step(&mut h, &clock, &b, 2, 6);
        assert_eq!((d.replicas, d.able_reason), (2, "ScaleUpStabilized"));
        clock.advance(51);
        assert_eq!(step(&mut h, &clock, &b, 2, 6).replicas, 4);
        // Load gone: the highest recommendation of the last 120 s holds the count.
        clock.advance(15);
        let d = step(&mut h, &clock, &b, 4, 1);
        assert_eq!((d.replicas, d.able_reason), (4, "ScaleDownStabilized"));
        clock.advance(121);
        assert_eq!(step(&mut h, &clock, &b, 4, 1).replicas, 1);
    }

    #[test]
    fn kubernetes_default_behavior_doubles_or_adds_four_per_fifteen_seconds() {
        let mut clock = FakeClock::new();
        let mut h = History::default();
        let b = default_behavior(300);
        assert_eq!(step(&mut h, &clock, &b, 1, 100).replicas, 5);
        clock.advance(16);
        assert_eq!(step(&mut h, &clock, &b, 5, 100).replicas, 10);
        clock.advance(16);
        assert_eq!(step(&mut h, &clock, &b, 10, 100).replicas, 20);
    }

    #[test]
    fn a_behavior_without_a_scale_down_window_takes_the_controllers() {
        let spec = v2::HorizontalPodAutoscalerBehavior {
            scale_up: None,
            scale_down: Some(v2::HPAScalingRules {
                policies: Some(vec![v2::HPAScalingPolicy {
                    type_: "Pods".into(),
                    value: 1,
                    period_seconds: 60,
                }]),
                select_policy: Some("Min".into()),
                stabilization_window_seconds: None,
                tolerance: None,
            }),
        };
        let b = Behavior::from_spec(&spec, Duration::from_secs(42));
        assert_eq!(b.down.window_seconds, 42);
        assert_eq!(b.down.select, Select::Min);
        assert_eq!(b.down.policies, [pods(1, 60)]);
        assert_eq!(b.up.window_seconds, 0);
    }
}
