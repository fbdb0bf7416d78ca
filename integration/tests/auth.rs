//! TLS and authentication against a real secure cluster: HTTPS with the cluster's own CA,
//! bearer tokens, client certificates, 401 for everything else, and the machine's kubectl
//! with nothing but the kubeconfig skiff wrote.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use skiff_actors::pki::ClusterCa;
use skiff_integration::{call, tls_client, SkiffProcess, TestCluster};

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
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
