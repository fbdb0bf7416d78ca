//! Prometheus metrics for one running system. Each system owns its registry, so several
//! clusters in one process (as the tests run them) do not share counters.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric failed")]
    Register(#[source] prometheus::Error),
    #[error("encoding metrics failed")]
    Encode(#[source] prometheus::Error),
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub commit_duration: Histogram,
    pub commit_batch_size: Histogram,
    pub open_watches: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "API requests by verb, resource and HTTP code.",
            ),
            &["verb", "resource", "code"],
        )
        .map_err(MetricsError::Register)?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "API request latency by verb and resource.",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 18).map_err(MetricsError::Register)?),
            &["verb", "resource"],
        )
        .map_err(MetricsError::Register)?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "skiff_store_commit_duration_seconds",
                "Time to write and sync one group commit to RocksDB.",
            )
            .buckets(exponential_buckets(0.00005, 2.0, 18).map_err(MetricsError::Register)?),
        )
        .map_err(MetricsError::Register)?;
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "skiff_store_commit_batch_size",
                "Writes made durable by one sync (group commit).",
            )
            .buckets(exponential_buckets(1.0, 2.0, 12).map_err(MetricsError::Register)?),
        )
        .map_err(MetricsError::Register)?;
        let open_watches = IntGauge::new(
            "apiserver_registered_watchers",
            "Watch streams currently open.",
        )
        .map_err(MetricsError::Register)?;
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(commit_duration.clone()),
            Box::new(commit_batch_size.clone()),
            Box::new(open_watches.clone()),
        ] {
            registry
                .register(collector)
                .map_err(MetricsError::Register)?;
        }
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            commit_duration,
            commit_batch_size,
            open_watches,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(MetricsError::Encode)?;
        let mut out = String::from_utf8_lossy(&buf).into_owned();
        out.push_str(&restarts_exposition(&crate::runtime::restarts()));
        Ok(out)
    }
}

/// `skiff_actor_restarts_total`: kept by the runtime for the whole process (supervisors
/// restart actors of every system in it), so it is written out here rather than
/// registered per system.
fn restarts_exposition(restarts: &[(&str, u64)]) -> String {
    let mut out = String::from(
        "# HELP skiff_actor_restarts_total Times a supervised actor was restarted after a failure.\n\
         # TYPE skiff_actor_restarts_total counter\n",
    );
    for (actor, n) in restarts {
        let actor = actor.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "skiff_actor_restarts_total{{actor=\"{actor}\"}} {n}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_exposed_per_actor() {
        let text = restarts_exposition(&[("node-lifecycle-controller", 3), ("Kubelet", 1)]);
        assert!(
            text.contains("# TYPE skiff_actor_restarts_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("skiff_actor_restarts_total{actor=\"node-lifecycle-controller\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("skiff_actor_restarts_total{actor=\"Kubelet\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn rendered_metrics_name_requests_by_verb_resource_and_code() {
        let m = Metrics::new().expect("metrics");
        m.requests.with_label_values(&["get", "pods", "200"]).inc();
        let text = m.render().expect("render");
        assert!(
            text.contains(r#"apiserver_request_total{code="200",resource="pods",verb="get"} 1"#)
        );
    }
}
