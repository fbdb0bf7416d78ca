//! A skiff process killed with SIGKILL and started again adopts the pods its node was
//! running: same containers, not restarted.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, node_names, DockerCleanup, SkiffProcess};

async fn running_container(url: &str) -> Option<(String, u64)> {
    let (code, pod) =
        call(client().get(format!("{url}/api/v1/namespaces/default/pods/sleeper"))).await;
    if code != 200 || pod["status"]["phase"] != "Running" {
        return None;
    }
    let status: &Value = &pod["status"]["containerStatuses"][0];
    let id = status["containerID"].as_str()?.to_string();
    Some((id, status["restartCount"].as_u64().unwrap_or(0)))
}

#[tokio::test]
async fn sigkilled_skiff_adopts_running_pods_without_restarting_them() {
    skiff_integration::require_docker();
    let node = node_names("adopt", 1).remove(0);
    let _cleanup = DockerCleanup::new(std::slice::from_ref(&node));
    let dir = tempfile::tempdir().unwrap();
    let nodes = format!("[[nodes]]\nname = \"{node}\"\nheartbeat_seconds = 2\nserver_port = 0\n");
    let mut first = SkiffProcess::start_with(dir.path(), &nodes);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app",
            "image": "skiff/busybox:latest", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}});
    let (code, body) = call(
        client()
            .post(format!("{}/api/v1/namespaces/default/pods", first.url))
            .json(&pod),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (before, restarts) = eventually(Duration::from_secs(60), "pod Running", || {
        running_container(&first.url)
    })
    .await;
    assert_eq!(restarts, 0);

    first.kill9();
    let restarted_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let second = SkiffProcess::start_with(dir.path(), &nodes);
    // Wait until the new kubelet is up and has heartbeated (so it has listed its pods and
    // the runtime's containers) before checking that nothing was restarted.
    eventually(
        Duration::from_secs(60),
        "a heartbeat from the restarted kubelet",
        || async {
            let (_, n) = call(client().get(format!("{}/api/v1/nodes/{node}", second.url))).await;
            let beat = n["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["lastHeartbeatTime"]
                .as_str()?
                .to_string();
            (beat > restarted_at).then_some(())
        },
    )
    .await;
    let (after, restarts) = eventually(Duration::from_secs(60), "pod Running again", || {
        running_container(&second.url)
    })
    .await;
    assert_eq!(
        after, before,
        "the running container was adopted, not replaced"
    );
    assert_eq!(restarts, 0);
    let id = before.trim_start_matches("docker://");
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}} {{.RestartCount}}", id])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true 0");
}
