//! The controller-manager: one supervised actor per controller, each a
//! [`Reconciler`](crate::runtime::Reconciler) run by the shared
//! [`Controller`](crate::runtime::Controller) loop of [`crate::runtime`].

pub mod autoscaler;
pub mod csr_signing;
pub mod deployment;
pub mod endpoints;
pub mod garbage_collector;
pub mod hpa_metrics;
pub mod manager;
pub mod namespace;
pub mod node_lifecycle;
pub mod pods;
pub mod replica_calculator;
pub mod replica_set;
pub mod resource_quota;
pub mod scaling_behavior;
