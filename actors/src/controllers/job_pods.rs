//! The Job controller's pods: how many to run (parallelism, completions, the indexes still
//! to do), the back-off before replacements, and the pods themselves (the template with the
//! tracking finalizer and the Job as controller; for Indexed Jobs the index as annotation,
//! label, `JOB_COMPLETION_INDEX` and hostname).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::job::{uid, Sync};
use super::job_tracking as tracking;
use super::pods;
use crate::api::kinds::job::{COMPLETION_INDEX, TRACKING_FINALIZER};
use crate::api::{meta, ApiError};
use crate::runtime::ReconcileError;

/// Pods created at most per reconcile (Kubernetes' burstReplicas); the rest follow.
const BURST: usize = 500;

impl Sync<'_> {
    /// Create or delete pods towards the wanted number of active ones.
    pub(super) async fn manage(
        &mut self,
        spec: &batch::JobSpec,
        active: &[Arc<Value>],
        terminating: i32,
        succeeded: i32,
        completed: &BTreeSet<i32>,
    ) -> Result<(), ReconcileError> {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        // With the Failed policy a terminating pod still holds its place.
        let holding = if spec.pod_replacement_policy.as_deref() == Some("Failed") {
            terminating
        } else {
            0
        };
        let running = active.len() as i32 + holding;
        if self.indexed() {
            let completions = spec.completions.unwrap_or(0);
            // Duplicates of an index, and indexes already complete or out of range, go.
            let mut by_index: HashMap<i32, Vec<Arc<Value>>> = HashMap::new();
            let mut surplus = Vec::new();
            for p in active {
                match tracking::pod_index(p) {
                    Some(i) if i < completions && !completed.contains(&i) => {
                        by_index.entry(i).or_default().push(p.clone())
                    }
                    _ => surplus.push(p.clone()),
                }
            }
            for pods_of in by_index.values_mut() {
                pods_of.sort_by(|a, b| pods::deletion_order(b, a));
                surplus.extend(pods_of.drain(1..));
            }
            let alive = running - surplus.len() as i32;
            if alive > parallelism {
                let mut extra: Vec<Arc<Value>> = by_index.values().flatten().cloned().collect();
                extra.sort_by(|a, b| pods::deletion_order(a, b));
                surplus.extend(extra.into_iter().take((alive - parallelism) as usize));
            }
            if !surplus.is_empty() {
                return self.delete_pods(&surplus).await;
            }
            let pending: Vec<i32> = (0..completions)
                .filter(|i| !completed.contains(i) && !by_index.contains_key(i))
                .take((parallelism - alive).max(0) as usize)
                .collect();
            if pending.is_empty() || self.backing_off() {
                return Ok(());
            }
            return self
                .create_pods(pending.into_iter().map(Some).collect())
                .await;
        }
        let want = match spec.completions {
            Some(c) => parallelism.min((c - succeeded).max(0)),
            // A work queue: once one pod succeeded, no new ones; the rest finish.
            None if succeeded > 0 => running.min(parallelism),
            None => parallelism,
        };
        if running > want {
            let mut victims: Vec<Arc<Value>> = active.to_vec();
            victims.sort_by(|a, b| pods::deletion_order(a, b));
            victims.truncate((running - want) as usize);
            return self.delete_pods(&victims).await;
        }
        if running < want && !self.backing_off() {
            let n = ((want - running) as usize).min(BURST);
            return self.create_pods(vec![None; n]).await;
        }
        Ok(())
    }

    /// Whether the back-off after recent failures still holds new pods back (and if so,
    /// wake up when it ends).
    fn backing_off(&mut self) -> bool {
        let (mut failures, mut last) = self
            .controller
            .with_memory(self.key, |m| (m.failures_in_row, m.last_failure));
        if last.is_none() {
            // Nothing remembered (a restart): the finished pods tell.
            (failures, last) = tracking::failures_from_pods(self.pods.iter().map(|p| p.as_ref()));
        }
        let cfg = &self.controller.config;
        match tracking::backoff_remaining(
            failures,
            last,
            self.now,
            cfg.backoff_base,
            cfg.backoff_max,
        ) {
            Some(wait) => {
                self.wake_in(wait);
                true
            }
            None => false,
        }
    }

    /// The pod for one completion (an index for Indexed Jobs).
    pub(super) fn pod_for(&self, index: Option<i32>) -> Value {
        let spec = self.spec();
        let template = serde_json::to_value(&spec.template).unwrap_or(json!({}));
        let name = self.job.metadata.name.clone().unwrap_or_default();
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let mut annotations = template
            .pointer("/metadata/annotations")
            .cloned()
            .unwrap_or(json!({}));
        let mut pod_spec = template.get("spec").cloned().unwrap_or(json!({}));
        let generate = match index {
            Some(i) => {
                labels[COMPLETION_INDEX] = json!(i.to_string());
                annotations[COMPLETION_INDEX] = json!(i.to_string());
                if pod_spec
                    .get("hostname")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    let mut host = format!("{name}-{i}");
                    host.truncate(63);
                    pod_spec["hostname"] = json!(host.trim_end_matches(['-', '.']));
                }
                add_index_env(&mut pod_spec);
                format!("{name}-{i}-")
            }
            None => format!("{name}-"),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": generate,
                "labels": labels,
                "annotations": annotations,
                "finalizers": [TRACKING_FINALIZER],
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": self.job.metadata.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": pod_spec,
        })
    }

    async fn create_pods(&mut self, slots: Vec<Option<i32>>) -> Result<(), ReconcileError> {
        let n = slots.len();
        self.controller.with_memory(self.key, |m| {
            m.adds = n as i64;
            m.dels = 0;
            m.set = Some(Instant::now());
        });
        let mut left = slots;
        let mut size = 1;
        while !left.is_empty() {
            let batch: Vec<Option<i32>> = left.drain(..size.min(left.len())).collect();
            size *= 2;
            let creates = batch.iter().map(|i| {
                self.ctx
                    .client
                    .create("pods", Some(self.ns), self.pod_for(*i))
            });
            let mut failed = None;
            for r in join_all(creates).await {
                match r {
                    Ok(pod) => {
                        let msg = format!("Created pod: {}", meta::name(&pod).unwrap_or_default());
                        self.ctx
                            .recorder
                            .normal(&self.raw, "SuccessfulCreate", &msg)
                            .await;
                    }
                    Err(e) => {
                        self.controller.with_memory(self.key, |m| m.adds -= 1);
                        self.ctx
                            .recorder
                            .warning(&self.raw, "FailedCreate", &format!("Error creating: {e}"))
                            .await;
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                let skipped = left.len() as i64;
                self.controller.with_memory(self.key, |m| m.adds -= skipped);
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub(super) async fn delete_pods(
        &mut self,
        victims: &[Arc<Value>],
    ) -> Result<(), ReconcileError> {
        if victims.is_empty() {
            return Ok(());
        }
        let n = victims.len() as i64;
        self.controller.with_memory(self.key, |m| {
            m.adds = 0;
            m.dels = n;
            m.set = Some(Instant::now());
            m.deleted.extend(victims.iter().map(|p| uid(p)));
        });
        let (client, ns) = (self.ctx.client.clone(), self.ns);
        let deletes = victims.iter().map(|p| {
            let name = meta::name(p).unwrap_or_default().to_string();
            let client = client.clone();
            async move { (client.delete("pods", Some(ns), &name, None).await, name) }
        });
        let mut failed = None;
        for (r, name) in join_all(deletes).await {
            match r {
                Ok(_) => {
                    self.ctx
                        .recorder
                        .normal(
                            &self.raw,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        )
                        .await;
                }
                Err(ApiError::NotFound { .. }) => {
                    self.controller.with_memory(self.key, |m| m.dels -= 1)
                }
                Err(e) => {
                    self.controller.with_memory(self.key, |m| m.dels -= 1);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// `JOB_COMPLETION_INDEX` from the pod's annotation, in every container that lacks it.
fn add_index_env(pod_spec: &mut Value) {
    let var = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let env = c
                .as_object_mut()
                .map(|m| m.entry("env").or_insert_with(|| json!([])));
            if let Some(Value::Array(env)) = env {
                if !env
                    .iter()
                    .any(|e| e.get("name") == Some(&json!("JOB_COMPLETION_INDEX")))
                {
                    env.push(var.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::job::{JobConfig, JobController};
    use crate::runtime::{Context, SharedClock};
    use chrono::Utc;

    #[test]
    fn the_index_variable_is_added_once_to_every_container() {
        let mut spec = json!({"containers": [{"name": "a"}, {"name": "b", "env": [
            {"name": "JOB_COMPLETION_INDEX", "value": "mine"}]}],
            "initContainers": [{"name": "i"}]});
        add_index_env(&mut spec);
        add_index_env(&mut spec);
        assert_eq!(
            spec["containers"][0]["env"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(spec["containers"][1]["env"][0]["value"], "mine");
        assert_eq!(
            spec["initContainers"][0]["env"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn an_indexed_pod_carries_its_index_hostname_and_tracking_finalizer() {
        let job: batch::Job = serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "ns", "uid": "u1"},
            "spec": {"completionMode": "Indexed", "completions": 3, "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .expect("job");
        let controller = JobController::new(JobConfig::default(), SharedClock::default());
        let raw = Arc::new(serde_json::to_value(&job).expect("json"));
        let ctx_free = Sync {
            controller: &controller,
            ctx: &dummy_context(),
            key: "ns/work",
            ns: "ns",
            raw,
            job,
            pods: Vec::new(),
            now: Utc::now(),
            requeue: None,
        };
        let pod = ctx_free.pod_for(Some(2));
        assert_eq!(pod["metadata"]["generateName"], "work-2-");
        assert_eq!(pod["metadata"]["labels"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["annotations"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["labels"]["app"], "w");
        assert_eq!(pod["metadata"]["finalizers"][0], TRACKING_FINALIZER);
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(pod["spec"]["hostname"], "work-2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
        let plain = ctx_free.pod_for(None);
        assert_eq!(plain["metadata"]["generateName"], "work-");
        assert!(plain["spec"].get("hostname").is_none());
    }

    fn dummy_context() -> Context {
        Context::for_tests(Arc::new(crate::runtime::testing::Scripted::default()))
    }
}
