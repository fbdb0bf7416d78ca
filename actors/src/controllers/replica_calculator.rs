//! The autoscaler's arithmetic, free of I/O so that it can be tested with a fake clock:
//! desired replicas from CPU usage against requests (Kubernetes' replica calculator), the
//! scale-down stabilisation window, and clamping to the HPA's bounds.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Usage within this fraction of the target counts as on target: no change.
pub const TOLERANCE: f64 = 0.1;

/// How a pod takes part in the calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running and Ready: its usage counts.
    Ready,
    /// Pending, or not (yet) Ready: its usage is not trusted for a scale-up.
    Unready,
    /// Being deleted, or finished: left out entirely.
    Ignored,
}

/// One pod of the target, as the calculation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub name: String,
    pub state: PodState,
    /// Sum of its containers' CPU requests; `Err(container)` names a container without one.
    pub cpu_request_millis: Result<u64, String>,
    /// Measured CPU, when the metrics have this pod.
    pub cpu_usage_millis: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("missing request for cpu in container {container} of Pod {pod}")]
    MissingRequest { pod: String, container: String },
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
}

/// What the metrics say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Average utilisation of the measured, ready pods (percent of request).
    pub utilization: i32,
}

/// Total usage over total request, as an integer percentage (Kubernetes truncates it the
/// same way), and its ratio to the target.
fn utilization(samples: &[(u64, u64)], target: i32) -> Option<(f64, i32)> {
    let usage: u64 = samples.iter().map(|(u, _)| u).sum();
    let request: u64 = samples.iter().map(|(_, r)| r).sum();
    if request == 0 {
        return None;
    }
    let percent = (usage * 100 / request) as i32;
    Some((f64::from(percent) / f64::from(target.max(1)), percent))
}

/// Desired replicas for a CPU utilisation target, following Kubernetes' replica calculator:
/// within the tolerance nothing changes; pods without metrics count as using their whole
/// request on a scale-down and nothing on a scale-up; unready pods count as using nothing
/// on a scale-up; and a correction that would flip the direction of the change is dropped.
pub fn desired_replicas(
    current_replicas: i32,
    target_percent: i32,
    pods: &[PodSample],
) -> Result<Proposal, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let mut requests = HashMap::new();
    for p in pods {
        match &p.cpu_request_millis {
            Ok(r) => requests.insert(p.name.as_str(), *r),
            Err(container) => {
                return Err(CalcError::MissingRequest {
                    pod: p.name.clone(),
                    container: container.clone(),
                })
            }
        };
    }
    let counted: Vec<&PodSample> = pods
        .iter()
        .filter(|p| p.state != PodState::Ignored)
        .collect();
    let ready: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| p.state == PodState::Ready && p.cpu_usage_millis.is_some())
        .collect();
    let unready: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| p.state == PodState::Unready)
        .collect();
    let missing: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| p.state == PodState::Ready && p.cpu_usage_millis.is_none())
        .collect();
    let request_of = |p: &PodSample| requests.get(p.name.as_str()).copied().unwrap_or(0);
    let mut samples: Vec<(u64, u64)> = ready
        .iter()
        .map(|p| (p.cpu_usage_millis.unwrap_or(0), request_of(p)))
        .collect();
    if samples.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let (ratio, percent) = utilization(&samples, target_percent).ok_or(CalcError::NoMetrics)?;
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(Proposal {
                replicas: current_replicas,
                utilization: percent,
            });
        }
        return Ok(Proposal {
            replicas: (ratio * ready.len() as f64).ceil() as i32,
            utilization: percent,
        });
    }
    // Fill in the pods we could not measure, in the direction that moves least.
    for p in &missing {
        if ratio < 1.0 {
            samples.push((request_of(p), request_of(p)));
        } else if ratio > 1.0 {
            samples.push((0, request_of(p)));
        }
    }
    if scale_up_with_unready {
        for p in &unready {
            samples.push((0, request_of(p)));
        }
    }
    let (new_ratio, _) = utilization(&samples, target_percent).ok_or(CalcError::NoMetrics)?;
    let unchanged = Proposal {
        replicas: current_replicas,
        utilization: percent,
    };
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(unchanged);
    }
    let replicas = (new_ratio * samples.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current_replicas)
        || (new_ratio > 1.0 && replicas < current_replicas)
    {
        return Ok(unchanged);
    }
    Ok(Proposal {
        replicas,
        utilization: percent,
    })
}

/// Recent recommendations per autoscaler: a scale-down takes the highest recommendation
/// of the window, so one quiet sample does not remove pods that the next busy one needs.
#[derive(Debug, Default)]
pub struct Stabilizer {
    recommendations: HashMap<String, Vec<(DateTime<Utc>, i32)>>,
}

impl Stabilizer {
    /// Record `recommended` for `key` at `now` and return the highest recommendation
    /// within `window` (including this one).
    pub fn stabilize(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        window: Duration,
        recommended: i32,
    ) -> i32 {
        let cutoff = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let recs = self.recommendations.entry(key.to_string()).or_default();
        recs.retain(|(at, _)| *at >= cutoff);
        let highest = recs.iter().map(|(_, r)| *r).fold(recommended, i32::max);
        recs.push((now, recommended));
        highest
    }

    pub fn forget(&mut self, key: &str) {
        self.recommendations.remove(key);
    }
}

/// Why the clamped count is what it is: (condition reason, message), as Kubernetes says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub replicas: i32,
    /// Whether a bound changed the recommendation (the ScalingLimited condition).
    pub limited: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// Clamp a recommendation to `[min, max]`, and to at most double (or 4) the current count
/// at once, so a bogus spike of usage cannot multiply the pods in one step.
pub fn clamp(current: i32, desired: i32, min: i32, max: i32) -> Limit {
    let scale_up_limit = (2 * current).max(4);
    let (upper, upper_reason, upper_message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    if desired < min {
        Limit {
            replicas: min,
            limited: true,
            reason: "TooFewReplicas",
            message: "the desired replica count is less than the minimum replica count",
        }
    } else if desired > upper {
        Limit {
            replicas: upper,
            limited: true,
            reason: upper_reason,
            message: upper_message,
        }
    } else {
        Limit {
            replicas: desired,
            limited: false,
            reason: "DesiredWithinRange",
            message: "the desired count is within the acceptable range",
        }
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

    fn pod(name: &str, state: PodState, request: u64, usage: Option<u64>) -> PodSample {
        PodSample {
            name: name.into(),
            state,
            cpu_request_millis: Ok(request),
            cpu_usage_millis: usage,
        }
    }

    fn ready(name: &str, usage: u64) -> PodSample {
        pod(name, PodState::Ready, 100, Some(usage))
    }

    #[test]
    fn usage_over_target_scales_by_the_ratio_rounded_up() {
        // 2 pods at 150% of request against a 50% target: ratio 3 → 6 pods.
        let p = desired_replicas(2, 50, &[ready("a", 150), ready("b", 150)]).unwrap();
        assert_eq!(
            p,
            Proposal {
                replicas: 6,
                utilization: 150
            }
        );
        // 1 pod at 80% against 50%: ceil(1.6) = 2.
        assert_eq!(
            desired_replicas(1, 50, &[ready("a", 80)]).unwrap().replicas,
            2
        );
    }

    #[test]
    fn usage_within_ten_percent_of_target_changes_nothing() {
        let p = desired_replicas(3, 50, &[ready("a", 54), ready("b", 54), ready("c", 54)]).unwrap();
        assert_eq!(p.replicas, 3);
        let p = desired_replicas(3, 50, &[ready("a", 46), ready("b", 46), ready("c", 45)]).unwrap();
        assert_eq!(p.replicas, 3);
        // Just outside the band it moves.
        let p = desired_replicas(2, 50, &[ready("a", 60), ready("b", 60)]).unwrap();
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn idle_pods_scale_down_to_what_the_usage_needs() {
        let p = desired_replicas(3, 50, &[ready("a", 10), ready("b", 10), ready("c", 10)]).unwrap();
        assert_eq!(
            p,
            Proposal {
                replicas: 1,
                utilization: 10
            }
        );
    }

    #[test]
    fn pods_without_metrics_hold_back_a_scale_down_as_if_fully_used() {
        // Measured pods idle at 20%; the unmeasured one is assumed at 100% of its request:
        // (20 + 20 + 100) / 3 = 46.7% against 50% is within tolerance → no change.
        let pods = [
            ready("a", 20),
            ready("b", 20),
            pod("c", PodState::Ready, 100, None),
        ];
        assert_eq!(desired_replicas(3, 50, &pods).unwrap().replicas, 3);
    }

    #[test]
    fn pods_without_metrics_damp_a_scale_up_as_if_idle() {
        // Measured pod at 200% (ratio 4); the unmeasured one counts 0: (200 + 0) / 2 = 100%
        // → ratio 2 over 2 pods → 4. With three unmeasured pods the estimate drops to
        // 200 / 4 = 50%: on target, no change (the measured pod alone would ask for 16).
        let two = [ready("a", 200), pod("b", PodState::Ready, 100, None)];
        assert_eq!(desired_replicas(2, 50, &two).unwrap().replicas, 4);
        let four = [
            ready("a", 200),
            pod("b", PodState::Ready, 100, None),
            pod("c", PodState::Ready, 100, None),
            pod("d", PodState::Ready, 100, None),
        ];
        assert_eq!(desired_replicas(4, 50, &four).unwrap().replicas, 4);
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up_and_are_not_measured() {
        // One busy ready pod at 300%, two new unready pods (their usage, if any, is not
        // trusted): (300 + 0 + 0) / 3 = 100% → ratio 2 → 6.
        let pods = [
            ready("a", 300),
            pod("b", PodState::Unready, 100, Some(900)),
            pod("c", PodState::Unready, 100, None),
        ];
        assert_eq!(desired_replicas(3, 50, &pods).unwrap().replicas, 6);
        // Scaling down, unready pods are simply left out.
        let pods = [ready("a", 10), pod("b", PodState::Unready, 100, None)];
        assert_eq!(desired_replicas(2, 50, &pods).unwrap().replicas, 1);
    }

    #[test]
    fn deleting_pods_are_ignored() {
        let pods = [ready("a", 100), pod("b", PodState::Ignored, 100, Some(0))];
        assert_eq!(desired_replicas(2, 50, &pods).unwrap().replicas, 2);
    }

    #[test]
    fn a_container_without_a_cpu_request_is_an_error_naming_it() {
        let mut p = ready("web-1", 10);
        p.cpu_request_millis = Err("httpd".into());
        let err = desired_replicas(1, 50, &[p]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing request for cpu in container httpd of Pod web-1"
        );
    }

    #[test]
    fn no_pods_or_no_metrics_are_errors() {
        assert_eq!(desired_replicas(1, 50, &[]), Err(CalcError::NoPods));
        let pods = [pod("a", PodState::Unready, 100, None)];
        assert_eq!(desired_replicas(1, 50, &pods), Err(CalcError::NoMetrics));
    }

    #[test]
    fn clamping_respects_bounds_and_the_scale_up_rate() {
        assert_eq!(clamp(1, 10, 1, 3).replicas, 3);
        assert_eq!(clamp(1, 10, 1, 3).reason, "TooManyReplicas");
        assert_eq!(clamp(1, 10, 1, 20).replicas, 4);
        assert_eq!(clamp(1, 10, 1, 20).reason, "ScaleUpLimit");
        assert_eq!(clamp(5, 10, 1, 20).replicas, 10);
        assert!(!clamp(5, 10, 1, 20).limited);
        let low = clamp(3, 0, 2, 5);
        assert_eq!(
            (low.replicas, low.reason, low.limited),
            (2, "TooFewReplicas", true)
        );
    }

    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let mut clock = FakeClock::new();
        let mut s = Stabilizer::default();
        let window = Duration::from_secs(300);
        assert_eq!(s.stabilize("ns/web", clock.now(), window, 3), 3);
        clock.advance(60);
        // The load is gone: 1 is recommended, but 3 was recommended within the window.
        assert_eq!(s.stabilize("ns/web", clock.now(), window, 1), 3);
        clock.advance(200);
        assert_eq!(s.stabilize("ns/web", clock.now(), window, 1), 3);
        clock.advance(41);
        // Over 300 s since the 3: the highest left in the window is 1.
        assert_eq!(s.stabilize("ns/web", clock.now(), window, 1), 1);
        // Scale-ups are never held back.
        assert_eq!(s.stabilize("ns/web", clock.now(), window, 5), 5);
        // Each autoscaler has its own window.
        assert_eq!(s.stabilize("ns/other", clock.now(), window, 1), 1);
    }

    #[test]
    fn a_zero_window_follows_every_recommendation() {
        let mut clock = FakeClock::new();
        let mut s = Stabilizer::default();
        assert_eq!(s.stabilize("k", clock.now(), Duration::ZERO, 3), 3);
        clock.advance(1);
        assert_eq!(s.stabilize("k", clock.now(), Duration::ZERO, 1), 1);
    }
}
