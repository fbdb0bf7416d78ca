//! The Job controller's arithmetic, free of I/O so that it is tested with a fake clock:
//! what a finished pod counts as (pod failure policy), the exponential back-off before a
//! replacement, the active deadline, completion indexes (`"0-2,5"`), and the conditions
//! Kubernetes writes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::runtime::{from_time, to_time};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1 as batch;
use serde_json::Value;

use crate::api::kinds::job::COMPLETION_INDEX;
use crate::api::meta;

/// What a failed pod means for its Job, by the pod failure policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Counted towards `backoffLimit` (no rule matched, or a `Count` rule).
    Count,
    /// Not counted (an `Ignore` rule).
    Ignore,
    /// The Job fails at once; the message says which rule.
    FailJob(String),
}

/// Match a failed pod against the policy's rules in order, as `matchPodFailurePolicy`.
pub fn failure_action(policy: Option<&batch::PodFailurePolicy>, pod: &Value) -> FailureAction {
    let Some(policy) = policy else {
        return FailureAction::Count;
    };
    let ns = meta::namespace(pod).unwrap_or_default();
    let name = meta::name(pod).unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            exit_code_match(codes, pod).map(|(container, code)| {
                format!(
                    "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                    rule.action
                )
            })
        } else {
            rule.on_pod_conditions.iter().flatten().find_map(|p| {
                let status = p.status.as_deref().unwrap_or("True");
                pod_condition(pod, &p.type_)
                    .filter(|s| *s == status)
                    .map(|_| {
                        format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                            p.type_, rule.action
                        )
                    })
            })
        };
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(message),
                "Ignore" => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

fn pod_condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?
        .get("status")?
        .as_str()
}

/// The first terminated container (init containers too) whose exit code matches.
fn exit_code_match(
    req: &batch::PodFailurePolicyOnExitCodesRequirement,
    pod: &Value,
) -> Option<(String, i64)> {
    let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten();
    for s in statuses {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if req.container_name.as_deref().is_some_and(|c| c != name) {
            continue;
        }
        let Some(code) = s
            .pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
        else {
            continue;
        };
        // Exit code 0 never matches: a container that succeeded did not fail the pod.
        if code == 0 {
            continue;
        }
        let listed = req.values.iter().any(|v| i64::from(*v) == code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if hit {
            return Some((name.to_string(), code));
        }
    }
    None
}

/// The delay before the next pod after `failures` failures in a row: `base` doubled per
/// failure after the first, capped at `max` (Kubernetes: 10 s, 6 min).
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(max).min(max)
}

/// How long to wait from `now` before creating a pod, if the last failure was at `last`.
pub fn backoff_remaining(
    failures: u32,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    base: Duration,
    max: Duration,
) -> Option<Duration> {
    let last = last?;
    let delay = chrono::Duration::from_std(backoff(failures, base, max)).ok()?;
    let left = last + delay - now;
    left.to_std().ok().filter(|d| !d.is_zero())
}

/// The back-off record a restarted controller rebuilds from the pods it finds: failures
/// since the last success and when the last one ended (containers' `finishedAt`).
pub fn failures_from_pods<'a>(
    pods: impl IntoIterator<Item = &'a Value>,
) -> (u32, Option<DateTime<Utc>>) {
    let finished = |p: &Value| -> Option<DateTime<Utc>> {
        p.pointer("/status/containerStatuses")?
            .as_array()?
            .iter()
            .filter_map(|c| c.pointer("/state/terminated/finishedAt")?.as_str())
            .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .max()
    };
    let mut failures = Vec::new();
    let mut last_success: Option<DateTime<Utc>> = None;
    for p in pods {
        let phase = p.pointer("/status/phase").and_then(Value::as_str);
        match (phase, finished(p)) {
            (Some("Failed"), Some(t)) => failures.push(t),
            (Some("Succeeded"), Some(t)) => last_success = last_success.max(Some(t)),
            _ => {}
        }
    }
    let since: Vec<DateTime<Utc>> = failures
        .into_iter()
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    (since.len() as u32, since.iter().max().copied())
}

/// Time left before the active deadline; `Some(ZERO)` once it has passed.
pub fn deadline_remaining(job: &batch::Job, now: DateTime<Utc>) -> Option<Duration> {
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    let start = job.status.as_ref()?.start_time.as_ref().map(from_time)?;
    let end = start + chrono::Duration::seconds(seconds);
    Some((end - now).to_std().unwrap_or(Duration::ZERO))
}

/// The completion index of an Indexed Job's pod (annotation first, then label).
pub fn pod_index(pod: &Value) -> Option<i32> {
    let key = COMPLETION_INDEX.replace('/', "~1");
    ["annotations", "labels"]
        .iter()
        .find_map(|m| pod.pointer(&format!("/metadata/{m}/{key}")))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .filter(|i| *i >= 0)
}

/// `"1,3-5"` → {1, 3, 4, 5}; malformed parts are skipped.
pub fn parse_indexes(s: Option<&str>) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// {1, 3, 4, 5} → `"1,3-5"`, as `status.completedIndexes` shows it.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// A condition with status True, as the controller writes them.
pub fn condition(
    kind: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> batch::JobCondition {
    batch::JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(to_time(now)),
        last_transition_time: Some(to_time(now)),
    }
}

/// Set (or replace) the condition of its type; the transition time moves only when the
/// status changes.
pub fn set_condition(conditions: &mut Vec<batch::JobCondition>, new: batch::JobCondition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status => {
            c.reason = new.reason;
            c.message = new.message;
            c.last_probe_time = new.last_probe_time;
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

pub fn has_condition(conditions: &[batch::JobCondition], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(360));
        let secs: Vec<u64> = (0..8).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(backoff(40, base, max), max);
    }

    #[test]
    fn the_wait_before_a_replacement_runs_from_the_last_failure_on_the_clock() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(360));
        let failed_at = t("2026-01-01T00:00:00Z");
        let wait = |now: &str, n| backoff_remaining(n, Some(failed_at), t(now), base, max);
        assert_eq!(
            wait("2026-01-01T00:00:04Z", 1),
            Some(Duration::from_secs(6))
        );
        assert_eq!(wait("2026-01-01T00:00:10Z", 1), None);
        assert_eq!(
            wait("2026-01-01T00:00:10Z", 3),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            backoff_remaining(3, None, t("2026-01-01T00:00:00Z"), base, max),
            None
        );
    }

    #[test]
    fn a_restarted_controller_rebuilds_the_back_off_from_the_pods() {
        let ended = |phase: &str, at: &str| {
            json!({"status": {"phase": phase, "containerStatuses": [
                {"state": {"terminated": {"finishedAt": at}}}]}})
        };
        let pods = [
            ended("Failed", "2026-01-01T00:00:00Z"),
            ended("Succeeded", "2026-01-01T00:01:00Z"),
            ended("Failed", "2026-01-01T00:02:00Z"),
            ended("Failed", "2026-01-01T00:03:00Z"),
            json!({"status": {"phase": "Running"}}),
        ];
        assert_eq!(
            failures_from_pods(pods.iter()),
            (2, Some(t("2026-01-01T00:03:00Z")))
        );
        assert_eq!(failures_from_pods(pods[..2].iter()), (0, None));
    }

    #[test]
    fn the_deadline_counts_from_the_start_time() {
        let job: batch::Job = serde_json::from_value(json!({
            "spec": {"activeDeadlineSeconds": 30, "template": {}},
            "status": {"startTime": "2026-01-01T00:00:00Z"}}))
        .expect("job");
        assert_eq!(
            deadline_remaining(&job, t("2026-01-01T00:00:20Z")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            deadline_remaining(&job, t("2026-01-01T00:00:31Z")),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn indexes_round_trip_through_kubernetes_interval_notation() {
        let set = parse_indexes(Some("0-2,5,7-8"));
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,5,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&parse_indexes(Some("3"))), "3");
    }

    fn failed_pod(code: i64, conditions: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "state": {"terminated": {"exitCode": code}}}]}})
    }

    #[test]
    fn the_first_matching_rule_decides_what_a_failure_means() {
        let policy: batch::PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]})).expect("policy");
        assert_eq!(
            failure_action(Some(&policy), &failed_pod(42, json!([]))),
            FailureAction::FailJob("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into())
        );
        let disrupted = failed_pod(1, json!([{"type": "DisruptionTarget", "status": "True"}]));
        assert_eq!(
            failure_action(Some(&policy), &disrupted),
            FailureAction::Ignore
        );
        assert_eq!(
            failure_action(Some(&policy), &failed_pod(1, json!([]))),
            FailureAction::Count
        );
        assert_eq!(
            failure_action(None, &failed_pod(42, json!([]))),
            FailureAction::Count
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut cs = vec![condition(
            "Suspended",
            "JobSuspended",
            "Job suspended",
            t("2026-01-01T00:00:00Z"),
        )];
        set_condition(
            &mut cs,
            condition(
                "Suspended",
                "JobSuspended",
                "Job suspended",
                t("2026-01-01T00:01:00Z"),
            ),
        );
        assert_eq!(
            cs[0].last_transition_time,
            Some(to_time(t("2026-01-01T00:00:00Z")))
        );
        let mut resumed = condition(
            "Suspended",
            "JobResumed",
            "Job resumed",
            t("2026-01-01T00:02:00Z"),
        );
        resumed.status = "False".into();
        set_condition(&mut cs, resumed);
        assert_eq!(cs.len(), 1);
        assert_eq!(
            cs[0].last_transition_time,
            Some(to_time(t("2026-01-01T00:02:00Z")))
        );
        assert!(!has_condition(&cs, "Suspended"));
    }

    #[test]
    fn a_pod_index_comes_from_its_annotation() {
        let pod = json!({"metadata": {"annotations": {COMPLETION_INDEX: "3"}}});
        assert_eq!(pod_index(&pod), Some(3));
        assert_eq!(pod_index(&json!({"metadata": {}})), None);
    }
}
