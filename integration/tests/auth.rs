//! TLS and authentication against a real secure cluster: HTTPS with the cluster's own CA,
//! bearer tokens, client certificates, 401 for everything else, and the machine's kubectl
//! with nothing but the kubeconfig skiff wrote.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use skiff_actors::pki::ClusterCa;
use skiff_integration::{call, tls_client, SkiffProcess, TestCluster};

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = skiff_integration::kubectl(kubeconfig, args);
    (code == 0, out, err)
}

fn assert_unauthorized(status: u16, body: &Value) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["reason"], "Unauthorized", "{body}");
    assert_eq!(body["code"], 401, "{body}");
    assert!(body.get("items").is_none(), "no data with a 401: {body}");
}

async fn whoami(client: &reqwest::Client, c: &TestCluster) -> (u16, Value) {
    call(
        client
            .post(c.url("/apis/authentication.k8s.io/v1/selfsubjectreviews"))
            .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    )
    .await
}

fn groups(review: &Value) -> Vec<String> {
    review["status"]["userInfo"]["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn requests_without_a_valid_token_get_401_and_no_data() {
    let c = TestCluster::start_secure();
    assert!(c.url.starts_with("https://"), "{}", c.url);
    let anonymous = tls_client(&c.ca_pem(), None, None);
    for path in [
        "/api/v1/namespaces",
        "/api/v1/namespaces/default/pods",
        "/version",
        "/api",
        "/apis",
        "/healthz",
        "/metrics",
        "/openapi/v2",
    ] {
        let (status, body) = call(anonymous.get(c.url(path))).await;
        assert_unauthorized(status, &body);
    }
    let wrong = tls_client(&c.ca_pem(), Some("not-the-token"), None);
    let (status, body) = call(wrong.get(c.url("/api/v1/namespaces"))).await;
    assert_unauthorized(status, &body);
    // A write with a wrong token changes nothing.
    let (status, body) =
        call(wrong.post(c.url("/api/v1/namespaces")).json(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sneaky"}}),
        ))
        .await;
    assert_unauthorized(status, &body);

    let admin = c.admin_client();
    let (status, body) = call(admin.get(c.url("/api/v1/namespaces/sneaky"))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(admin.get(c.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["items"].as_array().is_some_and(|i| !i.is_empty()));
    let (status, review) = whoami(&admin, &c).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "admin");
    assert_eq!(
        groups(&review),
        vec!["system:masters", "system:authenticated"]
    );
}

#[actix_rt::test]
async fn plain_http_is_not_served_by_a_secure_cluster() {
    let c = TestCluster::start_secure();
    let plain = c.url.replacen("https://", "http://", 1);
    let resp = skiff_integration::client()
        .get(format!("{plain}/api/v1/namespaces"))
        .send()
        .await;
    // Whatever the TLS listener makes of it, no API answer comes back.
    if let Ok(r) = resp {
        assert_ne!(r.status().as_u16(), 200);
    }
}

#[actix_rt::test]
async fn client_certificates_from_the_cluster_ca_authenticate_their_subject() {
    let c = TestCluster::start_secure();
    let jane = c.client_cert("jane", &["devs"]);
    let client = tls_client(&c.ca_pem(), None, Some(&jane));
    let (status, review) = whoami(&client, &c).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "jane");
    assert_eq!(groups(&review), vec!["devs", "system:authenticated"]);
    // Known but not granted anything: authorization, not authentication, refuses it.
    let (status, body) = call(client.get(c.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 403, "{body}");
    let admin = c.client_cert("root", &["system:masters"]);
    let client = tls_client(&c.ca_pem(), None, Some(&admin));
    let (status, body) = call(client.get(c.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn foreign_and_expired_client_certificates_get_401() {
    let c = TestCluster::start_secure();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);

    let foreign_ca = ClusterCa::generate("someone-else").expect("ca");
    let foreign = foreign_ca
        .issue_client("admin", &["system:masters"], now - hour, now + hour)
        .expect("cert");
    let client = tls_client(&c.ca_pem(), None, Some(&foreign));
    let (status, body) = call(client.get(c.url("/api/v1/namespaces"))).await;
    assert_unauthorized(status, &body);

    let ca = &c.credentials.as_ref().expect("secure").ca;
    let expired = ca
        .issue_client("admin", &["system:masters"], now - 3 * hour, now - hour)
        .expect("cert");
    let client = tls_client(&c.ca_pem(), None, Some(&expired));
    let (status, body) = call(client.get(c.url("/api/v1/namespaces"))).await;
    assert_unauthorized(status, &body);

    let not_yet = ca
        .issue_client("admin", &["system:masters"], now + hour, now + 2 * hour)
        .expect("cert");
    let client = tls_client(&c.ca_pem(), None, Some(&not_yet));
    let (status, body) = call(client.get(c.url("/api/v1/namespaces"))).await;
    assert_unauthorized(status, &body);
}

#[actix_rt::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    let c = TestCluster::start_secure();
    let other = ClusterCa::generate("someone-else").expect("ca");
    let client = tls_client(other.cert_pem(), Some(&c.admin_token()), None);
    let err = client
        .get(c.url("/api/v1/namespaces"))
        .send()
        .await
        .expect_err("the handshake must fail");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
}

#[actix_rt::test]
async fn kubectl_with_the_written_kubeconfig_works_over_tls_and_not_against_another_ca() {
    let c = TestCluster::start_secure();
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    assert!(text.contains("https://"), "{text}");
    assert!(text.contains("certificate-authority-data"), "{text}");
    let (ok, out, err) = kubectl(&c.kubeconfig, &["get", "ns"]);
    assert!(ok, "kubectl get ns: {err}");
    assert!(out.contains("kube-system"), "{out}");
    let (ok, out, err) = kubectl(&c.kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "kubectl auth whoami: {err}");
    let review: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(review["status"]["userInfo"]["username"], "admin");

    // The same kubeconfig pointed at a second cluster, whose certificate another CA signed.
    let other = TestCluster::start_secure();
    let moved = c.data_dir.join("kubeconfig-elsewhere");
    std::fs::write(&moved, text.replace(&c.url, &other.url)).expect("write");
    let (ok, _, err) = kubectl(&moved, &["get", "ns"]);
    assert!(!ok, "kubectl trusted a foreign server");
    assert!(
        err.contains("x509") || err.contains("certificate"),
        "not a certificate error: {err}"
    );
}

#[actix_rt::test]
async fn restart_reuses_the_ca_and_tokens() {
    let c = TestCluster::start_secure();
    let (ca, token) = (c.ca_pem(), c.admin_token());
    let jane = c.client_cert("jane", &["devs"]);
    let c = c.restart();
    assert_eq!(c.ca_pem(), ca);
    assert_eq!(c.admin_token(), token);
    // Credentials handed out before the restart still work.
    let (status, body) =
        call(tls_client(&ca, Some(&token), None).get(c.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, review) = whoami(&tls_client(&ca, None, Some(&jane)), &c).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "jane");
    let (ok, _, err) = kubectl(&c.kubeconfig, &["get", "ns"]);
    assert!(ok, "kubectl after restart: {err}");
}

#[test]
fn skiff_up_serves_https_and_kubectl_needs_only_the_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SkiffProcess::start_secure(dir.path());
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let (ok, out, err) = kubectl(&server.kubeconfig, &["get", "ns"]);
    assert!(ok, "kubectl get ns: {err}");
    assert!(out.contains("default"), "{out}");
    for file in [
        "ca.crt",
        "ca.key",
        "apiserver.crt",
        "apiserver.key",
        "tokens.csv",
        "join-token",
    ] {
        assert!(dir.path().join("pki").join(file).exists(), "{file} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    for secret in ["ca.key", "apiserver.key", "tokens.csv", "join-token"] {
        let mode = std::fs::metadata(dir.path().join("pki").join(secret))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is readable by others");
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kubelet_csr(name: &str, request_pem: &str, usages: &[&str]) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": b64(request_pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": usages,
            // A client's word on who is asking is ignored: the gateway writes the truth.
            "username": "system:bootstrap:forged", "groups": ["system:bootstrappers"]}})
}

#[actix_rt::test]
async fn a_wrong_join_token_cannot_ask_for_a_node_certificate() {
    use skiff_actors::client::bootstrap::{request_node_credential, BootstrapError};
    let c = TestCluster::start_secure();
    let right = c.join_token();
    let (id, _) = right.split_once('.').expect("token shape");
    let wrong = format!("{id}.0000000000000000");
    let (_key, pem) = skiff_actors::pki::node_csr("n1").expect("csr");
    let client = tls_client(&c.ca_pem(), Some(&wrong), None);
    let (status, body) = call(
        client
            .post(c.url("/apis/certificates.k8s.io/v1/certificatesigningrequests"))
            .json(&kubelet_csr(
                "sneaky",
                &pem,
                &["digital signature", "client auth"],
            )),
    )
    .await;
    assert_unauthorized(status, &body);
    let err = request_node_credential(&c.url, &c.ca_pem(), &wrong, "n1", Duration::from_secs(5))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            BootstrapError::Api(skiff_actors::api::ApiError::Unauthorized)
        ),
        "{err:?}"
    );
    let (status, list) = call(
        c.admin_client()
            .get(c.url("/apis/certificates.k8s.io/v1/certificatesigningrequests")),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
}

#[actix_rt::test]
async fn the_join_token_gets_a_signed_node_certificate_that_authenticates_the_node() {
    use skiff_actors::client::bootstrap::{discover_ca, request_node_credential};
    let c = TestCluster::start_secure();
    // The node starts from the server's address, the join token and the CA's pin only.
    let pin = c
        .credentials
        .as_ref()
        .expect("secure")
        .ca
        .cert_hash()
        .expect("pin");
    let ca_pem = discover_ca(&c.url, &pin).await.expect("CA discovered");
    assert_eq!(
        ca_pem.split_whitespace().collect::<String>(),
        c.ca_pem().split_whitespace().collect::<String>()
    );
    let cred = request_node_credential(
        &c.url,
        &ca_pem,
        &c.join_token(),
        "worker-7",
        Duration::from_secs(30),
    )
    .await
    .expect("node credential");
    let node = tls_client(&c.ca_pem(), None, Some(&cred));
    let (status, review) = whoami(&node, &c).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:node:worker-7"
    );
    assert_eq!(
        groups(&review),
        vec!["system:nodes", "system:authenticated"]
    );

    // With its certificate, the node renews it without the join token.
    let as_node = skiff_actors::client::HttpClient::with_credentials(
        &c.url,
        &skiff_actors::client::Credentials {
            ca_pem: Some(ca_pem.clone().into_bytes()),
            identity_pem: Some(format!("{}\n{}", cred.cert_pem, cred.key_pem).into_bytes()),
            token: None,
        },
    )
    .expect("client");
    let renewed = skiff_actors::client::bootstrap::request_with(
        &as_node,
        "worker-7",
        Duration::from_secs(30),
    )
    .await
    .expect("renewed");
    assert_ne!(renewed.cert_pem, cred.cert_pem);
    let (_, review) = whoami(&tls_client(&ca_pem, None, Some(&renewed)), &c).await;
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:node:worker-7"
    );

    // The CSR records who asked (the bootstrapper), approved by the controller.
    let (_, list) = call(
        c.admin_client()
            .get(c.url("/apis/certificates.k8s.io/v1/certificatesigningrequests")),
    )
    .await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{list}");
    let csr = items
        .iter()
        .find(|i| i["spec"]["username"] != "system:node:worker-7")
        .expect("the bootstrap request");
    let (id, _) = c
        .join_token()
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("shape");
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
}

#[actix_rt::test]
async fn a_node_with_the_wrong_ca_pin_learns_nothing() {
    use skiff_actors::client::bootstrap::{discover_ca, BootstrapError};
    let c = TestCluster::start_secure();
    let other = ClusterCa::generate("someone-else").expect("ca");
    let err = discover_ca(&c.url, &other.cert_hash().expect("pin"))
        .await
        .expect_err("pin mismatch");
    assert!(matches!(err, BootstrapError::PinMismatch { .. }), "{err:?}");
}

#[actix_rt::test]
async fn only_bootstrappers_get_node_certificates_approved_and_bad_requests_are_denied() {
    let c = TestCluster::start_secure();
    let csrs = c.url("/apis/certificates.k8s.io/v1/certificatesigningrequests");
    let admin = c.admin_client();
    let usages = ["digital signature", "client auth"];

    // RBAC lets jane request certificates and write them (spec and status), but she is
    // not a bootstrapper: what she writes must still not get her one.
    let rbac = c.url("/apis/rbac.authorization.k8s.io/v1");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "csr-writer"},
        "rules": [{"apiGroups": ["certificates.k8s.io"],
            "resources": ["certificatesigningrequests", "certificatesigningrequests/status"],
            "verbs": ["create", "get", "list", "watch", "update"]}]});
    let (status, body) = call(admin.post(format!("{rbac}/clusterroles")).json(&role)).await;
    assert_eq!(status, 201, "{body}");
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "jane-writes-csrs"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "csr-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]});
    let (status, body) = call(
        admin
            .post(format!("{rbac}/clusterrolebindings"))
            .json(&binding),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // jane claims to be a bootstrapper in the body; the gateway records jane.
    let jane = tls_client(&c.ca_pem(), None, Some(&c.client_cert("jane", &["devs"])));
    let (_key, pem) = skiff_actors::pki::node_csr("victim").expect("csr");
    let (status, body) = call(
        jane.post(&csrs)
            .json(&kubelet_csr("by-jane", &pem, &usages)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["username"], "jane");
    // The controller has looked at it once its event is there; it must still be pending.
    skiff_integration::eventually(Duration::from_secs(20), "the pending event", || {
        let admin = admin.clone();
        let url = c.url("/api/v1/namespaces/default/events");
        async move {
            let (_, events) = call(admin.get(url)).await;
            events["items"].as_array()?.iter().find(|e| {
                e["involvedObject"]["name"] == "by-jane" && e["reason"] == "PendingApproval"
            })?;
            Some(())
        }
    })
    .await;
    let (_, csr) = call(admin.get(format!("{csrs}/by-jane"))).await;
    assert!(csr["status"].get("certificate").is_none(), "{csr}");
    assert!(csr["status"].get("conditions").is_none(), "{csr}");
    // Rewriting the requester afterwards changes nothing: the spec is immutable.
    let mut forged = csr.clone();
    forged["spec"]["username"] = json!("system:bootstrap:abcdef");
    forged["spec"]["groups"] = json!(["system:bootstrappers"]);
    let (status, body) = call(jane.put(format!("{csrs}/by-jane")).json(&forged)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["username"], "jane");
    // Nor can the status subresource approve it.
    let mut approved = body.clone();
    approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True",
        "reason": "Self", "message": "trust me"}]});
    let (status, body) = call(jane.put(format!("{csrs}/by-jane/status")).json(&approved)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["status"].get("conditions").is_none(), "{body}");

    // A bootstrapper asking for a server certificate is denied, with the reason.
    let boot = tls_client(&c.ca_pem(), Some(&c.join_token()), None);
    let (_key, pem) = skiff_actors::pki::node_csr("n2").expect("csr");
    let (status, body) = call(boot.post(&csrs).json(&kubelet_csr(
        "serving",
        &pem,
        &["digital signature", "server auth"],
    )))
    .await;
    assert_eq!(status, 201, "{body}");
    let denied = skiff_integration::eventually(Duration::from_secs(20), "denial", || {
        let admin = admin.clone();
        let url = format!("{csrs}/serving");
        async move {
            let (_, csr) = call(admin.get(url)).await;
            let cond = csr["status"]["conditions"].as_array()?.first()?.clone();
            Some(cond)
        }
    })
    .await;
    assert_eq!(denied["type"], "Denied", "{denied}");
    assert!(
        denied["message"].as_str().unwrap_or("").contains("usages"),
        "{denied}"
    );

    // A CSR with no readable request is refused at the door.
    let mut garbage = kubelet_csr("garbage", "hello", &usages);
    garbage["spec"]["request"] = json!(b64("not a csr"));
    let (status, body) = call(boot.post(&csrs).json(&garbage)).await;
    assert_eq!(status, 422, "{body}");
}

#[actix_rt::test]
async fn kubectl_certificate_approve_issues_a_client_certificate() {
    let c = TestCluster::start_secure();
    let (key, pem) = skiff_actors::pki::client_csr("dana", Some("ops")).expect("csr");
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "dana"},
        "spec": {"request": b64(&pem), "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["client auth"]}});
    let file = c.data_dir.join("dana-csr.json");
    std::fs::write(&file, csr.to_string()).expect("write");
    let (ok, _, err) = kubectl(
        &c.kubeconfig,
        &["create", "-f", file.to_str().expect("utf8")],
    );
    assert!(ok, "create: {err}");
    let (ok, out, err) = kubectl(&c.kubeconfig, &["certificate", "approve", "dana"]);
    assert!(ok, "approve: {err}");
    assert!(out.contains("approved"), "{out}");
    let admin = c.admin_client();
    let url = c.url("/apis/certificates.k8s.io/v1/certificatesigningrequests/dana");
    let cert = skiff_integration::eventually(Duration::from_secs(20), "the certificate", || {
        let (admin, url) = (admin.clone(), url.clone());
        async move {
            let (_, csr) = call(admin.get(url)).await;
            csr["status"]["certificate"].as_str().map(str::to_string)
        }
    })
    .await;
    let (ok, out, err) = kubectl(&c.kubeconfig, &["get", "csr", "dana"]);
    assert!(ok, "get csr: {err}");
    assert!(
        out.contains("kubernetes.io/kube-apiserver-client") && out.contains("Approved,Issued"),
        "{out}"
    );
    use base64::Engine;
    let cert_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert)
            .expect("base64"),
    )
    .expect("pem");
    let dana = skiff_actors::pki::Credential {
        cert_pem,
        key_pem: key,
    };
    let (status, review) = whoami(&tls_client(&c.ca_pem(), None, Some(&dana)), &c).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["userInfo"]["username"], "dana");
    assert_eq!(groups(&review), vec!["ops", "system:authenticated"]);
}
