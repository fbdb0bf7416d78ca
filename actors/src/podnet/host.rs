//! What the pod network puts in a host's kernel, and takes out again:
//!
//! - a forward chain of its own (`SKIFF-PODS-<id>`, jumped to from Docker's `DOCKER-USER`
//!   where the engine filters forwarding, else from `FORWARD`) accepting traffic from and
//!   to the cluster's pod range, as flannel does: the engine isolates its bridges from
//!   each other and drops what it did not publish, and pods of different nodes are on
//!   different bridges;
//! - an nftables table (`skiffnet-<id>`) masquerading what pods send out of the pod range,
//!   so a host that has no route back to the pods (the API server's) still answers;
//! - routes marked with [`ROUTE_PROTO`]: the pod range `unreachable` (what no node holds
//!   never follows the default route), and each other node's block through that node
//!   (host-gw) or through the VXLAN device.
//!
//! Everything is named after the cluster (`id`), so clusters sharing a machine keep out of
//! each other's rules, and [`PodNetHost::remove`] leaves nothing of this cluster's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;

use ipnet::Ipv4Net;

use crate::proxy::kernel::{output, run, KernelError};

/// The routing protocol number skiff's routes carry (`ip route ... proto 83`), so they are
/// told apart from everyone else's; within it, a cluster's are those inside its range.
pub const ROUTE_PROTO: &str = "83";

/// The VXLAN network identifier and UDP port (flannel's defaults).
pub const VXLAN_ID: &str = "1";
pub const VXLAN_PORT: &str = "8472";

/// How skiff's routes are listed.
const LIST_ROUTES: [&str; 5] = ["-j", "route", "show", "proto", ROUTE_PROTO];

/// One of this cluster's routes, as the kernel lists it.
struct Route {
    dst: Ipv4Net,
    unreachable: bool,
    gateway: String,
}

/// A route to another node's pod block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NextHop {
    /// host-gw: through the node's address, which must be on a link of this host.
    Via(Ipv4Addr),
    /// vxlan: through the VXLAN device to the node's VTEP (its block's network address),
    /// whose MAC is at the node's address.
    Vxlan {
        vtep: Ipv4Addr,
        mac: String,
        node: Ipv4Addr,
    },
}

impl NextHop {
    /// The route's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        match self {
            NextHop::Via(ip) => *ip,
            NextHop::Vxlan { vtep, .. } => *vtep,
        }
    }
}

pub struct PodNetHost {
    /// Set by [`PodNetHost::remove`]: whatever an agent still had under way is taken out
    /// again when it finishes.
    removed: std::sync::atomic::AtomicBool,
    cluster: Ipv4Net,
    chain: String,
    table: String,
    /// The VXLAN device (at most 15 characters), when the backend is vxlan.
    device: String,
}

impl PodNetHost {
    pub fn new(id: &str, cluster: Ipv4Net) -> Self {
        let id: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(9)
            .collect();
        PodNetHost {
            removed: std::sync::atomic::AtomicBool::new(false),
            cluster,
            chain: format!("SKIFF-PODS-{id}"),
            table: format!("skiffnet-{id}"),
            device: format!("skv{id}"),
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// The VXLAN device on `local` (this host's node address), holding the VTEP address of
    /// each of this host's blocks; returns its MAC, which the other hosts are told.
    pub async fn vxlan(&self, local: Ipv4Addr, vteps: &[Ipv4Addr]) -> Result<String, KernelError> {
        let dev = self.device.as_str();
        let local = local.to_string();
        if run("ip", &["link", "show", dev], None).await.is_err() {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    dev,
                    "type",
                    "vxlan",
                    "id",
                    VXLAN_ID,
                    "local",
                    &local,
                    "dstport",
                    VXLAN_PORT,
                    "nolearning",
                ],
                None,
            )
            .await?;
        }
        run("ip", &["link", "set", dev, "up"], None).await?;
        for vtep in vteps {
            let addr = format!("{vtep}/32");
            run("ip", &["addr", "replace", &addr, "dev", dev], None).await?;
        }
        let out = output("ip", &["-j", "link", "show", dev], None).await?;
        let links: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        links
            .first()
            .and_then(|l| l.get("address"))
            .and_then(|a| a.as_str())
            .map(str::to_string)
            .ok_or(KernelError::Failed {
                tool: "ip",
                stderr: format!("{dev} has no MAC address"),
            })
    }

    /// Whether the host's rules were removed (the process is stopping).
    pub fn removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The forward chain, the masquerade table and the unreachable route; idempotent.
    pub async fn install(&self) -> Result<(), KernelError> {
        let cidr = self.cluster.to_string();
        let chain = self.chain.as_str();
        // -N fails when the chain is there already: it is then flushed and refilled.
        let _ = run("iptables", &["-w", "-N", chain], None).await;
        run("iptables", &["-w", "-F", chain], None).await?;
        run(
            "iptables",
            &["-w", "-A", chain, "-s", &cidr, "-j", "ACCEPT"],
            None,
        )
        .await?;
        run(
            "iptables",
            &["-w", "-A", chain, "-d", &cidr, "-j", "ACCEPT"],
            None,
        )
        .await?;
        let parent = self.parent().await;
        if run("iptables", &["-w", "-C", parent, "-j", chain], None)
            .await
            .is_err()
        {
            run("iptables", &["-w", "-I", parent, "1", "-j", chain], None).await?;
        }
        run(
            "nft",
            &["-f", "-"],
            Some(&masquerade_table(&self.table, &self.cluster)),
        )
        .await?;
        run(
            "ip",
            &[
                "route",
                "replace",
                "unreachable",
                &cidr,
                "proto",
                ROUTE_PROTO,
            ],
            None,
        )
        .await
    }

    /// Where the engine's own forward filtering starts: `DOCKER-USER` is evaluated before
    /// its isolation and its drops; without an engine, `FORWARD` itself.
    async fn parent(&self) -> &'static str {
        if run("iptables", &["-w", "-S", "DOCKER-USER"], None)
            .await
            .is_ok()
        {
            "DOCKER-USER"
        } else {
            "FORWARD"
        }
    }

    /// The blocks routed by this cluster's rules now (other than its unreachable range),
    /// with their gateways.
    pub async fn routes(&self) -> Result<BTreeMap<Ipv4Net, String>, KernelError> {
        let out = output("ip", &LIST_ROUTES, None).await?;
        Ok(self
            .ours(&out)
            .into_iter()
            .filter(|r| !r.unreachable)
            .map(|r| (r.dst, r.gateway))
            .collect())
    }

    /// The routes of this cluster's range among `ip -j route show proto 83`'s.
    fn ours(&self, listed: &str) -> Vec<Route> {
        let listed: Vec<serde_json::Value> = serde_json::from_str(listed).unwrap_or_default();
        listed
            .iter()
            .filter_map(|r| {
                let dst: Ipv4Net = r.get("dst")?.as_str()?.parse().ok()?;
                let kind = r.get("type").and_then(|t| t.as_str()).unwrap_or("unicast");
                let gateway = r
                    .get("gateway")
                    .and_then(|g| g.as_str())
                    .unwrap_or_default();
                self.cluster.contains(&dst).then(|| Route {
                    dst,
                    unreachable: kind == "unreachable",
                    gateway: gateway.to_string(),
                })
            })
            .collect()
    }

    /// This host's IPv4 addresses (the nodes and bridges that are here).
    pub async fn local_addresses(
        &self,
    ) -> Result<std::collections::HashSet<Ipv4Addr>, KernelError> {
        let out = output("ip", &["-j", "-4", "addr", "show"], None).await?;
        let links: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        Ok(links
            .iter()
            .filter_map(|l| l.get("addr_info")?.as_array())
            .flatten()
            .filter_map(|a| a.get("local")?.as_str()?.parse().ok())
            .collect())
    }

    /// Route `block` to its node.
    pub async fn route(&self, block: &Ipv4Net, hop: &NextHop) -> Result<(), KernelError> {
        let dst = block.to_string();
        match hop {
            NextHop::Via(ip) => {
                let via = ip.to_string();
                run(
                    "ip",
                    &["route", "replace", &dst, "via", &via, "proto", ROUTE_PROTO],
                    None,
                )
                .await
            }
            NextHop::Vxlan { vtep, mac, node } => {
                let (dev, via, node) = (self.device.as_str(), vtep.to_string(), node.to_string());
                run(
                    "ip",
                    &[
                        "neigh",
                        "replace",
                        &via,
                        "lladdr",
                        mac,
                        "dev",
                        dev,
                        "nud",
                        "permanent",
                    ],
                    None,
                )
                .await?;
                run(
                    "bridge",
                    &[
                        "fdb",
                        "replace",
                        mac,
                        "dev",
                        dev,
                        "dst",
                        &node,
                        "self",
                        "permanent",
                    ],
                    None,
                )
                .await?;
                run(
                    "ip",
                    &[
                        "route",
                        "replace",
                        &dst,
                        "via",
                        &via,
                        "dev",
                        dev,
                        "onlink",
                        "proto",
                        ROUTE_PROTO,
                    ],
                    None,
                )
                .await
            }
        }
    }

    pub async fn unroute(&self, block: &Ipv4Net) -> Result<(), KernelError> {
        let dst = block.to_string();
        run("ip", &["route", "del", &dst, "proto", ROUTE_PROTO], None).await
    }

    /// Take everything of this cluster's out of the kernel (blocking: also called from
    /// `Drop` and at shutdown, when no runtime may be left).
    pub fn remove(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let quiet = |tool: &str, args: &[&str]| {
            let _ = std::process::Command::new(tool)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for parent in ["DOCKER-USER", "FORWARD"] {
            quiet("iptables", &["-w", "-D", parent, "-j", &self.chain]);
        }
        quiet("iptables", &["-w", "-F", &self.chain]);
        quiet("iptables", &["-w", "-X", &self.chain]);
        quiet("nft", &["delete", "table", "ip", &self.table]);
        // With the device go its neighbours, forwarding entries and routes.
        quiet("ip", &["link", "delete", &self.device]);
        let listed = std::process::Command::new("ip")
            .args(LIST_ROUTES)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for r in self.ours(&listed) {
            let dst = r.dst.to_string();
            if r.unreachable {
                quiet(
                    "ip",
                    &["route", "del", "unreachable", &dst, "proto", ROUTE_PROTO],
                );
            } else {
                quiet("ip", &["route", "del", &dst, "proto", ROUTE_PROTO]);
            }
        }
    }
}

impl Drop for PodNetHost {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The nftables table masquerading what leaves the pod range for elsewhere. Its base
/// chain comes after Docker's and kube-proxy's NAT (`srcnat + 10`), so a connection one
/// of them already NATed is left as they made it.
pub fn masquerade_table(table: &str, cluster: &Ipv4Net) -> String {
    format!(
        "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat + 10; policy accept;\n    ip saddr {cluster} ip daddr != {cluster} masquerade\n  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernels_limits() {
        let host = PodNetHost::new("0123456789abcdef", "10.42.0.0/16".parse().expect("net"));
        // iptables chain names: at most 28 characters; nft tables have room.
        assert!(host.chain().len() <= 28, "{}", host.chain());
        assert_eq!(host.chain(), "SKIFF-PODS-012345678");
        assert_eq!(host.table(), "skiffnet-012345678");
        assert!(host.device().len() <= 15, "{}", host.device());
        std::mem::forget(host);
    }

    #[test]
    fn only_this_clusters_routes_are_its_own() {
        let host = PodNetHost::new("t", "10.42.0.0/16".parse().expect("net"));
        let listed = r#"[{"type":"unreachable","dst":"10.42.0.0/16","flags":[]},
            {"dst":"10.42.1.0/24","gateway":"10.0.0.2","dev":"eth0","flags":[]},
            {"dst":"10.43.1.0/24","gateway":"10.0.0.3","dev":"eth0","flags":[]}]"#;
        let ours: Vec<(String, bool, String)> = host
            .ours(listed)
            .into_iter()
            .map(|r| (r.dst.to_string(), r.unreachable, r.gateway))
            .collect();
        assert_eq!(
            ours,
            vec![
                ("10.42.0.0/16".into(), true, String::new()),
                ("10.42.1.0/24".into(), false, "10.0.0.2".into())
            ]
        );
        std::mem::forget(host);
    }

    #[test]
    fn only_traffic_leaving_the_pod_range_is_masqueraded() {
        let text = masquerade_table("skiffnet-x", &"10.42.0.0/16".parse().expect("net"));
        assert!(text.contains("ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade"));
        // Replaced whole in one transaction: created empty, deleted, made again.
        assert!(text.starts_with("table ip skiffnet-x {}\ndelete table ip skiffnet-x\n"));
    }
}
