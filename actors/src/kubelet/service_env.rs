//! The service environment variables the kubelet gives every container (Kubernetes'
//! `pkg/kubelet/envvars` and `getServiceEnvVarMap`): for the `kubernetes` Service in
//! `default` always, and for every Service of the pod's namespace unless the pod says
//! `enableServiceLinks: false`, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (and one per
//! named port), and the Docker-link-style `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>`
//! with `_PROTO`, `_PORT` and `_ADDR`. Services without a cluster IP (headless,
//! ExternalName) give none. A container's own `env` wins over these.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;

use crate::client::{ApiClient, ListParams};

const MASTER_NAMESPACE: &str = "default";
const MASTER_SERVICE: &str = "kubernetes";

/// `my-svc` → `MY_SVC`.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn cluster_ip(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

fn host_port(ip: &str, port: i64) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(addr) => SocketAddr::new(addr, port as u16).to_string(),
        Err(_) => format!("{ip}:{port}"),
    }
}

/// The variables of one Service, in Kubernetes' order.
pub fn of_service(svc: &Value) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(svc) else {
        return Vec::new();
    };
    let prefix = env_name(
        svc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    let port_of = |p: &Value| p.get("port").and_then(Value::as_i64).unwrap_or(0);
    if let Some(first) = ports.first() {
        let name = format!("{prefix}_SERVICE_PORT");
        out.push((name.clone(), port_of(first).to_string()));
        for p in &ports {
            if let Some(pn) = p
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                out.push((format!("{name}_{}", env_name(pn)), port_of(p).to_string()));
            }
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p
            .get("protocol")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let port = port_of(p);
        let url = format!("{lower}://{}", host_port(ip, port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{port}_{upper}");
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// The variables for a pod in `namespace`, given the `kubernetes` Service (if any) and
/// the Services of the namespace; ordered by service name.
pub fn for_services(
    namespace: &str,
    links: bool,
    master: Option<&Value>,
    local: &[std::sync::Arc<Value>],
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Value> = BTreeMap::new();
    if let Some(m) = master.filter(|m| cluster_ip(m).is_some()) {
        chosen.insert(MASTER_SERVICE.to_string(), m);
    }
    if links {
        for svc in local.iter().filter(|s| cluster_ip(s).is_some()) {
            let name = svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // In `default` the master service is the same object.
            if namespace == MASTER_NAMESPACE && name == MASTER_SERVICE {
                continue;
            }
            chosen.insert(name.to_string(), svc);
        }
    }
    chosen.values().flat_map(|s| of_service(s)).collect()
}

/// The service variables for `pod`, read from the API. A failed read leaves them out
/// (with a warning) rather than keeping the container from starting.
pub async fn for_pod(client: &dyn ApiClient, pod: &Value) -> Vec<(String, String)> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(MASTER_NAMESPACE);
    let links = pod
        .pointer("/spec/enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let master = match client
        .get("services", Some(MASTER_NAMESPACE), MASTER_SERVICE)
        .await
    {
        Ok(m) => Some(m),
        Err(crate::api::ApiError::NotFound { .. }) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kubernetes service for container env");
            None
        }
    };
    let local = if links {
        match client
            .list("services", Some(ns), &ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cannot list services for container env");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    for_services(ns, links, master.as_ref(), &local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn svc(name: &str, ip: &str, ports: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": ports}})
    }

    #[test]
    fn the_kubernetes_service_gives_the_in_cluster_config_variables() {
        let k = svc(
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
        );
        let env: BTreeMap<String, String> = of_service(&k).into_iter().collect();
        let want = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        assert_eq!(env.len(), want.len(), "{env:?}");
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn links_cover_the_namespace_unless_turned_off_and_skip_headless_services() {
        let master = svc(
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443}]),
        );
        let local = vec![
            Arc::new(svc(
                "my-db",
                "10.96.0.9",
                json!([{"port": 5432, "protocol": "UDP"}, {"name": "admin", "port": 8080}]),
            )),
            Arc::new(svc("headless", "None", json!([{"port": 80}]))),
        ];
        let env: BTreeMap<String, String> = for_services("dev", true, Some(&master), &local)
            .into_iter()
            .collect();
        assert_eq!(
            env.get("MY_DB_SERVICE_HOST").map(String::as_str),
            Some("10.96.0.9")
        );
        assert_eq!(
            env.get("MY_DB_SERVICE_PORT").map(String::as_str),
            Some("5432")
        );
        assert_eq!(
            env.get("MY_DB_SERVICE_PORT_ADMIN").map(String::as_str),
            Some("8080")
        );
        assert_eq!(
            env.get("MY_DB_PORT").map(String::as_str),
            Some("udp://10.96.0.9:5432")
        );
        assert_eq!(
            env.get("MY_DB_PORT_8080_TCP_ADDR").map(String::as_str),
            Some("10.96.0.9")
        );
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        let off: BTreeMap<String, String> = for_services("dev", false, Some(&master), &local)
            .into_iter()
            .collect();
        assert!(off.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!off.contains_key("MY_DB_SERVICE_HOST"));
    }
}
