//! Service accounts as a user meets them on a secure cluster: `kubectl create token`
//! (kubectl 1.33 and 1.27) and the token used with kubectl and HTTP, tokens bound to a
//! pod refused once the pod is gone, expired and garbage tokens refused, the `default`
//! account and `kube-root-ca.crt` in a new namespace, the `kubernetes` Service and
//! Endpoints, the ServiceAccount admission of pods, legacy token Secrets, the issuer's
//! OIDC discovery, and the official Python client's TokenRequest call.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::gateway::serviceaccount::token::{
    self, Claims, KubernetesClaim, ObjectRef, TokenIssuer,
};
use skiff_integration::{call, eventually, kubectl, require_kubectl, tls_client, TestCluster};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const WAIT: Duration = Duration::from_secs(20);

/// A secure cluster with the service account controllers (no nodes, no scheduler).
fn cluster() -> TestCluster {
    TestCluster::start_secure_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = [
            "namespace",
            "garbagecollector",
            "serviceaccount",
            "serviceaccount-token",
            "root-ca-cert-publisher",
            "kubernetes-service",
        ]
        .map(String::from)
        .to_vec();
    })
}

/// Run one kubectl binary against the admin kubeconfig.
fn kubectl_bin(bin: &str, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(c: &TestCluster, args: &[&str]) -> String {
    let (code, out, err) = kubectl(&c.kubeconfig, args);
    assert_eq!(code, 0, "kubectl {args:?}: {out}{err}");
    out
}

async fn whoami(c: &TestCluster, token: &str) -> (u16, Value) {
    call(
        tls_client(&c.ca_pem(), Some(token), None)
            .post(c.url("/apis/authentication.k8s.io/v1/selfsubjectreviews"))
            .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    )
    .await
}

fn username(review: &Value) -> &str {
    review["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
}

async fn get(c: &TestCluster, path: &str) -> (u16, Value) {
    call(c.admin_client().get(c.url(path))).await
}

#[tokio::test]
async fn kubectl_create_token_authenticates_as_the_service_account_until_it_is_deleted() {
    require_kubectl();
    let c = cluster();
    ok(&c, &["create", "namespace", "sa-one"]);
    ok(&c, &["-n", "sa-one", "create", "serviceaccount", "builder"]);
    let (code, out, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &["-n", "sa-one", "create", "token", "builder"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let token = out.trim().to_string();

    // kubectl itself, with nothing but the token.
    let (code, out, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &["--token", &token, "auth", "whoami", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let review: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(username(&review), "system:serviceaccount:sa-one:builder");
    let groups = review["status"]["userInfo"]["groups"].clone();
    assert_eq!(
        groups,
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:sa-one",
            "system:authenticated"
        ])
    );
    // RBAC grants a fresh account nothing.
    let (code, _, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &["--token", &token, "-n", "sa-one", "get", "secrets"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "User \"system:serviceaccount:sa-one:builder\" cannot list resource \"secrets\""
        ),
        "{err}"
    );

    // The older kubectl, with a duration, an audience and a too-short duration.
    let (code, out, err) = kubectl_bin(
        KUBECTL_127,
        &c.kubeconfig,
        &[
            "-n",
            "sa-one",
            "create",
            "token",
            "builder",
            "--duration",
            "20m",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (status, review) = whoami(&c, out.trim()).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(username(&review), "system:serviceaccount:sa-one:builder");
    let (code, out, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &[
            "-n",
            "sa-one",
            "create",
            "token",
            "builder",
            "--duration",
            "5m",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let (code, out, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &[
            "-n",
            "sa-one",
            "create",
            "token",
            "builder",
            "--audience",
            "vault",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A token for another audience is not one for the API server.
    assert_eq!(whoami(&c, out.trim()).await.0, 401);
    let (code, _, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &["-n", "sa-one", "create", "token", "ghost"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("serviceaccounts \"ghost\" not found"), "{err}");

    // Garbage, a foreign signature and an expired token of ours: 401.
    assert_eq!(whoami(&c, "not-a-token").await.0, 401);
    assert_eq!(whoami(&c, "a.b.c").await.0, 401);
    let sa = get(&c, "/api/v1/namespaces/sa-one/serviceaccounts/builder")
        .await
        .1;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64| Claims {
        aud: vec![token::ISSUER.into()],
        exp,
        iat,
        iss: token::ISSUER.into(),
        jti: "test".into(),
        kubernetes: KubernetesClaim {
            namespace: "sa-one".into(),
            serviceaccount: ObjectRef {
                name: "builder".into(),
                uid: sa["metadata"]["uid"].as_str().unwrap_or_default().into(),
            },
            ..KubernetesClaim::default()
        },
        nbf: iat,
        sub: token::username("sa-one", "builder"),
    };
    let ours = TokenIssuer::load_or_create(&c.data_dir.join("pki")).expect("the cluster's key");
    let fresh = ours.issue(&claims(now, now + 600)).expect("sign");
    assert_eq!(whoami(&c, &fresh).await.0, 201);
    let expired = ours.issue(&claims(now - 7200, now - 3600)).expect("sign");
    assert_eq!(whoami(&c, &expired).await.0, 401);
    let stranger = TokenIssuer::generate().expect("issuer");
    let forged = stranger.issue(&claims(now, now + 600)).expect("sign");
    assert_eq!(whoami(&c, &forged).await.0, 401);

    // The account goes, and its tokens with it.
    ok(&c, &["-n", "sa-one", "delete", "serviceaccount", "builder"]);
    let (status, body) = whoami(&c, &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "Unauthorized");
}

#[tokio::test]
async fn a_pod_bound_token_dies_with_its_pod_and_admission_mounts_the_token_volume() {
    require_kubectl();
    let c = cluster();
    ok(&c, &["create", "namespace", "sa-two"]);
    ok(&c, &["-n", "sa-two", "create", "serviceaccount", "runner"]);
    let admin = c.admin_client();
    let pods = c.url("/api/v1/namespaces/sa-two/pods");
    let (code, pod) = call(
        admin
            .post(&pods)
            .json(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"serviceAccountName": "runner",
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "busybox:1.36"}]}})),
    )
    .await;
    assert_eq!(code, 201, "{pod}");
    // The projected volume, exactly as Kubernetes' admission writes it.
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 1, "{pod}");
    let name = volumes[0]["name"].as_str().expect("name");
    assert!(
        name.starts_with("kube-api-access-") && name.len() == 21,
        "{name}"
    );
    assert_eq!(
        volumes[0]["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]})
    );
    let mount = json!([{"name": name, "readOnly": true,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], mount);
    assert_eq!(pod["spec"]["initContainers"][0]["volumeMounts"], mount);

    // A pod without an account runs as `default`; automount off adds nothing; a missing
    // account is refused with the plugin's words.
    let (code, plain) = call(
        admin
            .post(&pods)
            .json(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "busybox:1.36"}]}})),
    )
    .await;
    assert_eq!(code, 201, "{plain}");
    assert_eq!(plain["spec"]["serviceAccountName"], "default");
    assert!(plain["spec"].get("volumes").is_none(), "{plain}");
    let (code, refused) = call(admin.post(&pods).json(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"serviceAccountName": "sa", "containers": [{"name": "app", "image": "busybox:1.36"}]}})))
    .await;
    assert_eq!(code, 403, "{refused}");
    assert_eq!(
        refused["message"],
        "pods \"x\" is forbidden: error looking up service account sa-two/sa: serviceaccount \"sa\" not found"
    );

    // A token bound to the pod: good while the pod lives.
    let (code, out, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &[
            "-n",
            "sa-two",
            "create",
            "token",
            "runner",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let bound = out.trim().to_string();
    let (status, review) = whoami(&c, &bound).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(username(&review), "system:serviceaccount:sa-two:runner");
    let (code, _, err) = kubectl_bin(
        KUBECTL_133,
        &c.kubeconfig,
        &[
            "-n",
            "sa-two",
            "create",
            "token",
            "runner",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "plain",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot bind token for serviceaccount \"runner\" to pod running with different serviceaccount name."), "{err}");
    // Never scheduled, the pod is deleted at once; its token is refused from then on.
    ok(
        &c,
        &["-n", "sa-two", "delete", "pod", "web", "--wait=false"],
    );
    eventually(WAIT, "the pod to be gone", || async {
        (get(&c, "/api/v1/namespaces/sa-two/pods/web").await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(whoami(&c, &bound).await.0, 401);
}

#[tokio::test]
async fn namespaces_get_their_account_and_root_ca_and_default_has_the_kubernetes_service() {
    let c = cluster();
    let admin = c.admin_client();
    let (code, _) =
        call(admin.post(c.url("/api/v1/namespaces")).json(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sa-three"}}),
        ))
        .await;
    assert_eq!(code, 201);
    // The account comes with the namespace; the root CA right after.
    let (code, sa) = get(&c, "/api/v1/namespaces/sa-three/serviceaccounts/default").await;
    assert_eq!(code, 200, "{sa}");
    let path = "/api/v1/namespaces/sa-three/configmaps/kube-root-ca.crt";
    let cm = eventually(WAIT, "kube-root-ca.crt", || async {
        let (code, cm) = get(&c, path).await;
        (code == 200).then_some(cm)
    })
    .await;
    assert_eq!(cm["data"]["ca.crt"], c.ca_pem());
    // Changed or deleted, both are put back.
    let (code, _) = call(
        admin
            .patch(c.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"data": {"ca.crt": "tampered"}}).to_string()),
    )
    .await;
    assert_eq!(code, 200);
    eventually(WAIT, "the CA restored", || async {
        (get(&c, path).await.1["data"]["ca.crt"] == c.ca_pem()).then_some(())
    })
    .await;
    let sa_path = "/api/v1/namespaces/sa-three/serviceaccounts/default";
    let (code, _) = call(admin.delete(c.url(sa_path))).await;
    assert_eq!(code, 200);
    let again = eventually(WAIT, "the default account recreated", || async {
        let (code, sa) = get(&c, sa_path).await;
        (code == 200).then_some(sa)
    })
    .await;
    assert_ne!(again["metadata"]["uid"], sa["metadata"]["uid"]);

    // The API server as a Service: the first address of the range, 443 to its port.
    let port: u64 = c
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (code, svc) = get(&c, "/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(code, 200, "{svc}");
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}])
    );
    let (code, ep) = get(&c, "/api/v1/namespaces/default/endpoints/kubernetes").await;
    assert_eq!(code, 200, "{ep}");
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], port);
    // Deleted, it comes back.
    let (code, _) =
        call(admin.delete(c.url("/api/v1/namespaces/default/endpoints/kubernetes"))).await;
    assert_eq!(code, 200);
    eventually(WAIT, "the kubernetes endpoints restored", || async {
        (get(&c, "/api/v1/namespaces/default/endpoints/kubernetes")
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn legacy_token_secrets_and_the_issuer_discovery_documents() {
    let c = cluster();
    let admin = c.admin_client();
    let (code, sa) = call(admin.post(c.url("/api/v1/namespaces/default/serviceaccounts"))
        .json(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "old-style"}}))).await;
    assert_eq!(code, 201, "{sa}");
    let (code, _) = call(admin.post(c.url("/api/v1/namespaces/default/secrets")).json(&json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "old-style-token", "annotations": {"kubernetes.io/service-account.name": "old-style"}}})))
    .await;
    assert_eq!(code, 201);
    let secret_path = "/api/v1/namespaces/default/secrets/old-style-token";
    let secret = eventually(WAIT, "the token controller to fill the secret", || async {
        let (_, s) = get(&c, secret_path).await;
        s["data"]["token"].is_string().then_some(s)
    })
    .await;
    use base64::Engine as _;
    let text = |k: &str| {
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str().unwrap_or_default())
            .expect("base64");
        String::from_utf8(b).expect("utf-8")
    };
    assert_eq!(text("namespace"), "default");
    assert_eq!(text("ca.crt"), c.ca_pem());
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"],
        sa["metadata"]["uid"]
    );
    let legacy = text("token");
    let (status, review) = whoami(&c, &legacy).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(username(&review), "system:serviceaccount:default:old-style");

    // Discovery: service accounts may read it, anonymous callers only if RBAC says so.
    let with_token = tls_client(&c.ca_pem(), Some(&legacy), None);
    let (code, doc) = call(with_token.get(c.url("/.well-known/openid-configuration"))).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["issuer"], token::ISSUER);
    assert!(
        doc["jwks_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/openid/v1/jwks")),
        "{doc}"
    );
    let (code, jwks) = call(with_token.get(c.url("/openid/v1/jwks"))).await;
    assert_eq!(code, 200, "{jwks}");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let anonymous = tls_client(&c.ca_pem(), None, None);
    let (code, body) = call(anonymous.get(c.url("/openid/v1/jwks"))).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        call(anonymous.get(c.url("/api/v1/namespaces"))).await.0,
        401
    );
    let (code, _) = call(admin.post(c.url("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")).json(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "public-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}]})))
    .await;
    assert_eq!(code, 201);
    let (code, public) = call(anonymous.get(c.url("/openid/v1/jwks"))).await;
    assert_eq!(code, 200, "{public}");
    assert_eq!(public, jwks);

    // The Secret goes, and its token with it.
    let (code, _) = call(admin.delete(c.url(secret_path))).await;
    assert_eq!(code, 200);
    assert_eq!(whoami(&c, &legacy).await.0, 401);
}

#[tokio::test]
async fn the_python_client_creates_accounts_and_tokens() {
    let c = cluster();
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
v1.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="py-robot")))
names = [sa.metadata.name for sa in v1.list_namespaced_service_account("default").items]
assert "py-robot" in names and "default" in names, names
req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=1200))
out = v1.create_namespaced_service_account_token("py-robot", "default", req)
assert out.spec.expiration_seconds == 1200, out.spec
print(out.status.token)
"#;
    let token = skiff_integration::python_client(script, &c.kubeconfig, &[]);
    let (status, review) = whoami(&c, &token).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(username(&review), "system:serviceaccount:default:py-robot");
}

/// The official Python client's in-cluster loader, given the files and environment a pod
/// gets (the token and CA of its projected volume, the API's address), listing the pods
/// of the namespace the volume names.
const IN_CLUSTER: &str = r#"
import sys
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

_, _kubeconfig, volume, host, port = sys.argv
InClusterConfigLoader(
    token_filename=volume + "/token",
    cert_filename=volume + "/ca.crt",
    environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
).load_and_set()
namespace = open(volume + "/namespace").read()
print(" ".join(p.metadata.name for p in client.CoreV1Api().list_namespaced_pod(namespace).items))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_projected_token_is_its_service_account_in_cluster_and_dies_with_the_pod() {
    skiff_integration::require_docker_and_kubectl();
    let names = skiff_integration::node_names("sa-pod", 1);
    let _cleanup = skiff_integration::DockerCleanup::new(&names);
    let node = names[0].clone();
    let n = node.clone();
    let c = TestCluster::start_secure_with(move |cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            ..skiff::config::NodeConfig::default()
        }];
    });
    ok(&c, &["create", "namespace", "sa-pod"]);
    ok(&c, &["-n", "sa-pod", "create", "serviceaccount", "robot"]);
    ok(
        &c,
        &[
            "-n",
            "sa-pod",
            "create",
            "rolebinding",
            "robot-view",
            "--clusterrole=view",
            "--serviceaccount=sa-pod:robot",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Pod
metadata: {name: client, namespace: sa-pod}
spec:
  serviceAccountName: robot
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      cd /var/run/secrets/kubernetes.io/serviceaccount
      echo "$KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT `cat namespace` `head -c 27 ca.crt`"
      cat token; echo; sleep 3600
"#,
    )
    .expect("write");
    ok(&c, &["apply", "-f", &file.display().to_string()]);
    let out = eventually(
        Duration::from_secs(90),
        "the pod's token in its log",
        || async {
            let (code, out, _) = kubectl(&c.kubeconfig, &["-n", "sa-pod", "logs", "client"]);
            (code == 0 && out.lines().count() >= 2).then_some(out)
        },
    )
    .await;
    let mut lines = out.lines();
    // The first address of the service range, the API's port, the namespace, the CA.
    assert_eq!(
        lines.next(),
        Some("10.96.0.1 443 sa-pod -----BEGIN CERTIFICATE-----")
    );
    let token = lines.next().expect("token").trim().to_string();
    let (status, review) = whoami(&c, &token).await;
    assert_eq!(status, 201, "{review}");
    assert_eq!(username(&review), "system:serviceaccount:sa-pod:robot");

    // The same files and environment with the Python client's in-cluster loader; without
    // the ClusterIP datapath the API is reached at its own address, as the endpoint is.
    let (_, pod) = get(&c, "/api/v1/namespaces/sa-pod/pods/client").await;
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let volume = pod["spec"]["volumes"][0]["name"].as_str().expect("volume");
    let volume_dir = c
        .data_dir
        .join("nodes")
        .join(&node)
        .join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~projected")
        .join(volume);
    let url = reqwest::Url::parse(&c.url("/")).expect("url");
    let listed = skiff_integration::python_client(
        IN_CLUSTER,
        &c.kubeconfig,
        &[
            &volume_dir.display().to_string(),
            url.host_str().expect("host"),
            &url.port().expect("port").to_string(),
        ],
    );
    assert_eq!(listed, "client");

    // Bound to the pod: refused once the pod is gone.
    ok(&c, &["-n", "sa-pod", "delete", "pod", "client"]);
    eventually(WAIT, "the pod's token refused", || async {
        (whoami(&c, &token).await.0 == 401).then_some(())
    })
    .await;
}
