//! Environment and volumes on the real Docker Engine, driven by the machine's kubectl:
//! ConfigMaps and Secrets (generic, tls, docker-registry) read by a pod as env, envFrom and
//! volumes; an updated ConfigMap reaching the running pod's files (but not a subPath
//! mount); emptyDir on disk and in memory shared by two containers; a missing key keeping
//! a container in CreateContainerConfigError until it is added; mount failures as events;
//! and the 422s admission gives bad volumes, mounts and env.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{
    call, client, eventually_blocking, kubectl, node_names, require_docker_and_kubectl,
    require_kubectl, DockerCleanup, Kubectl, TestCluster,
};

/// A cluster with one Docker node whose written volumes resync every second.
/// The cleanup comes first so that it is dropped last, once the cluster (whose kubelet
/// may still be making containers) has stopped.
fn docker_cluster(prefix: &str) -> (DockerCleanup, TestCluster, String) {
    let names = node_names(prefix, 1);
    let cleanup = DockerCleanup::new(&names);
    let node = names[0].clone();
    let n = node.clone();
    let c = TestCluster::start_with(move |cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            volume_sync_seconds: 1,
            ..skiff::config::NodeConfig::default()
        }];
    });
    (cleanup, c, node)
}

/// Unmounts whatever a failed test left mounted under the cluster's directory (memory
/// emptyDirs), so the temporary directory can go.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for (mp, _, _) in mounts_under(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<(String, String, String)> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && Path::new(f[1]).starts_with(dir))
                .then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

fn apply(k: &Kubectl<'_>, yaml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("obj.yaml");
    std::fs::write(&file, yaml).expect("write");
    k.ok(&["apply", "-f", &file.display().to_string()]);
}

/// Stdout of kubectl parsed as JSON (null when it failed).
fn kubectl_json(k: &Kubectl<'_>, args: &[&str]) -> Value {
    let (code, out, _) = kubectl(k.0, args);
    if code != 0 {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn pod(k: &Kubectl<'_>, name: &str) -> Value {
    kubectl_json(k, &["get", "pod", name, "-o", "json"])
}

fn waiting(p: &Value, container: &str) -> Option<(String, String)> {
    let s = p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == container)?;
    let w = &s["state"]["waiting"];
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    ))
}

fn running(k: &Kubectl<'_>, name: &str) -> Value {
    eventually_blocking(
        Duration::from_secs(90),
        &format!("pod {name} Running"),
        || {
            let p = pod(k, name);
            (p["status"]["phase"] == "Running").then_some(p)
        },
    )
}

fn logs(k: &Kubectl<'_>, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    kubectl(k.0, &all).1
}

/// The Docker id of a pod's running container.
fn container_id(node: &str, pod: &str, container: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.skiff.node={node}"),
            "--filter",
            &format!("label=io.skiff.pod.name={pod}"),
            "--filter",
            &format!("label=io.skiff.container.name={container}"),
        ])
        .output()
        .expect("docker ps");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "no running container {container} of {pod}");
    id
}

fn docker_exec(id: &str, cmd: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["20", "docker", "exec", id])
        .args(cmd)
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn events_of(k: &Kubectl<'_>, object: &str) -> Vec<(String, String)> {
    let v = kubectl_json(
        k,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={object}"),
            "-o",
            "json",
        ],
    );
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pod_dir(c: &TestCluster, node: &str, uid: &str) -> PathBuf {
    c.data_dir.join("nodes").join(node).join("pods").join(uid)
}

/// A self-signed certificate and key for `kubectl create secret tls`.
fn pem_pair(dir: &Path) -> (PathBuf, PathBuf) {
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

const READER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
  labels: {app: reader, tier: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    resources:
      limits: {memory: 64Mi}
    command: ["sh", "-c"]
    args:
    - |
      echo "env COLOR=$COLOR PW=$PW CFG_size=$CFG_size URL=$URL POD=$POD_NAME MEM=$MEM CPU=$CPU MISSING=${MISSING-unset}"
      echo 'expanded $(COLOR) $$(COLOR)'
      echo "app `cat /etc/app/color` `cat /etc/app/size`"
      echo "items `cat /etc/items/colors/c.txt` `stat -c %a /etc/items/colors/c.txt`"
      echo "db `cat /etc/db/password` `stat -L -c %a /etc/db/password`"
      echo "tls `head -n 1 /etc/tls/tls.crt`"
      echo "reg `cat /etc/reg/config.json`"
      echo "labels `cat /etc/info/labels | tr '\n' ' '`"
      echo "mem `cat /etc/info/mem`"
      echo "proj `cat /etc/proj/size` `cat /etc/proj/name`"
      echo "sub `cat /etc/color.txt`"
      echo "scratch `touch /scratch/ok && echo writable`"
      echo "ro `touch /etc/app/new 2>/dev/null && echo writable || echo read-only`"
      echo done
      sleep 3600
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: app, key: color}}
    - name: PW
      valueFrom: {secretKeyRef: {name: db, key: password}}
    - name: URL
      value: "http://$(COLOR).example"
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: nope, key: k, optional: true}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CPU
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
    envFrom:
    - configMapRef: {name: app}
      prefix: CFG_
    volumeMounts:
    - {name: cfg, mountPath: /etc/app}
    - {name: cfg-items, mountPath: /etc/items}
    - {name: cfg, mountPath: /etc/color.txt, subPath: color}
    - {name: db, mountPath: /etc/db}
    - {name: tls, mountPath: /etc/tls}
    - {name: reg, mountPath: /etc/reg}
    - {name: info, mountPath: /etc/info}
    - {name: proj, mountPath: /etc/proj}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - name: cfg
    configMap: {name: app}
  - name: cfg-items
    configMap:
      name: app
      items: [{key: color, path: colors/c.txt, mode: 0600}]
  - name: db
    secret: {secretName: db, defaultMode: 0400}
  - name: tls
    secret: {secretName: web-tls}
  - name: reg
    secret:
      secretName: regcred
      items: [{key: .dockerconfigjson, path: config.json}]
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
  - name: proj
    projected:
      sources:
      - configMap: {name: app, items: [{key: size, path: size}]}
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
  - name: scratch
    emptyDir: {}
"#;

#[test]
fn a_pod_reads_config_maps_and_secrets_as_env_env_from_and_files_which_follow_updates() {
    require_docker_and_kubectl();
    let (_cleanup, c, node) = docker_cluster("vol");
    let _unmount = Unmount(c.data_dir.clone());
    let k = Kubectl(&c.kubeconfig);
    let dir = tempfile::tempdir().expect("tempdir");
    k.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=color=blue",
        "--from-literal=size=L",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cr3t",
    ]);
    let (crt, key) = pem_pair(dir.path());
    k.ok(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
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
    apply(&k, READER);
    let p = running(&k, "reader");
    let out = eventually_blocking(Duration::from_secs(30), "the reader's output", || {
        let l = logs(&k, &["reader"]);
        l.contains("done").then_some(l)
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "env COLOR=blue PW=s3cr3t CFG_size=L URL=http://blue.example POD=reader MEM=64 CPU=4000 MISSING=unset",
        "{out}"
    );
    assert_eq!(lines[1], "expanded blue $(COLOR)", "{out}");
    assert_eq!(lines[2], "app blue L", "{out}");
    assert_eq!(lines[3], "items blue 600", "{out}");
    assert_eq!(lines[4], "db s3cr3t 400", "{out}");
    assert_eq!(lines[5], "tls -----BEGIN CERTIFICATE-----", "{out}");
    assert!(
        lines[6].starts_with("reg {") && lines[6].contains("registry.example"),
        "{out}"
    );
    assert_eq!(
        lines[7].trim_end(),
        "labels app=\"reader\" tier=\"web\"",
        "{out}"
    );
    assert_eq!(lines[8], "mem 64", "{out}");
    assert_eq!(lines[9], "proj L reader", "{out}");
    assert_eq!(lines[10], "sub blue", "{out}");
    assert_eq!(lines[11], "scratch writable", "{out}");
    assert_eq!(lines[12], "ro read-only", "{out}");

    // The files are the atomic writer's: links into `..data`.
    let id = container_id(&node, "reader", "app");
    let listing = docker_exec(&id, &["ls", "-a", "/etc/app"]);
    assert!(
        listing.contains("..data") && listing.contains("color"),
        "{listing}"
    );

    // An update reaches the volume of the running pod, not its subPath mount.
    k.ok(&[
        "patch",
        "configmap",
        "app",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    eventually_blocking(
        Duration::from_secs(60),
        "the updated ConfigMap in the pod",
        || (docker_exec(&id, &["cat", "/etc/app/color"]) == "red").then_some(()),
    );
    assert_eq!(
        docker_exec(&id, &["cat", "/etc/color.txt"]),
        "blue",
        "subPath mounts keep their content"
    );

    // Deleting the pod removes its volumes from the node.
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let pod_dir = pod_dir(&c, &node, &uid);
    assert!(pod_dir
        .join("volumes/kubernetes.io~configmap/cfg/..data")
        .exists());
    k.ok(&["delete", "pod", "reader", "--wait=false"]);
    eventually_blocking(Duration::from_secs(60), "the pod's volumes removed", || {
        (!pod_dir.exists()).then_some(())
    });
}

const SHARED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo disk-$(POD) > /shared/msg && echo mem-$(POD) > /mem/msg && sleep 3600"]
    env:
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: disk, mountPath: /shared}
    - {name: mem, mountPath: /mem}
  - name: reader
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "until [ -f /in/disk/msg ] && [ -f /in/mem/msg ]; do sleep 0.2; done; cat /in/disk/msg /in/mem/msg; sleep 3600"]
    volumeMounts:
    - {name: disk, mountPath: /in/disk}
    - {name: mem, mountPath: /in/mem}
  volumes:
  - name: disk
    emptyDir: {}
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
"#;

#[test]
fn an_empty_dir_on_disk_and_in_memory_is_shared_by_the_pods_containers() {
    require_docker_and_kubectl();
    let (_cleanup, c, node) = docker_cluster("emptydir");
    let _unmount = Unmount(c.data_dir.clone());
    let k = Kubectl(&c.kubeconfig);
    apply(&k, SHARED);
    let p = running(&k, "shared");
    let out = eventually_blocking(
        Duration::from_secs(60),
        "the reader seeing the writer's files",
        || {
            let l = logs(&k, &["shared", "-c", "reader"]);
            l.contains("mem-").then_some(l)
        },
    );
    assert_eq!(out.trim(), "disk-shared\nmem-shared");

    // The memory volume is a tmpfs of the asked size, mounted on the node.
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let dir = pod_dir(&c, &node, &uid);
    let mem = dir.join("volumes/kubernetes.io~empty-dir/mem");
    let mounts = mounts_under(&dir);
    let tmpfs = mounts
        .iter()
        .find(|(mp, _, _)| Path::new(mp) == mem)
        .unwrap_or_else(|| panic!("no mount at {}: {mounts:?}", mem.display()));
    assert_eq!(tmpfs.1, "tmpfs");
    assert!(tmpfs.2.contains("size=16384k"), "{tmpfs:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("volumes/kubernetes.io~empty-dir/disk/msg"))
            .expect("disk"),
        "disk-shared\n"
    );

    k.ok(&["delete", "pod", "shared", "--wait=false"]);
    eventually_blocking(
        Duration::from_secs(60),
        "the pod's volumes unmounted and removed",
        || (!dir.exists() && mounts_under(&dir).is_empty()).then_some(()),
    );
}

const WAITERS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: needs-key
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo got $B; sleep 3600"]
    env:
    - name: B
      valueFrom: {configMapKeyRef: {name: partial, key: b}}
---
apiVersion: v1
kind: Pod
metadata:
  name: needs-map
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    envFrom:
    - secretRef: {name: nope}
---
apiVersion: v1
kind: Pod
metadata:
  name: bad-host
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: host, mountPath: /host}]
  volumes:
  - name: host
    hostPath: {path: /nonexistent-skiff-volume-test, type: Directory}
---
apiVersion: v1
kind: Pod
metadata:
  name: needs-token
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "cat /var/run/secrets/tokens/vault; echo; sleep 3600"]
    volumeMounts: [{name: token, mountPath: /var/run/secrets/tokens}]
  volumes:
  - name: token
    projected:
      sources:
      - serviceAccountToken: {path: vault, audience: vault, expirationSeconds: 3600}
"#;

#[test]
fn missing_config_waits_with_the_kubelets_reasons_and_starts_once_it_appears() {
    require_docker_and_kubectl();
    let (_cleanup, c, _node) = docker_cluster("cfgerr");
    let _unmount = Unmount(c.data_dir.clone());
    let k = Kubectl(&c.kubeconfig);
    k.ok(&["create", "configmap", "partial", "--from-literal=a=1"]);
    apply(&k, WAITERS);

    let wait_reason = |name: &str, want: &str| {
        eventually_blocking(
            Duration::from_secs(60),
            &format!("{name} waiting with {want}"),
            || waiting(&pod(&k, name), "app").filter(|(r, _)| r == want),
        )
    };
    let (_, message) = wait_reason("needs-key", "CreateContainerConfigError");
    assert_eq!(message, "couldn't find key b in ConfigMap default/partial");
    let (_, message) = wait_reason("needs-map", "CreateContainerConfigError");
    assert_eq!(message, "secret \"nope\" not found");
    wait_reason("bad-host", "ContainerCreating");
    eventually_blocking(
        Duration::from_secs(30),
        "the hostPath FailedMount event",
        || {
            events_of(&k, "bad-host").into_iter().find(|(reason, message)| {
            reason == "FailedMount"
                && message
                    == "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: /nonexistent-skiff-volume-test is not a directory"
        })
        },
    );
    assert!(
        events_of(&k, "needs-key").iter().any(|(r, m)| r == "Failed"
            && m == "Error: couldn't find key b in ConfigMap default/partial"),
        "{:?}",
        events_of(&k, "needs-key")
    );

    // A projected token comes from the TokenRequest API, with the audience and the pod
    // binding the volume asks for.
    running(&k, "needs-token");
    let jwt = eventually_blocking(Duration::from_secs(30), "the token in the log", || {
        let l = logs(&k, &["needs-token"]);
        (l.split('.').count() == 3).then(|| l.trim().to_string())
    });
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).expect("payload"))
        .expect("base64url payload");
    let claims: Value = serde_json::from_slice(&payload).expect("claims");
    assert_eq!(claims["aud"], json!(["vault"]), "{claims}");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["name"], "needs-token",
        "{claims}"
    );
    assert_eq!(
        claims["sub"], "system:serviceaccount:default:default",
        "{claims}"
    );

    // Once the key exists the container starts (after its retry backoff).
    k.ok(&[
        "patch",
        "configmap",
        "partial",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"two"}}"#,
    ]);
    running(&k, "needs-key");
    eventually_blocking(Duration::from_secs(30), "the value in the logs", || {
        (logs(&k, &["needs-key"]).trim() == "got two").then_some(())
    });
}

async fn post_pod(c: &TestCluster, spec: Value) -> (u16, Value) {
    let body =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": spec});
    call(
        client()
            .post(c.url("/api/v1/namespaces/default/pods"))
            .json(&body),
    )
    .await
}

fn causes(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_volumes_mounts_and_env_are_refused_with_kubernetes_field_paths() {
    require_kubectl();
    let c = TestCluster::api_only();
    let container = |extra: Value| {
        let mut c = json!({"name": "app", "image": "skiff/busybox:latest"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    };
    let (code, status) = post_pod(
        &c,
        json!({"containers": [container(json!({
        "volumeMounts": [{"name": "x", "mountPath": "/x"}]}))]}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Pod \"bad\" is invalid: spec.containers[0].volumeMounts[0].name: Not found: \"x\""
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotFound"
    );

    let (code, status) = post_pod(&c, json!({
        "volumes": [{"name": "v", "emptyDir": {}}],
        "containers": [container(json!({"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../etc"}]}))]})).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), ["spec.containers[0].volumeMounts.subPath: Invalid value: \"../etc\": must not contain '..'"]);

    let (code, status) = post_pod(&c, json!({
        "volumes": [{"name": "data", "nfs": {"server": "nfs.example", "path": "/"}},
                    {"name": "s", "secret": {"defaultMode": 511, "items": [{"key": "k", "path": "/abs"}]}}],
        "initContainers": [container(json!({"name": "init", "volumeMounts": [{"name": "gone", "mountPath": "/g"}]}))],
        "containers": [container(json!({"env": [{"name": "A", "valueFrom": {
            "configMapKeyRef": {"name": "c", "key": "k"}, "secretKeyRef": {"name": "s", "key": "k"}}}]}))]})).await;
    assert_eq!(code, 422, "{status}");
    let got = causes(&status);
    let fields: Vec<&str> = got
        .iter()
        .map(|c| c.split(": ").next().unwrap_or_default())
        .collect();
    for want in [
        "spec.volumes[0].nfs",
        "spec.volumes[1].secret.secretName",
        "spec.volumes[1].secret.items[0].path",
        "spec.containers[0].env[0].valueFrom",
        "spec.initContainers[0].volumeMounts[0].name",
    ] {
        assert!(fields.contains(&want), "{want} missing from {got:?}");
    }

    // kubectl shows the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    volumeMounts: [{name: x, mountPath: /x}]\n").expect("write");
    let (code, out) = Kubectl(&c.kubeconfig).run(&["apply", "-f", &file.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("spec.containers[0].volumeMounts[0].name: Not found: \"x\""),
        "{out}"
    );
}

const CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: notes
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 16Mi}
"#;

/// A pod of the claim `notes` that appends its name to `/data/log` and prints the file.
fn claim_user(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo {name} >> /data/log; echo seen; cat /data/log; echo end; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: notes}}
"#
    )
}

#[test]
fn a_local_path_claim_keeps_its_data_when_its_pod_is_deleted_and_made_again() {
    require_docker_and_kubectl();
    let (_cleanup, c, node) = docker_cluster("claim");
    let k = Kubectl(&c.kubeconfig);
    apply(&k, CLAIM);
    // WaitForFirstConsumer: nothing is provisioned before a pod uses the claim.
    let pending = kubectl_json(&k, &["get", "pvc", "notes", "-o", "json"]);
    assert_eq!(pending["status"]["phase"], "Pending", "{pending}");

    apply(&k, &claim_user("first"));
    running(&k, "first");
    let log = |pod: &str| {
        eventually_blocking(
            Duration::from_secs(60),
            "the pod's view of the claim",
            || {
                let l = logs(&k, &[pod]);
                l.contains("end").then_some(l)
            },
        )
    };
    assert_eq!(log("first").trim(), "seen\nfirst\nend");
    let claim = kubectl_json(&k, &["get", "pvc", "notes", "-o", "json"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    let pv_name = claim["spec"]["volumeName"]
        .as_str()
        .expect("volumeName")
        .to_string();
    let pv = kubectl_json(&k, &["get", "pv", &pv_name, "-o", "json"]);
    let path = pv["spec"]["hostPath"]["path"]
        .as_str()
        .expect("hostPath")
        .to_string();
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"][0],
        node.as_str(),
        "{pv}"
    );
    // The data is the volume's, on the node, outside the pod's directory.
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("log")).expect("volume file"),
        "first\n"
    );

    k.ok(&["delete", "pod", "first"]);
    apply(&k, &claim_user("second"));
    let second = running(&k, "second");
    assert_eq!(second["spec"]["nodeName"], node.as_str());
    assert_eq!(log("second").trim(), "seen\nfirst\nsecond\nend");

    // Deleting the claim (reclaim policy Delete) removes the volume and its directory
    // once no pod uses it.
    k.ok(&["delete", "pod", "second"]);
    k.ok(&["delete", "pvc", "notes"]);
    eventually_blocking(
        Duration::from_secs(60),
        "the volume and its directory removed",
        || {
            let gone = kubectl(k.0, &["get", "pv", &pv_name]).0 != 0;
            (gone && !Path::new(&path).exists()).then_some(())
        },
    );
}
