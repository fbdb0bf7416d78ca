//! `/containerLogs/<ns>/<pod>/<container>`: a container's output from the runtime, with
//! the kubelet's options (`follow`, `previous`, `timestamps`, `tailLines`, `limitBytes`,
//! `sinceSeconds`, `sinceTime`).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::routes::{container_instances, find_pod, Body, Query, Refusal};
use super::Shared;
use crate::api::meta;
use crate::kubelet::runtime::LogOptions;

fn bad(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

fn number(query: &Query, key: &str) -> Result<Option<i64>, Refusal> {
    query
        .get(key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| bad(format!("{key}: invalid value {v:?}")))
        })
        .transpose()
}

pub async fn container_logs(
    shared: &Arc<Shared>,
    ns: &str,
    pod_name: &str,
    container: &str,
    query: &Query,
) -> Result<Response<Body>, Refusal> {
    let pod = find_pod(shared, ns, pod_name)?;
    let previous = query.flag(&["previous"]);
    let tail = number(query, "tailLines")?;
    let limit = number(query, "limitBytes")?;
    let since_seconds = number(query, "sinceSeconds")?;
    if tail.is_some_and(|t| t < 0) {
        return Err(bad(
            "tailLines: Invalid value: must be greater than or equal to 0".into(),
        ));
    }
    if limit.is_some_and(|l| l < 1) {
        return Err(bad(
            "limitBytes: Invalid value: must be greater than 0".into()
        ));
    }
    let since = match (since_seconds, query.get("sinceTime")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ))
        }
        (Some(s), None) if s < 1 => {
            return Err(bad(
                "sinceSeconds: Invalid value: must be greater than 0".into()
            ))
        }
        (Some(s), None) => Some(chrono::Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad(format!("sinceTime: invalid time {t:?}")))?
                .with_timezone(&chrono::Utc),
        ),
        (None, None) => None,
    };
    let instances = container_instances(shared, &pod, container).await?;
    let chosen = if previous {
        instances.get(1)
    } else {
        instances.first()
    };
    let name = meta::name(&pod).unwrap_or_default();
    let chosen = chosen.ok_or_else(|| {
        if previous {
            bad(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))
        } else {
            bad(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ))
        }
    })?;
    let opts = LogOptions {
        follow: query.flag(&["follow"]) && !previous,
        tail_lines: tail.map(|t| t as u64),
        timestamps: query.flag(&["timestamps"]),
        since,
    };
    let stream = shared
        .runtime
        .logs(&chosen.id, &opts)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // A runtime error mid-stream ends the response; what was sent stays sent. With
    // `limitBytes`, the stream ends once that much was sent.
    let mut left = limit.map(|l| l as usize);
    let body = stream
        .take_while(|chunk| futures::future::ready(chunk.is_ok()))
        .filter_map(|chunk| futures::future::ready(chunk.ok()))
        .map(move |chunk: Bytes| match left.as_mut() {
            Some(0) => None,
            Some(n) => {
                let take = chunk.len().min(*n);
                *n -= take;
                Some(chunk.slice(..take))
            }
            None => Some(chunk),
        })
        .take_while(|c| futures::future::ready(c.is_some()))
        .filter_map(futures::future::ready)
        .map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut resp = Response::new(StreamBody::new(body).boxed_unsync());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
