//! The in-process client: calls the gateway's object logic directly, no HTTP.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{json, Value};

use super::{ApiClient, ListParams, ObjectList, PatchType, WatchEvent, WatchStream};
use crate::api::resources;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::strategy::current_form;
use crate::api::ApiError;
use crate::gateway::auth::authn::Authenticator;
use crate::gateway::auth::{Authorization, UserInfo};
use crate::gateway::objects::{store_error, DeleteOptions, ListOptions, Objects, WriteOptions};
use crate::gateway::reviews::{self, Reviewers};
use crate::gateway::routing::Target;
use crate::gateway::watch::WatchFilter;

#[derive(Clone)]
pub struct LocalClient {
    objects: Objects,
    /// The field manager its writes are recorded under in managedFields.
    manager: String,
    /// Who answers TokenReviews and SubjectAccessReviews (the gateway's chains), for
    /// components that ask them (node servers); none: reviews are not served.
    reviewers: Option<Arc<LocalReviewers>>,
}

/// The gateway's authorizer and authenticator, as reviews see them.
pub struct LocalReviewers {
    pub authorization: Authorization,
    /// `None` on the insecure path.
    pub authentication: Option<Arc<Authenticator>>,
}

impl LocalClient {
    pub fn new(objects: Objects) -> Self {
        LocalClient {
            objects,
            manager: "skiff".into(),
            reviewers: None,
        }
    }

    /// The same client, answering reviews with these chains.
    pub fn with_reviewers(mut self, reviewers: LocalReviewers) -> Self {
        self.reviewers = Some(Arc::new(reviewers));
        self
    }

    /// The same client, recording its writes under another field manager.
    pub fn with_manager(mut self, manager: impl Into<String>) -> Self {
        self.manager = manager.into();
        self
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            manager: self.manager.clone(),
            ..WriteOptions::default()
        }
    }
}

fn target(
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    subresource: Option<&str>,
) -> Result<Target, ApiError> {
    let info = resources::lookup_client(resource).ok_or(ApiError::NoRoute)?;
    Ok(Target {
        resource: info,
        namespace: namespace.filter(|_| info.namespaced).map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        legacy_watch: false,
    })
}

fn list_options(params: &ListParams) -> Result<ListOptions, ApiError> {
    let bad = |e: crate::api::selector::SelectorError| ApiError::BadRequest(e.to_string());
    Ok(ListOptions {
        label_selector: match &params.label_selector {
            Some(s) => LabelSelector::parse(s).map_err(bad)?,
            None => LabelSelector::default(),
        },
        field_selector: match &params.field_selector {
            Some(s) => FieldSelector::parse(s).map_err(bad)?,
            None => FieldSelector::default(),
        },
        limit: None,
        continue_token: None,
        read_at: Default::default(),
    })
}

#[async_trait::async_trait]
impl ApiClient for LocalClient {
    async fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), None)?;
        Ok((*self.objects.get(&t)?).clone())
    }

    async fn get_subresource(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), Some(subresource))?;
        if !t.resource.subresources.contains(&subresource) {
            return Err(ApiError::NoRoute);
        }
        Ok((*self.objects.get(&t)?).clone())
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        let t = target(resource, namespace, None, None)?;
        let page = self.objects.list(&t, &list_options(params)?)?;
        Ok(ObjectList {
            items: page.items,
            resource_version: page.rev,
        })
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: u64,
    ) -> Result<WatchStream, ApiError> {
        let t = target(resource, namespace, None, None)?;
        let opts = list_options(params)?;
        let filter = WatchFilter {
            labels: opts.label_selector,
            fields: opts.field_selector,
        };
        let prefix = resources::prefix(t.resource.name, t.namespace.as_deref());
        let mut stream = self
            .objects
            .store
            .watch(&prefix, Some(resource_version))
            .await
            .map_err(|e| store_error(e, resource, ""))?;
        let initial = std::mem::take(&mut stream.initial);
        let live = tokio_stream_from(stream.rx);
        let strategy = t.resource.strategy;
        let events = futures::stream::iter(initial)
            .chain(live)
            .filter_map(move |ev| {
                let out = filter.translate(&ev).map(|(kind, obj)| {
                    Ok(WatchEvent {
                        kind,
                        object: current_form(strategy, obj),
                    })
                });
                futures::future::ready(out)
            });
        Ok(events.boxed())
    }

    async fn create(
        &self,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, None, None)?;
        if resources::is_review(t.resource) {
            // Answered by the gateway's chains, never stored; as the control plane itself.
            let by = self.reviewers.as_ref().ok_or(ApiError::MethodNotAllowed)?;
            let by = Reviewers {
                authz: &by.authorization,
                authn: by.authentication.as_deref(),
            };
            let user = UserInfo::insecure_admin();
            return reviews::review(t.resource, &user, &by, t.namespace.as_deref(), object);
        }
        Ok(Arc::unwrap_or_clone(
            self.objects
                .create(&t, object, &self.write_options())
                .await?
                .object,
        ))
    }

    async fn update(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), subresource)?;
        Ok(Arc::unwrap_or_clone(
            self.objects
                .update(&t, object, &self.write_options())
                .await?
                .object,
        ))
    }

    async fn patch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        kind: PatchType,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), subresource)?;
        Ok(Arc::unwrap_or_clone(
            self.objects
                .patch(&t, kind, patch, &self.write_options())
                .await?
                .object,
        ))
    }

    async fn delete(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<&str>,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), None)?;
        let opts = DeleteOptions {
            propagation: Some(propagation.unwrap_or("Background").to_string()),
            ..DeleteOptions::default()
        };
        self.objects.delete(&t, &opts).await
    }

    async fn delete_now(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let t = target(resource, namespace, Some(name), None)?;
        let opts = DeleteOptions {
            propagation: Some("Background".into()),
            grace_period: Some(0),
            ..DeleteOptions::default()
        };
        self.objects.delete(&t, &opts).await
    }

    async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: Value,
    ) -> Result<Value, ApiError> {
        let t = target(
            "serviceaccounts",
            Some(namespace),
            Some(service_account),
            Some("token"),
        )?;
        // The in-process client is the control plane's own: trusted, like the insecure path.
        let user = UserInfo::insecure_admin();
        self.objects.create_token(&t, request, &user)
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        let t = target("pods", Some(namespace), Some(pod), Some("binding"))?;
        let body = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        self.objects.bind(&t, body).await.map(|_| ())
    }
}

/// A receiver as a stream (ends when the store drops the watcher).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
