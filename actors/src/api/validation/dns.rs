//! A pod's `dnsPolicy` and `dnsConfig`, with Kubernetes' rules (`validatePodDNSConfig`):
//! `None` needs a config with a nameserver; at most 3 nameservers, each an IP address; at
//! most 32 search domains in 2048 characters, each a DNS subdomain; every option named.

use serde_json::Value;

use super::{
    child, dns1123_subdomain_errors, get, get_array, get_str, index, invalid, push_all, required,
    FieldError,
};

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_LIST_CHARS: usize = 2048;

pub(crate) fn validate_pod_dns(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let config_path = child(path, "dnsConfig");
    let config = get(spec, "dnsConfig");
    if get_str(spec, "dnsPolicy") == "None" {
        let Some(config) = config else {
            errs.push(required(
                &config_path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
            return;
        };
        if get_array(config, "nameservers").is_empty() {
            errs.push(required(
                child(&config_path, "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return;
        }
    }
    let Some(config) = config else { return };
    let ns_path = child(&config_path, "nameservers");
    let nameservers = get_array(config, "nameservers");
    if nameservers.len() > MAX_NAMESERVERS {
        errs.push(invalid(
            &ns_path,
            &Value::Array(nameservers.to_vec()),
            format!("must not have more than {MAX_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns
            .as_str()
            .is_none_or(|s| s.parse::<std::net::IpAddr>().is_err())
        {
            errs.push(invalid(index(&ns_path, i), ns, "must be valid IP address"));
        }
    }
    let search_path = child(&config_path, "searches");
    let searches = get_array(config, "searches");
    if searches.len() > MAX_SEARCH_PATHS {
        errs.push(invalid(
            &search_path,
            &Value::Array(searches.to_vec()),
            format!("must not have more than {MAX_SEARCH_PATHS} search paths"),
        ));
    }
    let joined: Vec<&str> = searches.iter().filter_map(Value::as_str).collect();
    if joined.join(" ").len() > MAX_SEARCH_LIST_CHARS {
        errs.push(invalid(
            &search_path,
            &Value::Array(searches.to_vec()),
            format!("must not have more than {MAX_SEARCH_LIST_CHARS} characters (including spaces) in the search list"),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        let s = search.as_str().unwrap_or_default();
        // A rooted name (trailing dot) is allowed.
        let s = s.strip_suffix('.').unwrap_or(s);
        push_all(
            errs,
            &index(&search_path, i),
            search,
            dns1123_subdomain_errors(s),
        );
    }
    for (i, option) in get_array(config, "options").iter().enumerate() {
        if get_str(option, "name").is_empty() {
            errs.push(required(
                index(&child(&config_path, "options"), i),
                "Option.Name must not be empty",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_pod_dns(&spec, "spec", &mut errs);
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn policy_none_needs_a_config_with_a_nameserver() {
        assert_eq!(
            errors(json!({"dnsPolicy": "None"})),
            ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
        );
        assert_eq!(
            errors(json!({"dnsPolicy": "None", "dnsConfig": {}})),
            ["spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"]
        );
        assert!(
            errors(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"]}}))
                .is_empty()
        );
    }

    #[test]
    fn nameservers_searches_and_options_are_checked() {
        let errs = errors(json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "nope"],
            "searches": ["ok.example.", "Bad_Domain"],
            "options": [{"name": "ndots", "value": "2"}, {"value": "x"}]}}));
        assert!(
            errs[0].starts_with("spec.dnsConfig.nameservers: Invalid value:"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("must not have more than 3 nameservers"));
        assert_eq!(
            errs[1],
            "spec.dnsConfig.nameservers[3]: Invalid value: \"nope\": must be valid IP address"
        );
        assert!(
            errs[2].starts_with("spec.dnsConfig.searches[1]: Invalid value: \"Bad_Domain\""),
            "{errs:?}"
        );
        assert_eq!(
            errs[3],
            "spec.dnsConfig.options[1]: Required value: Option.Name must not be empty"
        );
        assert_eq!(errs.len(), 4);
    }
}
