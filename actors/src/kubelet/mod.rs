//! The node agent: a `Kubelet` actor per node, a `PodWorker` actor per pod, over a
//! container [`runtime::Runtime`].

pub mod backoff;
pub mod dns;
pub mod env;
#[cfg(test)]
mod fake;
#[allow(clippy::module_inception)]
pub mod kubelet;
pub mod node;
pub mod pod_worker;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod service_env;
pub mod spec;
pub mod stats;
pub mod status;
pub mod volumes;
