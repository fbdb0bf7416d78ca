//! The Kubernetes API surface shared by the gateway and the clients: which resources exist,
//! how objects are keyed in the store, and the `Status` errors every layer answers with.

pub mod defaults;
pub mod events_v1;
pub mod kinds;
pub mod managed_fields;
pub mod meta;
pub mod patch;
pub mod protobuf;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod status;
pub mod strategy;
pub mod table;
pub mod validation;

pub use resources::{registry, ResourceInfo, Storage};
pub use status::ApiError;
