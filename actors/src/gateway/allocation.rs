//! Service address allocation: a unique `clusterIP` from the service range and unique
//! `nodePort`s from the node port range, as kube-apiserver's allocators hand them out.
//! What is allocated is read from the stored Services, so a delete releases its addresses.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::api::validation::{FieldError, FieldErrorKind};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RangeError {
    #[error("invalid service CIDR {0:?} (want a.b.c.d/n with n between 8 and 30)")]
    Cidr(String),
    #[error("invalid node port range {0:?} (want low-high)")]
    Ports(String),
}

/// The ranges services are given addresses from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRanges {
    network: u32,
    size: u32,
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges::parse("10.96.0.0/16", "30000-32767").expect("default ranges are valid")
    }
}

impl ServiceRanges {
    pub fn parse(cidr: &str, ports: &str) -> Result<Self, RangeError> {
        let bad_cidr = || RangeError::Cidr(cidr.to_string());
        let (ip, bits) = cidr.split_once('/').ok_or_else(bad_cidr)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad_cidr())?;
        let bits: u32 = bits.parse().map_err(|_| bad_cidr())?;
        if !(8..=30).contains(&bits) {
            return Err(bad_cidr());
        }
        let size = 1u32 << (32 - bits);
        let network = u32::from(ip) & !(size - 1);
        let bad_ports = || RangeError::Ports(ports.to_string());
        let (lo, hi) = ports.split_once('-').ok_or_else(bad_ports)?;
        let (lo, hi): (u16, u16) = (
            lo.trim().parse().map_err(|_| bad_ports())?,
            hi.trim().parse().map_err(|_| bad_ports())?,
        );
        if lo == 0 || lo > hi {
            return Err(bad_ports());
        }
        Ok(ServiceRanges {
            network,
            size,
            node_ports: (lo, hi),
        })
    }

    /// The first address of the range: the `kubernetes` Service's.
    pub fn first_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The tenth address of the range: the `kube-dns` Service's (kubeadm's choice).
    pub fn dns_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 10)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip > self.network && ip < self.network + self.size - 1
    }

    fn cidr(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.network),
            32 - self.size.trailing_zeros()
        )
    }
}

/// What existing Services hold.
#[derive(Debug, Default)]
pub struct Allocated {
    pub ips: HashSet<Ipv4Addr>,
    pub node_ports: HashSet<u16>,
}

impl Allocated {
    pub fn from_services<'a>(services: impl Iterator<Item = &'a Value>) -> Self {
        let mut a = Allocated::default();
        for svc in services {
            if let Some(ip) = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                a.ips.insert(ip);
            }
            for port in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(p) = port
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .filter(|p| *p > 0)
                {
                    a.node_ports.insert(p as u16);
                }
            }
        }
        a
    }
}

fn invalid(field: &str, value: String, detail: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        kind: FieldErrorKind::Invalid,
        value: Some(value),
        detail: detail.to_string(),
    }
}

/// Give `svc` a cluster IP and node ports. `old` is the stored Service on update (its
/// addresses are kept); `taken` excludes the service itself.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    ranges: &ServiceRanges,
    taken: &Allocated,
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match (requested, old_ip) {
        (None, Some(old)) => Some(old),
        (Some(r), _) if r == "None" => Some(r),
        (Some(r), old) if Some(&r) == old.as_ref() => Some(r),
        (Some(r), _) => match r.parse::<Ipv4Addr>() {
            Ok(ip) if !ranges.contains(ip) => {
                errs.push(invalid("spec.clusterIPs", format!("{r:?}"), &format!(
                    "failed to allocate IP {r}: the provided IP ({r}) is not in the valid range. The range of valid IPs is {}",
                    ranges.cidr()
                )));
                None
            }
            Ok(ip) if taken.ips.contains(&ip) => {
                errs.push(invalid(
                    "spec.clusterIPs",
                    format!("{r:?}"),
                    &format!("failed to allocate IP {r}: provided IP is already allocated"),
                ));
                None
            }
            Ok(_) => Some(r),
            Err(_) => None, // validation reports the malformed address
        },
        (None, None) => {
            let free = (1..ranges.size - 1)
                .map(|off| Ipv4Addr::from(ranges.network + off))
                .find(|ip| !taken.ips.contains(ip));
            match free {
                Some(ip) => Some(ip.to_string()),
                None => {
                    errs.push(invalid(
                        "spec.clusterIPs",
                        String::new(),
                        "failed to allocate a serviceIP: range is full",
                    ));
                    None
                }
            }
        }
    };
    if let Some(ip) = ip {
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
        if ip != "None" {
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if svc.pointer("/spec/internalTrafficPolicy").is_none() {
        svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        if svc.pointer("/spec/externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
        allocate_node_ports(svc, old, ranges, taken, &mut errs);
    } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        // Changing a NodePort service to ClusterIP releases its node ports.
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn allocate_node_ports(
    svc: &mut Value,
    old: Option<&Value>,
    ranges: &ServiceRanges,
    taken: &Allocated,
    errs: &mut Vec<FieldError>,
) {
    let old_ports: Vec<(u64, u64)> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p.get("port")?.as_u64()?, p.get("nodePort")?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut used: HashSet<u16> = taken.node_ports.clone();
    let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    // Ports the user asked for are claimed first, so automatic ones never take them.
    for (i, p) in ports.iter().enumerate() {
        if let Some(np) = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0) {
            let kept = old_ports.iter().any(|(_, o)| *o == np);
            let field = format!("spec.ports[{i}].nodePort");
            if np < u64::from(ranges.node_ports.0) || np > u64::from(ranges.node_ports.1) {
                errs.push(invalid(
                    &field,
                    np.to_string(),
                    &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    ranges.node_ports.0, ranges.node_ports.1
                ),
                ));
            } else if !kept && !used.insert(np as u16) {
                errs.push(invalid(
                    &field,
                    np.to_string(),
                    "provided port is already allocated",
                ));
            }
        }
    }
    for (i, p) in ports.iter_mut().enumerate() {
        if p.get("nodePort")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0)
        {
            continue;
        }
        let port = p.get("port").and_then(Value::as_u64).unwrap_or(0);
        let reuse = old_ports
            .iter()
            .find(|(op, _)| *op == port)
            .map(|(_, np)| *np as u16);
        let chosen = reuse.or_else(|| {
            let (lo, hi) = ranges.node_ports;
            (lo..=hi).find(|n| !used.contains(n))
        });
        match chosen {
            Some(n) => {
                used.insert(n);
                p["nodePort"] = json!(n);
            }
            None => errs.push(invalid(
                &format!("spec.ports[{i}].nodePort"),
                String::new(),
                "range is full",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn cluster_ips_are_unique_and_skip_the_network_address() {
        let ranges = ServiceRanges::default();
        let mut a = svc(json!({"ports": [{"port": 80}]}));
        allocate(&mut a, None, &ranges, &Allocated::default()).expect("allocates");
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.1");
        let taken = Allocated::from_services([&a].into_iter());
        let mut b = svc(json!({"ports": [{"port": 80}]}));
        allocate(&mut b, None, &ranges, &taken).expect("allocates");
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.2");
    }

    #[test]
    fn a_requested_node_port_is_granted_once_then_refused() {
        let ranges = ServiceRanges::default();
        let mut a = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        allocate(&mut a, None, &ranges, &Allocated::default()).expect("allocates");
        let taken = Allocated::from_services([&a].into_iter());
        let mut b = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        let errs = allocate(&mut b, None, &ranges, &taken).expect_err("taken");
        assert_eq!(errs[0].field, "spec.ports[0].nodePort");
        let mut c = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        allocate(&mut c, None, &ranges, &taken).expect("allocates");
        assert_eq!(c["spec"]["ports"][0]["nodePort"], 30000);
    }

    #[test]
    fn headless_services_get_no_address_and_updates_keep_theirs() {
        let ranges = ServiceRanges::default();
        let mut h = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        allocate(&mut h, None, &ranges, &Allocated::default()).expect("allocates");
        assert_eq!(h["spec"]["clusterIP"], "None");
        let old = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 31000}]}),
        );
        let mut upd = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        allocate(&mut upd, Some(&old), &ranges, &Allocated::default()).expect("allocates");
        assert_eq!(upd["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(upd["spec"]["ports"][0]["nodePort"], 31000);
    }

    #[test]
    fn out_of_range_requests_and_bad_ranges_are_refused() {
        let ranges = ServiceRanges::default();
        let mut a = svc(
            json!({"clusterIP": "192.168.1.1", "type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        );
        let errs = allocate(&mut a, None, &ranges, &Allocated::default()).expect_err("invalid");
        assert_eq!(errs.len(), 2);
        assert!(ServiceRanges::parse("10.96.0.0/33", "30000-32767").is_err());
        assert!(ServiceRanges::parse("10.96.0.0/16", "32767-30000").is_err());
    }
}
