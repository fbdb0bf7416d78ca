//! `GET pods/{name}/log`: a container's output, read from the runtime of the pod's node
//! (nodes in this process register their runtime here), for `kubectl logs [-f]`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix_web::HttpResponse;
use futures::StreamExt;
use serde_json::Value;

use super::objects::Objects;
use super::routing::Target;
use crate::api::{meta, ApiError};
use crate::kubelet::runtime::{ContainerInfo, LogOptions, Runtime};

/// The container runtimes of the nodes running in this process, by node name.
#[derive(Clone, Default)]
pub struct NodeRuntimes {
    inner: Arc<RwLock<HashMap<String, Arc<dyn Runtime>>>>,
}

impl NodeRuntimes {
    pub fn register(&self, node: &str, runtime: Arc<dyn Runtime>) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), runtime);
    }

    pub fn get(&self, node: &str) -> Option<Arc<dyn Runtime>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }
}

/// The query of a log request.
#[derive(Debug, Default)]
pub struct LogQuery {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Which container instance to read: the newest attempt, or the one before it.
fn pick(mut candidates: Vec<&ContainerInfo>, previous: bool) -> Option<&ContainerInfo> {
    candidates.sort_by_key(|c| std::cmp::Reverse(c.attempt()));
    if previous {
        candidates.into_iter().nth(1)
    } else {
        candidates.into_iter().next()
    }
}

pub async fn pod_logs(
    objects: &Objects,
    runtimes: &NodeRuntimes,
    t: &Target,
    q: LogQuery,
) -> Result<HttpResponse, ApiError> {
    let pod = objects.get(&Target {
        subresource: None,
        ..t.clone()
    })?;
    let pod_name = meta::name(&pod).unwrap_or_default().to_string();
    let names = container_names(&pod, "containers");
    let init_names = container_names(&pod, "initContainers");
    let container = match q.container {
        Some(c) => {
            if !names.contains(&c) && !init_names.contains(&c) {
                return Err(ApiError::BadRequest(format!(
                    "container {c} is not valid for pod {pod_name}"
                )));
            }
            c
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names.join(" ")
            );
            if !init_names.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init_names.join(" ")
                ));
            }
            return Err(ApiError::BadRequest(message));
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("pod {pod_name} does not have a host assigned"))
        })?;
    let runtime = runtimes.get(node).ok_or_else(|| {
        ApiError::ServiceUnavailable(format!("node {node} is not reachable for logs"))
    })?;
    let uid = meta::uid(&pod).unwrap_or_default();
    let all = runtime
        .list(node)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    let mine: Vec<&ContainerInfo> = all
        .iter()
        .filter(|c| c.pod_uid() == Some(uid) && c.container_name() == Some(container.as_str()))
        .collect();
    let chosen = pick(mine, q.previous).ok_or_else(|| {
        if q.previous {
            ApiError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
            ))
        } else {
            ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
            ))
        }
    })?;
    let opts = LogOptions {
        follow: q.follow && !q.previous,
        tail_lines: q.tail_lines,
        timestamps: q.timestamps,
    };
    let stream = runtime
        .logs(&chosen.id, &opts)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    // A runtime error mid-stream ends the response; what was sent stays sent.
    let body = stream
        .take_while(|chunk| futures::future::ready(chunk.is_ok()))
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    Ok(HttpResponse::Ok()
        .content_type("text/plain")
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::{ContainerState, LABEL_ATTEMPT};
    use std::collections::BTreeMap;

    fn info(id: &str, attempt: u32) -> ContainerInfo {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_ATTEMPT.to_string(), attempt.to_string());
        ContainerInfo {
            id: id.into(),
            labels,
            image: String::new(),
            image_id: String::new(),
            state: ContainerState::Unknown,
        }
    }

    #[test]
    fn logs_read_the_newest_attempt_and_previous_the_one_before() {
        let (a, b, c) = (info("a", 0), info("b", 2), info("c", 1));
        assert_eq!(
            pick(vec![&a, &b, &c], false).map(|c| c.id.as_str()),
            Some("b")
        );
        assert_eq!(
            pick(vec![&a, &b, &c], true).map(|c| c.id.as_str()),
            Some("c")
        );
        assert!(pick(vec![&a], true).is_none());
    }
}
