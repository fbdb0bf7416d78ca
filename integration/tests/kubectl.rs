//! The machine's unmodified `kubectl` against a real skiff cluster.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use skiff_integration::TestCluster;

struct Kubectl<'a> {
    kubeconfig: &'a Path,
}

impl Kubectl<'_> {
    /// Run kubectl, assert it succeeded, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

fn rc_manifest(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  replicas: {replicas}\n  selector:\n    app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        ports:\n        - containerPort: 80\n"
    )
}

fn header_columns(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn kubectl_drives_the_cluster_end_to_end() {
    skiff_integration::require_kubectl();
    let c = TestCluster::start();
    let k = Kubectl {
        kubeconfig: &c.kubeconfig,
    };
    let dir = tempfile::tempdir().unwrap();

    let ns = k.ok(&["get", "ns"]);
    assert!(ns.contains("default") && ns.contains("kube-system"), "{ns}");

    assert_eq!(
        k.ok(&["create", "namespace", "demo"]).trim(),
        "namespace/demo created"
    );

    let web = dir.path().join("web.yaml");
    std::fs::write(&web, rc_manifest("web", "busybox:1.36", 2)).unwrap();
    assert_eq!(
        k.ok(&["create", "-f", web.to_str().unwrap()]).trim(),
        "replicationcontroller/web created"
    );
    k.fails(&["create", "-f", web.to_str().unwrap()]);

    let api = dir.path().join("api.yaml");
    std::fs::write(&api, rc_manifest("api", "busybox:1.36", 1)).unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", api.to_str().unwrap()]).trim(),
        "replicationcontroller/api created"
    );
    std::fs::write(&api, rc_manifest("api", "busybox:1.37", 2)).unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", api.to_str().unwrap()]).trim(),
        "replicationcontroller/api configured"
    );
    assert_eq!(
        k.ok(&["apply", "-f", api.to_str().unwrap()]).trim(),
        "replicationcontroller/api unchanged"
    );
    let image = k.ok(&[
        "get",
        "rc",
        "api",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.replicas}",
    ]);
    assert_eq!(image, "busybox:1.37 2");

    let table = k.ok(&["get", "rc", "-n", "demo"]);
    assert_eq!(
        header_columns(&table),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.split_whitespace().nth(1) == Some("2")),
        "{table}"
    );

    let wide = k.ok(&["get", "rc", "-n", "demo", "-o", "wide"]);
    assert_eq!(
        header_columns(&wide),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains("busybox:1.37") && wide.contains("app=web"),
        "{wide}"
    );

    let yaml = k.ok(&["get", "rc", "web", "-n", "demo", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ReplicationController") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    let all = k.ok(&["get", "rc", "-A"]);
    assert_eq!(header_columns(&all)[0], "NAMESPACE");
    assert!(
        all.lines().filter(|l| l.starts_with("demo ")).count() == 2,
        "{all}"
    );

    let selected = k.ok(&["get", "rc", "-n", "demo", "-l", "app=api", "-o", "name"]);
    assert_eq!(selected.trim(), "replicationcontroller/api");

    assert_eq!(
        k.ok(&["scale", "rc", "web", "-n", "demo", "--replicas=5"])
            .trim(),
        "replicationcontroller/web scaled"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "rc",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    assert_eq!(
        k.ok(&["label", "rc", "web", "-n", "demo", "env=prod"])
            .trim(),
        "replicationcontroller/web labeled"
    );
    assert_eq!(
        k.ok(&["get", "rc", "-n", "demo", "-l", "env=prod", "-o", "name"])
            .trim(),
        "replicationcontroller/web"
    );

    // get -w: the watch prints the current row, then a row for the change we make.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["get", "rc", "web", "-n", "demo", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("first watch line");
    assert!(
        first.starts_with("web") && first.split_whitespace().nth(1) == Some("5"),
        "{first}"
    );
    k.ok(&["scale", "rc", "web", "-n", "demo", "--replicas=7"]);
    let next = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch line after change");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        next.starts_with("web") && next.split_whitespace().nth(1) == Some("7"),
        "{next}"
    );

    assert_eq!(
        k.ok(&["delete", "rc", "web", "-n", "demo"]).trim(),
        "replicationcontroller \"web\" deleted"
    );
    let err = k.fails(&["get", "rc", "web", "-n", "demo"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
