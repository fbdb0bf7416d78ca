//! The controller-manager: one supervised actor per controller, each a [`Reconciler`] run by
//! the shared [`runtime::Controller`] loop.

pub mod informer;
pub mod queue;
pub mod recorder;
pub mod runtime;

pub use runtime::{Action, Context, Controller, ReconcileError, Reconciler};
pub mod autoscaler;
pub mod csr_signing;
pub mod endpoints;
pub mod garbage_collector;
pub mod manager;
pub mod namespace;
pub mod node_lifecycle;
pub mod pods;
pub mod replica_calculator;
pub mod replication;
pub mod resource_quota;
