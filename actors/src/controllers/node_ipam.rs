//! The node IPAM controller (kube-controller-manager's `nodeipam` with
//! `--allocate-node-cidrs`, range allocator): every node is given a pod range
//! (`spec.podCIDR`, `spec.podCIDRs`) from the cluster's pod range (`--cluster-cidr`), one
//! block of `--node-cidr-mask-size` bits per node. Its pods get their addresses from that
//! block on the node's bridge, and the other hosts route the block to the node.
//!
//! What is taken is read from the nodes themselves (a deleted node frees its block), plus
//! the blocks this controller handed out that its cache has not seen yet, so two nodes
//! registering at once never get the same one.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1 as core;
use serde_json::json;

use crate::api::strategy::typed;
use crate::api::ApiError;
use crate::client::PatchType;
use crate::runtime::{key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

/// How long a node waits for another try when the range is used up.
const FULL_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PodRangeError {
    #[error("invalid cluster CIDR {0:?} (want an IPv4 a.b.c.d/n)")]
    Cidr(String),
    #[error("node CIDR mask size {mask} must be larger than the cluster CIDR's /{cluster} and at most 30")]
    Mask { mask: u8, cluster: u8 },
    #[error("cluster CIDR {cluster} overlaps the service CIDR {service}")]
    Overlap { cluster: String, service: String },
}

/// The cluster's pod range and the size of each node's block in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRange {
    cluster: Ipv4Net,
    mask: u8,
}

impl PodRange {
    pub fn parse(cidr: &str, mask: u8) -> Result<Self, PodRangeError> {
        let cluster: Ipv4Net = cidr
            .parse()
            .map_err(|_| PodRangeError::Cidr(cidr.to_string()))?;
        let cluster = cluster.trunc();
        if mask <= cluster.prefix_len() || mask > 30 {
            return Err(PodRangeError::Mask {
                mask,
                cluster: cluster.prefix_len(),
            });
        }
        Ok(PodRange { cluster, mask })
    }

    /// Refuses a pod range that shares addresses with the service range.
    pub fn check_apart_from(&self, service_cidr: &str) -> Result<(), PodRangeError> {
        let Ok(service) = service_cidr.parse::<Ipv4Net>() else {
            return Ok(());
        };
        if self.cluster.contains(&service.network()) || service.contains(&self.cluster.network()) {
            return Err(PodRangeError::Overlap {
                cluster: self.cluster.to_string(),
                service: service.to_string(),
            });
        }
        Ok(())
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// The lowest block not in `taken`.
    pub fn first_free(&self, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
        self.cluster
            .subnets(self.mask)
            .ok()?
            .find(|block| !taken.iter().any(|t| overlaps(t, block)))
    }

    /// A node's podCIDR as a block of this range, if it is one.
    fn block_of(&self, cidr: &str) -> Option<Ipv4Net> {
        let net: Ipv4Net = cidr.parse().ok()?;
        self.cluster.contains(&net.network()).then_some(net)
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first IPv4 podCIDR of a node (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn pod_cidr(node: &core::Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.pod_cidr.as_deref())
        .find(|c| c.parse::<Ipv4Net>().is_ok())
}

/// The gateway of a node's pod block: its first address, the node's bridge.
pub fn gateway_of(block: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(block.network()) + 1)
}

/// A block handed out to one node (by UID: a node deleted and made again under the same
/// name is another node), and whether the node was patched with it.
#[derive(Debug, Clone)]
struct Assigned {
    uid: String,
    block: Ipv4Net,
    patched: bool,
}

pub struct NodeIpamController {
    range: PodRange,
    /// Blocks handed out, by node name, until the cache shows them on the node.
    assigned: Mutex<HashMap<String, Assigned>>,
}

impl NodeIpamController {
    pub fn new(range: PodRange) -> Self {
        NodeIpamController {
            range,
            assigned: Mutex::new(HashMap::new()),
        }
    }

    /// Every block in use: on the nodes in the cache, and handed out to nodes that exist
    /// but whose update the cache has not seen.
    fn taken(&self, nodes: &[core::Node]) -> BTreeSet<Ipv4Net> {
        let mut taken: BTreeSet<Ipv4Net> = nodes
            .iter()
            .filter_map(|n| pod_cidr(n).and_then(|c| self.range.block_of(c)))
            .collect();
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        assigned.retain(|name, a| {
            nodes.iter().any(|n| {
                n.metadata.name.as_deref() == Some(name)
                    && n.metadata.uid.as_deref() == Some(a.uid.as_str())
                    && pod_cidr(n).is_none()
            })
        });
        taken.extend(assigned.values().map(|a| a.block));
        taken
    }
}

#[async_trait::async_trait]
impl Reconciler for NodeIpamController {
    fn name(&self) -> &'static str {
        "node-ipam-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("nodes")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        vec![key_of(&change.object)]
    }

    /// One at a time: two allocations at once could pick the same free block.
    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let cache = ctx.cache("nodes");
        let Some(raw) = cache.get(key) else {
            return Ok(Action::Done);
        };
        let Some(node) = typed::<core::Node>(&raw) else {
            return Ok(Action::Done);
        };
        if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let nodes: Vec<core::Node> = cache.list().iter().filter_map(|n| typed(n)).collect();
        let uid = node.metadata.uid.clone().unwrap_or_default();
        let pending = self
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|a| a.uid == uid)
            .map(|a| (a.block, a.patched));
        let block = match pending {
            // Patched already; the cache has not caught up with it yet.
            Some((_, true)) => return Ok(Action::Done),
            Some((b, false)) => b,
            None => match self.range.first_free(&self.taken(&nodes)) {
                Some(b) => b,
                None => {
                    let message = format!("Node {key} status is now: CIDRNotAvailable");
                    tracing::warn!(node = %key, range = %self.range.cluster, "no pod CIDR left");
                    ctx.recorder
                        .warning(&raw, "CIDRNotAvailable", &message)
                        .await;
                    return Ok(Action::RequeueAfter(FULL_RETRY));
                }
            },
        };
        self.assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.to_string(),
                Assigned {
                    uid: uid.clone(),
                    block,
                    patched: false,
                },
            );
        let cidr = block.to_string();
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match ctx
            .client
            .patch("nodes", None, key, None, PatchType::Merge, patch)
            .await
        {
            Ok(_) => {
                self.assigned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        key.to_string(),
                        Assigned {
                            uid,
                            block,
                            patched: true,
                        },
                    );
                tracing::info!(node = %key, pod_cidr = %cidr, "pod CIDR allocated");
                ctx.recorder
                    .normal(
                        &raw,
                        "CIDRAssignmentSucceeded",
                        &format!("Assigned pod CIDR {cidr}"),
                    )
                    .await;
                Ok(Action::Done)
            }
            Err(ApiError::NotFound { .. }) => {
                self.assigned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(key);
                Ok(Action::Done)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> core::Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": cidr.map(|c| json!({"podCIDR": c, "podCIDRs": [c]})).unwrap_or(json!({}))}),
        )
        .expect("node")
    }

    #[test]
    fn blocks_are_handed_out_lowest_first_skipping_taken_ones() {
        let range = PodRange::parse("10.42.0.0/16", 24).expect("range");
        let ipam = NodeIpamController::new(range);
        let nodes = vec![
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.2.0/24")),
        ];
        assert_eq!(
            range.first_free(&ipam.taken(&nodes)),
            Some("10.42.1.0/24".parse().expect("net"))
        );
    }

    #[test]
    fn a_block_handed_out_is_taken_until_its_node_is_gone() {
        let range = PodRange::parse("10.42.0.0/23", 24).expect("range");
        let ipam = NodeIpamController::new(range);
        let hand_out_to_a = || {
            ipam.assigned.lock().expect("lock").insert(
                "a".into(),
                Assigned {
                    uid: "uid-a".into(),
                    block: "10.42.0.0/24".parse().expect("net"),
                    patched: true,
                },
            )
        };
        hand_out_to_a();
        let with_a = vec![node("a", None), node("b", None)];
        assert_eq!(
            range.first_free(&ipam.taken(&with_a)),
            Some("10.42.1.0/24".parse().expect("net"))
        );
        // `a` deleted, or made again (another UID): its block is free again.
        let mut again = node("a", None);
        again.metadata.uid = Some("uid-a2".into());
        for nodes in [vec![node("b", None)], vec![again, node("b", None)]] {
            hand_out_to_a();
            assert_eq!(
                range.first_free(&ipam.taken(&nodes)),
                Some("10.42.0.0/24".parse().expect("net"))
            );
        }
    }

    #[test]
    fn a_full_range_has_no_block_and_foreign_cidrs_do_not_count() {
        let range = PodRange::parse("10.42.0.0/24", 25).expect("range");
        let ipam = NodeIpamController::new(range);
        let nodes = vec![
            node("a", Some("10.42.0.0/25")),
            node("b", Some("10.42.0.128/25")),
            node("c", Some("192.168.0.0/24")),
        ];
        assert_eq!(range.first_free(&ipam.taken(&nodes)), None);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(matches!(
            PodRange::parse("10.42.0.0", 24),
            Err(PodRangeError::Cidr(_))
        ));
        assert_eq!(
            PodRange::parse("10.42.0.0/16", 16),
            Err(PodRangeError::Mask {
                mask: 16,
                cluster: 16
            })
        );
        let range = PodRange::parse("10.0.0.0/8", 24).expect("range");
        assert!(range.check_apart_from("10.96.0.0/16").is_err());
        let range = PodRange::parse("10.42.0.0/16", 24).expect("range");
        assert!(range.check_apart_from("10.96.0.0/16").is_ok());
        assert_eq!(
            gateway_of(&"10.42.3.0/24".parse().expect("net")),
            Ipv4Addr::new(10, 42, 3, 1)
        );
    }
}
