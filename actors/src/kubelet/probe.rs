//! Container probes: what a `livenessProbe` / `readinessProbe` / `startupProbe` asks for
//! (exec, httpGet, tcpSocket), running one attempt, and the threshold bookkeeping that
//! turns attempts into a result.
//!
//! As in Kubernetes, a readiness probe starts out failed (a container is not ready until
//! the probe says so), a liveness probe starts out successful (a container is alive until
//! proven dead), and a startup probe starts out failed and holds the other two off until
//! it succeeds once; `failureThreshold` failures before that kill the container.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use super::runtime::Runtime;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("probe has no handler (exec, httpGet or tcpSocket)")]
    NoHandler,
    #[error("probe port {0:?} is neither a number nor the name of a container port")]
    UnknownPort(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// The pod spec field holding this probe.
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }

    /// The result before the first attempt.
    fn initial(self) -> bool {
        matches!(self, ProbeKind::Liveness)
    }
}

/// How one attempt is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http {
        scheme: String,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
}

/// A probe with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(probe: &Value, field: &str, default: u64, min: u64) -> Duration {
    let s = probe
        .get(field)
        .and_then(Value::as_u64)
        .unwrap_or(default)
        .max(min);
    Duration::from_secs(s)
}

fn count(probe: &Value, field: &str, default: u32) -> u32 {
    probe
        .get(field)
        .and_then(Value::as_u64)
        .map(|n| n.clamp(1, u32::MAX as u64) as u32)
        .unwrap_or(default)
}

/// A probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: Option<&Value>, container: &Value) -> Result<u16, ProbeError> {
    match port {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| ProbeError::UnknownPort(n.to_string())),
        Some(Value::String(s)) => {
            if let Ok(p) = s.parse::<u16>() {
                return Ok(p);
            }
            container
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| ProbeError::UnknownPort(s.clone()))
        }
        other => Err(ProbeError::UnknownPort(
            other.map(Value::to_string).unwrap_or_default(),
        )),
    }
}

impl ProbeSpec {
    /// The probe of `kind` on `container` (a pod spec container), if it has one.
    pub fn of(container: &Value, kind: ProbeKind) -> Option<Result<ProbeSpec, ProbeError>> {
        let probe = container.get(kind.field()).filter(|p| p.is_object())?;
        Some(Self::parse(probe, container))
    }

    pub fn parse(probe: &Value, container: &Value) -> Result<ProbeSpec, ProbeError> {
        let action = if let Some(exec) = probe.get("exec") {
            let cmd = exec
                .get("command")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Action::Exec(cmd)
        } else if let Some(http) = probe.get("httpGet") {
            let text = |f: &str| http.get(f).and_then(Value::as_str).map(str::to_string);
            let headers = http
                .get("httpHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| {
                    Some((
                        h.get("name")?.as_str()?.to_string(),
                        h.get("value")?.as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect();
            Action::Http {
                scheme: text("scheme").unwrap_or_else(|| "HTTP".into()),
                host: text("host").filter(|h| !h.is_empty()),
                port: resolve_port(http.get("port"), container)?,
                path: text("path").unwrap_or_else(|| "/".into()),
                headers,
            }
        } else if let Some(tcp) = probe.get("tcpSocket") {
            Action::Tcp {
                host: tcp
                    .get("host")
                    .and_then(Value::as_str)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string),
                port: resolve_port(tcp.get("port"), container)?,
            }
        } else {
            return Err(ProbeError::NoHandler);
        };
        Ok(ProbeSpec {
            action,
            initial_delay: seconds(probe, "initialDelaySeconds", 0, 0),
            period: seconds(probe, "periodSeconds", 10, 1),
            timeout: seconds(probe, "timeoutSeconds", 1, 1),
            success_threshold: count(probe, "successThreshold", 1),
            failure_threshold: count(probe, "failureThreshold", 3),
        })
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Turns attempts into a result: the result flips only after `success_threshold`
/// consecutive successes or `failure_threshold` consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    result: bool,
}

impl Tracker {
    pub fn new(kind: ProbeKind, spec: &ProbeSpec) -> Self {
        Tracker {
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
            successes: 0,
            failures: 0,
            result: kind.initial(),
        }
    }

    /// The current result: ready (readiness), alive (liveness) or started (startup).
    pub fn result(&self) -> bool {
        self.result
    }

    /// `failureThreshold` consecutive failures were seen (for a startup probe, which
    /// starts out failed, this is what kills the container).
    pub fn failed(&self) -> bool {
        self.failures >= self.failure_threshold
    }

    /// Count one attempt; returns the new result when it flipped.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<bool> {
        let before = self.result;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.successes >= self.success_threshold {
                    self.result = true;
                }
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.failure_threshold {
                    self.result = false;
                }
            }
        }
        (self.result != before).then_some(self.result)
    }
}

/// One client for every HTTP probe of the process: probes are frequent, and a client per
/// attempt would open a connection pool per attempt.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // Probes must not follow a redirect off the pod, nor reuse a connection to a
            // restarted container.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default()
    })
}

/// Make one attempt against the container `container_id` of a pod at `pod_ip`.
pub async fn run(
    runtime: Arc<dyn Runtime>,
    container_id: String,
    pod_ip: Option<String>,
    spec: ProbeSpec,
) -> Outcome {
    let timeout = spec.timeout;
    match spec.action {
        Action::Exec(cmd) => match runtime.exec(&container_id, &cmd, timeout).await {
            Ok(r) if r.exit_code == 0 => Outcome::Success,
            Ok(r) => Outcome::Failure(format!(
                "command {cmd:?} exited with {}: {}",
                r.exit_code,
                r.output.trim()
            )),
            Err(e) => Outcome::Failure(e.to_string()),
        },
        Action::Http {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            let Some(host) = host.or(pod_ip) else {
                return Outcome::Failure("pod has no IP".into());
            };
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            let url = format!("{}://{host}:{port}{path}", scheme.to_ascii_lowercase());
            let mut req = http_client().get(&url).timeout(timeout);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req = req.header("User-Agent", "kube-probe/1.33");
            match req.send().await {
                Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Outcome::Success,
                Ok(resp) => Outcome::Failure(format!(
                    "HTTP probe failed with statuscode: {}",
                    resp.status().as_u16()
                )),
                Err(e) => Outcome::Failure(format!("Get \"{url}\": {e}")),
            }
        }
        Action::Tcp { host, port } => {
            let Some(host) = host.or(pod_ip) else {
                return Outcome::Failure("pod has no IP".into());
            };
            let addr = format!("{host}:{port}");
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
                Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(probe: Value) -> ProbeSpec {
        let container = json!({"name": "c", "ports": [{"name": "web", "containerPort": 8080}]});
        ProbeSpec::parse(&probe, &container).expect("valid probe")
    }

    #[test]
    fn a_probe_gets_kubernetes_defaults() {
        let s = spec(json!({"tcpSocket": {"port": 80}}));
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
    }

    #[test]
    fn a_named_port_resolves_to_the_container_port() {
        let s = spec(json!({"httpGet": {"port": "web", "path": "healthz"}}));
        assert!(matches!(s.action, Action::Http { port: 8080, .. }));
        let container = json!({"name": "c"});
        assert_eq!(
            ProbeSpec::parse(&json!({"tcpSocket": {"port": "nope"}}), &container),
            Err(ProbeError::UnknownPort("nope".into()))
        );
    }

    #[test]
    fn readiness_starts_failed_and_liveness_starts_alive() {
        let s = spec(json!({"exec": {"command": ["true"]}}));
        assert!(!Tracker::new(ProbeKind::Readiness, &s).result());
        assert!(Tracker::new(ProbeKind::Liveness, &s).result());
    }

    #[test]
    fn liveness_fails_only_after_failure_threshold_consecutive_failures() {
        let s = spec(json!({"exec": {"command": ["false"]}, "failureThreshold": 3}));
        let mut t = Tracker::new(ProbeKind::Liveness, &s);
        let fail = Outcome::Failure("no".into());
        assert_eq!(t.observe(&fail), None);
        assert_eq!(t.observe(&fail), None);
        assert_eq!(
            t.observe(&Outcome::Success),
            None,
            "a success resets the count"
        );
        assert_eq!(t.observe(&fail), None);
        assert_eq!(t.observe(&fail), None);
        assert_eq!(t.observe(&fail), Some(false));
    }

    #[test]
    fn readiness_needs_success_threshold_consecutive_successes() {
        let s = spec(
            json!({"exec": {"command": ["true"]}, "successThreshold": 2, "failureThreshold": 1}),
        );
        let mut t = Tracker::new(ProbeKind::Readiness, &s);
        assert_eq!(t.observe(&Outcome::Success), None);
        assert_eq!(t.observe(&Outcome::Success), Some(true));
        assert_eq!(t.observe(&Outcome::Failure("x".into())), Some(false));
    }

    #[tokio::test]
    async fn tcp_probe_succeeds_against_a_listening_port_and_fails_against_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let runtime: Arc<dyn Runtime> = Arc::new(super::super::fake::FakeRuntime::default());
        let open = spec(json!({"tcpSocket": {"port": port}}));
        let outcome = run(runtime.clone(), "c".into(), Some("127.0.0.1".into()), open).await;
        assert_eq!(outcome, Outcome::Success);
        drop(listener);
        let closed = spec(json!({"tcpSocket": {"port": port}}));
        let outcome = run(runtime, "c".into(), Some("127.0.0.1".into()), closed).await;
        assert!(matches!(outcome, Outcome::Failure(_)));
    }

    #[test]
    fn startup_starts_unstarted_succeeds_once_and_fails_after_the_threshold() {
        let s = spec(json!({"exec": {"command": ["true"]}, "failureThreshold": 2}));
        let mut t = Tracker::new(ProbeKind::Startup, &s);
        assert!(!t.result() && !t.failed());
        t.observe(&Outcome::Failure("no".into()));
        assert!(!t.failed());
        t.observe(&Outcome::Failure("no".into()));
        assert!(t.failed());
        let mut t = Tracker::new(ProbeKind::Startup, &s);
        assert_eq!(t.observe(&Outcome::Success), Some(true));
    }
}
