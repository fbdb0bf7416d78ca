//! How components reach the store: always through the API, so the same controller code
//! runs in the control plane's process (in-process client) or on another machine (HTTP
//! client), and every write passes the same validation and admission.

pub mod bootstrap;
mod http;
mod local;

use std::sync::Arc;

use futures::stream::BoxStream;
use serde_json::Value;

pub use http::{Credentials, HttpClient};
pub use local::{LocalClient, LocalReviewers};

use crate::api::ApiError;
pub use crate::gateway::objects::PatchType;
pub use crate::store::EventKind;

/// Selectors for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    pub fn labels(selector: impl Into<String>) -> Self {
        ListParams {
            label_selector: Some(selector.into()),
            field_selector: None,
        }
    }

    pub fn fields(selector: impl Into<String>) -> Self {
        ListParams {
            label_selector: None,
            field_selector: Some(selector.into()),
        }
    }
}

/// A list and the revision it was read at (to watch from). Objects are shared: an
/// in-process client hands over the store's own copy of each object version.
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub object: Arc<Value>,
}

/// The stream of a watch; it ends when the server ends the watch (the caller re-watches
/// from the last revision it saw, or re-lists on `ApiError::Expired`).
pub type WatchStream = BoxStream<'static, Result<WatchEvent, ApiError>>;

/// The Kubernetes API as components use it. `resource` is the plural name (`pods`),
/// `namespace` is `None` for cluster-scoped resources or lists across namespaces.
#[async_trait::async_trait]
pub trait ApiClient: Send + Sync + 'static {
    async fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError>;

    /// GET of a subresource, e.g. `scale` (the autoscaler reads a target's Scale).
    async fn get_subresource(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
    ) -> Result<Value, ApiError>;

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList, ApiError>;

    /// Watch changes after `resource_version`.
    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: u64,
    ) -> Result<WatchStream, ApiError>;

    async fn create(
        &self,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError>;

    /// PUT, with the object's `metadata.resourceVersion` as the precondition. `subresource`
    /// is `Some("status")` to write status.
    async fn update(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError>;

    async fn patch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        kind: PatchType,
        patch: Value,
    ) -> Result<Value, ApiError>;

    /// Delete with a propagation policy (`Background` when `None`, as kubectl does).
    async fn delete(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<&str>,
    ) -> Result<Value, ApiError>;

    /// Delete at once, with `gracePeriodSeconds: 0`: how the kubelet removes a pod whose
    /// containers it has stopped after a graceful delete.
    async fn delete_now(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError>;

    /// Bind a pod to a node (`pods/binding`).
    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError>;

    /// `POST serviceaccounts/<name>/token`: a TokenRequest answered with its token (what
    /// the kubelet asks for projected service account tokens). Clients that cannot ask
    /// say so.
    async fn create_token(
        &self,
        _namespace: &str,
        _service_account: &str,
        _request: Value,
    ) -> Result<Value, ApiError> {
        Err(ApiError::MethodNotAllowed)
    }
}
