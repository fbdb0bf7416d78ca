//! The CSR approver and signer (kube-controller-manager's csrapproving and csrsigning):
//! approves a joining node's request for its client certificate and signs approved
//! client-certificate requests with the cluster CA.
//!
//! A request to the kubelet client signer is approved when it comes from a bootstrapper
//! (a node holding the join token) or from the same node renewing, and asks for exactly
//! CN=`system:node:<name>`, O=`system:nodes` with client usages; a malformed one is
//! denied, and one from anybody else waits for an administrator (`kubectl certificate
//! approve`). Requests to the plain client signer always wait for an administrator.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::api::{meta, ApiError};
use crate::gateway::csr::{
    self, CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, RESOURCE,
};
use crate::pki::{self, ClusterCa};
use crate::runtime::{key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Usages a kubelet client certificate may ask for (key encipherment only with RSA keys).
const KUBELET_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];
/// Usages a kubelet serving certificate may ask for.
const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];
/// Kubernetes' floor for `spec.expirationSeconds`.
const MIN_EXPIRATION: Duration = Duration::from_secs(600);

/// What to do about one CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Issued, denied or failed already, or for a signer not ours: nothing to do.
    Nothing,
    Approve,
    Deny(String),
    /// Approved but unsignable: the `Failed` condition, with why.
    Fail(String),
    Sign,
    /// Not ours to approve: an administrator may.
    Wait(String),
}

pub struct CsrSigningController {
    ca: Arc<ClusterCa>,
    /// Validity of signed certificates (shortened by a request's `expirationSeconds`).
    validity: Duration,
}

impl CsrSigningController {
    pub fn new(ca: Arc<ClusterCa>, validity: Duration) -> Self {
        CsrSigningController { ca, validity }
    }

    fn validity_for(&self, csr: &Value) -> Duration {
        match csr
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_u64)
        {
            Some(s) => Duration::from_secs(s)
                .max(MIN_EXPIRATION)
                .min(self.validity),
            None => self.validity,
        }
    }
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"].as_str().unwrap_or("True") == "True")
        })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Why a kubelet client request is malformed, if it is.
fn kubelet_request_problem(csr: &Value) -> Result<String, String> {
    let b64 = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or("");
    let pem = csr::request_pem(b64)?;
    let subject = pki::csr_subject(&pem).map_err(|e| e.to_string())?;
    let node = subject
        .common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "the subject's common name must be {NODE_PREFIX}<node name>, not {:?}",
                subject.common_name
            )
        })?;
    if subject.organizations != [NODES_GROUP] {
        return Err(format!(
            "the subject's organization must be exactly {NODES_GROUP:?}, not {:?}",
            subject.organizations
        ));
    }
    let usages = strings(csr.pointer("/spec/usages"));
    if !usages.iter().any(|u| u == "client auth")
        || usages.iter().any(|u| !KUBELET_USAGES.contains(&u.as_str()))
    {
        return Err(format!(
            "usages must be client auth with digital signature and/or key encipherment, not {usages:?}"
        ));
    }
    Ok(format!("{NODE_PREFIX}{node}"))
}

/// Why a kubelet serving request is not one to approve for `node` (the Node object its
/// common name names), if it is not: it must name only the node's own name and
/// addresses, come from that node, and ask for server authentication.
fn serving_request_problem(csr: &Value, node: Option<&Value>) -> Result<(), String> {
    let b64 = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or("");
    let pem = csr::request_pem(b64)?;
    let subject = pki::csr_subject(&pem).map_err(|e| e.to_string())?;
    let name = subject
        .common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "the subject's common name must be {NODE_PREFIX}<node name>, not {:?}",
                subject.common_name
            )
        })?;
    if subject.organizations != [NODES_GROUP] {
        return Err(format!(
            "the subject's organization must be exactly {NODES_GROUP:?}, not {:?}",
            subject.organizations
        ));
    }
    let usages = strings(csr.pointer("/spec/usages"));
    if !usages.iter().any(|u| u == "server auth")
        || usages.iter().any(|u| !SERVING_USAGES.contains(&u.as_str()))
    {
        return Err(format!(
            "usages must be server auth with digital signature and/or key encipherment, not {usages:?}"
        ));
    }
    let username = csr
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    if username != subject.common_name {
        return Err(format!(
            "user {username:?} may not request a serving certificate for {:?}",
            subject.common_name
        ));
    }
    let node = node.ok_or_else(|| format!("node {name:?} does not exist"))?;
    let mut allowed = vec![name.to_string()];
    if let Some(addresses) = node.pointer("/status/addresses").and_then(Value::as_array) {
        allowed.extend(
            addresses
                .iter()
                .filter_map(|a| a["address"].as_str().map(str::to_string)),
        );
    }
    let sans = pki::csr_sans(&pem).map_err(|e| e.to_string())?;
    if sans.is_empty() {
        return Err("the request names no DNS name or IP address".into());
    }
    match sans.iter().find(|s| !allowed.contains(s)) {
        Some(other) => Err(format!(
            "{other:?} is neither the name nor an address of node {name:?}"
        )),
        None => Ok(()),
    }
}

/// The node a kubelet serving request is for (its common name without the prefix).
pub fn serving_node(csr: &Value) -> Option<String> {
    if csr.pointer("/spec/signerName").and_then(Value::as_str) != Some(KUBELET_SERVING_SIGNER) {
        return None;
    }
    let b64 = csr.pointer("/spec/request").and_then(Value::as_str)?;
    let pem = csr::request_pem(b64).ok()?;
    let subject = pki::csr_subject(&pem).ok()?;
    subject
        .common_name
        .strip_prefix(NODE_PREFIX)
        .map(str::to_string)
}

/// The decision for one CSR, from the object and (for a serving request) the Node it is
/// for.
pub fn decide(csr: &Value, node: Option<&Value>) -> Verdict {
    let issued = csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if issued || has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return Verdict::Nothing;
    }
    let signer = csr
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let approved = has_condition(csr, "Approved");
    match signer {
        KUBELET_CLIENT_SIGNER => {}
        KUBELET_SERVING_SIGNER => {
            return match serving_request_problem(csr, node) {
                Ok(()) if approved => Verdict::Sign,
                Ok(()) => Verdict::Approve,
                // A request that was fine when an administrator approved it stays
                // signable; one that never was fails.
                Err(problem) if approved => Verdict::Fail(problem),
                Err(problem) => Verdict::Wait(problem),
            };
        }
        CLIENT_SIGNER if approved => {
            let b64 = csr
                .pointer("/spec/request")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match csr::request_pem(b64)
                .and_then(|pem| pki::csr_subject(&pem).map_err(|e| e.to_string()))
            {
                Ok(_) => Verdict::Sign,
                Err(e) => Verdict::Fail(e),
            };
        }
        CLIENT_SIGNER => {
            return Verdict::Wait(
                "requests to the client signer are approved by an administrator".into(),
            )
        }
        _ => return Verdict::Nothing,
    }
    let node_user = match kubelet_request_problem(csr) {
        Ok(user) => user,
        Err(problem) if approved => return Verdict::Fail(problem),
        Err(problem) => return Verdict::Deny(problem),
    };
    if approved {
        return Verdict::Sign;
    }
    let username = csr
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    let groups = strings(csr.pointer("/spec/groups"));
    let bootstrapper = groups.iter().any(|g| g == BOOTSTRAPPERS);
    let renewing = username == node_user && groups.iter().any(|g| g == NODES_GROUP);
    if bootstrapper || renewing {
        Verdict::Approve
    } else {
        Verdict::Wait(format!(
            "user {username:?} is neither a bootstrapper nor {node_user:?}; an administrator may approve it"
        ))
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = meta::now_rfc3339();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now})
}

fn with_condition(csr: &Value, cond: Value) -> Value {
    let mut obj = csr.clone();
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    match obj["status"]["conditions"].as_array_mut() {
        Some(cs) => cs.push(cond),
        None => obj["status"]["conditions"] = json!([cond]),
    }
    obj
}

#[async_trait::async_trait]
impl Reconciler for CsrSigningController {
    fn name(&self) -> &'static str {
        "csr-signing-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        // Nodes: a serving request is judged against the addresses of its node.
        vec![InformerSpec::all(RESOURCE), InformerSpec::all("nodes")]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource != RESOURCE {
            // A node that appears or changes its addresses: its pending serving requests.
            let node = meta::name(&change.object).unwrap_or_default();
            return ctx
                .cache(RESOURCE)
                .list()
                .iter()
                .filter(|c| {
                    serving_node(c).as_deref() == Some(node)
                        && decide(c, Some(&change.object)) != Verdict::Nothing
                })
                .map(|c| key_of(c))
                .collect();
        }
        vec![key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(csr) = ctx.cache(RESOURCE).get(key) else {
            return Ok(Action::Done);
        };
        let node = serving_node(&csr).and_then(|n| ctx.cache("nodes").get(&n));
        let verdict = decide(&csr, node.as_deref());
        tracing::debug!(csr = %key, verdict = ?verdict, "csr reviewed");
        let (sub, next) = match &verdict {
            Verdict::Nothing => return Ok(Action::Done),
            Verdict::Wait(why) => {
                ctx.recorder.normal(&csr, "PendingApproval", why).await;
                return Ok(Action::Done);
            }
            Verdict::Approve => (
                "approval",
                with_condition(
                    &csr,
                    condition(
                        "Approved",
                        "AutoApproved",
                        "Auto approving kubelet client certificate after SubjectAccessReview.",
                    ),
                ),
            ),
            Verdict::Deny(why) => {
                ctx.recorder.warning(&csr, "Denied", why).await;
                (
                    "approval",
                    with_condition(&csr, condition("Denied", "InvalidRequest", why)),
                )
            }
            Verdict::Fail(why) => {
                ctx.recorder.warning(&csr, "SigningFailed", why).await;
                (
                    "status",
                    with_condition(&csr, condition("Failed", "SignerValidationFailure", why)),
                )
            }
            Verdict::Sign => {
                let b64 = csr
                    .pointer("/spec/request")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let serving = csr.pointer("/spec/signerName").and_then(Value::as_str)
                    == Some(KUBELET_SERVING_SIGNER);
                let signed = csr::request_pem(b64).and_then(|pem| {
                    let validity = self.validity_for(&csr);
                    if serving {
                        self.ca.sign_serving_csr(&pem, validity)
                    } else {
                        self.ca.sign_client_csr(&pem, validity)
                    }
                    .map_err(|e| e.to_string())
                });
                let mut obj = (*csr).clone();
                match signed {
                    Ok(cert) => {
                        obj["status"]["certificate"] = json!(
                            base64::engine::general_purpose::STANDARD.encode(cert.as_bytes())
                        );
                        ctx.recorder
                            .normal(&csr, "Issued", "certificate signed by the cluster CA")
                            .await;
                    }
                    Err(why) => {
                        ctx.recorder.warning(&csr, "SigningFailed", &why).await;
                        obj = with_condition(
                            &obj,
                            condition("Failed", "SignerValidationFailure", &why),
                        );
                    }
                }
                ("status", obj)
            }
        };
        let name = meta::name(&csr).unwrap_or_default();
        match ctx
            .client
            .update(RESOURCE, None, name, Some(sub), next)
            .await
        {
            // The next step follows from the watch event of this write.
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            // Changed under us: its own event queues it again.
            Err(ApiError::Conflict { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(cn_node: &str, username: &str, groups: &[&str], usages: &[&str]) -> Value {
        let (_key, pem) = pki::node_csr(cn_node).expect("csr");
        json!({"metadata": {"name": "c1"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": KUBELET_CLIENT_SIGNER,
            "username": username, "groups": groups, "usages": usages}})
    }

    const USAGES: &[&str] = &["digital signature", "client auth"];

    fn serving_csr(node: &str, username: &str, sans: &[&str]) -> Value {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let (_key, pem) = pki::node_serving_csr(node, &sans).expect("csr");
        json!({"metadata": {"name": "s1"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": KUBELET_SERVING_SIGNER,
            "username": username, "groups": ["system:nodes"],
            "usages": ["digital signature", "server auth"]}})
    }

    #[test]
    fn a_node_asking_to_serve_its_own_name_and_addresses_is_approved_then_signed() {
        let node = json!({"metadata": {"name": "n1"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}]}});
        let c = serving_csr("n1", "system:node:n1", &["n1", "10.0.0.5"]);
        assert_eq!(serving_node(&c).as_deref(), Some("n1"));
        assert_eq!(decide(&c, Some(&node)), Verdict::Approve);
        let approved = with_condition(&c, condition("Approved", "AutoApproved", ""));
        assert_eq!(decide(&approved, Some(&node)), Verdict::Sign);
        let ca = ClusterCa::generate("test-ca").expect("ca");
        let pem = csr::request_pem(approved["spec"]["request"].as_str().unwrap()).unwrap();
        let cert = ca
            .sign_serving_csr(&pem, Duration::from_secs(3600))
            .expect("signed");
        assert!(cert.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn a_serving_request_for_another_address_or_from_another_user_waits() {
        let node = json!({"metadata": {"name": "n1"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.5"}]}});
        let foreign = serving_csr("n1", "system:node:n1", &["n1", "10.0.0.6"]);
        assert!(matches!(decide(&foreign, Some(&node)), Verdict::Wait(_)));
        let stranger = serving_csr("n1", "system:node:n2", &["n1"]);
        assert!(matches!(decide(&stranger, Some(&node)), Verdict::Wait(_)));
        let unknown = serving_csr("n1", "system:node:n1", &["n1"]);
        assert!(matches!(decide(&unknown, None), Verdict::Wait(_)));
    }

    #[test]
    fn a_bootstrapper_asking_for_a_node_certificate_is_approved_then_signed() {
        let c = csr_for(
            "n1",
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:authenticated"],
            USAGES,
        );
        assert_eq!(decide(&c, None), Verdict::Approve);
        let approved = with_condition(&c, condition("Approved", "AutoApproved", ""));
        assert_eq!(decide(&approved, None), Verdict::Sign);
        let mut issued = approved.clone();
        issued["status"]["certificate"] = json!("Zm9v");
        assert_eq!(decide(&issued, None), Verdict::Nothing);
    }

    #[test]
    fn a_node_renews_only_its_own_certificate() {
        let own = csr_for("n1", "system:node:n1", &["system:nodes"], USAGES);
        assert_eq!(decide(&own, None), Verdict::Approve);
        let other = csr_for("n2", "system:node:n1", &["system:nodes"], USAGES);
        assert!(matches!(decide(&other, None), Verdict::Wait(_)));
        let stranger = csr_for("n1", "jane", &["devs"], USAGES);
        assert!(matches!(decide(&stranger, None), Verdict::Wait(_)));
    }

    #[test]
    fn server_usages_are_denied_and_unsignable_approvals_fail() {
        let c = csr_for(
            "n1",
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            &["digital signature", "server auth"],
        );
        assert!(matches!(decide(&c, None), Verdict::Deny(_)));
        let approved = with_condition(&c, condition("Approved", "ByAdmin", ""));
        assert!(matches!(decide(&approved, None), Verdict::Fail(_)));
    }

    #[test]
    fn other_signers_are_left_alone_and_client_signer_waits_for_an_admin() {
        let mut c = csr_for("n1", "jane", &["devs"], USAGES);
        c["spec"]["signerName"] = json!("example.com/other");
        assert_eq!(decide(&c, None), Verdict::Nothing);
        c["spec"]["signerName"] = json!(CLIENT_SIGNER);
        assert!(matches!(decide(&c, None), Verdict::Wait(_)));
        let approved = with_condition(&c, condition("Approved", "ByAdmin", ""));
        assert_eq!(decide(&approved, None), Verdict::Sign);
    }

    #[test]
    fn expiration_seconds_shortens_but_never_lengthens_validity() {
        let ca = Arc::new(ClusterCa::generate("t").expect("ca"));
        let ctl = CsrSigningController::new(ca, Duration::from_secs(86_400));
        let mut c = json!({"spec": {"expirationSeconds": 3600}});
        assert_eq!(ctl.validity_for(&c), Duration::from_secs(3600));
        c["spec"]["expirationSeconds"] = json!(10);
        assert_eq!(ctl.validity_for(&c), MIN_EXPIRATION);
        c["spec"]["expirationSeconds"] = json!(10_000_000);
        assert_eq!(ctl.validity_for(&c), Duration::from_secs(86_400));
    }
}
