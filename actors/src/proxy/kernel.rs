//! The ClusterIP datapath in the kernel, as kube-proxy's nftables mode builds it: one
//! `nft -f` transaction per sync replaces skiff's own table (`ip <table>`), nobody else's
//! rules are touched. A connection to a ClusterIP:port (TCP or UDP), from the host or from
//! a pod, is DNATed to one ready endpoint picked at random with equal weights; ClientIP
//! affinity keeps a client on its endpoint for the timeout; a ClusterIP:port with no
//! ready endpoint, or an address of the range no Service has, is rejected (ICMP port
//! unreachable) rather than left to leak to the host's default route. Where the kernel has
//! the dummy driver the service range is also routed to a dummy device of the table's, so
//! what no rule matched goes nowhere. The table and the device are removed when the proxy
//! stops.
//!
//! Kernel rules are per host, not per node: nodes run in one process share one kernel, so
//! the process runs one of these for all of them.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Mutex;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

/// The one key every change maps to: the whole ruleset is rebuilt per sync.
const KEY: &str = "ruleset";
const SLICES: &str = crate::api::kinds::endpoint_slice::RESOURCE;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{tool} could not be run: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
}

/// How the rules reach a Service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        match s {
            "" | "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a Service: its ClusterIP:port, the node port and balancer addresses it
/// is reached at from outside, and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `<namespace>/<name>:<port name or number>`, for the rules' comments.
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// The node of each endpoint (`nodeName` of its address), in the same order.
    pub nodes: Vec<Option<String>>,
    /// ClientIP session affinity timeout, in seconds.
    pub affinity_seconds: Option<u64>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic only to this host's endpoints.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: node port and balancer traffic only to this host's
    /// endpoints.
    pub external_local: bool,
    /// The node port (NodePort and LoadBalancer Services), served on the host's
    /// addresses but loopback ones.
    pub node_port: Option<u16>,
    /// The balancer's addresses (`status.loadBalancer.ingress`), served on `port`.
    pub balancer_ips: Vec<Ipv4Addr>,
    /// Indices of the endpoints ClusterIP traffic goes to, and outside traffic.
    pub internal: Vec<usize>,
    pub external: Vec<usize>,
}

impl ServicePort {
    /// Choose the endpoints each kind of traffic goes to: all, or for a Local policy
    /// those of `local` nodes.
    pub fn localize(&mut self, local: &std::collections::HashSet<String>) {
        let here = |j: &usize| self.nodes[*j].as_ref().is_some_and(|n| local.contains(n));
        let all = 0..self.endpoints.len();
        self.internal = if self.internal_local {
            all.clone().filter(here).collect()
        } else {
            all.clone().collect()
        };
        self.external = if self.external_local {
            all.filter(here).collect()
        } else {
            all.collect()
        };
    }

    /// A Local policy with endpoints elsewhere only: dropped, as kube-proxy does (not
    /// refused: the Service has endpoints, just none here).
    fn drops_internal(&self) -> bool {
        !self.endpoints.is_empty() && self.internal.is_empty()
    }

    fn drops_external(&self) -> bool {
        !self.endpoints.is_empty() && self.external.is_empty()
    }
}

/// The ClusterIP ports of a Service, with the endpoints each sends traffic to (from the
/// Service's EndpointSlices; ports matched by name and protocol, or the only one).
pub fn service_ports(svc: &Value, endpoints: &[super::slices::SliceEndpoint]) -> Vec<ServicePort> {
    let Some(ip) = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
    else {
        // Headless and ExternalName Services have no address to program.
        return Vec::new();
    };
    let key = format!(
        "{}/{}",
        svc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        svc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let affinity_seconds = (svc.pointer("/spec/sessionAffinity").and_then(Value::as_str)
        == Some("ClientIP"))
    .then(|| {
        svc.pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10_800)
    });
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let single = ports.len() == 1;
    let internal_local = svc
        .pointer("/spec/internalTrafficPolicy")
        .and_then(Value::as_str)
        == Some("Local");
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let external = matches!(kind, "NodePort" | "LoadBalancer");
    let external_local = external
        && svc
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local");
    // Loopback addresses are not DNATed to pods (that would take route_localnet on the
    // host): the node's userspace proxy serves those.
    let balancer_ips: Vec<Ipv4Addr> = if kind == "LoadBalancer" {
        svc.pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("ip")?.as_str()?.parse::<Ipv4Addr>().ok())
            .filter(|ip| !ip.is_loopback())
            .collect()
    } else {
        Vec::new()
    };
    ports
        .iter()
        .filter_map(|p| {
            let port = p.get("port").and_then(Value::as_u64)? as u16;
            let proto_name = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            let protocol = Protocol::parse(proto_name)?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let mut targets: Vec<((Ipv4Addr, u16), Option<String>)> =
                super::slices::targets(endpoints, name, proto_name, single)
                    .into_iter()
                    .filter_map(|(ip, port, node)| match ip {
                        std::net::IpAddr::V4(v4) => Some(((v4, port), node)),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
            targets.sort();
            targets.dedup_by(|a, b| a.0 == b.0);
            let (endpoints, nodes): (Vec<_>, Vec<_>) = targets.into_iter().unzip();
            let all: Vec<usize> = (0..endpoints.len()).collect();
            let node_port = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| external && *n > 0)
                .map(|n| n as u16);
            Some(ServicePort {
                name: if name.is_empty() {
                    format!("{key}:{port}")
                } else {
                    format!("{key}:{name}")
                },
                ip,
                port,
                protocol,
                endpoints,
                nodes,
                affinity_seconds,
                internal_local,
                external_local,
                node_port,
                balancer_ips: balancer_ips.clone(),
                internal: all.clone(),
                external: all,
            })
        })
        .collect()
}

/// The whole table, as one `nft -f` transaction: the table is created (so that deleting
/// it cannot fail), deleted and written again, atomically.
pub fn ruleset(table: &str, service_cidr: &str, ports: &[ServicePort]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "table ip {table} {{\n}}\ndelete table ip {table}\n"
    ));
    out.push_str(&format!("table ip {table} {{\n"));
    // Entry points: DNAT before routing (pods) and on the host's own output.
    out.push_str(
        "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n",
    );
    out.push_str(
        "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n",
    );
    // Masquerade what was DNATed from a pod back to itself (hairpin) or from the host.
    out.push_str(
        "  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & 0x4000 == 0x4000 masquerade\n  }\n",
    );
    // A Local-policy port with no endpoint here is dropped; what else still goes to the
    // service range after DNAT matched no endpoint is refused.
    let mut drops = String::new();
    let mut input_drops = String::new();
    for sp in ports {
        let (proto, port) = (sp.protocol.nft(), sp.port);
        if sp.drops_internal() {
            drops.push_str(&format!(
                "    ip daddr {} {proto} dport {port} drop\n",
                sp.ip
            ));
        }
        if sp.drops_external() {
            if let Some(np) = sp.node_port {
                input_drops.push_str(&format!(
                    "    fib daddr type local ip daddr != 127.0.0.0/8 {proto} dport {np} drop\n"
                ));
            }
            for ip in &sp.balancer_ips {
                input_drops.push_str(&format!("    ip daddr {ip} {proto} dport {port} drop\n"));
            }
        }
    }
    for (chain, hook) in [("filter-forward", "forward"), ("filter-output", "output")] {
        out.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority filter; policy accept;\n{drops}    ip daddr {service_cidr} reject\n  }}\n"
        ));
    }
    if !input_drops.is_empty() {
        out.push_str(&format!(
            "  chain filter-input {{\n    type filter hook input priority filter; policy accept;\n{input_drops}  }}\n"
        ));
    }
    // Dispatch is by verdict maps keyed by address . protocol . port (one lookup per
    // packet, however many Services), to a chain per service port and traffic kind.
    let mut by_address: Vec<String> = Vec::new();
    let mut by_node_port: Vec<String> = Vec::new();
    let mut chains = String::new();
    // Deterministic chain names: the same services give the same text, so an unchanged
    // ruleset is not applied again.
    let mut sorted: Vec<&ServicePort> = ports.iter().collect();
    sorted.sort_by_key(|p| (p.ip, p.port, p.protocol));
    for (i, sp) in sorted.iter().enumerate() {
        if sp.endpoints.is_empty() {
            continue;
        }
        let proto = sp.protocol.nft();
        let comment = sp.name.replace('"', "");
        if let Some(secs) = sp.affinity_seconds {
            // Sets before the chains that name them.
            for (j, _) in sp.endpoints.iter().enumerate() {
                chains.push_str(&format!(
                    "  set aff-{i}-{j} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {secs}s\n  }}\n"
                ));
            }
        }
        if !sp.internal.is_empty() {
            by_address.push(format!("{} . {proto} . {} : goto svc-{i}", sp.ip, sp.port));
            chains.push_str(&pick_chain(
                &format!("svc-{i}"),
                i,
                sp,
                &sp.internal,
                &comment,
            ));
        }
        if !sp.external.is_empty() && (sp.node_port.is_some() || !sp.balancer_ips.is_empty()) {
            // Outside traffic shares the ClusterIP's chain unless its policy differs.
            let ext = if sp.external == sp.internal {
                format!("svc-{i}")
            } else {
                let name = format!("ext-{i}");
                chains.push_str(&pick_chain(&name, i, sp, &sp.external, &comment));
                name
            };
            if let Some(np) = sp.node_port {
                by_node_port.push(format!("{proto} . {np} : goto {ext}"));
            }
            for ip in &sp.balancer_ips {
                by_address.push(format!("{ip} . {proto} . {} : goto {ext}", sp.port));
            }
        }
        if sp.affinity_seconds.is_some() {
            // With affinity each endpoint has its chain, to remember its clients.
            for (j, (ip, port)) in sp.endpoints.iter().enumerate() {
                chains.push_str(&format!(
                    "  chain ep-{i}-{j} {{\n{}    update @aff-{i}-{j} {{ ip saddr }}\n    meta l4proto {proto} dnat to {ip}:{port}\n  }}\n",
                    masquerade_marks(std::slice::from_ref(ip))
                ));
            }
        }
    }
    let mut services = String::new();
    if !by_address.is_empty() {
        services.push_str(&format!(
            "    ip daddr . meta l4proto . th dport vmap {{ {} }}\n",
            by_address.join(", ")
        ));
    }
    if !by_node_port.is_empty() {
        // Node ports on every address of the host but loopback ones (which the kernel
        // will not route to a pod).
        services.push_str(&format!(
            "    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap {{ {} }}\n",
            by_node_port.join(", ")
        ));
    }
    out.push_str("  chain services {\n");
    out.push_str(&services);
    out.push_str("  }\n");
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// The mark that has a connection masqueraded: from a pod to itself through its Service
/// (hairpin: the pod would answer itself directly). Connections from the host are not:
/// the pod answers the host's own address through its gateway, the host, where the
/// connection's NAT is undone; masquerading them as well slowed back-to-back wrk runs
/// from the host (through a ClusterIP, 6,300 then 3,200 requests/s; 6,400 and 6,300
/// without).
fn masquerade_marks(ips: &[Ipv4Addr]) -> String {
    let own = match ips {
        [one] => one.to_string(),
        many => format!(
            "{{ {} }}",
            many.iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("    ip saddr {own} meta mark set meta mark | 0x4000\n")
}

/// A chain sending a connection to one of the endpoints `subset` of service port `i`, at
/// random with equal weights; with affinity, a client seen within the timeout goes back
/// to its endpoint (each endpoint then has a chain of its own, `ep-<i>-<j>`).
fn pick_chain(name: &str, i: usize, sp: &ServicePort, subset: &[usize], comment: &str) -> String {
    let mut chain = format!("  chain {name} {{\n    comment \"{comment}\"\n");
    let proto = sp.protocol.nft();
    if sp.affinity_seconds.is_some() {
        for j in subset {
            chain.push_str(&format!("    ip saddr @aff-{i}-{j} goto ep-{i}-{j}\n"));
        }
        if let [only] = subset {
            chain.push_str(&format!("    goto ep-{i}-{only}\n"));
        } else {
            let arms: Vec<String> = subset
                .iter()
                .enumerate()
                .map(|(k, j)| format!("{k} : goto ep-{i}-{j}"))
                .collect();
            chain.push_str(&format!(
                "    numgen random mod {} vmap {{ {} }}\n",
                subset.len(),
                arms.join(", ")
            ));
        }
    } else {
        let targets: Vec<(Ipv4Addr, u16)> = subset.iter().map(|j| sp.endpoints[*j]).collect();
        let ips: Vec<Ipv4Addr> = targets.iter().map(|t| t.0).collect();
        chain.push_str(&masquerade_marks(&ips));
        if let [(ip, port)] = targets.as_slice() {
            chain.push_str(&format!("    meta l4proto {proto} dnat to {ip}:{port}\n"));
        } else {
            let arms: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(k, (ip, port))| format!("{k} : {ip} . {port}"))
                .collect();
            chain.push_str(&format!(
                "    meta l4proto {proto} dnat ip to numgen random mod {} map {{ {} }}\n",
                targets.len(),
                arms.join(", ")
            ));
        }
    }
    chain.push_str("  }\n");
    chain
}

/// Run a tool, feeding `input` on stdin.
pub(crate) async fn run(
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), KernelError> {
    output(tool, args, input).await.map(|_| ())
}

/// Run a tool, feeding `input` on stdin; what it printed.
pub(crate) async fn output(
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, KernelError> {
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KernelError::Spawn { tool, source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|source| KernelError::Spawn { tool, source })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| KernelError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(KernelError::Failed {
            tool,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this host can take the rules: `nft` runs and the process may change the
/// kernel's tables.
pub fn available() -> bool {
    std::process::Command::new("nft")
        .args(["list", "tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a proxy puts in the kernel besides routes it replaces: its table and its device.
/// Removed by [`KernelRules::remove`] (the process's shutdown) or when the last holder
/// goes.
pub struct KernelRules {
    table: String,
    /// The dummy device the service range is routed to (at most 15 characters).
    device: String,
}

impl KernelRules {
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Delete the table and the device (nothing of skiff's stays in the kernel).
    pub fn remove(&self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.device])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for KernelRules {
    fn drop(&mut self) {
        self.remove();
    }
}

pub struct KernelProxy {
    rules: std::sync::Arc<KernelRules>,
    service_cidr: String,
    /// The nodes whose pods this host runs (for Local traffic policies).
    local_nodes: std::collections::HashSet<String>,
    /// The text last applied, so an unchanged ruleset is not written again.
    applied: Mutex<Option<String>>,
    /// The device could not be made (said once).
    routeless: std::sync::atomic::AtomicBool,
}

impl KernelProxy {
    /// `id` names this cluster's table and device on the host (`skiff-<id>`), so that
    /// several clusters on one machine keep out of each other's rules.
    pub fn new(
        id: &str,
        service_cidr: impl Into<String>,
        local_nodes: impl IntoIterator<Item = String>,
    ) -> Self {
        let id: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(9)
            .collect();
        KernelProxy {
            rules: std::sync::Arc::new(KernelRules {
                table: format!("skiff-{id}"),
                device: format!("skiff-{id}"),
            }),
            service_cidr: service_cidr.into(),
            local_nodes: local_nodes.into_iter().collect(),
            applied: Mutex::new(None),
            routeless: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The table and device, for whoever must remove them at shutdown.
    pub fn rules(&self) -> std::sync::Arc<KernelRules> {
        self.rules.clone()
    }

    pub fn table(&self) -> &str {
        &self.rules.table
    }

    /// The service range to the dummy device: connections the rules did not take go
    /// nowhere instead of out of the host's default route.
    async fn route(&self) -> Result<(), KernelError> {
        let dev = self.rules.device.as_str();
        if run("ip", &["link", "show", dev], None).await.is_err() {
            run("ip", &["link", "add", dev, "type", "dummy"], None).await?;
        }
        run("ip", &["link", "set", dev, "up"], None).await?;
        run(
            "ip",
            &["route", "replace", &self.service_cidr, "dev", dev],
            None,
        )
        .await
    }

    async fn sync(&self, ports: &[ServicePort]) -> Result<bool, KernelError> {
        let text = ruleset(self.table(), &self.service_cidr, ports);
        if self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(&text)
        {
            return Ok(false);
        }
        if let Err(e) = self.route().await {
            // Without the device (a kernel with no dummy driver) the table's own reject
            // rules still keep the range's traffic on this host.
            if !self
                .routeless
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(device = %self.rules.device, error = %e, "no dummy device for the service range; relying on the table's reject rules");
            }
        }
        run("nft", &["-f", "-"], Some(&text)).await?;
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Reconciler for KernelProxy {
    fn name(&self) -> &'static str {
        "kube-proxy-nftables"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("services"), InformerSpec::all(SLICES)]
    }

    fn keys_for(&self, _resource: &str, _change: &Change, _ctx: &Context) -> Vec<String> {
        // Every change rebuilds the one ruleset; changes arriving together are one sync.
        vec![KEY.to_string()]
    }

    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let slices = super::slices::by_service(&ctx.cache(SLICES).list());
        let ports: Vec<ServicePort> = ctx
            .cache("services")
            .list()
            .iter()
            .flat_map(|s| {
                let eps = slices
                    .get(&crate::runtime::key_of(s))
                    .map(|list| super::slices::endpoints(list))
                    .unwrap_or_default();
                service_ports(s, &eps)
            })
            .map(|mut p| {
                p.localize(&self.local_nodes);
                p
            })
            .collect();
        let started = std::time::Instant::now();
        match self.sync(&ports).await {
            Ok(true) => {
                tracing::info!(table = %self.table(), ports = ports.len(), took = ?started.elapsed(), "service rules synced");
                Ok(Action::Done)
            }
            Ok(false) => Ok(Action::Done),
            Err(e) => {
                tracing::warn!(table = %self.table(), error = %e, "service rules not synced");
                Ok(Action::RequeueAfter(std::time::Duration::from_secs(1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> Value {
        json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}})
    }

    fn slice(addresses: Value) -> Value {
        json!({"metadata": {"name": "web-x", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": addresses,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"}]})
    }

    fn endpoints_of(slice: Value) -> Vec<crate::proxy::slices::SliceEndpoint> {
        crate::proxy::slices::endpoints(&[std::sync::Arc::new(slice)])
    }

    fn endpoints() -> Vec<crate::proxy::slices::SliceEndpoint> {
        endpoints_of(slice(json!([
            {"addresses": ["172.17.0.3"], "conditions": {"ready": true}},
            {"addresses": ["172.17.0.2"], "conditions": {"ready": true}},
            {"addresses": ["172.17.0.9"], "conditions": {"ready": false}}])))
    }

    #[test]
    fn ports_take_the_ready_endpoints_of_their_name_and_protocol() {
        let ports = service_ports(&web(), &endpoints());
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].name, "default/web:http");
        assert_eq!(
            ports[0].endpoints,
            vec![
                ("172.17.0.2".parse().unwrap(), 8080),
                ("172.17.0.3".parse().unwrap(), 8080)
            ]
        );
        assert_eq!(ports[1].protocol, Protocol::Udp);
        assert_eq!(ports[1].endpoints[0].1, 5353);
        let headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        assert!(service_ports(&headless, &[]).is_empty());
    }

    #[test]
    fn the_ruleset_balances_at_random_and_rejects_what_has_no_endpoint() {
        let mut ports = service_ports(&web(), &endpoints());
        ports[1].endpoints.clear();
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.starts_with("table ip skiff-t {\n}\ndelete table ip skiff-t\n"));
        assert!(text.contains(
            "ip daddr . meta l4proto . th dport vmap { 10.96.0.20 . tcp . 80 : goto svc-1 }"
        ));
        assert!(text.contains("  chain svc-1 {\n    comment \"default/web:http\"\n"));
        assert!(text.contains("meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 172.17.0.2 . 8080, 1 : 172.17.0.3 . 8080 }"), "{text}");
        assert!(
            text.contains("ip saddr { 172.17.0.2, 172.17.0.3 } meta mark set meta mark | 0x4000")
        );
        // The UDP port has no endpoint: no DNAT, so the range's reject refuses it.
        assert!(!text.contains(". udp . 53"));
        assert!(text.contains("type filter hook forward priority filter; policy accept;\n    ip daddr 10.96.0.0/16 reject"));
        // The same input gives the same text (no needless re-apply).
        assert_eq!(text, ruleset("skiff-t", "10.96.0.0/16", &ports));
    }

    #[test]
    fn client_ip_affinity_remembers_each_endpoints_clients() {
        let mut svc = web();
        svc["spec"]["sessionAffinity"] = json!("ClientIP");
        svc["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        let text = ruleset(
            "skiff-t",
            "10.96.0.0/16",
            &service_ports(&svc, &endpoints()),
        );
        assert!(text.contains(
            "set aff-1-0 {\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout 60s\n  }"
        ));
        assert!(text.contains("ip saddr @aff-1-1 goto ep-1-1"));
        assert!(text.contains("update @aff-1-0 { ip saddr }"));
    }

    #[test]
    fn a_local_internal_policy_keeps_this_hosts_endpoints_or_drops() {
        let mut svc = web();
        svc["spec"]["internalTrafficPolicy"] = json!("Local");
        let ep = endpoints_of(slice(json!([
            {"addresses": ["172.17.0.2"], "nodeName": "here"},
            {"addresses": ["172.17.0.3"], "nodeName": "there"}])));
        let here: std::collections::HashSet<String> = ["here".to_string()].into();
        let mut ports = service_ports(&svc, &ep);
        ports.iter_mut().for_each(|p| p.localize(&here));
        assert_eq!(ports[0].internal, [0], "172.17.0.2 is here");
        assert!(!ports[0].drops_internal());
        let elsewhere: std::collections::HashSet<String> = ["other".to_string()].into();
        let mut ports = service_ports(&svc, &ep);
        ports.iter_mut().for_each(|p| p.localize(&elsewhere));
        assert!(ports[0].internal.is_empty() && ports[0].drops_internal());
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.contains(
            "    ip daddr 10.96.0.20 tcp dport 80 drop\n    ip daddr 10.96.0.20 udp dport 53 drop\n    ip daddr 10.96.0.0/16 reject"
        ));
        assert!(!text.contains("goto svc-"));
    }

    #[test]
    fn node_ports_and_balancer_addresses_lead_to_the_endpoints_and_local_keeps_them_here() {
        let mut svc = web();
        svc["spec"]["type"] = json!("LoadBalancer");
        svc["spec"]["ports"][0]["nodePort"] = json!(30080);
        svc["spec"]["externalTrafficPolicy"] = json!("Local");
        svc["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"ip": "127.0.0.1"}]}});
        let ep = endpoints_of(slice(json!([
            {"addresses": ["172.17.0.2"], "nodeName": "here"},
            {"addresses": ["172.17.0.3"], "nodeName": "there"}])));
        let here: std::collections::HashSet<String> = ["here".to_string()].into();
        let mut ports = service_ports(&svc, &ep);
        ports.iter_mut().for_each(|p| p.localize(&here));
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.contains("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap { tcp . 30080 : goto ext-1 }"), "{text}");
        assert!(text.contains("192.0.2.7 . tcp . 80 : goto ext-1"));
        assert!(
            !text.contains("127.0.0.1 . tcp"),
            "loopback is the userspace proxy's"
        );
        assert!(text.contains("  chain ext-1 {\n    comment \"default/web:http\"\n    ip saddr 172.17.0.2 meta mark set meta mark | 0x4000\n    meta l4proto tcp dnat to 172.17.0.2:8080\n  }"), "{text}");
        // ClusterIP traffic still goes to both.
        assert!(text
            .contains("numgen random mod 2 map { 0 : 172.17.0.2 . 8080, 1 : 172.17.0.3 . 8080 }"));
        // With no endpoint here, outside traffic is dropped.
        let elsewhere: std::collections::HashSet<String> = ["other".to_string()].into();
        let mut ports = service_ports(&svc, &ep);
        ports.iter_mut().for_each(|p| p.localize(&elsewhere));
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.contains("type filter hook input priority filter; policy accept;\n    fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 30080 drop\n    ip daddr 192.0.2.7 tcp dport 80 drop"), "{text}");
    }

    #[test]
    fn names_fit_the_kernels_limits() {
        let p = KernelProxy::new("a-very-long-cluster-id", "10.96.0.0/16", []);
        assert!(p.rules.device.len() <= 15, "{}", p.rules.device);
        assert_eq!(p.table(), "skiff-averylong");
    }
}
