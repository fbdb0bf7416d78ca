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

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Mutex;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

/// The one key every change maps to: the whole ruleset is rebuilt per sync.
const KEY: &str = "ruleset";

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

/// One ClusterIP:port of a Service and the ready endpoints behind it.
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
    /// `internalTrafficPolicy: Local`: only endpoints on this host's nodes.
    pub internal_local: bool,
    /// Local policy with endpoints elsewhere only: dropped, as kube-proxy does (not
    /// refused: the Service has endpoints, just none here).
    pub drop: bool,
}

impl ServicePort {
    /// Keep, for a Local internal policy, only the endpoints of `local` nodes.
    pub fn localize(&mut self, local: &std::collections::HashSet<String>) {
        if !self.internal_local {
            return;
        }
        let had = !self.endpoints.is_empty();
        let (endpoints, nodes): (Vec<_>, Vec<_>) = self
            .endpoints
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.as_ref().is_some_and(|n| local.contains(n)))
            .map(|(e, n)| (*e, n.clone()))
            .unzip();
        self.drop = had && endpoints.is_empty();
        self.endpoints = endpoints;
        self.nodes = nodes;
    }
}

/// The ClusterIP ports of a Service, with the ready endpoints of each (the Endpoints
/// object of the same name; ports matched by name, or the only one).
pub fn service_ports(svc: &Value, endpoints: Option<&Value>) -> Vec<ServicePort> {
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
    ports
        .iter()
        .filter_map(|p| {
            let port = p.get("port").and_then(Value::as_u64)? as u16;
            let protocol =
                Protocol::parse(p.get("protocol").and_then(Value::as_str).unwrap_or(""))?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let (endpoints, nodes) = ready_endpoints(endpoints, name, protocol, single)
                .into_iter()
                .unzip();
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
                drop: false,
            })
        })
        .collect()
}

fn ready_endpoints(
    endpoints: Option<&Value>,
    name: &str,
    protocol: Protocol,
    single: bool,
) -> Vec<((Ipv4Addr, u16), Option<String>)> {
    let mut out = Vec::new();
    let subsets = endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for subset in subsets {
        let port = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| {
                let same_name = p.get("name").and_then(Value::as_str).unwrap_or("") == name;
                let same_protocol =
                    Protocol::parse(p.get("protocol").and_then(Value::as_str).unwrap_or(""))
                        == Some(protocol);
                (same_name || single) && same_protocol
            })
            .and_then(|p| p.get("port").and_then(Value::as_u64));
        let Some(port) = port else { continue };
        for addr in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ip) = addr
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            {
                let node = addr.get("nodeName").and_then(Value::as_str);
                out.push(((ip, port as u16), node.map(str::to_string)));
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
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
    for sp in ports.iter().filter(|p| p.drop) {
        drops.push_str(&format!(
            "    ip daddr {} {} dport {} drop\n",
            sp.ip,
            sp.protocol.nft(),
            sp.port
        ));
    }
    for (chain, hook) in [("filter-forward", "forward"), ("filter-output", "output")] {
        out.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority filter; policy accept;\n{drops}    ip daddr {service_cidr} reject\n  }}\n"
        ));
    }
    let mut services = String::new();
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
        services.push_str(&format!(
            "    ip daddr {} {proto} dport {} goto svc-{i} comment \"{comment}\"\n",
            sp.ip, sp.port
        ));
        let mut svc = format!("  chain svc-{i} {{\n");
        if let Some(secs) = sp.affinity_seconds {
            // A client seen within the timeout goes back to its endpoint.
            for (j, _) in sp.endpoints.iter().enumerate() {
                chains.push_str(&format!(
                    "  set aff-{i}-{j} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {secs}s\n  }}\n"
                ));
                svc.push_str(&format!("    ip saddr @aff-{i}-{j} goto ep-{i}-{j}\n"));
            }
        }
        let n = sp.endpoints.len();
        if n == 1 {
            svc.push_str(&format!("    goto ep-{i}-0\n"));
        } else {
            let arms: Vec<String> = (0..n).map(|j| format!("{j} : goto ep-{i}-{j}")).collect();
            svc.push_str(&format!(
                "    numgen random mod {n} vmap {{ {} }}\n",
                arms.join(", ")
            ));
        }
        svc.push_str("  }\n");
        chains.push_str(&svc);
        for (j, (ip, port)) in sp.endpoints.iter().enumerate() {
            let mut ep = format!("  chain ep-{i}-{j} {{\n");
            // A pod reaching itself through its Service, and the host (whose source
            // address the pod could not answer), are masqueraded.
            ep.push_str(&format!(
                "    ip saddr {ip} meta mark set meta mark | 0x4000\n"
            ));
            ep.push_str("    fib saddr type local meta mark set meta mark | 0x4000\n");
            if sp.affinity_seconds.is_some() {
                ep.push_str(&format!("    update @aff-{i}-{j} {{ ip saddr }}\n"));
            }
            ep.push_str(&format!(
                "    meta l4proto {proto} dnat to {ip}:{port}\n  }}\n"
            ));
            chains.push_str(&ep);
        }
    }
    out.push_str("  chain services {\n");
    out.push_str(&services);
    out.push_str("  }\n");
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// Run a tool, feeding `input` on stdin.
async fn run(tool: &'static str, args: &[&str], input: Option<&str>) -> Result<(), KernelError> {
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
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
        Ok(())
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
        vec![
            InformerSpec::all("services"),
            InformerSpec::all("endpoints"),
        ]
    }

    fn keys_for(&self, _resource: &str, _change: &Change, _ctx: &Context) -> Vec<String> {
        // Every change rebuilds the one ruleset; changes arriving together are one sync.
        vec![KEY.to_string()]
    }

    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let endpoints: BTreeMap<String, std::sync::Arc<Value>> = ctx
            .cache("endpoints")
            .list()
            .into_iter()
            .map(|e| (crate::runtime::key_of(&e), e))
            .collect();
        let ports: Vec<ServicePort> = ctx
            .cache("services")
            .list()
            .iter()
            .flat_map(|s| service_ports(s, endpoints.get(&crate::runtime::key_of(s)).map(|e| &**e)))
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

    fn endpoints() -> Value {
        json!({"subsets": [{"addresses": [{"ip": "172.17.0.3"}, {"ip": "172.17.0.2"}],
            "notReadyAddresses": [{"ip": "172.17.0.9"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"}]}]})
    }

    #[test]
    fn ports_take_the_ready_endpoints_of_their_name_and_protocol() {
        let ports = service_ports(&web(), Some(&endpoints()));
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
        assert!(service_ports(&headless, None).is_empty());
    }

    #[test]
    fn the_ruleset_balances_at_random_and_rejects_what_has_no_endpoint() {
        let mut ports = service_ports(&web(), Some(&endpoints()));
        ports[1].endpoints.clear();
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.starts_with("table ip skiff-t {\n}\ndelete table ip skiff-t\n"));
        assert!(text
            .contains("ip daddr 10.96.0.20 tcp dport 80 goto svc-1 comment \"default/web:http\""));
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto ep-1-0, 1 : goto ep-1-1 }"));
        assert!(text.contains("meta l4proto tcp dnat to 172.17.0.2:8080"));
        // The UDP port has no endpoint: no DNAT, so the range's reject refuses it.
        assert!(!text.contains("udp dport 53"));
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
            &service_ports(&svc, Some(&endpoints())),
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
        let mut ep = endpoints();
        ep["subsets"][0]["addresses"] = json!([{"ip": "172.17.0.2", "nodeName": "here"},
            {"ip": "172.17.0.3", "nodeName": "there"}]);
        let here: std::collections::HashSet<String> = ["here".to_string()].into();
        let mut ports = service_ports(&svc, Some(&ep));
        ports.iter_mut().for_each(|p| p.localize(&here));
        assert_eq!(
            ports[0].endpoints,
            vec![("172.17.0.2".parse().unwrap(), 8080)]
        );
        assert!(!ports[0].drop);
        let elsewhere: std::collections::HashSet<String> = ["other".to_string()].into();
        let mut ports = service_ports(&svc, Some(&ep));
        ports.iter_mut().for_each(|p| p.localize(&elsewhere));
        assert!(ports[0].endpoints.is_empty() && ports[0].drop);
        let text = ruleset("skiff-t", "10.96.0.0/16", &ports);
        assert!(text.contains(
            "    ip daddr 10.96.0.20 tcp dport 80 drop\n    ip daddr 10.96.0.20 udp dport 53 drop\n    ip daddr 10.96.0.0/16 reject"
        ));
        assert!(!text.contains("goto svc-"));
    }

    #[test]
    fn names_fit_the_kernels_limits() {
        let p = KernelProxy::new("a-very-long-cluster-id", "10.96.0.0/16", []);
        assert!(p.rules.device.len() <= 15, "{}", p.rules.device);
        assert_eq!(p.table(), "skiff-averylong");
    }
}
