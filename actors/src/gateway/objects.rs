//! The apiserver's object logic, independent of HTTP: decode, default, validate, admit,
//! and turn each verb into store writes with optimistic concurrency.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::allocation::{self, Allocated, ServiceRanges};
use super::read_options::{self, ReadAt};
use super::routing::Target;
use crate::api::managed_fields::{self, Scope};
use crate::api::resources::{self, object_key, ResourceInfo};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::status::success_status;
use crate::api::strategy::{self, Part, ScaleMapping};
use crate::api::validation::{self, FieldError};
use crate::api::{defaults, meta, patch, quota, ApiError};
use crate::store::{
    Decision, ListQuery, Object, Rev, StoreError, StoreHandle, UpdateFn, Updated, WriteOp,
    WriteOutcome,
};

/// Namespaces that exist from the first start and may never be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];
const OPTIMISTIC_LOCK_MSG: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}; must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Options shared by create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    /// A last check of the object about to be written, after validation (admission that
    /// depends on who asks, such as RBAC's escalation check).
    pub admit: Option<Admit>,
    /// The field manager recorded in managedFields (`fieldManager`, else the user agent's
    /// program name).
    pub manager: String,
}

/// Checks the object about to be written; an error refuses the write.
pub type AdmitFn = dyn Fn(&Value) -> Result<(), ApiError> + Send + Sync;

/// An admission check run on the object a create, update or patch would write.
#[derive(Clone)]
pub struct Admit(pub Arc<AdmitFn>);

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

impl WriteOptions {
    /// Record this write's field ownership in `new.metadata.managedFields`.
    fn record_fields(&self, t: &Target, old: Option<&Value>, new: &mut Value) {
        let info = t.resource;
        let scope = match t.subresource.as_deref() {
            Some("status") | Some("approval") => Scope::StatusOnly,
            _ if info.has_status_subresource => Scope::NoStatus,
            _ => Scope::All,
        };
        let api_version = resources::stored_api_version(info);
        let writer = managed_fields::Writer {
            manager: &self.manager,
            api_version: &api_version,
            subresource: t.subresource.as_deref(),
            scope,
        };
        managed_fields::record(info.kind, old, new, &writer, &meta::now_rfc3339());
    }

    fn admit(&self, obj: &Value) -> Result<(), ApiError> {
        match &self.admit {
            Some(Admit(check)) => check(obj),
            None => Ok(()),
        }
    }
}

/// Whether an update is validated as a client's change, or is a change the server itself
/// makes through a dedicated subresource (binding sets `spec.nodeName`, which a pod update
/// may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Validate,
    Trusted,
}

/// A successful write and the warnings the client should see.
#[derive(Debug)]
pub struct Written {
    /// Shared with the store's snapshot: answering does not copy it.
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
    /// `true` when a PUT created the object (answered 201).
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/json-patch+json" => Ok(PatchType::Json),
            _ => Err(ApiError::UnsupportedPatch),
        }
    }
}

/// Parsed `DeleteOptions` (body or query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<Rev>,
    pub grace_period: Option<i64>,
    pub dry_run: bool,
}

/// A page of a list.
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub rev: Rev,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// The revision to read at (`resourceVersion` and `resourceVersionMatch`).
    pub read_at: ReadAt,
}

/// The object logic over a store handle.
#[derive(Clone)]
pub struct Objects {
    pub store: StoreHandle,
    /// Serialises quota admission and the create it admits, per namespace, so two creates
    /// cannot both fit in the last slot of a quota.
    quota_locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    service_ranges: Arc<ServiceRanges>,
    /// Serialises service address allocation with the write that records it.
    alloc_lock: Arc<tokio::sync::Mutex<()>>,
    /// Signs service account tokens (the TokenRequest subresource).
    token_issuer: Option<Arc<super::serviceaccount::token::TokenIssuer>>,
    /// What the DefaultTolerationSeconds admission plugin gives pods.
    default_tolerations: super::tolerations::DefaultTolerations,
}

pub fn store_error(err: StoreError, resource: &str, name: &str) -> ApiError {
    match err {
        StoreError::AlreadyExists { .. } => ApiError::AlreadyExists {
            resource: resource.to_string(),
            name: name.to_string(),
        },
        StoreError::NotFound { .. } => ApiError::not_found(resource, name),
        StoreError::Conflict { .. } => ApiError::conflict(resource, name, OPTIMISTIC_LOCK_MSG),
        StoreError::Expired { requested, oldest } => {
            ApiError::Expired(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::TooLarge { requested, current } => {
            ApiError::TooLargeResourceVersion { requested, current }
        }
        StoreError::Unavailable(m) | StoreError::Datastore(m) => ApiError::ServiceUnavailable(m),
        StoreError::Io(m)
        | StoreError::Corrupt { detail: m, .. }
        | StoreError::UpdateFailed { detail: m, .. } => ApiError::Internal(m),
    }
}

impl Objects {
    pub fn new(store: StoreHandle) -> Self {
        Objects {
            store,
            quota_locks: Arc::default(),
            service_ranges: Arc::default(),
            alloc_lock: Arc::default(),
            token_issuer: None,
            default_tolerations: Default::default(),
        }
    }

    /// Give pods these not-ready and unreachable tolerations unless they have their own.
    pub fn with_default_tolerations(
        mut self,
        defaults: super::tolerations::DefaultTolerations,
    ) -> Self {
        self.default_tolerations = defaults;
        self
    }

    /// Sign service account tokens with this issuer.
    pub fn with_token_issuer(
        mut self,
        issuer: Arc<super::serviceaccount::token::TokenIssuer>,
    ) -> Self {
        self.token_issuer = Some(issuer);
        self
    }

    pub fn token_issuer(&self) -> Option<&super::serviceaccount::token::TokenIssuer> {
        self.token_issuer.as_deref()
    }

    /// `POST serviceaccounts/<name>/token` on behalf of `user`.
    pub fn create_token(
        &self,
        t: &Target,
        body: Value,
        user: &super::auth::UserInfo,
    ) -> Result<Value, ApiError> {
        let issuer = self.token_issuer.as_deref().ok_or_else(|| {
            ApiError::ServiceUnavailable("no service account token issuer".into())
        })?;
        let (Some(ns), Some(name)) = (t.namespace.as_deref(), t.name.as_deref()) else {
            return Err(ApiError::MethodNotAllowed);
        };
        super::serviceaccount::request::create_token(
            &self.store,
            issuer,
            user,
            ns,
            name,
            body,
            chrono::Utc::now(),
        )
    }

    /// Use these ranges for cluster IPs and node ports.
    pub fn with_service_ranges(mut self, ranges: ServiceRanges) -> Self {
        self.service_ranges = Arc::new(ranges);
        self
    }

    /// Give a Service its cluster IP and node ports (422 when a requested one is taken).
    fn allocate_service(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        key: &str,
    ) -> Result<(), ApiError> {
        let (all, _) = self.store.list(&resources::prefix("services", None));
        let taken =
            Allocated::from_services(all.iter().filter(|(k, _)| k != key).map(|(_, o)| &*o.value));
        allocation::allocate(svc, old, &self.service_ranges, &taken).map_err(|causes| {
            ApiError::Invalid {
                kind: "Service".into(),
                group: String::new(),
                name: meta::name(svc).unwrap_or_default().to_string(),
                causes,
            }
        })
    }

    /// Quota admission: refuse (403) a create that would take a namespace over any of its
    /// ResourceQuotas. The returned guard must be held until the create is written.
    async fn admit_quota(
        &self,
        kind: &str,
        obj: &Value,
        ns: &str,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
        // Most namespaces have no quota: look for one before computing the usage.
        let (quotas, _) = self
            .store
            .list(&resources::prefix("resourcequotas", Some(ns)));
        if quotas.is_empty() {
            return Ok(None);
        }
        let delta = quota::usage_of(kind, obj);
        if delta.is_empty() {
            return Ok(None);
        }
        let lock = self
            .quota_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ns.to_string())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        let mut counted: Vec<(&'static str, Arc<Value>)> = Vec::new();
        for res in [
            "pods",
            "services",
            "replicationcontrollers",
            "resourcequotas",
        ] {
            let kind = resources::lookup(res).map(|r| r.kind).unwrap_or_default();
            let (items, _) = self.store.list(&resources::prefix(res, Some(ns)));
            counted.extend(items.into_iter().map(|(_, o)| (kind, o.value)));
        }
        for (_, q) in &quotas {
            let hard = quota::hard_of(&q.value);
            let used = quota::total(&hard, counted.iter().map(|(k, o)| (*k, &**o)));
            let qname = meta::name(&q.value).unwrap_or_default();
            if let Err(msg) = quota::admit(qname, &hard, &used, &delta) {
                let resource = resources::by_kind(kind)
                    .map(|r| r.name)
                    .unwrap_or("objects");
                return Err(ApiError::Forbidden(format!(
                    "{resource} \"{}\" is forbidden: {msg}",
                    meta::name(obj).unwrap_or_default()
                )));
            }
        }
        Ok(Some(guard))
    }

    fn key(t: &Target, name: &str) -> String {
        object_key(t.resource.name, t.namespace.as_deref(), name)
    }

    fn name_of(t: &Target) -> Result<&str, ApiError> {
        t.name.as_deref().ok_or(ApiError::MethodNotAllowed)
    }

    fn current(&self, t: &Target) -> Result<Object, ApiError> {
        let name = Self::name_of(t)?;
        self.store
            .get(&Self::key(t, name))
            .ok_or_else(|| ApiError::not_found(t.resource.name, name))
    }

    pub fn get(&self, t: &Target) -> Result<Arc<Value>, ApiError> {
        let obj = self.current(t)?;
        match t.subresource.as_deref() {
            Some("scale") => Ok(Arc::new(scale_of(scale_mapping(t)?, &obj.value))),
            _ => Ok(view_of_arc(t.resource, obj.value)),
        }
    }

    /// One page of a list, read at the revision the options (or the continue token) ask
    /// for; a continued list reads every page at its first page's revision.
    pub fn list(&self, t: &Target, opts: &ListOptions) -> Result<ListPage, ApiError> {
        check_fields(t.resource, &opts.field_selector)?;
        let prefix = resources::prefix(t.resource.name, t.namespace.as_deref());
        let resumed = match &opts.continue_token {
            Some(tok) => Some(read_options::decode_continue(tok, &prefix)?),
            None => None,
        };
        let rev = match (&resumed, opts.read_at) {
            (Some(c), _) => c.rev,
            (None, ReadAt::Exact(r)) => Some(r),
            (None, ReadAt::NotOlderThan(r)) => {
                let current = self.store.revision();
                if r > current {
                    return Err(ApiError::TooLargeResourceVersion {
                        requested: r,
                        current,
                    });
                }
                None
            }
            (None, ReadAt::Latest | ReadAt::Any) => None,
        };
        let unfiltered = opts.label_selector.is_empty() && opts.field_selector.is_empty();
        let query = ListQuery {
            prefix: &prefix,
            start: resumed.as_ref().map(|c| c.start.as_str()),
            rev,
            limit: opts.limit,
            count_remaining: unfiltered,
        };
        let page = self
            .store
            .list_page(&query, |o| {
                opts.label_selector.matches_object(&o.value)
                    && opts.field_selector.matches(&o.value)
            })
            .map_err(|e| match (e, &resumed) {
                // kube-apiserver's answer to a token of a compacted revision, with a token
                // that goes on from the same key at the latest revision.
                (StoreError::Expired { .. }, Some(c)) => ApiError::ExpiredContinue {
                    continue_token: read_options::encode_continue(&prefix, &c.start, -1),
                },
                (StoreError::Expired { .. }, None) => ApiError::Expired(
                    "The resourceVersion for the provided list is too old.".into(),
                ),
                (e, _) => store_error(e, t.resource.name, ""),
            })?;
        let continue_token = page
            .more_after
            .as_deref()
            .map(|last| read_options::continue_after(&prefix, last, page.rev));
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(|(_, o)| view_of_arc(t.resource, o.value))
                .collect(),
            rev: page.rev,
            remaining: page.remaining,
            continue_token,
        })
    }

    async fn write(
        &self,
        op: WriteOp,
        resource: &str,
        name: &str,
    ) -> Result<WriteOutcome, ApiError> {
        self.store
            .write(op)
            .await
            .map_err(|e| store_error(e, resource, name))
    }

    pub async fn create(
        &self,
        t: &Target,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if t.name.is_some() || t.subresource.is_some() {
            return Err(ApiError::MethodNotAllowed);
        }
        let info = t.resource;
        let obj = check_body_kind(info, body)?;
        let warnings = decode_and_check_fields(info, &obj, opts.field_validation)?;
        if resources::is_view(info) {
            let causes = info.strategy.validate_view_create(&obj);
            if !causes.is_empty() {
                return Err(ApiError::Invalid {
                    kind: info.kind.into(),
                    group: info.group.into(),
                    name: meta::name(&obj).unwrap_or_default().to_string(),
                    causes,
                });
            }
        }
        let mut obj = stored_of(info, obj);
        let ns = self.resolve_namespace(t, &obj)?;
        resolve_generate_name(&mut obj)?;
        if meta::resource_version(&obj).is_some() {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        defaults::defaults_for_create(info.strategy, &mut obj, ns.as_deref());
        meta::drop_empty_metadata(&mut obj);
        let name = meta::name(&obj).unwrap_or_default().to_string();
        super::priority::admit_create(&self.store, info.name, &mut obj)?;
        if info.name == "pods" {
            super::tolerations::admit_pod(&mut obj, &self.default_tolerations);
        }
        if let (true, Some(ns)) = (info.name == "pods", ns.as_deref()) {
            // Namespace lifecycle first, as in kube-apiserver's admission chain.
            self.check_namespace_accepts(ns)?;
            super::serviceaccount::admission::admit_pod(&self.store, ns, &mut obj).await?;
        }
        super::storage::admit_create(&self.store, info.name, &mut obj)?;
        validate(info, &obj, None, None)?;
        opts.admit(&obj)?;
        opts.record_fields(t, None, &mut obj);
        if let Some(ns) = &ns {
            self.check_namespace_accepts(ns)?;
        }
        let _quota_guard = match &ns {
            Some(ns) => self.admit_quota(info.kind, &obj, ns).await?,
            None => None,
        };
        let _alloc_guard = if info.kind == "Service" {
            let guard = self.alloc_lock.clone().lock_owned().await;
            self.allocate_service(&mut obj, None, &object_key(info.name, ns.as_deref(), &name))?;
            Some(guard)
        } else {
            None
        };
        if opts.dry_run {
            return Ok(Written {
                object: Arc::new(view_of(info, obj)),
                warnings,
                created: true,
            });
        }
        let key = object_key(info.name, ns.as_deref(), &name);
        let out = self
            .write(WriteOp::Create { key, object: obj }, info.name, &name)
            .await?;
        if info.name == "namespaces" {
            self.create_default_account(&name).await;
        }
        Ok(Written {
            object: view_of_arc(info, out.object),
            warnings,
            created: true,
        })
    }

    /// A namespace gets its `default` ServiceAccount as it is created, so that a pod
    /// created right after finds it (the ServiceAccount controller covers namespaces from
    /// before, and deletions). Written as the controller would create it.
    async fn create_default_account(&self, ns: &str) {
        use crate::api::kinds::service_account::{self, DEFAULT_NAME};
        let info = &service_account::INFO;
        let mut obj = service_account::object(ns, DEFAULT_NAME);
        defaults::defaults_for_create(info.strategy, &mut obj, Some(ns));
        let t = Target {
            resource: info,
            namespace: Some(ns.to_string()),
            name: None,
            subresource: None,
            legacy_watch: false,
        };
        let opts = WriteOptions {
            manager: "kube-controller-manager".into(),
            ..WriteOptions::default()
        };
        opts.record_fields(&t, None, &mut obj);
        let key = object_key(info.name, Some(ns), DEFAULT_NAME);
        match self
            .write(
                WriteOp::Create { key, object: obj },
                info.name,
                DEFAULT_NAME,
            )
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cannot create the default service account")
            }
        }
    }

    /// The namespace a create lands in: the path's, which the body may repeat but not contradict.
    fn resolve_namespace(&self, t: &Target, obj: &Value) -> Result<Option<String>, ApiError> {
        if !t.resource.namespaced {
            return Ok(None);
        }
        let body_ns = meta::namespace(obj).filter(|s| !s.is_empty());
        match (&t.namespace, body_ns) {
            (Some(path), Some(body)) if path != body => Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            )),
            (Some(path), _) => Ok(Some(path.clone())),
            (None, _) => Err(ApiError::MethodNotAllowed),
        }
    }

    fn check_namespace_accepts(&self, ns: &str) -> Result<(), ApiError> {
        let key = object_key("namespaces", None, ns);
        let obj = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("namespaces", ns))?;
        let terminating = obj.value.pointer("/metadata/deletionTimestamp").is_some()
            || obj.value.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        if terminating {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// PUT of an object or of its status or scale subresource.
    pub async fn update(
        &self,
        t: &Target,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let name = Self::name_of(t)?.to_string();
        match t.subresource.as_deref() {
            Some("scale") => {
                let precondition = parse_precondition(meta::resource_version(&body))?;
                return self.update_scale(t, &name, body, precondition, opts).await;
            }
            Some("status") | Some("finalize") | Some("approval") | None => {}
            Some("ephemeralcontainers") if info_is_pods(t) => {}
            Some(_) => return Err(ApiError::MethodNotAllowed),
        }
        let info = t.resource;
        let body = check_body_kind(info, body)?;
        let warnings = decode_and_check_fields(info, &body, opts.field_validation)?;
        check_body_identity(t, &name, &body)?;
        let precondition = parse_precondition(meta::resource_version(&body))?;
        let body = stored_of(info, body);
        let part = match t.subresource.as_deref() {
            Some("status") => Part::Status,
            Some("finalize") => Part::Finalizers,
            Some("approval") => Part::Approval,
            Some("ephemeralcontainers") => Part::EphemeralContainers,
            _ => Part::Main,
        };
        let written = self
            .modify(t, &name, precondition, opts, Check::Validate, move |old| {
                Ok((merge_update(info, old, body, part), vec![]))
            })
            .await?;
        Ok(Written {
            warnings,
            ..written
        })
    }

    /// PATCH of an object or of its status or scale subresource.
    pub async fn patch(
        &self,
        t: &Target,
        kind: PatchType,
        patch_body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let name = Self::name_of(t)?.to_string();
        let info = t.resource;
        let part = match t.subresource.as_deref() {
            Some("scale") => {
                let old = self.current(t)?;
                let scale = scale_of(scale_mapping(t)?, &old.value);
                let scale = apply_patch(kind, &scale, &patch_body, "Scale")?;
                // Only a resourceVersion the patch itself names is a precondition.
                let precondition = parse_precondition(
                    patch_body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str),
                )?;
                return self.update_scale(t, &name, scale, precondition, opts).await;
            }
            Some("status") => Part::Status,
            Some("approval") => Part::Approval,
            Some("ephemeralcontainers") if info_is_pods(t) => Part::EphemeralContainers,
            None => Part::Main,
            Some(_) => return Err(ApiError::MethodNotAllowed),
        };
        let (target, mode) = (t.clone(), opts.field_validation);
        let patch_name = name.clone();
        self.modify(t, &name, None, opts, Check::Validate, move |old| {
            // A patch is written against the object as this resource shows it.
            let shown = view_of(info, old.clone());
            let patched = apply_patch(kind, &shown, &patch_body, info.kind)?;
            let warnings = decode_and_check_fields(info, &patched, mode)?;
            check_body_identity(&target, &patch_name, &patched)?;
            // A patch that names a resourceVersion makes it a precondition, as in Kubernetes.
            if let Some(rv) = patch_body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                if Some(rv) != meta::resource_version(old) {
                    return Err(ApiError::conflict(
                        info.name,
                        &patch_name,
                        OPTIMISTIC_LOCK_MSG,
                    ));
                }
            }
            Ok((
                merge_update(info, old, stored_of(info, patched), part),
                warnings,
            ))
        })
        .await
    }

    /// Read-modify-write as one guaranteed update of the store: `change` sees the latest
    /// state, so a concurrent writer never makes this fail or retry; only a
    /// resourceVersion the caller pinned can conflict.
    async fn modify<F>(
        &self,
        t: &Target,
        name: &str,
        precondition: Option<Rev>,
        opts: &WriteOptions,
        check: Check,
        change: F,
    ) -> Result<Written, ApiError>
    where
        F: FnOnce(&Value) -> Result<(Value, Vec<String>), ApiError> + Send + 'static,
    {
        let info = t.resource;
        let key = Self::key(t, name);
        // Service addresses are allocated from the committed services, so service writes
        // go one at a time.
        let _alloc_guard = match info.name {
            "services" => Some(self.alloc_lock.clone().lock_owned().await),
            _ => None,
        };
        let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (this, opts, name_owned, key_owned, target) = (
            self.clone(),
            opts.clone(),
            name.to_string(),
            key.clone(),
            t.clone(),
        );
        let out = warnings.clone();
        let f: UpdateFn<ApiError> = Box::new(move |old: &Object| {
            if let Some(rv) = precondition {
                if rv != old.rev {
                    return Err(ApiError::conflict(
                        info.name,
                        &name_owned,
                        OPTIMISTIC_LOCK_MSG,
                    ));
                }
            }
            // An object stored in an older version is changed in the current one.
            let current = strategy::current_form(info.strategy, old.value.clone());
            let (mut new, w) = change(&current)?;
            *out.lock().unwrap_or_else(|e| e.into_inner()) = w;
            meta::drop_empty_metadata(&mut new);
            if check == Check::Validate {
                // kube-apiserver defaults whatever it decodes: updates and patches too.
                info.strategy.default(&mut new);
                if info.name == "pods" && target.subresource.is_none() {
                    super::tolerations::admit_pod(&mut new, &this.default_tolerations);
                }
            }
            if info.name == "services" {
                this.allocate_service(&mut new, Some(&current), &key_owned)?;
            }
            super::priority::keep_on_update(info.name, &current, &mut new);
            bump_generation(&current, &mut new);
            if check == Check::Validate {
                validate(info, &new, Some(&current), target.subresource.as_deref())?;
                super::priority::admit_update(&this.store, info.name, &new)?;
                super::storage::admit_update(&this.store, info.name, &current, &new)?;
                opts.admit(&new)?;
                opts.record_fields(&target, Some(&current), &mut new);
            }
            if opts.dry_run {
                return Ok(Decision::Keep(new));
            }
            if new == *current {
                return Ok(Decision::Keep((*old.value).clone()));
            }
            // An object being deleted goes once its last finalizer is removed.
            Ok(if ready_to_delete(&new) {
                Decision::Delete
            } else {
                Decision::Put(new)
            })
        });
        let object = view_of_arc(info, self.apply(&key, f, info.name, name).await?);
        let warnings = std::mem::take(&mut *warnings.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Written {
            object,
            warnings,
            created: false,
        })
    }

    /// Run a guaranteed update and answer with the object it wrote or kept.
    async fn apply(
        &self,
        key: &str,
        f: UpdateFn<ApiError>,
        resource: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        match self.store.guaranteed_update(key, f).await {
            Ok(Ok(Updated::Written(out))) => Ok(out.object),
            Ok(Ok(Updated::Kept(v))) => Ok(Arc::new(v)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(store_error(e, resource, name)),
        }
    }

    async fn update_scale(
        &self,
        t: &Target,
        name: &str,
        scale: Value,
        precondition: Option<Rev>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mapping = scale_mapping(t)?;
        let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
        let replicas = replicas
            .as_i64()
            .filter(|r| *r >= 0)
            .ok_or_else(|| ApiError::Invalid {
                kind: "Scale".into(),
                group: "autoscaling".into(),
                name: name.to_string(),
                causes: vec![FieldError {
                    field: "spec.replicas".into(),
                    kind: validation::FieldErrorKind::Invalid,
                    value: Some(replicas.to_string()),
                    detail: "must be greater than or equal to 0".into(),
                }],
            })?;
        let main = Target {
            subresource: None,
            ..t.clone()
        };
        let written = self
            .modify(
                &main,
                name,
                precondition,
                opts,
                Check::Validate,
                move |old| {
                    let mut new = old.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    Ok((new, vec![]))
                },
            )
            .await?;
        Ok(Written {
            object: Arc::new(scale_of(mapping, &written.object)),
            ..written
        })
    }

    /// Delete an object, decided against its latest state in one guaranteed update: a
    /// concurrent writer cannot make an unconditional delete fail.
    pub async fn delete(&self, t: &Target, opts: &DeleteOptions) -> Result<Value, ApiError> {
        if t.subresource.is_some() {
            return Err(ApiError::MethodNotAllowed);
        }
        check_propagation(opts)?;
        let name = Self::name_of(t)?.to_string();
        let info = t.resource;
        if info.name == "namespaces" && SYSTEM_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let key = Self::key(t, &name);
        let (opts_owned, name_owned) = (opts.clone(), name.clone());
        let f: UpdateFn<ApiError> =
            Box::new(move |old: &Object| plan_delete(info, &name_owned, old, &opts_owned));
        Ok(view_of(
            info,
            Arc::unwrap_or_clone(self.apply(&key, f, info.name, &name).await?),
        ))
    }

    pub async fn delete_collection(
        &self,
        t: &Target,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<(Vec<Value>, Rev), ApiError> {
        check_propagation(opts)?;
        let page = self.list(
            t,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..list.clone()
            },
        )?;
        let mut deleted = Vec::new();
        for item in page.items {
            let name = meta::name(&item).unwrap_or_default().to_string();
            let target = Target {
                namespace: meta::namespace(&item).map(str::to_string),
                name: Some(name),
                ..t.clone()
            };
            match self.delete(&target, opts).await {
                Ok(obj) => deleted.push(obj),
                Err(ApiError::NotFound { .. }) | Err(ApiError::Forbidden(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, self.store.revision()))
    }

    /// `POST pods/{name}/binding`: assign the pod to a node, once.
    pub async fn bind(&self, t: &Target, body: Value) -> Result<Value, ApiError> {
        let name = Self::name_of(t)?.to_string();
        validation::decode_check("Binding", &body)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::Invalid {
                kind: "Binding".into(),
                group: String::new(),
                name: name.clone(),
                causes: vec![FieldError {
                    field: "target.name".into(),
                    kind: validation::FieldErrorKind::Required,
                    value: None,
                    detail: String::new(),
                }],
            })?
            .to_string();
        let pods = Target {
            subresource: None,
            ..t.clone()
        };
        let pod_name = name.clone();
        self.modify(
            &pods,
            &pod_name,
            None,
            &WriteOptions::default(),
            Check::Trusted,
            move |old| {
                if let Some(bound) = old
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    return Err(ApiError::conflict(
                        "pods",
                        &name,
                        format!("pod {name} is already assigned to node \"{bound}\""),
                    ));
                }
                if old.pointer("/metadata/deletionTimestamp").is_some() {
                    return Err(ApiError::conflict(
                        "pods",
                        &name,
                        "pod is being deleted, cannot be assigned to a host",
                    ));
                }
                let mut new = old.clone();
                new["spec"]["nodeName"] = json!(node);
                set_condition(
                    &mut new,
                    json!({
                        "type": "PodScheduled", "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339(),
                    }),
                );
                Ok((new, vec![]))
            },
        )
        .await?;
        Ok(success_status(201, None))
    }
}

/// What a delete does to the object as it is now: check the preconditions, then delete
/// it at once, or mark it (graceful pod deletion, finalizers, Orphan and Foreground
/// propagation, which the garbage collector finishes by removing its finalizer).
fn plan_delete(
    info: &ResourceInfo,
    name: &str,
    old: &Object,
    opts: &DeleteOptions,
) -> Result<Decision, ApiError> {
    if let Some(uid) = &opts.precondition_uid {
        if Some(uid.as_str()) != meta::uid(&old.value) {
            return Err(ApiError::conflict(
                info.name,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&old.value).unwrap_or("")
                ),
            ));
        }
    }
    if let Some(rv) = opts.precondition_rv {
        if rv != old.rev {
            return Err(ApiError::conflict(info.name, name, format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                old.rev
            )));
        }
    }
    if opts.dry_run {
        return Ok(Decision::Keep((*old.value).clone()));
    }
    if info.name == "namespaces" {
        return Ok(mark_deleting(info, &old.value, None));
    }
    if info.name == "pods" {
        if let Some(grace) = pod_grace_period(&old.value, opts.grace_period) {
            return Ok(delete_gracefully(&old.value, grace));
        }
    }
    let finalizer = match opts.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    };
    let has_finalizers = old
        .value
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers || finalizer.is_some() {
        return Ok(mark_deleting(info, &old.value, finalizer));
    }
    Ok(Decision::Delete)
}

/// Graceful pod deletion: the pod is marked with a deletion timestamp `grace` seconds
/// ahead; its kubelet stops the containers (SIGTERM, then SIGKILL at the deadline) and
/// then deletes it for good with a grace period of 0.
fn delete_gracefully(old: &Value, grace: i64) -> Decision {
    let current = old
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    // A second delete may shorten the grace period, never lengthen it.
    if current.is_some_and(|c| c <= grace) {
        return Decision::Keep(old.clone());
    }
    let mut new = old.clone();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let m = meta::metadata_mut(&mut new);
    m.insert(
        "deletionTimestamp".into(),
        json!(deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    Decision::Put(new)
}

/// Mark an object as being deleted: whoever owns its finalizers (the garbage collector,
/// the namespace controller) finishes the deletion by removing them.
fn mark_deleting(info: &ResourceInfo, old: &Value, finalizer: Option<&str>) -> Decision {
    let mut new = old.clone();
    if new.pointer("/metadata/deletionTimestamp").is_none() {
        let m = meta::metadata_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
    if let Some(f) = finalizer {
        let m = meta::metadata_mut(&mut new);
        let list = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(arr) = list.as_array_mut() {
            if !arr.iter().any(|x| x == f) {
                arr.push(json!(f));
            }
        }
    }
    if info.name == "namespaces" {
        new["status"]["phase"] = json!("Terminating");
    }
    if ready_to_delete(&new) {
        Decision::Delete
    } else if new == *old {
        Decision::Keep(new)
    } else {
        Decision::Put(new)
    }
}

/// An object as the resource `info` shows it: the stored form, or for a view (the
/// events.k8s.io/v1 Events) the stored object converted.
fn view_of(info: &ResourceInfo, stored: Value) -> Value {
    let stored = info.strategy.upgrade_stored(&stored).unwrap_or(stored);
    if resources::is_view(info) {
        info.strategy.to_view(stored)
    } else {
        stored
    }
}

fn view_of_arc(info: &ResourceInfo, stored: Arc<Value>) -> Arc<Value> {
    let stored = strategy::current_form(info.strategy, stored);
    if resources::is_view(info) {
        Arc::new(info.strategy.to_view((*stored).clone()))
    } else {
        stored
    }
}

/// The stored form of an object written through the resource `info`.
fn stored_of(info: &ResourceInfo, view: Value) -> Value {
    if resources::is_view(info) {
        info.strategy.stored_from_view(view)
    } else {
        view
    }
}

/// The grace period a pod deletion gets, or `None` for an immediate delete: a pod no
/// kubelet has started (no `status.startTime`), or one already finished, has nothing to
/// stop; a grace period of 0 is a forced delete.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> Option<i64> {
    let started = pod.pointer("/status/startTime").is_some();
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    );
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !scheduled || !started || finished {
        return None;
    }
    let grace = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// An object being deleted goes once nothing holds it: no finalizers left (and, for a
/// namespace, no `spec.finalizers` either).
fn ready_to_delete(obj: &Value) -> bool {
    let empty = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && empty("/metadata/finalizers")
        && empty("/spec/finalizers")
}

fn set_condition(obj: &mut Value, cond: Value) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conds = &mut obj["status"]["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    if let Some(list) = conds.as_array_mut() {
        list.retain(|c| c.get("type") != cond.get("type"));
        list.push(cond);
    }
}

/// The resourceVersion an update must match; an empty or "0" one makes the update
/// unconditional, as in Kubernetes.
fn parse_precondition(rv: Option<&str>) -> Result<Option<Rev>, ApiError> {
    match rv.filter(|r| !r.is_empty() && *r != "0") {
        Some(rv) => rv
            .parse::<Rev>()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}"))),
        None => Ok(None),
    }
}

fn check_propagation(opts: &DeleteOptions) -> Result<(), ApiError> {
    match opts.propagation.as_deref() {
        None | Some("Orphan") | Some("Background") | Some("Foreground") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "DeletionPropagation: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

pub fn check_fields(info: &ResourceInfo, sel: &FieldSelector) -> Result<(), ApiError> {
    for f in sel.fields() {
        if !info.supports_field(f) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {f}"
            )));
        }
    }
    Ok(())
}

/// `kind`/`apiVersion` in a body may be omitted but not wrong.
fn check_body_kind(info: &ResourceInfo, body: Value) -> Result<Value, ApiError> {
    let mut body = match body {
        Value::Object(_) => body,
        _ => {
            return Err(ApiError::BadRequest(
                "the body of the request must be a JSON object".into(),
            ))
        }
    };
    let expected = info.api_version();
    match body.get("kind").and_then(Value::as_str) {
        None | Some("") => {}
        Some(k) if k == info.kind => {}
        Some(k) => {
            // kube-apiserver decodes the body as the kind it names and then fails to
            // convert it into the endpoint's type.
            let version = body
                .get("apiVersion")
                .and_then(Value::as_str)
                .map(|v| v.rsplit('/').next().unwrap_or(v))
                .unwrap_or(info.version);
            let internal = match info.group {
                "" => "core",
                g => g.split('.').next().unwrap_or(g),
            };
            return Err(ApiError::BadRequest(format!(
                "{k} in version \"{version}\" cannot be handled as a {kind}: converting ({version}.{k}) to ({internal}.{kind}): unknown conversion",
                kind = info.kind
            )));
        }
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {}
        Some(v) if v == expected => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )))
        }
    }
    body["kind"] = json!(info.kind);
    body["apiVersion"] = json!(expected);
    Ok(body)
}

fn check_body_identity(t: &Target, name: &str, body: &Value) -> Result<(), ApiError> {
    if let Some(body_name) = meta::name(body) {
        if body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let (Some(path_ns), Some(body_ns)) = (&t.namespace, meta::namespace(body)) {
        if !body_ns.is_empty() && body_ns != path_ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    Ok(())
}

/// Type-check the body against the Kubernetes schema; unknown fields are refused under
/// Strict and reported as warnings under Warn.
fn decode_and_check_fields(
    info: &ResourceInfo,
    obj: &Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let unknown = info
        .strategy
        .decode(obj)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        FieldValidation::Strict if !msgs.is_empty() => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        ))),
        FieldValidation::Ignore => Ok(vec![]),
        _ => Ok(msgs),
    }
}

fn resolve_generate_name(obj: &mut Value) -> Result<(), ApiError> {
    let has_name = meta::name(obj).is_some_and(|n| !n.is_empty());
    if has_name {
        return Ok(());
    }
    let prefix = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    if let Some(prefix) = prefix {
        let name = format!("{prefix}{}", meta::random_suffix());
        meta::metadata_mut(obj).insert("name".into(), json!(name));
    }
    Ok(())
}

/// The `ephemeralcontainers` subresource is the pods' own.
fn info_is_pods(t: &Target) -> bool {
    t.resource.name == "pods" && t.resource.group.is_empty()
}

fn validate(
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    subresource: Option<&str>,
) -> Result<(), ApiError> {
    let causes = match (subresource, old) {
        (Some("ephemeralcontainers"), Some(old)) => {
            validation::validate_pod_ephemeral_containers_update(info, obj, old)
        }
        _ => validation::validate_object(info, obj, old),
    };
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: info.kind.to_string(),
            group: info.group.to_string(),
            name: meta::name(obj).unwrap_or_default().to_string(),
            causes,
        })
    }
}

/// What an update may change: server-owned metadata is kept, and for resources with a
/// status subresource the main resource cannot write status and the status subresource
/// writes nothing else, as in Kubernetes; then the kind's own rules.
fn merge_update(info: &ResourceInfo, old: &Value, new: Value, part: Part) -> Value {
    let mut merged = if part == Part::Status {
        let mut m = old.clone();
        m["status"] = new.get("status").cloned().unwrap_or(json!({}));
        m
    } else if part == Part::Approval {
        let mut m = old.clone();
        if !m["status"].is_object() {
            m["status"] = json!({});
        }
        m["status"]["conditions"] = new
            .pointer("/status/conditions")
            .cloned()
            .unwrap_or(json!([]));
        m
    } else if part == Part::EphemeralContainers {
        // Everything but the ephemeral containers is kept as it was.
        let mut m = old.clone();
        match new.pointer("/spec/ephemeralContainers") {
            Some(list) => m["spec"]["ephemeralContainers"] = list.clone(),
            None => {
                if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("ephemeralContainers");
                }
            }
        }
        m
    } else if part == Part::Finalizers {
        let mut m = old.clone();
        m["spec"]["finalizers"] = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        m
    } else {
        let mut m = new;
        if info.has_status_subresource {
            match old.get("status") {
                Some(s) => m["status"] = s.clone(),
                None => {
                    if let Some(o) = m.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        m
    };
    info.strategy.prepare_for_update(old, &mut merged, part);
    // The store stamps the new resourceVersion on write; keeping the old one until then
    // lets an update that changes nothing be recognised and skipped, as kube-apiserver
    // does, instead of writing a new revision.
    let keep = [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ];
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let m = meta::metadata_mut(&mut merged);
    for k in keep {
        match old_meta.get(k) {
            Some(v) => {
                m.insert(k.to_string(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    merged["kind"] = json!(info.kind);
    merged["apiVersion"] = json!(resources::stored_api_version(info));
    merged
}

fn bump_generation(old: &Value, new: &mut Value) {
    let gen = old.pointer("/metadata/generation").and_then(Value::as_i64);
    if let Some(gen) = gen {
        let changed = old.get("spec") != new.get("spec");
        let next = if changed { gen + 1 } else { gen };
        meta::metadata_mut(new).insert("generation".into(), json!(next));
    }
}

fn apply_patch(
    kind: PatchType,
    old: &Value,
    patch_body: &Value,
    obj_kind: &str,
) -> Result<Value, ApiError> {
    // As kube-apiserver: a patch that cannot be read is a bad request; one that reads but
    // cannot be applied to this object (a failed `test`, a missing path) is Unprocessable.
    let bad = |e: patch::PatchError| match e {
        patch::PatchError::InvalidPatch(_)
        | patch::PatchError::UnknownOperation(_)
        | patch::PatchError::InvalidPointer { .. }
        | patch::PatchError::InvalidDirective(_) => ApiError::BadRequest(e.to_string()),
        _ => ApiError::Unprocessable(e.to_string()),
    };
    match kind {
        PatchType::Merge => {
            if !patch_body.is_object() {
                return Err(ApiError::BadRequest(
                    "merge patch must be a JSON object".into(),
                ));
            }
            Ok(patch::merge_patch(old, patch_body))
        }
        PatchType::Strategic => {
            patch::strategic_merge_patch(old, patch_body, obj_kind).map_err(bad)
        }
        PatchType::Json => patch::json_patch(old, patch_body).map_err(bad),
    }
}

/// The `autoscaling/v1` Scale view of an object whose kind has a scale subresource:
/// `spec.replicas`, `status.replicas` and the selector as a string.
pub fn scale_of(mapping: ScaleMapping, obj: &Value) -> Value {
    let raw = obj.pointer("/spec/selector");
    let selector = if mapping.map_selector {
        raw.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    } else {
        raw.and_then(|v| LabelSelector::from_label_selector_value(v).ok())
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
            "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The scale mapping of the target's kind; a kind without one has no scale subresource.
fn scale_mapping(t: &Target) -> Result<ScaleMapping, ApiError> {
    t.resource
        .strategy
        .scale()
        .ok_or(ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_of_main_resource_cannot_change_status() {
        let info = resources::lookup("pods").expect("pods");
        let old = json!({"metadata": {"name": "p", "uid": "u1"}, "status": {"phase": "Running"}});
        let new =
            json!({"metadata": {"name": "p", "uid": "forged"}, "status": {"phase": "Failed"}});
        let merged = merge_update(info, &old, new, Part::Main);
        assert_eq!(merged["status"]["phase"], "Running");
        assert_eq!(merged["metadata"]["uid"], "u1");
    }

    #[test]
    fn status_update_changes_only_status() {
        let info = resources::lookup("pods").expect("pods");
        let old = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}, "status": {}});
        let new = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "b"}, "status": {"phase": "Running"}});
        let merged = merge_update(info, &old, new, Part::Status);
        assert_eq!(merged["spec"]["nodeName"], "a");
        assert_eq!(merged["status"]["phase"], "Running");
    }

    #[test]
    fn approval_writes_conditions_and_never_the_certificate() {
        let info = resources::lookup("certificatesigningrequests").expect("csr");
        let old = json!({"metadata": {"name": "c"}, "spec": {"username": "a"}, "status": {}});
        let new = json!({"metadata": {"name": "c"}, "spec": {"username": "root"}, "status": {
            "conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}});
        let merged = merge_update(info, &old, new, Part::Approval);
        assert_eq!(merged["spec"]["username"], "a");
        assert_eq!(merged["status"]["conditions"][0]["type"], "Approved");
        assert!(merged["status"].get("certificate").is_none());
    }

    #[test]
    fn generation_moves_only_when_spec_changes() {
        let old = json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}});
        let mut same = json!({"metadata": {}, "spec": {"replicas": 1}, "status": {"x": 1}});
        bump_generation(&old, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
        let mut changed = json!({"metadata": {}, "spec": {"replicas": 2}});
        bump_generation(&old, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 4);
    }

    #[test]
    fn only_started_scheduled_pods_are_deleted_gracefully() {
        let running = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(pod_grace_period(&running, None), Some(10));
        assert_eq!(pod_grace_period(&running, Some(3)), Some(3));
        assert_eq!(pod_grace_period(&running, Some(0)), None);
        let pending = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}});
        assert_eq!(pod_grace_period(&pending, None), None);
        let done =
            json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded", "startTime": "x"}});
        assert_eq!(pod_grace_period(&done, None), None);
    }

    #[test]
    fn scale_view_of_a_label_selector_is_its_string_form() {
        let rs = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}});
        let s = scale_of(
            ScaleMapping {
                map_selector: false,
            },
            &rs,
        );
        assert_eq!(s["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(s["status"]["replicas"], 0);
    }

    #[test]
    fn scale_view_reports_replicas_and_selector() {
        let rc = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"app": "web"}}, "status": {"replicas": 2}});
        let s = scale_of(ScaleMapping { map_selector: true }, &rc);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
    }
}
