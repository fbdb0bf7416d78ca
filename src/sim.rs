//! `skiff sim`: the whole control plane (the store in memory, the API, every controller,
//! the scheduler) with hollow nodes, in this process, driven by a seeded random schedule
//! of user actions (create, scale and delete ReplicationControllers, cordon and uncordon
//! nodes) and faults (a panic injected into any supervised actor). After every step it
//! checks what must always hold, and once the schedule ends, that the cluster converges:
//!
//! - no acknowledged write is lost: each RC's `spec.replicas` is the last one written;
//! - an RC never owns more live pods than the most it was asked for since its last scale
//!   (nor than it already had then): extras mean it ignored its expectations;
//! - no node holds more pods than its allocatable `pods`;
//! - every pod is bound to a node that exists, or to none yet;
//! - after the schedule, within `converge` every RC has exactly `replicas` Running pods
//!   on schedulable nodes.
//!
//! The seed fixes the schedule (`SKIFF_SIM_SEED` or `--seed` replays it); the actors still
//! run on real threads and time, so the interleavings are not yet replayed with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_actors::api::ApiError;
use skiff_actors::client::{ApiClient, ListParams, PatchType};

use crate::config::{Config, NodeConfig};
use crate::system::{self, SystemError};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulated cluster did not start")]
    Start(#[from] SystemError),
    #[error("cannot make the simulation's directory")]
    TempDir(#[source] std::io::Error),
    #[error("the simulation's configuration")]
    Config(#[from] crate::config::ConfigError),
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub steps: usize,
    pub nodes: usize,
    /// Pods each hollow node takes.
    pub pods_per_node: u32,
    /// Real time between steps.
    pub step: Duration,
    /// How long the cluster may take to converge once the schedule ends.
    pub converge: Duration,
    /// A known-bad cluster for checking the checks: a second replication controller
    /// beside the first, as two controller-managers without leader election would run,
    /// each with expectations of its own.
    pub rogue_replication: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            steps: 40,
            nodes: 3,
            pods_per_node: 6,
            step: Duration::from_millis(150),
            converge: Duration::from_secs(60),
            rogue_replication: false,
        }
    }
}

/// What one seed did and what it found.
#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    /// Each step, as done (`create rc-1 replicas=3`, `panic GatewayActor`, ...).
    pub steps: Vec<String>,
    /// Broken invariants, each with the step after which it was seen.
    pub violations: Vec<String>,
}

impl SimReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// SplitMix64: a small, well-distributed generator whose whole state is the seed, so a
/// seed is the schedule.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// How many RCs the schedule plays with, and the most replicas it asks of one.
const RCS: u64 = 4;
const MAX_REPLICAS: u64 = 5;
const NS: &str = "default";

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create { rc: String, replicas: u64 },
    Scale { rc: String, replicas: u64 },
    Delete { rc: String },
    Cordon { node: String, on: bool },
    Panic { actor: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Create { rc, replicas } => write!(f, "create {rc} replicas={replicas}"),
            Step::Scale { rc, replicas } => write!(f, "scale {rc} replicas={replicas}"),
            Step::Delete { rc } => write!(f, "delete {rc}"),
            Step::Cordon { node, on: true } => write!(f, "cordon {node}"),
            Step::Cordon { node, on: false } => write!(f, "uncordon {node}"),
            Step::Panic { actor } => write!(f, "panic {actor}"),
        }
    }
}

/// The schedule of a seed: a pure function of it, the node names and the actors that can
/// be made to panic.
pub fn schedule(seed: u64, steps: usize, nodes: &[String], actors: &[String]) -> Vec<Step> {
    let mut rng = SeededRng::new(seed);
    (0..steps)
        .map(|_| {
            let rc = format!("rc-{}", rng.below(RCS));
            match rng.below(100) {
                0..=29 => Step::Create {
                    rc,
                    replicas: rng.below(MAX_REPLICAS + 1),
                },
                30..=59 => Step::Scale {
                    rc,
                    replicas: rng.below(MAX_REPLICAS + 1),
                },
                60..=69 => Step::Delete { rc },
                70..=84 if !nodes.is_empty() => Step::Cordon {
                    node: nodes[rng.below(nodes.len() as u64) as usize].clone(),
                    on: rng.below(2) == 0,
                },
                _ if !actors.is_empty() => Step::Panic {
                    actor: actors[rng.below(actors.len() as u64) as usize].clone(),
                },
                _ => Step::Delete { rc },
            }
        })
        .collect()
}

fn rc_object(name: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"sim": name},
            "template": {
                "metadata": {"labels": {"sim": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    })
}

/// What the simulation wrote and had acknowledged, per RC.
#[derive(Debug, Clone, Default)]
struct Desired {
    replicas: u64,
    /// The most live pods the RC may own until its next scale.
    ceiling: u64,
}

/// The ceilings by RC name, shared with the watcher that checks them at every pod change
/// (an extra pod may live only milliseconds before a controller deletes it again).
type Ceilings = Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

fn publish(desired: &BTreeMap<String, Desired>, ceilings: &Ceilings) {
    let mut c = ceilings.lock().unwrap_or_else(|e| e.into_inner());
    *c = desired
        .iter()
        .map(|(n, d)| (n.clone(), d.ceiling))
        .collect();
}

/// Raise a ceiling before the write that may let a controller create up to it.
fn raise(ceilings: &Ceilings, rc: &str, to: u64) {
    let mut c = ceilings.lock().unwrap_or_else(|e| e.into_inner());
    let e = c.entry(rc.to_string()).or_default();
    *e = (*e).max(to);
}

/// At every change of a pod: each RC (the live one of its name) owns no more live pods
/// than its ceiling.
async fn watch_ceilings(
    pods: Arc<skiff_actors::runtime::Informer>,
    rcs: Arc<skiff_actors::runtime::Informer>,
    ceilings: Ceilings,
    found: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use futures::StreamExt;
    let mut changes = pods.subscribe();
    while changes.next().await.is_some() {
        let rcs: BTreeMap<String, String> = rcs
            .cache()
            .list()
            .iter()
            .filter_map(|r| {
                Some((
                    r["metadata"]["uid"].as_str()?.to_string(),
                    r["metadata"]["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        let mut owned: BTreeMap<&str, u64> = BTreeMap::new();
        let all = pods.cache().list();
        for pod in all.iter().filter(|p| live(p)) {
            let owner = pod["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["controller"] == true)
                .and_then(|o| o["uid"].as_str())
                .and_then(|uid| rcs.get(uid));
            if let Some(name) = owner {
                *owned.entry(name.as_str()).or_default() += 1;
            }
        }
        let ceilings = ceilings.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, n) in owned {
            if let Some(max) = ceilings.get(name).filter(|max| n > **max) {
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "RC {name} owned {n} live pods, more than the {max} it may have"
                    ));
            }
        }
    }
}

/// Whether an API error is one a client retries (the store or the gateway restarting).
fn retryable(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::ServiceUnavailable(_) | ApiError::TooManyRequests { .. } | ApiError::Timeout(_)
    ) || e.to_string().contains("unreachable")
}

/// Do `f` until it answers something other than a retryable error, for up to 10 s.
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn owned_by<'a>(pods: &'a [Arc<Value>], rc: &'a Value) -> impl Iterator<Item = &'a Arc<Value>> {
    let uid = rc["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    pods.iter().filter(move |p| {
        p["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["uid"] == uid.as_str() && o["controller"] == true)
    })
}

fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

struct World {
    rcs: Vec<Arc<Value>>,
    pods: Vec<Arc<Value>>,
    nodes: Vec<Arc<Value>>,
}

impl World {
    /// The RC of that name.
    fn rc(&self, name: &str) -> Option<&Arc<Value>> {
        self.rcs.iter().find(|r| r["metadata"]["name"] == name)
    }
}

async fn observe(client: &dyn ApiClient) -> Result<World, ApiError> {
    let all = ListParams::default();
    let rcs = with_retries(|| client.list("replicationcontrollers", Some(NS), &all)).await?;
    let pods = with_retries(|| client.list("pods", None, &all)).await?;
    let nodes = with_retries(|| client.list("nodes", None, &all)).await?;
    Ok(World {
        rcs: rcs.items,
        pods: pods.items,
        nodes: nodes.items,
    })
}

/// The invariants that hold at every moment; each broken one as a sentence.
fn check(world: &World, desired: &BTreeMap<String, Desired>) -> Vec<String> {
    let mut broken = Vec::new();
    let node_names: Vec<&str> = world
        .nodes
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    for (name, want) in desired {
        let Some(rc) = world.rc(name) else {
            broken.push(format!("acknowledged RC {name} is gone"));
            continue;
        };
        let replicas = rc["spec"]["replicas"].as_u64().unwrap_or(1);
        if replicas != want.replicas {
            broken.push(format!(
                "RC {name} has replicas={replicas}, the last acknowledged write said {}",
                want.replicas
            ));
        }
        let owned = owned_by(&world.pods, rc).filter(|p| live(p)).count() as u64;
        if owned > want.ceiling {
            broken.push(format!(
                "RC {name} owns {owned} live pods, more than the {} it may have",
                want.ceiling
            ));
        }
    }
    for rc in &world.rcs {
        let name = rc["metadata"]["name"].as_str().unwrap_or_default();
        if !desired.contains_key(name) && rc["metadata"]["deletionTimestamp"].is_null() {
            broken.push(format!("RC {name} exists after its acknowledged delete"));
        }
    }
    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
    for pod in &world.pods {
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            continue;
        };
        if !node_names.contains(&node) {
            broken.push(format!(
                "pod {} is bound to {node}, which does not exist",
                pod["metadata"]["name"]
            ));
        }
        if live(pod) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    for node in &world.nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let allocatable = node["status"]["allocatable"]["pods"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok());
        let holds = per_node.get(name).copied().unwrap_or(0);
        if let Some(max) = allocatable {
            if holds > max {
                broken.push(format!(
                    "node {name} holds {holds} pods, over its allocatable {max}"
                ));
            }
        }
    }
    broken
}

/// An RC whose controller has caught up (its status is of the current generation and
/// counts exactly the replicas asked, and it owns that many live pods) may from then on
/// own no more than its replicas.
fn settle(world: &World, desired: &mut BTreeMap<String, Desired>) {
    for (name, want) in desired.iter_mut() {
        let Some(rc) = world.rc(name) else {
            continue;
        };
        let current = rc["status"]["observedGeneration"].as_i64()
            >= rc["metadata"]["generation"].as_i64()
            && rc["metadata"]["generation"].is_i64();
        let counted = rc["status"]["replicas"].as_u64().unwrap_or(0) == want.replicas;
        let owned = owned_by(&world.pods, rc).filter(|p| live(p)).count() as u64;
        if current && counted && owned == want.replicas {
            want.ceiling = want.replicas;
        }
    }
}

/// Whether every RC has exactly its replicas Running, on nodes that exist.
fn converged(world: &World, desired: &BTreeMap<String, Desired>) -> Result<(), String> {
    for (name, want) in desired {
        let rc = world.rc(name).ok_or_else(|| format!("RC {name} missing"))?;
        let running = owned_by(&world.pods, rc)
            .filter(|p| live(p) && p["status"]["phase"] == "Running")
            .count() as u64;
        let live_owned = owned_by(&world.pods, rc).filter(|p| live(p)).count() as u64;
        if running != want.replicas || live_owned != want.replicas {
            return Err(format!(
                "RC {name}: {running} Running of {live_owned} live pods, {} wanted",
                want.replicas
            ));
        }
    }
    Ok(())
}

/// Do one step; an RC's acknowledged state goes into `desired`.
async fn apply(
    step: &Step,
    client: &dyn ApiClient,
    faults: &system::Faults,
    desired: &mut BTreeMap<String, Desired>,
    ceilings: &Ceilings,
) -> Result<(), ApiError> {
    match step {
        Step::Create { rc, replicas } => {
            if !desired.contains_key(rc) {
                raise(ceilings, rc, *replicas);
            }
            let created = with_retries(|| {
                client.create("replicationcontrollers", Some(NS), rc_object(rc, *replicas))
            })
            .await;
            match created {
                Ok(_) => {
                    desired.insert(
                        rc.clone(),
                        Desired {
                            replicas: *replicas,
                            ceiling: *replicas,
                        },
                    );
                }
                // It exists already (or a retried create had gone through): as it is.
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Step::Scale { rc, replicas } => {
            if !desired.contains_key(rc) {
                return Ok(());
            }
            let patch = json!({"spec": {"replicas": replicas}});
            // The ceiling until the controller catches up: what it owns now, or more.
            let owned_now = {
                let world = observe(client).await?;
                world
                    .rc(rc)
                    .map(|r| owned_by(&world.pods, r).filter(|p| live(p)).count() as u64)
                    .unwrap_or(0)
            };
            let d = desired.entry(rc.clone()).or_default();
            d.ceiling = d.ceiling.max(*replicas).max(owned_now);
            raise(ceilings, rc, d.ceiling);
            with_retries(|| {
                client.patch(
                    "replicationcontrollers",
                    Some(NS),
                    rc,
                    None,
                    PatchType::Merge,
                    patch.clone(),
                )
            })
            .await?;
            // Until the controller has caught up it may still own what it has, or finish
            // creating what an earlier scale asked for.
            d.replicas = *replicas;
        }
        Step::Delete { rc } => {
            if desired.remove(rc).is_none() {
                return Ok(());
            }
            match with_retries(|| client.delete("replicationcontrollers", Some(NS), rc, None)).await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Step::Cordon { node, on } => {
            let patch = json!({"spec": {"unschedulable": on}});
            with_retries(|| {
                client.patch("nodes", None, node, None, PatchType::Merge, patch.clone())
            })
            .await?;
        }
        Step::Panic { actor } => {
            faults.inject(actor);
        }
    }
    Ok(())
}

/// The cluster a simulation runs: memory store, plain HTTP on a free port, hollow nodes
/// with short heartbeats, no kernel rules or DNS.
fn sim_config(
    dir: &std::path::Path,
    opts: &SimOptions,
) -> Result<Config, crate::config::ConfigError> {
    let mut cfg = Config::load(None)?;
    cfg.cluster.data_dir = dir.to_path_buf();
    cfg.cluster.manifests_dir = None;
    cfg.store.backend = "memory".into();
    cfg.gateway.listen = "127.0.0.1:0".into();
    cfg.gateway.insecure_http = true;
    cfg.proxy.cluster_ip = "none".into();
    cfg.dns.enabled = false;
    cfg.nodes = (0..opts.nodes)
        .map(|i| NodeConfig {
            name: format!("sim-{i}"),
            runtime: "sim".into(),
            pods: opts.pods_per_node,
            heartbeat_seconds: 1,
            server_port: 0,
            ..NodeConfig::default()
        })
        .collect();
    Ok(cfg)
}

/// Run one seed.
pub async fn run(opts: &SimOptions) -> Result<SimReport, SimError> {
    let dir = tempfile::tempdir().map_err(SimError::TempDir)?;
    let cfg = sim_config(dir.path(), opts)?;
    let sys = system::start(&cfg).await?;
    let client: Arc<dyn ApiClient> = sys.informers.client();
    let faults = sys.faults();
    let _rogue = opts.rogue_replication.then(|| {
        use skiff_actors::controllers::replica_set::{ReplicaKind, ReplicaSetController};
        skiff_actors::runtime::Controller::new(
            ReplicaSetController::new(ReplicaKind::ReplicationController),
            &sys.informers,
        )
        .start_supervised()
    });
    let nodes: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
    let steps = schedule(opts.seed, opts.steps, &nodes, &faults.names());
    let mut report = SimReport {
        seed: opts.seed,
        steps: Vec::new(),
        violations: Vec::new(),
    };
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let ceilings: Ceilings = Arc::default();
    let found: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let watcher = actix_rt::spawn(watch_ceilings(
        sys.informers
            .informer(skiff_actors::runtime::InformerSpec::all("pods")),
        sys.informers
            .informer(skiff_actors::runtime::InformerSpec::all(
                "replicationcontrollers",
            )),
        ceilings.clone(),
        found.clone(),
    ));
    let take_found = |report: &mut SimReport, when: &str| {
        let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
        for v in f.drain(..) {
            report.violations.push(format!("{when}: {v}"));
        }
    };
    for (i, step) in steps.iter().enumerate() {
        report.steps.push(step.to_string());
        if let Err(e) = apply(step, &*client, &faults, &mut desired, &ceilings).await {
            report
                .violations
                .push(format!("step {i} ({step}): the API refused: {e}"));
            break;
        }
        tokio::time::sleep(opts.step).await;
        match observe(&*client).await {
            Ok(world) => {
                for v in check(&world, &desired) {
                    report
                        .violations
                        .push(format!("after step {i} ({step}): {v}"));
                }
                settle(&world, &mut desired);
            }
            Err(e) => report.violations.push(format!(
                "after step {i} ({step}): cannot read the cluster: {e}"
            )),
        }
        take_found(&mut report, &format!("during step {i} ({step})"));
        // Lowered ceilings (settled RCs) only after the step's checks.
        publish(&desired, &ceilings);
        if !report.violations.is_empty() {
            break;
        }
    }
    if report.violations.is_empty() {
        // Faults stop: uncordon every node, then everything must settle.
        for node in &nodes {
            let step = Step::Cordon {
                node: node.clone(),
                on: false,
            };
            let _ = apply(&step, &*client, &faults, &mut desired, &ceilings).await;
        }
        let deadline = Instant::now() + opts.converge;
        let mut last;
        loop {
            match observe(&*client)
                .await
                .map_err(|e| e.to_string())
                .and_then(|w| {
                    let broken = check(&w, &desired);
                    if broken.is_empty() {
                        converged(&w, &desired)
                    } else {
                        Err(broken.join("; "))
                    }
                }) {
                Ok(()) => break,
                Err(why) => last = why,
            }
            if Instant::now() > deadline {
                report.violations.push(format!(
                    "no convergence within {:?} after the schedule: {last}",
                    opts.converge
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    take_found(&mut report, "while converging");
    watcher.abort();
    sys.shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_its_schedule() {
        let nodes = vec!["a".to_string(), "b".into()];
        let actors = vec!["StoreActor".to_string(), "GatewayActor".into()];
        let one = schedule(7, 50, &nodes, &actors);
        assert_eq!(one, schedule(7, 50, &nodes, &actors));
        assert_ne!(one, schedule(8, 50, &nodes, &actors));
        // Every kind of step comes up in a schedule this long.
        let kinds: std::collections::HashSet<_> = one.iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 5, "{one:?}");
    }

    fn pod(name: &str, node: Option<&str>, owner: &str) -> Value {
        json!({"metadata": {"name": name, "ownerReferences": [{"uid": owner, "controller": true}]},
               "spec": {"nodeName": node}, "status": {"phase": "Running"}})
    }

    #[test]
    fn extra_pods_lost_writes_and_overfull_nodes_are_caught() {
        let rc = json!({"metadata": {"name": "rc-0", "uid": "u0"}, "spec": {"replicas": 2}});
        let node = json!({"metadata": {"name": "n"}, "status": {"allocatable": {"pods": "2"}}});
        let world = World {
            rcs: vec![Arc::new(rc)],
            pods: vec![
                Arc::new(pod("a", Some("n"), "u0")),
                Arc::new(pod("b", Some("n"), "u0")),
                Arc::new(pod("c", Some("gone"), "u0")),
            ],
            nodes: vec![Arc::new(node)],
        };
        let desired = BTreeMap::from([(
            "rc-0".to_string(),
            Desired {
                replicas: 3,
                ceiling: 2,
            },
        )]);
        let broken = check(&world, &desired).join("\n");
        assert!(
            broken.contains("last acknowledged write said 3"),
            "{broken}"
        );
        assert!(
            broken.contains("owns 3 live pods, more than the 2"),
            "{broken}"
        );
        assert!(broken.contains("bound to gone"), "{broken}");
        let fine = BTreeMap::from([(
            "rc-0".to_string(),
            Desired {
                replicas: 2,
                ceiling: 3,
            },
        )]);
        let world = World {
            pods: world.pods[..2].to_vec(),
            ..world
        };
        assert!(check(&world, &fine).is_empty());
        assert!(converged(&world, &fine).is_ok());
    }
}
