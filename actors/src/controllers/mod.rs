//! The controller-manager: one supervised actor per controller, each a
//! [`Reconciler`](crate::runtime::Reconciler) run by the shared
//! [`Controller`](crate::runtime::Controller) loop of [`crate::runtime`].

pub mod autoscaler;
pub mod cron_job;
pub mod csr_signing;
pub mod daemon_set;
pub mod deployment;
pub mod disruption;
pub mod endpoint_slice;
pub mod endpoint_slice_mirroring;
pub mod endpoints;
pub mod garbage_collector;
pub mod history;
pub mod hpa_metrics;
pub mod job;
mod job_pods;
pub mod job_tracking;
pub mod local_path;
pub mod manager;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
mod node_zones;
pub mod owned;
pub mod persistent_volume;
pub mod pod_gc;
pub mod pods;
pub mod replica_calculator;
pub mod replica_set;
pub mod resource_quota;
pub mod root_ca_publisher;
pub mod scaling_behavior;
pub mod service_account;
pub mod service_account_token;
pub mod service_lb;
pub mod stateful_set;
pub mod storage_protection;
pub mod system_service;
pub mod taint_eviction;
pub mod taints;
pub mod token_cleaner;
pub mod ttl_after_finished;
