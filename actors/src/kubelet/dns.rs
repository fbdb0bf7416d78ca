//! A pod's `/etc/resolv.conf`, as the kubelet forms it (`pkg/kubelet/network/dns`): the
//! cluster's nameservers and search path for `ClusterFirst` (and
//! `ClusterFirstWithHostNet`), the node's own resolver configuration for `Default` (and
//! `ClusterFirst` on the host network), nothing for `None`; then the pod's `dnsConfig`
//! appended, and the result cut to what the C library reads.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

/// What the C library reads (and Kubernetes validates against).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
/// kubeadm's answer to a host whose resolv.conf names systemd-resolved's loopback stub,
/// which a pod cannot reach.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The kubelet's `clusterDNS`, `clusterDomain` and `resolvConf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The cluster DNS Service's address(es); empty: none configured.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolver configuration, the base for `Default`.
    pub resolv_conf: PathBuf,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// A resolver configuration: what a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Read a resolv.conf (the last `search`/`domain` line wins, as in the C library).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    conf.searches = words.map(str::to_string).collect()
                }
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    /// The file's text, in the kubelet's order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// An event the kubelet records while forming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsWarning {
    pub reason: &'static str,
    pub message: String,
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// Options by name: a later one replaces an earlier one of the same name.
fn merge_options(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        let name = item.split(':').next().unwrap_or_default().to_string();
        list.retain(|o| o.split(':').next() != Some(&name));
        list.push(item);
    }
}

fn texts(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The node's own configuration, avoiding a loopback stub a pod could not reach.
fn host_conf(settings: &DnsSettings) -> ResolvConf {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| ResolvConf::parse(&t))
    };
    let conf = read(&settings.resolv_conf).unwrap_or_default();
    let all_loopback = !conf.nameservers.is_empty()
        && conf
            .nameservers
            .iter()
            .all(|n| n.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()));
    if all_loopback {
        if let Some(real) = read(std::path::Path::new(SYSTEMD_RESOLV_CONF)) {
            return real;
        }
    }
    conf
}

/// The pod's resolver configuration, with the events forming it gave.
pub fn pod_resolv_conf(pod: &Value, settings: &DnsSettings) -> (ResolvConf, Vec<DnsWarning>) {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let policy = spec
        .get("dnsPolicy")
        .and_then(Value::as_str)
        .unwrap_or("ClusterFirst");
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut warnings = Vec::new();
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        _ => Some(false),
    };
    let cluster = match cluster {
        Some(true) if settings.cluster_dns.is_empty() => {
            warnings.push(DnsWarning {
                reason: "MissingClusterDNS",
                message: format!("pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using {policy:?} policy. Falling back to \"Default\" policy.", crate::api::meta::name(pod).unwrap_or_default()),
            });
            Some(false)
        }
        other => other,
    };
    let mut conf = match cluster {
        None => ResolvConf::default(),
        Some(true) => {
            let ns = crate::api::meta::namespace(pod).unwrap_or("default");
            let domain = &settings.cluster_domain;
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            push_unique(&mut searches, host_conf(settings).searches);
            ResolvConf {
                nameservers: settings.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Some(false) => host_conf(settings),
    };
    if let Some(extra) = spec.get("dnsConfig") {
        push_unique(&mut conf.nameservers, texts(extra.get("nameservers")));
        push_unique(
            &mut conf.searches,
            texts(extra.get("searches"))
                .into_iter()
                .map(|s| s.trim_end_matches('.').to_string())
                .filter(|s| !s.is_empty()),
        );
        let options = extra
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let name = o.get("name").and_then(Value::as_str)?;
                Some(match o.get("value").and_then(Value::as_str) {
                    Some(v) => format!("{name}:{v}"),
                    None => name.to_string(),
                })
            });
        merge_options(&mut conf.options, options);
    }
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!("Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}", conf.nameservers.join(" ")),
        });
    }
    let too_long = |s: &[String]| s.len() > MAX_SEARCHES || s.join(" ").len() > MAX_SEARCH_CHARS;
    if too_long(&conf.searches) {
        while too_long(&conf.searches) {
            conf.searches.pop();
        }
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!("Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}", conf.searches.join(" ")),
        });
    }
    (conf, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(host: &str) -> (DnsSettings, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, host).expect("write");
        (
            DnsSettings {
                cluster_dns: vec!["10.96.0.10".parse().unwrap()],
                cluster_domain: "cluster.local".into(),
                resolv_conf: path,
            },
            dir,
        )
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "prod"}, "spec": spec})
    }

    #[test]
    fn cluster_first_names_the_cluster_dns_with_the_pods_search_path() {
        let (s, _d) = settings("nameserver 192.0.2.1\nsearch corp.example\noptions timeout:2\n");
        let (conf, warnings) = pod_resolv_conf(&pod(json!({})), &s);
        assert!(warnings.is_empty());
        assert_eq!(
            conf.render(),
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_and_host_network_use_the_nodes_configuration() {
        let (s, _d) = settings("nameserver 192.0.2.1\nsearch corp.example\n");
        let host = "search corp.example\nnameserver 192.0.2.1\n";
        let (conf, _) = pod_resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &s);
        assert_eq!(conf.render(), host);
        let (conf, _) = pod_resolv_conf(&pod(json!({"hostNetwork": true})), &s);
        assert_eq!(conf.render(), host);
        let (conf, _) = pod_resolv_conf(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &s,
        );
        assert_eq!(conf.nameservers, ["10.96.0.10"]);
    }

    #[test]
    fn dns_config_is_appended_and_options_override_by_name() {
        let (s, _d) = settings("nameserver 192.0.2.1\n");
        let spec = json!({"dnsConfig": {"nameservers": ["192.0.2.9", "10.96.0.10"],
            "searches": ["extra.example."],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}});
        let (conf, _) = pod_resolv_conf(&pod(spec), &s);
        assert_eq!(conf.nameservers, ["10.96.0.10", "192.0.2.9"]);
        assert_eq!(
            conf.searches.last().map(String::as_str),
            Some("extra.example")
        );
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
        let none = json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.7"]}});
        assert_eq!(
            pod_resolv_conf(&pod(none), &s).0.render(),
            "nameserver 192.0.2.7\n"
        );
    }

    #[test]
    fn without_a_cluster_dns_cluster_first_falls_back_to_default_and_says_so() {
        let (mut s, _d) = settings("nameserver 192.0.2.1\n");
        s.cluster_dns.clear();
        let (conf, warnings) = pod_resolv_conf(&pod(json!({})), &s);
        assert_eq!(conf.nameservers, ["192.0.2.1"]);
        assert_eq!(warnings[0].reason, "MissingClusterDNS");
        assert!(warnings[0]
            .message
            .contains("cannot create Pod using \"ClusterFirst\" policy"));
    }

    #[test]
    fn more_than_three_nameservers_are_cut() {
        let (s, _d) = settings("");
        let spec = json!({"dnsConfig": {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}});
        let (conf, warnings) = pod_resolv_conf(&pod(spec), &s);
        assert_eq!(conf.nameservers.len(), 3);
        assert_eq!(warnings[0].reason, "DNSConfigForming");
    }
}
