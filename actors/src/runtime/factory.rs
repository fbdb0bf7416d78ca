//! The informers of one process (client-go's `SharedInformerFactory`): every component
//! built in the process asks the factory, and all get the same informer, so each resource
//! is listed and watched once and each object version cached once, however many
//! controllers, kubelets and proxies read it.
//!
//! Informers are keyed by (resource, selectors). A remote node agent's factory is
//! [`node_scoped`](InformerFactory::node_scoped): its kubelet's pods come from a watch
//! filtered by `spec.nodeName`, so a node far from the API server does not receive every
//! pod of the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::ArbiterHandle;

use super::cache::{node_name_indexer, owner_uid_indexer, Indexer};
use super::informer::{Informer, InformerSpec, InformerStats};
use crate::client::ApiClient;

/// How a kubelet gets its node's pods from this factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodScope {
    /// From the process's informer of all pods (the scheduler and controllers watch them
    /// anyway), through its `spec.nodeName` index.
    Cluster,
    /// From an informer of the node's pods only.
    Node,
}

struct Inner {
    client: Arc<dyn ApiClient>,
    arbiter: Option<ArbiterHandle>,
    pod_scope: PodScope,
    informers: Mutex<HashMap<InformerSpec, Arc<Informer>>>,
}

/// A cheap handle to the process's informers; clone it into every component.
#[derive(Clone)]
pub struct InformerFactory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerFactory")
            .field("pod_scope", &self.inner.pod_scope)
            .field("informers", &self.stats().len())
            .finish()
    }
}

impl InformerFactory {
    /// Informers over `client`, run on the runtime of whoever first subscribes.
    pub fn new(client: Arc<dyn ApiClient>) -> Self {
        Self::build(client, None, PodScope::Cluster)
    }

    /// Informers run on `arbiter` (so that they stop with it).
    pub fn on_arbiter(client: Arc<dyn ApiClient>, arbiter: ArbiterHandle) -> Self {
        Self::build(client, Some(arbiter), PodScope::Cluster)
    }

    /// For a node agent talking to a remote API server: a kubelet's pods are watched
    /// with a `spec.nodeName` field selector rather than taken from a watch of every pod.
    pub fn node_scoped(client: Arc<dyn ApiClient>, arbiter: Option<ArbiterHandle>) -> Self {
        Self::build(client, arbiter, PodScope::Node)
    }

    fn build(client: Arc<dyn ApiClient>, arbiter: Option<ArbiterHandle>, scope: PodScope) -> Self {
        InformerFactory {
            inner: Arc::new(Inner {
                client,
                arbiter,
                pod_scope: scope,
                informers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The API client the informers (and their users) talk through.
    pub fn client(&self) -> Arc<dyn ApiClient> {
        self.inner.client.clone()
    }

    /// The process's informer for `spec`, created on first use (it starts listing when
    /// first subscribed to).
    pub fn informer(&self, spec: InformerSpec) -> Arc<Informer> {
        let mut informers = self
            .inner
            .informers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        informers
            .entry(spec.clone())
            .or_insert_with(|| {
                tracing::debug!(resource = %spec.describe(), "new shared informer");
                let indexers = default_indexers(spec.resource);
                Arc::new(Informer::new(
                    self.inner.client.clone(),
                    spec,
                    indexers,
                    self.inner.arbiter.clone(),
                ))
            })
            .clone()
    }

    /// The informer a kubelet reads its node's pods from: pods of `node` are
    /// `cache().by_index(NODE_NAME, node)` in either scope, and its changes must be
    /// restricted to the node (see [`node_filter`]) since in cluster scope it reports every
    /// pod.
    pub fn pods_on_node(&self, node: &str) -> Arc<Informer> {
        match self.inner.pod_scope {
            PodScope::Cluster => self.informer(InformerSpec::all("pods")),
            PodScope::Node => self.informer(InformerSpec::fields(
                "pods",
                format!("spec.nodeName={node}"),
            )),
        }
    }

    /// Every informer's figures, sorted by what it watches.
    pub fn stats(&self) -> Vec<InformerStats> {
        let informers: Vec<Arc<Informer>> = self
            .inner
            .informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut stats: Vec<InformerStats> = informers.iter().map(|i| i.stats()).collect();
        stats.sort_by(|a, b| a.spec.cmp(&b.spec));
        stats
    }
}

/// Whether a pod is bound to `node` (to restrict a cluster-wide pod informer's changes).
pub fn node_filter(node: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |pod| {
        pod.pointer("/spec/nodeName")
            .and_then(serde_json::Value::as_str)
            == Some(node)
    }
}

/// Every cache indexes owners (the garbage collector and controllers find dependents by
/// them); pods are also indexed by node (kubelets, node lifecycle).
fn default_indexers(resource: &str) -> Vec<Indexer> {
    match resource {
        "pods" => vec![node_name_indexer(), owner_uid_indexer()],
        _ => vec![owner_uid_indexer()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testing::Scripted;

    fn factory(scope: PodScope) -> InformerFactory {
        InformerFactory::build(Arc::new(Scripted::default()), None, scope)
    }

    #[actix_rt::test]
    async fn every_asker_gets_the_one_informer_of_a_resource_and_selector() {
        let f = factory(PodScope::Cluster);
        let a = f.informer(InformerSpec::all("pods"));
        let b = f.informer(InformerSpec::all("pods"));
        assert!(Arc::ptr_eq(&a, &b));
        let filtered = f.informer(InformerSpec::fields("pods", "spec.nodeName=n1"));
        assert!(
            !Arc::ptr_eq(&a, &filtered),
            "a selector is another informer"
        );
        assert!(
            Arc::ptr_eq(&f.pods_on_node("n1"), &a),
            "cluster scope shares all pods"
        );
        assert_eq!(f.stats().len(), 2);
    }

    #[actix_rt::test]
    async fn a_node_scoped_factory_watches_only_the_nodes_pods() {
        let f = factory(PodScope::Node);
        let on_n1 = f.pods_on_node("n1");
        assert_eq!(
            on_n1.spec().field_selector.as_deref(),
            Some("spec.nodeName=n1")
        );
        assert!(!Arc::ptr_eq(&on_n1, &f.pods_on_node("n2")));
    }
}
