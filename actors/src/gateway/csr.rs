//! CertificateSigningRequest admission: the requester recorded in a CSR is whoever the
//! request authenticated as, never what the client wrote (the signer trusts it), and the
//! request must hold a certificate request the signer can read.

use base64::Engine;
use serde_json::{json, Value};

use super::auth::UserInfo;
use crate::api::validation::{FieldError, FieldErrorKind};
use crate::api::ApiError;
use crate::pki;

pub const RESOURCE: &str = "certificatesigningrequests";

/// Signer names of client certificates the cluster CA issues (kube's built-in signers).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of kubelets' serving certificates (their :10250 server).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Fill in the requester and check the request before a CSR is created.
pub fn admit_create(body: &mut Value, user: &UserInfo) -> Result<(), ApiError> {
    if !body["spec"].is_object() {
        body["spec"] = json!({});
    }
    let spec = &mut body["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    if user.uid.is_empty() {
        if let Some(o) = spec.as_object_mut() {
            o.remove("uid");
        }
    } else {
        spec["uid"] = json!(user.uid);
    }
    let mut causes = Vec::new();
    match spec.get("signerName").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => {}
        _ => causes.push(FieldError {
            field: "spec.signerName".into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: String::new(),
        }),
    }
    match spec.get("request").and_then(Value::as_str) {
        None | Some("") => causes.push(FieldError {
            field: "spec.request".into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: String::new(),
        }),
        Some(b64) => {
            if let Err(detail) = request_pem(b64).and_then(|pem| {
                pki::csr_subject(&pem)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) {
                causes.push(FieldError {
                    field: "spec.request".into(),
                    kind: FieldErrorKind::Invalid,
                    value: Some("[]byte{...}".into()),
                    detail,
                });
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: "CertificateSigningRequest".into(),
        group: "certificates.k8s.io".into(),
        name: body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        causes,
    })
}

/// Which part of a CSR an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrWrite {
    Main,
    Status,
    Approval,
}

fn is_decision(c: &Value) -> bool {
    matches!(c["type"].as_str(), Some("Approved" | "Denied"))
}

/// What an update of a CSR may change, as kube-apiserver's CSR strategies allow: the
/// spec never changes after creation (the requester in it is what the approver trusts),
/// only the approval subresource approves or denies, and it writes nothing else.
pub fn restrict_update(old: &Value, new: &mut Value, write: CsrWrite) {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    let conditions = |v: &Value| -> Vec<Value> {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_c, new_c) = (conditions(old), conditions(new));
    let merged: Vec<Value> = match write {
        CsrWrite::Main => return,
        CsrWrite::Status => old_c
            .iter()
            .filter(|c| is_decision(c))
            .chain(new_c.iter().filter(|c| !is_decision(c)))
            .cloned()
            .collect(),
        CsrWrite::Approval => new_c
            .iter()
            .filter(|c| is_decision(c))
            .chain(old_c.iter().filter(|c| !is_decision(c)))
            .cloned()
            .collect(),
    };
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    if merged.is_empty() {
        if let Some(s) = new["status"].as_object_mut() {
            s.remove("conditions");
        }
    } else {
        new["status"]["conditions"] = Value::Array(merged);
    }
}

/// The PEM text of a CSR's `spec.request` (base64 in JSON, as every `[]byte` field).
pub fn request_pem(b64: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not a PEM certificate request".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_requester_is_the_authenticated_user_whatever_the_body_says() {
        let (_key, csr) = pki::node_csr("n1").expect("csr");
        let mut body = json!({"metadata": {"name": "c"}, "spec": {
            "request": b64(&csr), "signerName": KUBELET_CLIENT_SIGNER,
            "username": "system:admin", "groups": ["system:masters"]}});
        let user = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        };
        admit_create(&mut body, &user).expect("admitted");
        assert_eq!(body["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(
            body["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
    }

    #[test]
    fn updates_keep_the_spec_and_only_approval_decides() {
        let old = json!({"spec": {"username": "jane", "groups": ["devs"]}, "status": {}});
        let mut main = json!({"spec": {"username": "x", "groups": ["system:bootstrappers"]}});
        restrict_update(&old, &mut main, CsrWrite::Main);
        assert_eq!(main["spec"]["username"], "jane");
        let mut status = json!({"spec": {}, "status": {"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}]}});
        restrict_update(&old, &mut status, CsrWrite::Status);
        assert_eq!(
            status["status"]["conditions"],
            json!([{"type": "Failed", "status": "True"}])
        );
        let mut approval = json!({"spec": {}, "status": {"conditions": [
            {"type": "Approved", "status": "True"}]}});
        restrict_update(&old, &mut approval, CsrWrite::Approval);
        assert_eq!(approval["status"]["conditions"][0]["type"], "Approved");
    }

    #[test]
    fn a_request_that_is_no_csr_is_invalid() {
        let user = UserInfo::insecure_admin();
        let mut body = json!({"metadata": {"name": "c"}, "spec": {
            "request": b64("hello"), "signerName": CLIENT_SIGNER}});
        let err = admit_create(&mut body, &user).expect_err("refused");
        assert_eq!(err.code(), 422);
        assert!(err.to_string().contains("spec.request"), "{err}");
        let mut body = json!({"metadata": {"name": "c"}, "spec": {}});
        let err = admit_create(&mut body, &user).expect_err("refused");
        assert!(err.to_string().contains("spec.signerName"), "{err}");
    }
}
