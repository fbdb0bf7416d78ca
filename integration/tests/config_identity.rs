//! ConfigMaps, Secrets and ServiceAccounts as a user meets them: the machine's kubectl
//! (`create configmap`, `create secret generic|tls|docker-registry`, `create
//! serviceaccount`, `create token`), the official Python client, and the checks a real
//! API server makes (immutability, the 1 MiB limit, the keys a secret type needs).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use skiff_integration::{call, client, require_kubectl, Kubectl, TestCluster};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn causes(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn kubectl_creates_config_maps_and_secrets_and_shows_them_as_kubernetes_does() {
    require_kubectl();
    let c = TestCluster::api_only();
    let k = Kubectl(&c.kubeconfig);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.properties");
    std::fs::write(&file, "color=blue\n").expect("write");
    let from_file = format!("--from-file={}", file.display());
    k.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=mode=fast",
        &from_file,
    ]);
    let cm = json_of(&k.ok(&["get", "configmap", "app", "-o", "json"]));
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(cm["data"]["app.properties"], "color=blue\n");
    let table = k.ok(&["get", "configmaps"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["app", "2"])),
        "{table}"
    );

    k.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cr3t",
        "--from-literal=user=admin",
    ]);
    let yaml = k.ok(&["get", "secret", "db", "-o", "yaml"]);
    assert!(
        yaml.contains(&format!("password: {}", b64("s3cr3t"))),
        "{yaml}"
    );
    assert!(yaml.contains("type: Opaque"), "{yaml}");
    assert!(!yaml.contains("s3cr3t"), "plaintext in {yaml}");

    let cert = c_pem_pair(dir.path());
    k.ok(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        &format!("--cert={}", cert.0.display()),
        &format!("--key={}", cert.1.display()),
    ]);
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server=registry.example",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let reg = json_of(&k.ok(&["get", "secret", "regcred", "-o", "json"]));
    assert_eq!(reg["type"], "kubernetes.io/dockerconfigjson");
    let config = json_of(&unb64(&reg["data"][".dockerconfigjson"]));
    assert_eq!(config["auths"]["registry.example"]["username"], "u");
    let secrets = k.ok(&["get", "secrets"]);
    let header: Vec<&str> = secrets
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"], "{secrets}");
    assert!(
        secrets.lines().any(|l| l.split_whitespace().take(3).eq([
            "web-tls",
            "kubernetes.io/tls",
            "2"
        ])),
        "{secrets}"
    );
    // A field selector on the type, as Kubernetes serves for secrets.
    let tls_only = k.ok(&[
        "get",
        "secrets",
        "--field-selector=type=kubernetes.io/tls",
        "-o",
        "name",
    ]);
    assert_eq!(tls_only.trim(), "secret/web-tls");

    k.ok(&["create", "serviceaccount", "builder"]);
    let sas = k.ok(&["get", "serviceaccount", "builder"]);
    let header: Vec<&str> = sas
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SECRETS", "AGE"], "{sas}");
}

/// A self-signed certificate and key for `kubectl create secret tls`, written by rcgen.
fn c_pem_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = skiff_actors::pki::ClusterCa::generate("web").expect("ca");
    let now = std::time::SystemTime::now();
    let cred = ca
        .issue_client("web", &[], now, now + Duration::from_secs(3600))
        .expect("cert");
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, &cred.cert_pem).expect("write");
    std::fs::write(&key, &cred.key_pem).expect("write");
    (crt, key)
}

#[tokio::test]
async fn immutable_data_oversized_secrets_and_incomplete_tls_secrets_are_refused() {
    let c = TestCluster::api_only();
    let url = c.url("/api/v1/namespaces/default/secrets");
    let (code, body) = call(client().post(&url).json(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "frozen"},
        "stringData": {"k": "v1"}, "immutable": true})))
    .await;
    assert_eq!(code, 201, "{body}");
    assert!(body.get("stringData").is_none(), "{body}");
    assert_eq!(body["data"]["k"], b64("v1"));
    let mut changed = body.clone();
    changed["data"]["k"] = json!(b64("v2"));
    let (code, status) = call(
        client()
            .put(c.url("/api/v1/namespaces/default/secrets/frozen"))
            .json(&changed),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), ["data"], "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("field is immutable when `immutable` is set")),
        "{status}"
    );
    // Labels may still change.
    let mut relabelled = body.clone();
    relabelled["metadata"]["labels"] = json!({"tier": "db"});
    let (code, status) = call(
        client()
            .put(c.url("/api/v1/namespaces/default/secrets/frozen"))
            .json(&relabelled),
    )
    .await;
    assert_eq!(code, 200, "{status}");

    let big = "x".repeat(1024 * 1024 + 1);
    let (code, status) = call(client().post(&url).json(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"},
        "stringData": {"blob": big}})))
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), ["data"], "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("data: Too long: may not be more than 1048576 bytes")),
        "{status}"
    );

    let (code, status) = call(client().post(&url).json(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "half-tls"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": b64("cert")}})))
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), ["data[tls.key]"], "{status}");

    let (code, status) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/configmaps"))
            .json(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "bad-key"}, "data": {"../etc": "x"}})),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["data[../etc]", "data[../etc]"],
        "{status}"
    );
}

/// Every file under `dir`, read whole.
fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let value = format!("plain-{}-{nanos}", std::process::id());
    let c = TestCluster::start_in(dir.path(), |cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec!["namespace".into()];
    });
    let (code, body) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/secrets"))
            .json(&json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "vault"}, "stringData": {"key": value}})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // Reads and lists show the plaintext (base64 in `data`, as always).
    let (_, got) = call(client().get(c.url("/api/v1/namespaces/default/secrets/vault"))).await;
    assert_eq!(unb64(&got["data"]["key"]), value);
    let mut c = c;
    c.stop();
    let store = dir.path().join("store");
    for needle in [value.clone(), b64(&value)] {
        assert_eq!(
            files_contain(&store, needle.as_bytes()),
            Vec::<String>::new(),
            "plaintext {needle} on disk"
        );
    }
    assert!(!files_contain(&store, b"k8s:enc:aesgcm:v1:key1:").is_empty());

    // Rotation: a new key first, the old one after it; the restart rewrites the secret.
    let config = dir.path().join("pki").join("encryption-config.yaml");
    let text = std::fs::read_to_string(&config).expect("config");
    let old_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("- name: key1"))
        .expect("key1")
        .to_string();
    let indent = &old_line[..old_line.len() - old_line.trim_start().len()];
    let new_key = b64("0123456789abcdef0123456789abcdef");
    let rotated = text.replace(
        &old_line,
        &format!("{indent}- name: key2\n{indent}  secret: {new_key}\n{old_line}"),
    );
    std::fs::write(&config, &rotated).expect("write");
    let mut c = TestCluster::start_in(dir.path(), |cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec!["namespace".into()];
    });
    let (_, got) = call(client().get(c.url("/api/v1/namespaces/default/secrets/vault"))).await;
    assert_eq!(unb64(&got["data"]["key"]), value);
    c.stop();
    // Without the old key the secret still reads: it was rewritten with the new one.
    let key1_block: String = {
        let start = rotated.find(&old_line).expect("old key");
        let rest = &rotated[start..];
        let end = rest[old_line.len()..]
            .find('\n')
            .map(|i| old_line.len() + i + 1)
            .unwrap_or(rest.len());
        // The key1 entry and its secret line.
        let secret_end = rest[end..]
            .find('\n')
            .map(|i| end + i + 1)
            .unwrap_or(rest.len());
        rest[..secret_end].to_string()
    };
    std::fs::write(&config, rotated.replace(&key1_block, "")).expect("write");
    let c = TestCluster::start_in(dir.path(), |cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec!["namespace".into()];
    });
    let (code, got) = call(client().get(c.url("/api/v1/namespaces/default/secrets/vault"))).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(unb64(&got["data"]["key"]), value);
}

/// What the official Python client's ConfigMap and Secret calls see: create, read, list
/// by label, patch, replace, delete; `string_data` turned into base64 `data`.
const PYTHON: &str = r#"
import base64, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
meta = client.V1ObjectMeta(name="py-config", labels={"app": "py"})
v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=meta, data={"color": "blue"}))
cm = v1.read_namespaced_config_map("py-config", "default")
assert cm.data == {"color": "blue"}, cm.data
listed = v1.list_namespaced_config_map("default", label_selector="app=py").items
assert [c.metadata.name for c in listed] == ["py-config"], listed
v1.patch_namespaced_config_map("py-config", "default", {"data": {"size": "L"}})
cm = v1.read_namespaced_config_map("py-config", "default")
cm.data["color"] = "red"
cm = v1.replace_namespaced_config_map("py-config", "default", cm)
assert cm.data == {"color": "red", "size": "L"}, cm.data

secret = client.V1Secret(metadata=client.V1ObjectMeta(name="py-secret"), string_data={"password": "s3cret"}, type="Opaque")
v1.create_namespaced_secret("default", secret)
got = v1.read_namespaced_secret("py-secret", "default")
assert got.string_data is None and base64.b64decode(got.data["password"]) == b"s3cret", got
try:
    v1.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(name="py-tls"), type="kubernetes.io/tls", data={"tls.crt": ""}))
    raise SystemExit("an incomplete TLS secret was accepted")
except ApiException as e:
    assert e.status == 422, e

v1.delete_namespaced_config_map("py-config", "default")
v1.delete_namespaced_secret("py-secret", "default")
try:
    v1.read_namespaced_config_map("py-config", "default")
    raise SystemExit("the deleted ConfigMap is still there")
except ApiException as e:
    assert e.status == 404, e
print("ok")
"#;

#[test]
fn the_python_client_manages_config_maps_and_secrets() {
    let c = TestCluster::api_only();
    assert_eq!(
        skiff_integration::python_client(PYTHON, &c.kubeconfig, &[]),
        "ok"
    );
}
