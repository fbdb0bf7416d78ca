//! discovery.k8s.io/v1 EndpointSlice: a Service's endpoints in slices of at most 100 (the
//! controller's default; 1000 allowed), each endpoint with its conditions (ready, serving,
//! terminating), node and zone. Validation follows Kubernetes' `ValidateEndpointSlice`:
//! the address type (immutable), addresses of that type, hostnames as DNS labels, ports
//! named uniquely as DNS labels with a supported protocol.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::{
    dns1123_label_errors, dns1123_subdomain_errors, qualified_name_errors, FieldError,
};

pub const RESOURCE: &str = "endpointslices";
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub static INFO: ResourceInfo = ResourceInfo {
    group: "discovery.k8s.io",
    version: "v1",
    name: RESOURCE,
    singular: "endpointslice",
    kind: "EndpointSlice",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<discovery::EndpointSlice>),
    strategy: &Typed(EndpointSliceStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct EndpointSliceStrategy;

fn invalid_msgs(errs: &mut Vec<FieldError>, path: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        errs.push(FieldError::invalid(path, &json!(value), m));
    }
}

fn validate_address(errs: &mut Vec<FieldError>, path: &str, address_type: &str, addr: &str) {
    let ok = match address_type {
        "IPv4" => addr.parse::<std::net::Ipv4Addr>().is_ok(),
        "IPv6" => addr.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => {
            invalid_msgs(errs, path, addr, dns1123_subdomain_errors(addr));
            return;
        }
    };
    if !ok {
        let what = if address_type == "IPv4" {
            "IPv4"
        } else {
            "IPv6"
        };
        errs.push(FieldError::invalid(
            path,
            &json!(addr),
            format!("must be a valid {what} address"),
        ));
    }
}

impl TypedStrategy for EndpointSliceStrategy {
    type Object = discovery::EndpointSlice;
    const KIND: &'static str = "EndpointSlice";
    const API_VERSION: &'static str = "discovery.k8s.io/v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn validate(
        &self,
        slice: &discovery::EndpointSlice,
        old: Option<&discovery::EndpointSlice>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let address_type = slice.address_type.as_str();
        if address_type.is_empty() {
            errs.push(FieldError::required("addressType"));
        } else if !ADDRESS_TYPES.contains(&address_type) {
            errs.push(FieldError::not_supported(
                "addressType",
                &json!(address_type),
                ADDRESS_TYPES,
            ));
        }
        if let Some(old) = old {
            if old.address_type != slice.address_type {
                errs.push(FieldError::immutable("addressType", &json!(address_type)));
            }
        }
        let endpoints = slice.endpoints.as_deref().unwrap_or_default();
        if endpoints.len() > MAX_ENDPOINTS {
            errs.push(FieldError::too_many(
                "endpoints",
                endpoints.len(),
                MAX_ENDPOINTS,
            ));
        }
        for (i, ep) in endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}]");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(format!("{path}.addresses")));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(FieldError::too_many(
                    format!("{path}.addresses"),
                    ep.addresses.len(),
                    MAX_ADDRESSES,
                ));
            }
            for (j, addr) in ep.addresses.iter().enumerate() {
                validate_address(
                    &mut errs,
                    &format!("{path}.addresses[{j}]"),
                    address_type,
                    addr,
                );
            }
            if let Some(h) = &ep.hostname {
                invalid_msgs(
                    &mut errs,
                    &format!("{path}.hostname"),
                    h,
                    dns1123_label_errors(h),
                );
            }
            if let Some(n) = &ep.node_name {
                invalid_msgs(
                    &mut errs,
                    &format!("{path}.nodeName"),
                    n,
                    dns1123_subdomain_errors(n),
                );
            }
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        if ports.len() > MAX_PORTS {
            errs.push(FieldError::too_many("ports", ports.len(), MAX_PORTS));
        }
        let mut names = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let path = format!("ports[{i}]");
            let name = p.name.as_deref().unwrap_or_default();
            if !name.is_empty() {
                invalid_msgs(
                    &mut errs,
                    &format!("{path}.name"),
                    name,
                    dns1123_label_errors(name),
                );
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &json!(name)));
            }
            match p.protocol.as_deref() {
                None => errs.push(FieldError::required(format!("{path}.protocol"))),
                Some(proto) if !PROTOCOLS.contains(&proto) => errs.push(FieldError::not_supported(
                    format!("{path}.protocol"),
                    &json!(proto),
                    PROTOCOLS,
                )),
                Some(_) => {}
            }
            if let Some(port) = p.port {
                if !(0..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("{path}.port"),
                        &json!(port),
                        "must be between 0 and 65535, inclusive",
                    ));
                }
            }
            if let Some(app) = &p.app_protocol {
                invalid_msgs(
                    &mut errs,
                    &format!("{path}.appProtocol"),
                    app,
                    qualified_name_errors(app),
                );
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("AddressType", "string", 0, "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type."),
            table::column("Ports", "string", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            table::column("Endpoints", "string", 0, "endpoints is a list of unique endpoints in this slice."),
            table::age_column(),
        ]
    }

    fn cells(
        &self,
        slice: &discovery::EndpointSlice,
        raw: &Value,
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        vec![
            table::name(raw),
            json!(slice.address_type),
            json!(format_ports(slice)),
            json!(format_endpoints(slice)),
            table::age(raw, now),
        ]
    }
}

/// kubectl's PORTS cell: `80,443`, `<unset>` for a port without a number, `<none>`.
fn format_ports(slice: &discovery::EndpointSlice) -> String {
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| p.port.map_or("<unset>".to_string(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's ENDPOINTS cell: the first three addresses, then `+ N more...`.
fn format_endpoints(slice: &discovery::EndpointSlice) -> String {
    let all: Vec<&str> = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    if all.is_empty() {
        return "<unset>".into();
    }
    let shown = all[..all.len().min(3)].join(",");
    if all.len() > 3 {
        format!("{shown} + {} more...", all.len() - 3)
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::strategy::typed;

    fn errors(v: Value, old: Option<Value>) -> Vec<String> {
        let s: discovery::EndpointSlice = typed(&v).expect("decodes");
        let o = old.map(|o| typed::<discovery::EndpointSlice>(&o).expect("decodes"));
        EndpointSliceStrategy
            .validate(&s, o.as_ref())
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn addresses_must_be_of_the_slices_type_and_ports_unique() {
        let slice = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "web-0"},
                {"addresses": ["fe80::1"]}, {"addresses": []}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "http", "port": 81, "protocol": "QUIC"}]});
        assert_eq!(
            errors(slice, None),
            [
                "endpoints[1].addresses[0]: Invalid value: \"fe80::1\": must be a valid IPv4 address",
                "endpoints[2].addresses: Required value",
                "ports[1].name: Duplicate value: \"http\"",
                "ports[1].protocol: Unsupported value: \"QUIC\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            ]
        );
    }

    #[test]
    fn the_address_type_is_required_known_and_immutable() {
        let v6 = json!({"metadata": {"name": "s"}, "addressType": "IPv6", "endpoints": []});
        let v4 = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": []});
        assert_eq!(
            errors(v6, Some(v4)),
            ["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
        let odd = json!({"metadata": {"name": "s"}, "addressType": "MAC", "endpoints": []});
        assert_eq!(
            errors(odd, None),
            ["addressType: Unsupported value: \"MAC\": supported values: \"IPv4\", \"IPv6\", \"FQDN\""]
        );
    }

    #[test]
    fn kubectl_cells_show_ports_and_the_first_endpoints() {
        let s: discovery::EndpointSlice =
            typed(&json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
            "ports": [{"port": 80}, {"port": 443}]}))
            .expect("decodes");
        assert_eq!(format_ports(&s), "80,443");
        assert_eq!(
            format_endpoints(&s),
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
        );
    }
}
