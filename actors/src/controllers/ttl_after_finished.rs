//! The TTL-after-finished controller (Kubernetes' `pkg/controller/ttlafterfinished`): a
//! Job with `ttlSecondsAfterFinished` is deleted that long after it finished (its
//! `Complete` or `Failed` condition), with its pods: the deletion cascades in the
//! foreground, as Kubernetes asks it, and is made only after reading the Job afresh.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1 as batch;

use crate::api::strategy::typed;
use crate::api::ApiError;
use crate::runtime::{
    from_time, key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError,
    Reconciler, SharedClock,
};

pub struct TtlAfterFinishedController {
    clock: SharedClock,
}

impl TtlAfterFinishedController {
    pub fn new(clock: SharedClock) -> Self {
        TtlAfterFinishedController { clock }
    }
}

/// When a finished Job with a TTL expires; `None` for a Job without a TTL or not finished.
pub fn expires_at(job: &batch::Job) -> Option<DateTime<Utc>> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(from_time))
        .max()?;
    Some(finished + chrono::Duration::seconds(i64::from(ttl)))
}

#[async_trait::async_trait]
impl Reconciler for TtlAfterFinishedController {
    fn name(&self) -> &'static str {
        "ttl-after-finished-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("jobs")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        vec![key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(job) = ctx
            .cache("jobs")
            .get(key)
            .and_then(|j| typed::<batch::Job>(&j))
        else {
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(at) = expires_at(&job) else {
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        if now < at {
            let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
            return Ok(Action::RequeueAfter(self.clock.sleep_for(wait)));
        }
        // The cache may be behind (the TTL changed, the Job was replaced): look again.
        let (ns, name) = split_key(key);
        let fresh = match ctx.client.get("jobs", ns, name).await {
            Ok(v) => v,
            Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => return Err(e.into()),
        };
        let Some(fresh_job) = typed::<batch::Job>(&fresh) else {
            return Ok(Action::Done);
        };
        if fresh_job.metadata.uid != job.metadata.uid
            || expires_at(&fresh_job).is_none_or(|t| t > now)
        {
            return Ok(Action::RequeueAfter(
                self.clock.sleep_for(Duration::from_secs(1)),
            ));
        }
        tracing::info!(job = %key, "deleting a finished job whose TTL expired");
        match ctx
            .client
            .delete("jobs", ns, name, Some("Foreground"))
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_expires_its_ttl_after_its_finishing_condition() {
        let job: batch::Job = serde_json::from_value(json!({
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}}))
        .expect("job");
        assert_eq!(
            expires_at(&job).map(|t| t.to_rfc3339()),
            Some("2026-01-01T00:00:35+00:00".into())
        );
        let running: batch::Job = serde_json::from_value(json!({
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}}, "status": {}}))
        .expect("job");
        assert_eq!(expires_at(&running), None);
        let no_ttl: batch::Job = serde_json::from_value(json!({"spec": {"template": {}},
            "status": {"conditions": [{"type": "Failed", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))
        .expect("job");
        assert_eq!(expires_at(&no_ttl), None);
    }
}
