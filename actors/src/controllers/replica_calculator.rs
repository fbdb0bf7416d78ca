//! The autoscaler's metric arithmetic, free of I/O (Kubernetes' replica calculator):
//! desired replicas from the pods' usage of a resource, either as a utilisation of their
//! requests or as an average value, with the tolerance around the target in which
//! nothing changes, and the rules for pods that are unready or have no metrics.
//! Values are in thousandths of the resource's unit (millicores, millibytes), as
//! Kubernetes computes them.

/// Usage within this fraction of the target counts as on target: no change
/// (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// How a pod takes part in the calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Its usage counts.
    Ready,
    /// Pending, or (for CPU) not yet Ready: its usage is not trusted for a scale-up.
    Unready,
    /// Being deleted, or finished: left out entirely.
    Ignored,
}

/// One pod of the target, as the calculation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub name: String,
    pub state: PodState,
    /// The request of the measured resource (milli-units); `Err(container)` names a
    /// container without one. Only a utilisation target needs it.
    pub request: Result<i64, String>,
    /// Measured usage (milli-units), when the metrics have this pod.
    pub usage: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        pod: String,
        container: String,
    },
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("no metrics returned matched known pods")]
    NoRequests,
}

/// The band around the target in which nothing changes, per direction (an HPA's
/// `behavior.scaleUp.tolerance` / `scaleDown.tolerance`, else the controller's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub down: f64,
    pub up: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            down: TOLERANCE,
            up: TOLERANCE,
        }
    }
}

impl Tolerances {
    fn is_within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// What a utilisation target's metrics say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Average utilisation of the measured pods (percent of request, truncated).
    pub utilization: i32,
    /// Their average usage (milli-units).
    pub average: i64,
}

/// The pods by how they take part: measured ones in name order, then the rest.
struct Groups<'a> {
    measured: Vec<&'a PodSample>,
    unready: Vec<&'a PodSample>,
    missing: Vec<&'a PodSample>,
}

fn group(pods: &[PodSample]) -> Groups<'_> {
    let mut g = Groups {
        measured: Vec::new(),
        unready: Vec::new(),
        missing: Vec::new(),
    };
    for p in pods {
        match (p.state, p.usage) {
            (PodState::Ignored, _) => {}
            (PodState::Unready, _) => g.unready.push(p),
            (PodState::Ready, None) => g.missing.push(p),
            (PodState::Ready, Some(_)) => g.measured.push(p),
        }
    }
    g
}

/// Desired replicas for a utilisation target (`GetResourceReplicas`): within the
/// tolerance nothing changes; on a scale-down pods without metrics count as using their
/// whole request (or the target, if above 100%), on a scale-up nothing; on a scale-up
/// unready pods count as using nothing; a correction that flips the direction of the
/// change is dropped.
pub fn utilization_replicas(
    resource: &str,
    current: i32,
    target_percent: i32,
    pods: &[PodSample],
    tolerances: Tolerances,
) -> Result<Proposal, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group(pods);
    let request = |p: &PodSample| p.request.clone().unwrap_or(0);
    for p in pods {
        if let Err(container) = &p.request {
            return Err(CalcError::MissingRequest {
                resource: resource.to_string(),
                pod: p.name.clone(),
                container: container.clone(),
            });
        }
    }
    if g.measured.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let mut samples: Vec<(i64, i64)> = g
        .measured
        .iter()
        .map(|p| (p.usage.unwrap_or(0), request(p)))
        .collect();
    let ratio_of = |samples: &[(i64, i64)]| -> Result<(f64, i32, i64), CalcError> {
        let usage: i64 = samples.iter().map(|(u, _)| u).sum();
        let requests: i64 = samples.iter().map(|(_, r)| r).sum();
        if requests == 0 {
            return Err(CalcError::NoRequests);
        }
        let percent = (usage * 100 / requests) as i32;
        let average = usage / samples.len() as i64;
        Ok((
            f64::from(percent) / f64::from(target_percent.max(1)),
            percent,
            average,
        ))
    };
    let (ratio, utilization, average) = ratio_of(&samples)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if tolerances.is_within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.measured.len() as f64).ceil() as i32));
    }
    let fallback = i64::from(target_percent.max(100));
    for p in &g.missing {
        if ratio < 1.0 {
            samples.push((request(p) * fallback / 100, request(p)));
        } else if ratio > 1.0 {
            samples.push((0, request(p)));
        }
    }
    if scale_up_with_unready {
        for p in &g.unready {
            samples.push((0, request(p)));
        }
    }
    let (new_ratio, _, _) = ratio_of(&samples)?;
    if tolerances.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * samples.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// Desired replicas for an average value target (`GetRawResourceReplicas` and
/// `calcPlainMetricReplicas`), and the measured pods' average usage. Pods without
/// metrics count as on target for a scale-down and idle for a scale-up.
pub fn average_value_replicas(
    current: i32,
    target: i64,
    pods: &[PodSample],
    tolerances: Tolerances,
) -> Result<(i32, i64), CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group(pods);
    if g.measured.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let mut values: Vec<i64> = g.measured.iter().map(|p| p.usage.unwrap_or(0)).collect();
    let ratio_of = |values: &[i64]| {
        let average = values.iter().sum::<i64>() / values.len() as i64;
        (average as f64 / target.max(1) as f64, average)
    };
    let (ratio, average) = ratio_of(&values);
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if tolerances.is_within(ratio) {
            return Ok((current, average));
        }
        return Ok(((ratio * g.measured.len() as f64).ceil() as i32, average));
    }
    values.extend(
        g.missing
            .iter()
            .map(|_| if ratio < 1.0 { target } else { 0 }),
    );
    if scale_up_with_unready {
        values.extend(g.unready.iter().map(|_| 0));
    }
    let (new_ratio, _) = ratio_of(&values);
    if tolerances.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, average));
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, average));
    }
    Ok((replicas, average))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tolerances = Tolerances {
        down: TOLERANCE,
        up: TOLERANCE,
    };

    fn pod(name: &str, state: PodState, request: i64, usage: Option<i64>) -> PodSample {
        PodSample {
            name: name.into(),
            state,
            request: Ok(request),
            usage,
        }
    }

    fn ready(name: &str, usage: i64) -> PodSample {
        pod(name, PodState::Ready, 100, Some(usage))
    }

    fn util(current: i32, target: i32, pods: &[PodSample]) -> i32 {
        utilization_replicas("cpu", current, target, pods, T)
            .expect("proposal")
            .replicas
    }

    #[test]
    fn usage_over_target_scales_by_the_ratio_rounded_up() {
        // 2 pods at 150% of request against a 50% target: ratio 3 -> 6 pods.
        let p = utilization_replicas("cpu", 2, 50, &[ready("a", 150), ready("b", 150)], T).unwrap();
        assert_eq!(
            p,
            Proposal {
                replicas: 6,
                utilization: 150,
                average: 150
            }
        );
        // 1 pod at 80% against 50%: ceil(1.6) = 2.
        assert_eq!(util(1, 50, &[ready("a", 80)]), 2);
    }

    #[test]
    fn usage_within_the_tolerance_of_the_target_changes_nothing() {
        assert_eq!(
            util(3, 50, &[ready("a", 54), ready("b", 54), ready("c", 54)]),
            3
        );
        assert_eq!(
            util(3, 50, &[ready("a", 46), ready("b", 46), ready("c", 45)]),
            3
        );
        assert_eq!(util(2, 50, &[ready("a", 60), ready("b", 60)]), 3);
        // A per-direction tolerance: 20% up is within a 25% scale-up tolerance.
        let wide = Tolerances {
            down: 0.1,
            up: 0.25,
        };
        let p =
            utilization_replicas("cpu", 2, 50, &[ready("a", 60), ready("b", 60)], wide).unwrap();
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn idle_pods_scale_down_to_what_the_usage_needs() {
        assert_eq!(
            util(3, 50, &[ready("a", 10), ready("b", 10), ready("c", 10)]),
            1
        );
    }

    #[test]
    fn pods_without_metrics_hold_back_a_scale_down_as_if_fully_used() {
        // (20 + 20 + 100) / 3 = 46.7% against 50% is within tolerance: no change.
        let pods = [
            ready("a", 20),
            ready("b", 20),
            pod("c", PodState::Ready, 100, None),
        ];
        assert_eq!(util(3, 50, &pods), 3);
    }

    #[test]
    fn pods_without_metrics_damp_a_scale_up_as_if_idle() {
        let two = [ready("a", 200), pod("b", PodState::Ready, 100, None)];
        assert_eq!(util(2, 50, &two), 4);
        let four = [
            ready("a", 200),
            pod("b", PodState::Ready, 100, None),
            pod("c", PodState::Ready, 100, None),
            pod("d", PodState::Ready, 100, None),
        ];
        assert_eq!(util(4, 50, &four), 4);
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up_and_are_not_measured() {
        let pods = [
            ready("a", 300),
            pod("b", PodState::Unready, 100, Some(900)),
            pod("c", PodState::Unready, 100, None),
        ];
        assert_eq!(util(3, 50, &pods), 6);
        let pods = [ready("a", 10), pod("b", PodState::Unready, 100, None)];
        assert_eq!(util(2, 50, &pods), 1);
    }

    #[test]
    fn deleting_pods_are_ignored() {
        let pods = [ready("a", 100), pod("b", PodState::Ignored, 100, Some(0))];
        assert_eq!(util(2, 50, &pods), 2);
    }

    #[test]
    fn a_container_without_a_request_is_an_error_naming_it() {
        let mut p = ready("web-1", 10);
        p.request = Err("httpd".into());
        let err = utilization_replicas("cpu", 1, 50, &[p], T).unwrap_err();
        assert_eq!(
            err,
            CalcError::MissingRequest {
                resource: "cpu".into(),
                pod: "web-1".into(),
                container: "httpd".into()
            }
        );
    }

    #[test]
    fn no_pods_or_no_metrics_are_errors() {
        assert_eq!(
            utilization_replicas("cpu", 1, 50, &[], T),
            Err(CalcError::NoPods)
        );
        let pods = [pod("a", PodState::Unready, 100, None)];
        assert_eq!(
            utilization_replicas("cpu", 1, 50, &pods, T),
            Err(CalcError::NoMetrics)
        );
        assert_eq!(
            average_value_replicas(1, 50, &pods, T),
            Err(CalcError::NoMetrics)
        );
    }

    #[test]
    fn an_average_value_target_scales_by_usage_over_target() {
        const MI: i64 = 1_048_576_000; // 1 MiB in millibytes
        let at = |usage_mi: i64| pod("p", PodState::Ready, 0, Some(usage_mi * MI));
        // Two pods averaging 150Mi against 100Mi: ratio 1.5 -> 3.
        let pods = [at(100), at(200)];
        let mut named = pods.to_vec();
        named[1].name = "q".into();
        assert_eq!(
            average_value_replicas(2, 100 * MI, &named, T),
            Ok((3, 150 * MI))
        );
        // 95Mi against 100Mi is on target.
        assert_eq!(
            average_value_replicas(2, 100 * MI, &[at(95)], T).unwrap().0,
            2
        );
        // No requests are needed for an average value.
        let mut no_request = at(300);
        no_request.request = Err("app".into());
        assert_eq!(
            average_value_replicas(1, 100 * MI, &[no_request], T)
                .unwrap()
                .0,
            3
        );
    }

    #[test]
    fn an_average_value_scale_down_counts_unmeasured_pods_at_the_target() {
        // One pod at 20 against 100, one unmeasured at the target: (20 + 100) / 2 = 60
        // -> ratio 0.6 over 2 pods -> 2: it would flip nothing, so 2 stays.
        let pods = [
            pod("a", PodState::Ready, 0, Some(20)),
            pod("b", PodState::Ready, 0, None),
        ];
        assert_eq!(average_value_replicas(2, 100, &pods, T).unwrap().0, 2);
        let alone = [pod("a", PodState::Ready, 0, Some(20))];
        assert_eq!(average_value_replicas(3, 100, &alone, T).unwrap().0, 1);
    }
}
