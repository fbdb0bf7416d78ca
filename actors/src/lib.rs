//! skiff's actors: the store, the gateway and (later) the controllers and node agents,
//! plus the Kubernetes API types and rules they share.

pub mod api;
pub mod client;
pub mod controllers;
pub mod dns;
pub mod gateway;
pub mod kubelet;
pub mod metrics;
pub mod metrics_scraper;
pub mod pki;
pub mod podnet;
pub mod proxy;
pub mod resource_metrics;
pub mod runtime;
pub mod scheduler;
pub mod store;
