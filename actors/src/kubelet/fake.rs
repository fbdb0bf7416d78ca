//! Test doubles at the kubelet's two boundaries: a recording in-memory runtime and an API
//! client holding a few pods. Only compiled for unit tests.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::runtime::*;
use crate::api::{meta, ApiError};
use crate::client::{ApiClient, ListParams, ObjectList, PatchType, WatchStream};

#[derive(Default)]
struct State {
    containers: BTreeMap<String, ContainerInfo>,
    ips: BTreeMap<String, String>,
    next: u64,
    calls: Vec<String>,
    /// Containers (by spec name) that exit with this code as soon as they start.
    exit_on_start: BTreeMap<String, i64>,
    /// Panic in the next `start_container` calls.
    panics: u32,
    /// Commands whose exec fails.
    failing_exec: HashSet<String>,
}

/// An in-memory engine that records every call.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

fn now() -> String {
    meta::now_rfc3339()
}

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn exit_on_start(&self, container: &str, code: i64) {
        self.lock().exit_on_start.insert(container.into(), code);
    }

    pub fn panic_on_next_start(&self) {
        self.lock().panics += 1;
    }

    pub fn fail_exec(&self, cmd: &str) {
        self.lock().failing_exec.insert(cmd.into());
    }

    pub fn clear_failing_exec(&self) {
        self.lock().failing_exec.clear();
    }

    /// Make a running container exit.
    pub fn exit(&self, id: &str, code: i64) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(id) {
            let started_at = match &c.state {
                ContainerState::Running { started_at } => started_at.clone(),
                _ => now(),
            };
            c.state = ContainerState::Exited {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at,
                finished_at: now(),
            };
        }
    }

    /// Every container of the pod's app container `name`.
    pub fn instances(&self, name: &str) -> Vec<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .filter(|c| c.container_name() == Some(name))
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<ContainerInfo> {
        self.lock().containers.values().cloned().collect()
    }

    fn add(
        &self,
        pod: &PodRef,
        name: &str,
        attempt: u32,
        image: &str,
        exit: Option<i64>,
    ) -> String {
        let mut s = self.lock();
        s.next += 1;
        let id = format!("c{}", s.next);
        let labels = BTreeMap::from([
            (LABEL_POD_UID.to_string(), pod.uid.clone()),
            (LABEL_POD_NAME.to_string(), pod.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
            (LABEL_NODE.to_string(), pod.node.clone()),
            (LABEL_CONTAINER.to_string(), name.to_string()),
            (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        ]);
        let state = match exit {
            Some(code) => ContainerState::Exited {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at: now(),
                finished_at: now(),
            },
            None => ContainerState::Running { started_at: now() },
        };
        let ip = format!("10.0.0.{}", s.next);
        s.ips.insert(id.clone(), ip);
        s.containers.insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                labels,
                image: image.into(),
                image_id: format!("sha256:{image}"),
                state,
            },
        );
        id
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake://1.0".into())
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        self.lock().calls.push(format!("ensure_image {image}"));
        if image.starts_with("missing/") {
            return Err(match policy {
                PullPolicy::Never => RuntimeError::ImageNeverPull(image.into()),
                _ => RuntimeError::ImagePull {
                    image: image.into(),
                    detail: "no registry".into(),
                },
            });
        }
        // Present on the node, but no registry has it.
        if image.starts_with("local-only/") && policy == PullPolicy::Always {
            return Err(RuntimeError::ImagePull {
                image: image.into(),
                detail: "no registry".into(),
            });
        }
        Ok(format!("sha256:{image}"))
    }

    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        self.lock()
            .calls
            .push(format!("run_sandbox {}", spec.hostname));
        let id = self.add(&spec.pod, SANDBOX_CONTAINER, 0, "pause", None);
        let ip = self.lock().ips.get(&id).cloned().unwrap_or_default();
        Ok(SandboxInfo { id, ip })
    }

    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let exit = {
            let mut s = self.lock();
            s.calls
                .push(format!("start_container {} {}", spec.name, spec.attempt));
            if let Some(target) = &spec.pid_target {
                s.calls.push(format!("pid_target {} {target}", spec.name));
            }
            if s.panics > 0 {
                s.panics -= 1;
                drop(s);
                panic!("injected runtime panic");
            }
            s.exit_on_start.get(&spec.name).copied()
        };
        let pod = spec
            .pod
            .clone()
            .ok_or_else(|| RuntimeError::Failed("no pod".into()))?;
        Ok(self.add(&pod, &spec.name, spec.attempt, &spec.image, exit))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.lock()
            .calls
            .push(format!("stop {id} {}", grace.as_secs()));
        let running = matches!(
            self.lock().containers.get(id).map(|c| &c.state),
            Some(ContainerState::Running { .. })
        );
        if running {
            self.exit(id, 137);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(format!("remove {id}"));
        s.containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn list(&self, node: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.labels.get(LABEL_NODE).map(String::as_str) == Some(node))
            .cloned()
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError> {
        self.lock()
            .ips
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        self.lock()
            .calls
            .push(format!("exec {id} {}", cmd.join(" ")));
        let failing = cmd
            .first()
            .is_some_and(|c| self.lock().failing_exec.contains(c));
        Ok(ExecResult {
            exit_code: if failing { 1 } else { 0 },
            output: String::new(),
        })
    }

    async fn logs(&self, _id: &str, _opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        Ok(Box::pin(futures::stream::empty()))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        if !self.lock().containers.contains_key(id) {
            return Err(RuntimeError::NotFound(id.into()));
        }
        Ok(ContainerStats {
            cpu_usage_ns: 0,
            memory_working_set_bytes: 0,
            at: chrono::Utc::now(),
        })
    }

    async fn exec_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        self.lock()
            .calls
            .push(format!("exec_start {id} {}", req.command.join(" ")));
        Err(RuntimeError::Failed(
            "the fake runtime runs no commands".into(),
        ))
    }

    async fn exec_resize(&self, _exec_id: &str, _w: u16, _h: u16) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        Err(RuntimeError::NotFound(exec_id.into()))
    }

    async fn exec_kill(&self, _exec_id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn attach_start(
        &self,
        id: &str,
        _req: &ExecRequest,
    ) -> Result<ExecSession, RuntimeError> {
        self.lock().calls.push(format!("attach_start {id}"));
        Err(RuntimeError::Failed(
            "the fake runtime runs no processes".into(),
        ))
    }

    async fn attach_resize(&self, _id: &str, _w: u16, _h: u16) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn network_namespace(
        &self,
        _sandbox_id: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        Ok(None)
    }
}

/// An API client holding pods by `namespace/name`, applying status merge patches, and
/// recording every write.
#[derive(Default)]
pub struct FakeClient {
    pods: Mutex<BTreeMap<String, Value>>,
    writes: Mutex<Vec<String>>,
    rv: Mutex<u64>,
}

impl FakeClient {
    pub fn with_pod(pod: Value) -> Self {
        let c = FakeClient::default();
        c.put(pod);
        c
    }

    pub fn put(&self, mut pod: Value) {
        let rv = self.bump();
        meta::set_resource_version(&mut pod, rv);
        let key = format!(
            "{}/{}",
            meta::namespace(&pod).unwrap_or_default(),
            meta::name(&pod).unwrap_or_default()
        );
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pod);
    }

    fn bump(&self) -> u64 {
        let mut rv = self.rv.lock().unwrap_or_else(|e| e.into_inner());
        *rv += 1;
        *rv
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    pub fn writes(&self) -> Vec<String> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn unsupported() -> ApiError {
    ApiError::MethodNotAllowed
}

#[async_trait::async_trait]
impl ApiClient for FakeClient {
    async fn get(&self, _r: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.pod(ns.unwrap_or_default(), name)
            .ok_or_else(|| ApiError::not_found("pods", name))
    }

    async fn get_subresource(
        &self,
        _r: &str,
        _ns: Option<&str>,
        _name: &str,
        _sub: &str,
    ) -> Result<Value, ApiError> {
        Err(unsupported())
    }

    async fn list(
        &self,
        _r: &str,
        _ns: Option<&str>,
        _p: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        Err(unsupported())
    }

    async fn watch(
        &self,
        _r: &str,
        _ns: Option<&str>,
        _p: &ListParams,
        _rv: u64,
    ) -> Result<WatchStream, ApiError> {
        Err(unsupported())
    }

    async fn create(&self, _r: &str, _ns: Option<&str>, _o: Value) -> Result<Value, ApiError> {
        Err(unsupported())
    }

    async fn update(
        &self,
        _r: &str,
        _ns: Option<&str>,
        _n: &str,
        _s: Option<&str>,
        _o: Value,
    ) -> Result<Value, ApiError> {
        Err(unsupported())
    }

    async fn patch(
        &self,
        _r: &str,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        _kind: PatchType,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let ns = ns.unwrap_or_default();
        let mut pod = self
            .pod(ns, name)
            .ok_or_else(|| ApiError::not_found("pods", name))?;
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("patch {}", sub.unwrap_or("")));
        if let Some(status) = patch.get("status").and_then(Value::as_object) {
            if !pod["status"].is_object() {
                pod["status"] = json!({});
            }
            for (k, v) in status {
                pod["status"][k] = v.clone();
            }
        }
        self.put(pod);
        self.pod(ns, name)
            .ok_or_else(|| ApiError::not_found("pods", name))
    }

    async fn delete(
        &self,
        _r: &str,
        _ns: Option<&str>,
        _n: &str,
        _p: Option<&str>,
    ) -> Result<Value, ApiError> {
        Err(unsupported())
    }

    async fn delete_now(&self, _r: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("delete_now {name}"));
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{}/{name}", ns.unwrap_or_default()))
            .ok_or_else(|| ApiError::not_found("pods", name))
    }

    async fn bind(&self, _ns: &str, _pod: &str, _node: &str) -> Result<(), ApiError> {
        Err(unsupported())
    }
}
