//! Discovery and the OpenAPI documents as the machine's kubectl and raw HTTP see them:
//! `kubectl explain` for several kinds and nested fields (OpenAPI v3, and v2 through its
//! protobuf encoding), `kubectl get all` and `kubectl api-resources` (categories and short
//! names from aggregated discovery), kubectl's field validation refusing a typo, kubectl
//! apply computing its strategic merge patch from the published merge keys.

use std::path::Path;

use skiff_integration::{call, client, python_client, TestCluster};

/// kubectl with its own discovery/OpenAPI cache in `cache`, so nothing a previous run left
/// in `~/.kube/cache` for the same address can answer for this server.
struct Kubectl<'a> {
    kubeconfig: &'a Path,
    cache: &'a Path,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let cache = self.cache.to_str().expect("utf-8 path");
        let mut all = vec!["--cache-dir", cache];
        all.extend_from_slice(args);
        skiff_integration::kubectl(self.kubeconfig, &all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    /// Runs kubectl expecting success; returns stdout and stderr.
    fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}\n{out}");
        (out, err)
    }

    fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_ne!(code, 0, "kubectl {args:?} should fail: {out}");
        err
    }
}

#[test]
fn kubectl_explain_reads_the_schemas_of_every_served_kind() {
    skiff_integration::require_kubectl();
    let c = TestCluster::api_only();
    let cache = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        kubeconfig: &c.kubeconfig,
        cache: cache.path(),
    };

    let out = k.ok(&["explain", "pod.spec.containers"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(
        out.contains("List of containers belonging to the pod"),
        "{out}"
    );
    for field in [
        "image\t<string>",
        "ports\t<[]ContainerPort>",
        "name\t<string> -required-",
    ] {
        assert!(out.contains(field), "{field} missing: {out}");
    }

    let out = k.ok(&["explain", "svc.spec.ports", "--recursive"]);
    assert!(out.contains("KIND:       Service"), "{out}");
    assert!(out.contains("FIELD: ports <[]ServicePort>"), "{out}");
    assert!(out.contains("port\t<integer> -required-"), "{out}");
    assert!(out.contains("targetPort\t<IntOrString>"), "{out}");

    let out = k.ok(&[
        "explain",
        "rc.spec.template.spec.containers.resources.limits",
    ]);
    assert!(out.contains("KIND:       ReplicationController"), "{out}");
    assert!(out.contains("<map[string]Quantity>"), "{out}");

    let out = k.ok(&["explain", "hpa.spec.scaleTargetRef"]);
    assert!(out.contains("GROUP:      autoscaling"), "{out}");
    assert!(out.contains("kind\t<string> -required-"), "{out}");

    let out = k.ok(&["explain", "clusterrole.rules"]);
    assert!(
        out.contains("GROUP:      rbac.authorization.k8s.io"),
        "{out}"
    );
    assert!(out.contains("verbs\t<[]string> -required-"), "{out}");

    let out = k.ok(&["explain", "lease.spec.holderIdentity"]);
    assert!(out.contains("FIELD: holderIdentity <string>"), "{out}");

    let out = k.ok(&["explain", "csr.spec.signerName"]);
    assert!(
        out.contains("KIND:       CertificateSigningRequest"),
        "{out}"
    );

    // The Swagger 2.0 document, which kubectl reads in protobuf only.
    let out = k.ok(&[
        "explain",
        "pod.spec.containers.env",
        "--output=plaintext-openapiv2",
    ]);
    assert!(out.contains("KIND:     Pod"), "{out}");
    assert!(out.contains("RESOURCE: env <[]Object>"), "{out}");
    assert!(out.contains("valueFrom\t<Object>"), "{out}");

    // A kind skiff does not serve is not found, as kubectl says it for any unknown type.
    let err = k.fails(&["explain", "ingresses"]);
    assert!(
        err.contains("the server doesn't have a resource type \"ingresses\""),
        "{err}"
    );
    // apps/v1 kinds are explained from their schemas, nested fields included.
    let out = k.ok(&["explain", "deployment.spec.strategy.rollingUpdate.maxSurge"]);
    assert!(out.contains("FIELD: maxSurge"), "{out}");
    let err = k.fails(&["explain", "pod.spec.nosuchfield"]);
    assert!(
        err.contains("field \"nosuchfield\" does not exist"),
        "{err}"
    );
}

#[test]
fn kubectl_get_all_and_api_resources_use_categories_and_short_names() {
    skiff_integration::require_kubectl();
    let c = TestCluster::api_only();
    let cache = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        kubeconfig: &c.kubeconfig,
        cache: cache.path(),
    };
    k.ok(&["create", "namespace", "all-demo"]);
    k.ok(&[
        "run",
        "web",
        "-n",
        "all-demo",
        "--image=busybox",
        "--restart=Never",
    ]);
    // (`kubectl create service` would send protobuf, which skiff does not take for
    // Services yet.)
    let rc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: all-demo\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: rc1\n  namespace: all-demo\nspec:\n  replicas: 0\n  selector:\n    app: rc1\n  template:\n    metadata:\n      labels:\n        app: rc1\n    spec:\n      containers:\n      - name: main\n        image: busybox\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rc.yaml");
    std::fs::write(&path, rc).expect("write");
    k.ok(&["create", "-f", path.to_str().expect("utf-8")]);

    let (out, err) = k.ok_with_stderr(&["get", "all", "-n", "all-demo"]);
    assert!(out.contains("pod/web"), "{out}\n{err}");
    assert!(out.contains("service/web"), "{out}");
    assert!(out.contains("replicationcontroller/rc1"), "{out}");
    assert!(!out.contains("event"), "{out}");

    let out = k.ok(&["api-resources", "-o", "wide"]);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let pods = row("pods");
    assert_eq!(pods[1], "po");
    assert!(pods.contains(&"all"), "{pods:?}");
    assert!(pods.contains(&"create,delete,deletecollection,get,list,patch,update,watch"));
    let hpa = row("horizontalpodautoscalers");
    assert_eq!(hpa[1], "hpa");
    assert!(hpa.contains(&"all"), "{hpa:?}");
    assert!(!row("nodes").contains(&"all"));
    let namespaced = k.ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(namespaced.lines().any(|l| l == "nodes"), "{namespaced}");
    assert!(!namespaced.lines().any(|l| l == "pods"), "{namespaced}");
    let short = k.ok(&["get", "rc,svc,po", "-n", "all-demo", "-o", "name"]);
    assert!(short.contains("replicationcontroller/rc1"), "{short}");

    k.ok(&["delete", "namespace", "all-demo", "--wait=false"]);
}

#[test]
fn kubectl_validation_refuses_unknown_fields_and_apply_patches_by_merge_key() {
    skiff_integration::require_kubectl();
    let c = TestCluster::api_only();
    let cache = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        kubeconfig: &c.kubeconfig,
        cache: cache.path(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: typo\nspec:\n  containers:\n  - name: main\n    imagee: busybox\n",
    )
    .expect("write");
    let err = k.fails(&[
        "create",
        "--validate=strict",
        "-f",
        typo.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("unknown field \"spec.containers[0].imagee\""),
        "{err}"
    );
    let (code, _, _) = k.run(&["get", "pod", "typo"]);
    assert_ne!(code, 0, "the pod must not have been created");

    // kubectl apply computes a strategic merge patch from the v3 schema's merge keys:
    // a second container added and the first one's image changed merge by name.
    let manifest = |image: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: merged\nspec:\n  replicas: 0\n  selector:\n    app: merged\n  template:\n    metadata:\n      labels:\n        app: merged\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        env:\n        - name: A\n          value: a\n{extra}"
        )
    };
    let path = dir.path().join("rc.yaml");
    let file = path.to_str().expect("utf-8");
    std::fs::write(&path, manifest("busybox:1", "")).expect("write");
    k.ok(&["apply", "-f", file]);
    std::fs::write(
        &path,
        manifest(
            "busybox:2",
            "      - name: side\n        image: busybox:side\n",
        ),
    )
    .expect("write");
    let (out, err) = k.ok_with_stderr(&["apply", "-f", file, "-v=6"]);
    assert!(
        out.contains("replicationcontroller/merged configured"),
        "{out}"
    );
    assert!(
        !err.contains("error calculating patch from openapi"),
        "kubectl could not use the published schema: {err}"
    );
    assert!(
        err.contains("/openapi/v3/api/v1?hash="),
        "kubectl did not read the v3 document: {err}"
    );
    let got = k.ok(&[
        "get",
        "rc",
        "merged",
        "-o",
        "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image};{end}",
    ]);
    assert_eq!(got, "main=busybox:2;side=busybox:side;");
    k.ok(&["delete", "rc", "merged"]);
}

#[tokio::test]
async fn documents_are_served_in_each_encoding_with_hashes() {
    let c = TestCluster::api_only();
    let http = client();

    let v2 = http
        .get(c.url("/openapi/v2"))
        .header(
            "Accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(v2.status().as_u16(), 200);
    assert_eq!(
        v2.headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let etag = v2.headers()["etag"].to_str().expect("etag").to_string();
    let body = v2.bytes().await.expect("body");
    // Field 1 (swagger), length 3, "2.0".
    assert_eq!(&body[..5], b"\x0a\x032.0");
    let again = http
        .get(c.url("/openapi/v2"))
        .header(
            "Accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status().as_u16(), 304);

    let (code, json) = call(http.get(c.url("/openapi/v2"))).await;
    assert_eq!(code, 200);
    assert_eq!(json["swagger"], "2.0");
    assert_eq!(
        json["definitions"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Pod"
    );
    let (code, _) = call(http.get(c.url("/openapi/v2")).header("Accept", "text/html")).await;
    assert_eq!(code, 406);

    let (code, root) = call(http.get(c.url("/openapi/v3"))).await;
    assert_eq!(code, 200);
    let url = root["paths"]["apis/rbac.authorization.k8s.io/v1"]["serverRelativeURL"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(
        url.starts_with("/openapi/v3/apis/rbac.authorization.k8s.io/v1?hash="),
        "{url}"
    );
    let resp = http.get(c.url(&url)).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, immutable");
    let doc: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.0.0");
    let role = &doc["components"]["schemas"]["io.k8s.api.rbac.v1.Role"];
    assert_eq!(
        role["x-kubernetes-group-version-kind"][0],
        serde_json::json!({"group": "rbac.authorization.k8s.io", "kind": "Role", "version": "v1"})
    );
    assert_eq!(
        doc["paths"]["/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"]
            ["get"]["operationId"],
        "readRbacAuthorizationV1NamespacedRole"
    );
    let stale = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(c.url("/openapi/v3/api/v1?hash=0"))
        .send()
        .await
        .expect("request");
    assert_eq!(stale.status().as_u16(), 301);
    assert!(stale.headers()["location"]
        .to_str()
        .expect("location")
        .starts_with("/openapi/v3/api/v1?hash="));
    let (code, _) = call(http.get(c.url("/openapi/v3/apis/networking.k8s.io/v1"))).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn aggregated_discovery_answers_in_the_format_asked_for() {
    let c = TestCluster::api_only();
    let http = client();
    for version in ["v2", "v2beta1"] {
        let accept = format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList,application/json"
        );
        let resp = http
            .get(c.url("/apis"))
            .header("Accept", &accept)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.headers()["content-type"],
            format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
                .as_str()
        );
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["kind"], "APIGroupDiscoveryList");
        let groups: Vec<&str> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert!(groups.contains(&"autoscaling"), "{groups:?}");
        assert!(groups.contains(&"metrics.k8s.io"), "{groups:?}");

        let (code, core) = call(http.get(c.url("/api")).header("Accept", &accept)).await;
        assert_eq!(code, 200);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "pods")
            .cloned()
            .expect("pods");
        assert_eq!(pods["categories"], serde_json::json!(["all"]));
        assert_eq!(pods["shortNames"], serde_json::json!(["po"]));
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(pods["scope"], "Namespaced");
    }
    let (code, legacy) = call(http.get(c.url("/api"))).await;
    assert_eq!(code, 200);
    assert_eq!(legacy["kind"], "APIVersions");
}

const PYTHON_CLIENT_SCRIPT: &str = r#"
import sys
from kubernetes import client, config, dynamic

config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
v1 = client.CoreV1Api(api)
assert any(n.metadata.name == "default" for n in v1.list_namespace().items)
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py"),
    spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")]),
)
v1.create_namespaced_pod("default", pod)
assert v1.read_namespaced_pod("py", "default").spec.containers[0].image == "busybox"

dyn = dynamic.DynamicClient(api, cache_file=sys.argv[2])
pods = dyn.resources.get(api_version="v1", kind="Pod")
assert pods.short_names == ["po"], pods.short_names
assert pods.categories == ["all"], pods.categories
assert "py" in [p.metadata.name for p in pods.get(namespace="default").items]
hpa = dyn.resources.get(api_version="autoscaling/v1", kind="HorizontalPodAutoscaler")
assert hpa.short_names == ["hpa"], hpa.short_names
v1.delete_namespaced_pod("py", "default", grace_period_seconds=0)
print("ok")
"#;

#[test]
fn the_official_python_client_reads_and_writes_through_discovery() {
    let c = TestCluster::api_only();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("discovery-cache.json");
    let cache = cache.to_str().expect("utf-8 path");
    let out = python_client(PYTHON_CLIENT_SCRIPT, &c.kubeconfig, &[cache]);
    assert_eq!(out, "ok");
}
