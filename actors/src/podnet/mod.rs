//! The pod network agent (flannel's part in a Kubernetes cluster): one per host, for the
//! nodes this process runs. Each node's pods are on a bridge of its own holding the
//! node's block of the cluster's pod range (its `spec.podCIDR`, given by the controller
//! manager's `nodeipam`; the kubelet makes the bridge). This agent makes the blocks of
//! every other host reachable, with one of flannel's two backends:
//!
//! - `host-gw`: a route to each remote node's block through that node's InternalIP, which
//!   must be on a link this host shares with it;
//! - `vxlan`: a VXLAN device (VNI 1, UDP 8472) on this host's node address, holding a VTEP
//!   address per local block (the block's network address); its MAC is published on the
//!   local nodes ([`VTEP_MAC`]), and each remote block is routed to the remote VTEP through
//!   the device, with a permanent neighbour and forwarding entry naming the remote node's
//!   address. Any two hosts that reach each other by IP can then carry pod traffic.
//!
//! Routes follow the nodes (a deleted node takes its route with it), and together with
//! the forward rules and the masquerade of [`host`] they are removed when the agent's
//! process stops.

pub mod host;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1 as core;

use crate::api::strategy::typed;
use crate::controllers::node_ipam::{gateway_of, pod_cidr};
use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};
use host::{NextHop, PodNetHost};

/// Every change to a node maps to this one key: all routes are reconciled at once.
const KEY: &str = "routes";
/// The annotation a node's VXLAN device MAC is published in (flannel's `backend-data`).
pub const VTEP_MAC: &str = "skiff.io/vxlan-vtep-mac";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    HostGw,
    Vxlan,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            other => Err(format!(
                "unknown pod network backend {other:?} (host-gw or vxlan)"
            )),
        }
    }
}

pub struct PodNetAgent {
    host: Arc<PodNetHost>,
    backend: Backend,
    /// Nodes of this process: their bridges are on this host already.
    local: HashSet<String>,
    installed: AtomicBool,
}

impl PodNetAgent {
    pub fn new(
        host: Arc<PodNetHost>,
        backend: Backend,
        local: impl IntoIterator<Item = String>,
    ) -> Self {
        PodNetAgent {
            host,
            backend,
            local: local.into_iter().collect(),
            installed: AtomicBool::new(false),
        }
    }

    fn is_local(&self, node: &core::Node) -> bool {
        node.metadata
            .name
            .as_ref()
            .is_some_and(|name| self.local.contains(name))
    }

    /// A node's block, if it is one of the cluster's range.
    fn block_of(&self, node: &core::Node) -> Option<Ipv4Net> {
        let block: Ipv4Net = pod_cidr(node)?.parse().ok()?;
        let block = block.trunc();
        self.host
            .cluster()
            .contains(&block.network())
            .then_some(block)
    }

    /// The route each remote node's block should have (under vxlan, once the node has
    /// published its VTEP's MAC).
    ///
    /// A node on this host after all (another process's, with an address of this host or
    /// a loopback one), or a block whose bridge is here, is left to the kernel's own
    /// route to the bridge: replacing that would cut the node's pods off.
    pub fn desired(
        &self,
        nodes: &[core::Node],
        here: &HashSet<Ipv4Addr>,
    ) -> BTreeMap<Ipv4Net, NextHop> {
        nodes
            .iter()
            .filter(|n| !self.is_local(n))
            .filter_map(|n| {
                let block = self.block_of(n)?;
                let ip = internal_ip(n)?;
                if ip.is_loopback() || here.contains(&ip) || here.contains(&gateway_of(&block)) {
                    return None;
                }
                let hop = match self.backend {
                    Backend::HostGw => NextHop::Via(ip),
                    Backend::Vxlan => NextHop::Vxlan {
                        vtep: block.network(),
                        mac: n.metadata.annotations.as_ref()?.get(VTEP_MAC)?.clone(),
                        node: ip,
                    },
                };
                Some((block, hop))
            })
            .collect()
    }

    /// Under vxlan: the device on the local nodes' address, and its MAC published on them.
    async fn publish_vtep(&self, nodes: &[core::Node], ctx: &Context) -> Result<(), String> {
        let local: Vec<&core::Node> = nodes.iter().filter(|n| self.is_local(n)).collect();
        let Some(address) = local.iter().find_map(|n| internal_ip(n)) else {
            return Ok(());
        };
        let vteps: Vec<Ipv4Addr> = local
            .iter()
            .filter_map(|n| self.block_of(n))
            .map(|b| b.network())
            .collect();
        let mac = self
            .host
            .vxlan(address, &vteps)
            .await
            .map_err(|e| e.to_string())?;
        for node in local {
            let Some(name) = node.metadata.name.as_deref() else {
                continue;
            };
            let published = node
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(VTEP_MAC));
            if published == Some(&mac) {
                continue;
            }
            let patch = serde_json::json!({"metadata": {"annotations": {VTEP_MAC: mac}}});
            ctx.client
                .patch(
                    "nodes",
                    None,
                    name,
                    None,
                    crate::client::PatchType::Merge,
                    patch,
                )
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(node = %name, %mac, "VTEP published");
        }
        Ok(())
    }
}

/// A node's InternalIP (IPv4).
pub fn internal_ip(node: &core::Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

#[async_trait::async_trait]
impl Reconciler for PodNetAgent {
    fn name(&self) -> &'static str {
        "pod-network-agent"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("nodes")]
    }

    fn keys_for(&self, _resource: &str, _change: &Change, _ctx: &Context) -> Vec<String> {
        vec![KEY.to_string()]
    }

    fn workers(&self) -> usize {
        1
    }

    /// Catch up with routes someone else removed.
    fn resync(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        if self.host.removed() {
            return Ok(Action::Done);
        }
        let action = self.sync(ctx).await;
        // Stopped meanwhile: what this pass put in the kernel goes too.
        if self.host.removed() {
            self.host.remove();
        }
        action
    }
}

impl PodNetAgent {
    async fn sync(&self, ctx: &Context) -> Result<Action, ReconcileError> {
        let retry = Ok(Action::RequeueAfter(Duration::from_secs(1)));
        if !self.installed.load(Ordering::Relaxed) {
            if let Err(e) = self.host.install().await {
                tracing::warn!(chain = %self.host.chain(), error = %e, "pod network rules not installed");
                return retry;
            }
            tracing::info!(range = %self.host.cluster(), chain = %self.host.chain(), table = %self.host.table(), "pod network rules installed");
            self.installed.store(true, Ordering::Relaxed);
        }
        let nodes: Vec<core::Node> = ctx
            .cache("nodes")
            .list()
            .iter()
            .filter_map(|n| typed(n))
            .collect();
        if self.backend == Backend::Vxlan {
            if let Err(e) = self.publish_vtep(&nodes, ctx).await {
                tracing::warn!(device = %self.host.device(), error = %e, "VXLAN device not ready");
                return retry;
            }
        }
        let here = match self.host.local_addresses().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "this host's addresses not listed");
                return retry;
            }
        };
        let desired = self.desired(&nodes, &here);
        let current = match self.host.routes().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "pod routes not listed");
                return retry;
            }
        };
        let mut failed = false;
        for (block, hop) in &desired {
            let via = hop.gateway();
            if current.get(block).map(String::as_str) == Some(via.to_string().as_str()) {
                continue;
            }
            match self.host.route(block, hop).await {
                Ok(()) => tracing::info!(block = %block, via = %via, "pod route added"),
                Err(e) => {
                    tracing::warn!(block = %block, via = %via, error = %e, "pod route not added");
                    failed = true;
                }
            }
        }
        for block in current.keys().filter(|b| !desired.contains_key(b)) {
            match self.host.unroute(block).await {
                Ok(()) => tracing::info!(block = %block, "pod route removed"),
                Err(e) => {
                    tracing::warn!(block = %block, error = %e, "pod route not removed");
                    failed = true;
                }
            }
        }
        if failed {
            return retry;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: &str, ip: &str) -> core::Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip}]}}))
        .expect("node")
    }

    #[test]
    fn remote_blocks_go_through_their_nodes_and_local_ones_stay_on_their_bridges() {
        let host = Arc::new(PodNetHost::new("t", "10.42.0.0/16".parse().expect("net")));
        let agent = PodNetAgent::new(host.clone(), Backend::HostGw, ["here".to_string()]);
        let nodes = vec![
            node("here", "10.42.0.0/24", "10.0.0.1"),
            node("there", "10.42.1.0/24", "10.0.0.2"),
            node("foreign", "192.168.0.0/24", "10.0.0.3"),
            node("no-ip", "10.42.3.0/24", "not-an-ip"),
        ];
        let desired = agent.desired(&nodes, &HashSet::new());
        assert_eq!(
            desired.into_iter().collect::<Vec<_>>(),
            vec![(
                "10.42.1.0/24".parse().expect("net"),
                NextHop::Via(Ipv4Addr::new(10, 0, 0, 2))
            )]
        );
        // A node of another process on this host keeps the kernel's route to its bridge.
        let here: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 2)].into();
        assert!(agent.desired(&nodes, &here).is_empty());
        drop(agent);
        std::mem::forget(Arc::try_unwrap(host).ok());
    }

    #[test]
    fn under_vxlan_a_remote_block_waits_for_its_vtep_and_goes_to_its_network_address() {
        let host = Arc::new(PodNetHost::new("t", "10.42.0.0/16".parse().expect("net")));
        let agent = PodNetAgent::new(host.clone(), Backend::Vxlan, ["here".to_string()]);
        let mut there = node("there", "10.42.1.0/24", "192.168.9.2");
        assert!(agent
            .desired(std::slice::from_ref(&there), &HashSet::new())
            .is_empty());
        there.metadata.annotations =
            Some([(VTEP_MAC.to_string(), "aa:bb:cc:dd:ee:ff".to_string())].into());
        assert_eq!(
            agent
                .desired(std::slice::from_ref(&there), &HashSet::new())
                .into_values()
                .collect::<Vec<_>>(),
            vec![NextHop::Vxlan {
                vtep: Ipv4Addr::new(10, 42, 1, 0),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                node: Ipv4Addr::new(192, 168, 9, 2),
            }]
        );
        drop(agent);
        std::mem::forget(Arc::try_unwrap(host).ok());
    }
}
