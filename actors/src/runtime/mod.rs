//! The room beneath every component (client-go's informers, workqueue and record;
//! kube-runtime's controller): the scheduler, the controllers, the kubelets and the
//! proxies of one process all stand on it.
//!
//! - [`factory`]: one [`InformerFactory`] per process hands every component the same
//!   shared [`Informer`] per resource (and selector);
//! - [`informer`]: list, watch, relist on 410, and subscriptions that replay the cache;
//! - [`cache`]: the objects as shared `Arc`s, indexed by namespace, node and owner;
//! - [`queue`]: deduplicated keys, per-key backoff and an overall rate limit;
//! - [`controller`]: the `reconcile(key) -> Result<Action>` loop with its error policy;
//! - [`recorder`]: Events, with repeats counted;
//! - [`guard`]: a panic becomes an error for the caller and a restart for the actor.

pub mod cache;
pub mod clock;
pub mod controller;
pub mod factory;
pub mod guard;
pub mod informer;
pub mod leader;
pub mod queue;
pub mod recorder;
pub mod restart;
#[cfg(test)]
pub(crate) mod testing;

pub use cache::{key_of, split_key, Cache, Change, NAMESPACE, NODE_NAME, OWNER_UID};
pub use clock::{from_time, to_time, Clock, FakeClock, SharedClock, SystemClock};
pub use controller::{
    Action, Context, Controller, ControllerStats, GetControllerStats, ReconcileError, Reconciler,
};
pub use factory::{node_filter, InformerFactory};
pub use guard::{
    guard, inject_panic, run_interval_guarded, run_later_guarded, spawn_guarded, InjectPanic,
    Panicked,
};
pub use informer::{Informer, InformerSpec, InformerStats, Notification, Subscription};
pub use queue::{RateLimit, WorkQueue};
pub use recorder::Recorder;
pub use restart::{record_restart, restarts, RestartBackoff};
