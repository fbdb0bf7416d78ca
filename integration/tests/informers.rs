//! The shared runtime: one process keeps one informer (one list, one watch, one cache) per
//! resource, however many in-process nodes, controllers and the scheduler read it; each
//! kubelet finds its node's pods through the cache's node index.

use std::time::Duration;

use serde_json::{json, Value};
use skiff::config::NodeConfig;
use skiff_actors::runtime::{InformerStats, NODE_NAME};
use skiff_integration::{call, client, eventually, TestCluster};

const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "/api/v1/namespaces/default";

fn hollow_nodes(n: usize) -> Vec<NodeConfig> {
    (0..n)
        .map(|i| NodeConfig {
            name: format!("shared-{i}"),
            runtime: "sim".into(),
            heartbeat_seconds: 2,
            ..NodeConfig::default()
        })
        .collect()
}

fn rc(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"app": name}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": "busybox:1.36"}]}}}})
}

/// Run an RC of `replicas` pods and wait until every one is Running.
async fn run_pods(c: &TestCluster, replicas: usize) {
    let (code, body) = call(
        client()
            .post(c.url(&format!("{NS}/replicationcontrollers")))
            .json(&rc("web", replicas as u32)),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(WAIT, "every pod Running", || async {
        let (_, list) = call(client().get(c.url(&format!(
            "{NS}/pods?labelSelector=app%3Dweb&fieldSelector=status.phase%3DRunning"
        ))))
        .await;
        (list["items"].as_array().map_or(0, Vec::len) == replicas).then_some(())
    })
    .await;
}

fn informers_of(stats: &[InformerStats], resource: &str) -> Vec<InformerStats> {
    stats
        .iter()
        .filter(|s| s.spec == resource || s.spec.starts_with(&format!("{resource}?")))
        .cloned()
        .collect()
}

/// The informer figures of a cluster with `nodes` hollow nodes running 6 pods.
async fn figures(nodes: usize) -> (Vec<InformerStats>, usize) {
    let c = TestCluster::start_with(|cfg| cfg.nodes = hollow_nodes(nodes));
    run_pods(&c, 6).await;
    // Every node's kubelet reads its pods from the one cache through the node index.
    let pods = c
        .informers
        .informer(skiff_actors::runtime::InformerSpec::all("pods"));
    let per_node: usize = (0..nodes)
        .map(|i| {
            pods.cache()
                .by_index(NODE_NAME, &format!("shared-{i}"))
                .len()
        })
        .sum();
    assert_eq!(per_node, 6, "every pod is on one node's index");
    (c.informers.stats(), nodes)
}

#[tokio::test]
async fn one_process_with_several_nodes_lists_and_watches_pods_once() {
    let (one, _) = figures(1).await;
    let (three, _) = figures(3).await;
    for stats in [&one, &three] {
        let pods = informers_of(stats, "pods");
        assert_eq!(
            pods.len(),
            1,
            "one pod informer, no per-node copy: {stats:?}"
        );
        let pods = &pods[0];
        assert_eq!(pods.spec, "pods", "not filtered per node");
        assert_eq!(pods.lists, 1, "listed once: {pods:?}");
        assert_eq!(
            pods.watches, 1,
            "one watch of pods in the process: {pods:?}"
        );
        assert!(pods.synced);
        for resource in ["services", "endpoints", "endpointslices", "nodes"] {
            assert_eq!(
                informers_of(stats, resource).len(),
                1,
                "{resource}: {stats:?}"
            );
        }
    }
    // More nodes add subscribers to the same informers, not informers.
    assert_eq!(one.len(), three.len(), "{one:?} vs {three:?}");
    let subscribers = |stats: &[InformerStats], r: &str| informers_of(stats, r)[0].subscribers;
    assert_eq!(subscribers(&three, "pods"), subscribers(&one, "pods") + 2);
    // Each node's proxy reads services and endpoint slices from the shared caches too.
    assert_eq!(
        subscribers(&three, "services"),
        subscribers(&one, "services") + 2
    );
    assert_eq!(
        subscribers(&three, "endpointslices"),
        subscribers(&one, "endpointslices") + 2
    );
}
