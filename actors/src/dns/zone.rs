//! The cluster's names, as CoreDNS's `kubernetes` plugin answers them, built from the
//! Services and Endpoints: a `Zone` is an immutable snapshot, rebuilt when they change,
//! and asked per query without locks held across an await.
//!
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA of a ClusterIP Service's addresses; of a headless
//!   Service's ready endpoints; CNAME of an ExternalName Service;
//! - `<host>.<svc>.<ns>.svc.<domain>`: one endpoint, by its `hostname` (pods naming the
//!   Service as their `subdomain`) or its dashed address;
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for a named port;
//! - `<a-b-c-d>.<ns>.pod.<domain>`: the address in the name (CoreDNS's `pods insecure`);
//! - PTR for Service addresses and headless endpoints;
//! - anything else under the domain is NXDOMAIN, with the zone's SOA.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

use crate::proxy::slices::SliceEndpoint;

/// How long clients may keep an answer (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;

/// What a Service's name resolves to.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// Its cluster IPs.
    Addresses(Vec<IpAddr>),
    /// Headless: its ready endpoints.
    Headless,
    /// ExternalName: an alias.
    Alias(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Port {
    name: String,
    /// Lowercase, as in `_tcp`.
    protocol: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    ip: IpAddr,
    hostname: Option<String>,
    ports: Vec<Port>,
}

impl Endpoint {
    /// The first label of this endpoint's name: its hostname, or its dashed address.
    fn label(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| dashed(self.ip))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Service {
    target: Target,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// The answer for one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Records of the name (answers, and additional records: addresses of SRV targets).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, without records of the type asked.
    NoData,
    /// No such name under the domain.
    NxDomain,
    /// Not the cluster's: to be forwarded upstream.
    Outside,
}

/// The cluster's names at one moment.
#[derive(Debug, Default)]
pub struct Zone {
    /// Lowercase, without the trailing dot.
    domain: String,
    /// Namespace → name → Service (looked up by `&str`, with no key to allocate).
    services: HashMap<String, HashMap<String, Service>>,
    /// `.<domain>`, to strip from query names.
    suffix: String,
    namespaces: HashSet<String>,
    /// Address → the name it is known by.
    reverse: HashMap<IpAddr, String>,
    /// Changes with every rebuild, for the SOA's serial.
    serial: u32,
}

fn text<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn ports_of(list: Option<&Value>) -> Vec<Port> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.get("name").and_then(Value::as_str)?.to_string(),
                protocol: p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                port: p.get("port").and_then(Value::as_u64)? as u16,
            })
        })
        .filter(|p| !p.name.is_empty())
        .collect()
}

/// The ready endpoints of a Service's slices, with their ports.
fn endpoints_of(slices: Option<&Vec<SliceEndpoint>>) -> Vec<Endpoint> {
    slices
        .into_iter()
        .flatten()
        .filter(|e| e.ready)
        .map(|e| Endpoint {
            ip: e.ip,
            hostname: e.hostname.clone(),
            ports: e
                .ports
                .iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| Port {
                    name: p.name.clone(),
                    protocol: p.protocol.to_ascii_lowercase(),
                    port: p.port,
                })
                .collect(),
        })
        .collect()
}

/// `10.1.2.3` → `10-1-2-3`; IPv6 with its colons as dashes (CoreDNS's form).
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let segs = v6.segments();
            segs.iter()
                .map(|s| format!("{s:x}"))
                .collect::<Vec<_>>()
                .join("-")
        }
    }
}

fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`) is for.
fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(
            octets[0], octets[1], octets[2], octets[3],
        )));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| u8::from_str_radix(n, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if nibbles.len() != 32 || nibbles.iter().any(|n| *n > 15) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed nibbles: within a reversed pair the high nibble comes second.
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()
}

fn address_record(owner: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), TTL, data)
}

fn family_matches(ip: &IpAddr, qtype: RecordType) -> bool {
    matches!(
        (ip, qtype),
        (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA)
    )
}

impl Zone {
    /// The zone of `services`, with the endpoints of each (from its EndpointSlices) by
    /// (namespace, name).
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Value>,
        endpoints: &HashMap<(String, String), Vec<SliceEndpoint>>,
        serial: u32,
    ) -> Zone {
        let mut zone = Zone {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            suffix: format!(".{}", domain.trim_end_matches('.').to_ascii_lowercase()),
            serial,
            ..Zone::default()
        };
        for svc in services {
            let (Some(ns), Some(svc_name)) = (
                text(svc, "/metadata/namespace"),
                text(svc, "/metadata/name"),
            ) else {
                continue;
            };
            let key = (ns.to_string(), svc_name.to_string());
            let target = if text(svc, "/spec/type") == Some("ExternalName") {
                match text(svc, "/spec/externalName") {
                    Some(ext) => Target::Alias(ext.to_ascii_lowercase()),
                    None => continue,
                }
            } else {
                let ips: Vec<IpAddr> =
                    match svc.pointer("/spec/clusterIPs").and_then(Value::as_array) {
                        Some(list) if !list.is_empty() => list
                            .iter()
                            .filter_map(|v| v.as_str()?.parse().ok())
                            .collect(),
                        _ => text(svc, "/spec/clusterIP")
                            .and_then(|s| s.parse().ok())
                            .into_iter()
                            .collect(),
                    };
                if ips.is_empty() {
                    Target::Headless
                } else {
                    Target::Addresses(ips)
                }
            };
            let fqdn = format!("{svc_name}.{ns}.svc.{}", zone.domain);
            let endpoints = endpoints_of(endpoints.get(&key));
            match &target {
                Target::Addresses(ips) => {
                    for ip in ips {
                        zone.reverse.insert(*ip, fqdn.clone());
                    }
                }
                Target::Headless => {
                    for ep in &endpoints {
                        zone.reverse
                            .entry(ep.ip)
                            .or_insert_with(|| format!("{}.{fqdn}", ep.label()));
                    }
                }
                Target::Alias(_) => {}
            }
            zone.namespaces.insert(ns.to_string());
            zone.services.entry(key.0).or_default().insert(
                key.1,
                Service {
                    target,
                    ports: ports_of(svc.pointer("/spec/ports")),
                    endpoints,
                },
            );
        }
        zone
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The zone's SOA record, for negative answers.
    pub fn soa(&self) -> Record {
        let origin = name(&self.domain).unwrap_or_else(Name::root);
        let mname = name(&format!("ns.dns.{}", self.domain)).unwrap_or_else(Name::root);
        let rname = name(&format!("hostmaster.{}", self.domain)).unwrap_or_else(Name::root);
        Record::from_rdata(
            origin,
            TTL,
            RData::SOA(SOA::new(mname, rname, self.serial, 7200, 1800, 86400, TTL)),
        )
    }

    /// Answer `qname` (any case, with or without the trailing dot) for `qtype`.
    pub fn answer(&self, qname: &str, qtype: RecordType) -> Answer {
        match name(qname) {
            Some(owner) => self.answer_name(&owner, qtype),
            None => Answer::NxDomain,
        }
    }

    /// Answer a query's name, which becomes the answers' owner name as asked.
    pub fn answer_name(&self, owner: &Name, qtype: RecordType) -> Answer {
        let mut q = owner.to_ascii();
        q.make_ascii_lowercase();
        let q = q.trim_end_matches('.');
        if q.ends_with(".in-addr.arpa") || q.ends_with(".ip6.arpa") {
            return self.reverse(q, qtype);
        }
        let rest = if q == self.domain {
            ""
        } else if let Some(r) = q.strip_suffix(self.suffix.as_str()) {
            r
        } else {
            return Answer::Outside;
        };
        let mut parts = [""; 6];
        let mut n = 0;
        if !rest.is_empty() {
            for label in rest.split('.') {
                if n == parts.len() {
                    return Answer::NxDomain;
                }
                parts[n] = label;
                n += 1;
            }
        }
        let labels = &parts[..n];
        let owner = owner.clone();
        match labels {
            [] if qtype == RecordType::SOA => records(vec![self.soa()], Vec::new()),
            [] => Answer::NoData,
            ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(&owner, ns, svc, qtype),
            [host, svc, ns, "svc"] => self.endpoint(&owner, ns, svc, host, qtype),
            [port, proto, svc, ns, "svc"] => {
                match (port.strip_prefix('_'), proto.strip_prefix('_')) {
                    (Some(port), Some(proto)) => self.srv(&owner, ns, svc, port, proto, qtype),
                    _ => Answer::NxDomain,
                }
            }
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) if family_matches(&ip, qtype) => {
                    records(vec![address_record(&owner, ip)], Vec::new())
                }
                Some(_) => Answer::NoData,
                None => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    fn lookup(&self, ns: &str, svc: &str) -> Option<&Service> {
        self.services.get(ns)?.get(svc)
    }

    fn service(&self, owner: &Name, ns: &str, svc: &str, qtype: RecordType) -> Answer {
        let Some(service) = self.lookup(ns, svc) else {
            return Answer::NxDomain;
        };
        let ips: Vec<IpAddr> = match &service.target {
            Target::Alias(ext) => {
                return match name(ext) {
                    Some(target) => records(
                        vec![Record::from_rdata(
                            owner.clone(),
                            TTL,
                            RData::CNAME(CNAME(target)),
                        )],
                        Vec::new(),
                    ),
                    None => Answer::NoData,
                }
            }
            Target::Addresses(ips) => ips.clone(),
            Target::Headless => service.endpoints.iter().map(|e| e.ip).collect(),
        };
        let mut answers: Vec<Record> = ips
            .into_iter()
            .filter(|ip| family_matches(ip, qtype))
            .map(|ip| address_record(owner, ip))
            .collect();
        answers.dedup();
        if answers.is_empty() {
            Answer::NoData
        } else {
            records(answers, Vec::new())
        }
    }

    fn endpoint(&self, owner: &Name, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Answer {
        let Some(service) = self.lookup(ns, svc) else {
            return Answer::NxDomain;
        };
        let found: Vec<&Endpoint> = service
            .endpoints
            .iter()
            .filter(|e| e.label() == host)
            .collect();
        if found.is_empty() {
            return Answer::NxDomain;
        }
        let answers: Vec<Record> = found
            .iter()
            .filter(|e| family_matches(&e.ip, qtype))
            .map(|e| address_record(owner, e.ip))
            .collect();
        if answers.is_empty() {
            Answer::NoData
        } else {
            records(answers, Vec::new())
        }
    }

    fn srv(
        &self,
        owner: &Name,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Answer {
        let Some(service) = self.lookup(ns, svc) else {
            return Answer::NxDomain;
        };
        let fqdn = format!("{svc}.{ns}.svc.{}", self.domain);
        let matches = |p: &Port| p.name == port && p.protocol == proto;
        // (target, port, address for the additional section)
        let mut targets: Vec<(String, u16, Option<IpAddr>)> = Vec::new();
        match &service.target {
            Target::Addresses(ips) => {
                for p in service.ports.iter().filter(|p| matches(p)) {
                    targets.push((fqdn.clone(), p.port, ips.first().copied()));
                }
            }
            Target::Headless => {
                for ep in &service.endpoints {
                    for p in ep.ports.iter().filter(|p| matches(p)) {
                        targets.push((format!("{}.{fqdn}", ep.label()), p.port, Some(ep.ip)));
                    }
                }
            }
            Target::Alias(_) => {}
        }
        if targets.is_empty() {
            return Answer::NxDomain;
        }
        if qtype != RecordType::SRV {
            return Answer::NoData;
        }
        let weight = (100 / targets.len()).max(1) as u16;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (target, port, ip) in targets {
            let Some(target_name) = name(&target) else {
                continue;
            };
            if let Some(ip) = ip {
                additionals.push(address_record(&target_name, ip));
            }
            answers.push(Record::from_rdata(
                owner.clone(),
                TTL,
                RData::SRV(SRV::new(0, weight, port, target_name)),
            ));
        }
        additionals.dedup();
        records(answers, additionals)
    }

    fn reverse(&self, q: &str, qtype: RecordType) -> Answer {
        let Some(ip) = reverse_address(q) else {
            return Answer::Outside;
        };
        let (Some(target), Some(owner)) = (self.reverse.get(&ip), name(q)) else {
            // Not a cluster address: the host's resolvers may know it.
            return Answer::Outside;
        };
        if qtype != RecordType::PTR {
            return Answer::NoData;
        }
        match name(target) {
            Some(t) => records(
                vec![Record::from_rdata(owner, TTL, RData::PTR(PTR(t)))],
                Vec::new(),
            ),
            None => Answer::NoData,
        }
    }
}

fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
    Answer::Records {
        answers,
        additionals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services = [
            json!({"metadata": {"namespace": "prod", "name": "web"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"namespace": "prod", "name": "db"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"namespace": "prod", "name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "Example.internal"}}),
        ];
        let db = std::sync::Arc::new(json!({"metadata": {"name": "db-x", "namespace": "prod",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "endpoints": [
                {"addresses": ["172.17.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["172.17.0.6"], "conditions": {"ready": true}},
                {"addresses": ["172.17.0.9"], "conditions": {"ready": false}}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}));
        let endpoints: HashMap<(String, String), Vec<SliceEndpoint>> = [(
            ("prod".to_string(), "db".to_string()),
            crate::proxy::slices::endpoints(&[db]),
        )]
        .into();
        Zone::build("cluster.local", services.iter(), &endpoints, 7)
    }

    fn addresses(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn a_cluster_ip_service_answers_its_address_in_any_case() {
        let z = zone();
        assert_eq!(
            addresses(&z.answer("web.prod.svc.cluster.local.", RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            addresses(&z.answer("WEB.Prod.svc.cluster.local", RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            z.answer("web.prod.svc.cluster.local.", RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(
            z.answer("nope.prod.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(z.answer("example.org.", RecordType::A), Answer::Outside);
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints_and_their_hostnames() {
        let z = zone();
        assert_eq!(
            addresses(&z.answer("db.prod.svc.cluster.local.", RecordType::A)),
            ["172.17.0.5", "172.17.0.6"]
        );
        assert_eq!(
            addresses(&z.answer("db-0.db.prod.svc.cluster.local.", RecordType::A)),
            ["172.17.0.5"]
        );
        assert_eq!(
            addresses(&z.answer("172-17-0-6.db.prod.svc.cluster.local.", RecordType::A)),
            ["172.17.0.6"]
        );
        assert_eq!(
            z.answer("172-17-0-9.db.prod.svc.cluster.local.", RecordType::A),
            Answer::NxDomain,
            "not-ready addresses are not published"
        );
    }

    #[test]
    fn srv_records_name_the_port_and_its_targets() {
        let z = zone();
        let Answer::Records {
            answers,
            additionals,
        } = z.answer("_http._tcp.web.prod.svc.cluster.local.", RecordType::SRV)
        else {
            panic!("no SRV");
        };
        assert_eq!(
            answers[0].data.to_string(),
            "0 100 80 web.prod.svc.cluster.local."
        );
        assert_eq!(additionals[0].data.to_string(), "10.96.0.20");
        let Answer::Records { answers, .. } =
            z.answer("_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV)
        else {
            panic!("no SRV");
        };
        let targets: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            targets,
            [
                "0 50 5432 db-0.db.prod.svc.cluster.local.",
                "0 50 5432 172-17-0-6.db.prod.svc.cluster.local."
            ]
        );
        assert_eq!(
            z.answer("_http._udp.web.prod.svc.cluster.local.", RecordType::SRV),
            Answer::NxDomain
        );
    }

    #[test]
    fn external_names_are_aliases_and_pods_are_found_by_their_dashed_address() {
        let z = zone();
        assert_eq!(
            addresses(&z.answer("ext.prod.svc.cluster.local.", RecordType::A)),
            ["example.internal."]
        );
        assert_eq!(
            addresses(&z.answer("10-1-2-3.prod.pod.cluster.local.", RecordType::A)),
            ["10.1.2.3"]
        );
        assert_eq!(
            z.answer("not-an-ip.prod.pod.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn reverse_names_of_cluster_addresses_point_back_to_them() {
        let z = zone();
        assert_eq!(
            addresses(&z.answer("20.0.96.10.in-addr.arpa.", RecordType::PTR)),
            ["web.prod.svc.cluster.local."]
        );
        assert_eq!(
            addresses(&z.answer("5.0.17.172.in-addr.arpa.", RecordType::PTR)),
            ["db-0.db.prod.svc.cluster.local."]
        );
        assert_eq!(
            z.answer("9.9.9.9.in-addr.arpa.", RecordType::PTR),
            Answer::Outside
        );
        let v6 = "::1".parse::<IpAddr>().unwrap();
        let nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
        assert_eq!(reverse_address(nibbles), Some(v6));
    }

    #[test]
    fn namespaces_exist_and_others_do_not() {
        let z = zone();
        assert_eq!(
            z.answer("prod.svc.cluster.local.", RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            z.answer("gone.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
        assert!(matches!(
            z.answer("cluster.local.", RecordType::SOA),
            Answer::Records { .. }
        ));
    }
}
