//! The node agent: a `Kubelet` actor per node, a `PodWorker` actor per pod, over a
//! container [`runtime::Runtime`].

pub mod runtime;
