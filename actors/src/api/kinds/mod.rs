//! The built-in kinds, one module each: its declaration (`ResourceInfo`) and its
//! strategy. Adding a kind is a module here and one line in [`builtin`].

pub mod config_map;
pub mod controller_revision;
pub mod cron_job;
pub mod csr;
pub mod daemon_set;
pub mod deployment;
pub mod endpoint_slice;
pub mod endpoints;
pub mod event;
pub mod event_v1;
pub mod hpa;
pub mod job;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod persistent_volume;
pub mod persistent_volume_claim;
pub mod pod;
pub mod pod_disruption_budget;
pub mod pod_template;
pub mod priority_class;
pub mod rbac;
pub mod replica_set;
pub mod replication_controller;
pub mod resource_quota;
pub mod reviews;
pub mod secret;
pub mod service;
pub mod service_account;
pub mod stateful_set;
pub mod storage_class;
pub mod workload;

use super::resources::ResourceInfo;

/// The kinds served from the start, in discovery order (core first).
pub fn builtin() -> [&'static ResourceInfo; 40] {
    [
        &namespace::INFO,
        &node::INFO,
        &pod::INFO,
        &pod_template::INFO,
        &service::INFO,
        &endpoints::INFO,
        &config_map::INFO,
        &secret::INFO,
        &service_account::INFO,
        &persistent_volume::INFO,
        &persistent_volume_claim::INFO,
        &replication_controller::INFO,
        &resource_quota::INFO,
        &event::INFO,
        &event_v1::INFO,
        &lease::INFO,
        &rbac::ROLE,
        &rbac::ROLE_BINDING,
        &rbac::CLUSTER_ROLE,
        &rbac::CLUSTER_ROLE_BINDING,
        &deployment::INFO,
        &replica_set::INFO,
        &daemon_set::INFO,
        &stateful_set::INFO,
        &controller_revision::INFO,
        &hpa::INFO,
        &hpa::V1,
        &pod_disruption_budget::INFO,
        &job::INFO,
        &cron_job::INFO,
        &csr::INFO,
        &priority_class::INFO,
        &endpoint_slice::INFO,
        &storage_class::INFO,
        &reviews::SELF_SUBJECT_REVIEW,
        &reviews::SELF_SUBJECT_ACCESS_REVIEW,
        &reviews::TOKEN_REVIEW,
        &reviews::SUBJECT_ACCESS_REVIEW,
        &reviews::LOCAL_SUBJECT_ACCESS_REVIEW,
        &reviews::SELF_SUBJECT_RULES_REVIEW,
    ]
}
