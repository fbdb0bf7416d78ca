//! The HTTP client: the same API over the network, for components in other processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{ApiClient, EventKind, ListParams, ObjectList, PatchType, WatchEvent, WatchStream};
use crate::api::resources;
use crate::api::ApiError;

/// The API servers a client may use, and the one it uses now: a server that cannot be
/// connected to moves the client on to the next (a node of a cluster with several servers
/// carries on when its server dies, its watches resuming where they were).
struct Servers {
    urls: Vec<String>,
    current: AtomicUsize,
}

impl Servers {
    /// `https://a:6443,https://b:6443`: one or more, comma-separated.
    fn parse(list: &str) -> Servers {
        let urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        Servers {
            urls: if urls.is_empty() {
                vec![String::new()]
            } else {
                urls
            },
            current: AtomicUsize::new(0),
        }
    }

    fn current(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// Which server a request's URL goes to.
    fn index_of(&self, url: &str) -> Option<usize> {
        self.urls.iter().position(|u| url.starts_with(u.as_str()))
    }

    /// Server `i` could not be connected to: use the next one (unless another request
    /// has moved on already).
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.urls.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct HttpClient {
    servers: Arc<Servers>,
    /// Swapped whole when the client certificate is renewed (`renew_identity`); requests
    /// take a handle (an `Arc` inside) and never hold the lock.
    http: Arc<RwLock<reqwest::Client>>,
    creds: Credentials,
}

fn build(creds: &Credentials) -> Result<reqwest::Client, ApiError> {
    let bad = |what: &str, e: reqwest::Error| ApiError::BadRequest(format!("{what}: {e}"));
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        // The program name is the field manager kube-apiserver records for our writes.
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &creds.ca_pem {
        let cert = reqwest::Certificate::from_pem(ca).map_err(|e| bad("CA certificate", e))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    if let Some(pem) = &creds.identity_pem {
        let id = reqwest::Identity::from_pem(pem).map_err(|e| bad("client certificate", e))?;
        builder = builder.identity(id);
    }
    if let Some(token) = &creds.token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::BadRequest("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    let http = builder
        .build()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(http)
}

/// How a client proves the server is the cluster's and who the client is.
#[derive(Clone, Default)]
pub struct Credentials {
    /// PEM of the CA the server's certificate must chain to; the only CA trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of a client certificate followed by its private key.
    pub identity_pem: Option<Vec<u8>>,
    /// A bearer token sent with every request.
    pub token: Option<String>,
}

impl HttpClient {
    /// A client for the API server at `base` (e.g. `http://127.0.0.1:6443`; several,
    /// comma-separated, to fail over between).
    pub fn new(base: impl Into<String>) -> Result<Self, ApiError> {
        Self::with_credentials(base, &Credentials::default())
    }

    /// A client for an HTTPS API server that trusts only `creds.ca_pem` and authenticates
    /// with the client certificate or bearer token given.
    pub fn with_credentials(
        base: impl Into<String>,
        creds: &Credentials,
    ) -> Result<Self, ApiError> {
        Ok(HttpClient {
            servers: Arc::new(Servers::parse(&base.into())),
            http: Arc::new(RwLock::new(build(creds)?)),
            creds: creds.clone(),
        })
    }

    /// Use this client certificate (PEM, followed by its key) for requests from now on:
    /// a renewed node certificate. Connections already open keep the old one.
    pub fn renew_identity(&self, identity_pem: &[u8]) -> Result<(), ApiError> {
        let creds = Credentials {
            identity_pem: Some(identity_pem.to_vec()),
            ..self.creds.clone()
        };
        let client = build(&creds)?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn url(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> String {
        let info = resources::lookup_client(resource);
        let namespaced = info.is_some_and(|r| r.namespaced);
        let base = info.map_or_else(|| "/api/v1".to_string(), |r| r.base_path());
        let mut url = format!("{}{base}", self.servers.current());
        if let (true, Some(ns)) = (namespaced, namespace) {
            url.push_str(&format!("/namespaces/{ns}"));
        }
        url.push('/');
        url.push_str(resource);
        for part in [name, sub].into_iter().flatten() {
            url.push('/');
            url.push_str(part);
        }
        url
    }

    /// Send `req`; while its server cannot be connected to, to the next server instead
    /// (a request that never connected was never seen, so it is sent at most once).
    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let unreachable = |e: reqwest::Error| {
            ApiError::ServiceUnavailable(format!("API server unreachable: {e}"))
        };
        let http = self.http();
        let mut request = req
            .build()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut tries = self.servers.urls.len();
        loop {
            let retry = request.try_clone();
            let used = self.servers.index_of(request.url().as_str());
            let e = match http.execute(request).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            let connect = e.is_connect();
            if let (true, Some(used)) = (connect, used) {
                self.servers.failed(used);
            }
            match (used, retry) {
                (Some(used), Some(mut again)) if connect && tries > 1 => {
                    tries -= 1;
                    let from = self.servers.urls[used].as_str();
                    let to = self.servers.current();
                    tracing::warn!(%from, %to, "API server unreachable; trying the next");
                    let moved = again.url().as_str().replacen(from, to, 1);
                    *again.url_mut() = reqwest::Url::parse(&moved)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    request = again;
                }
                _ => return Err(unreachable(e)),
            }
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let resp = self.execute(req).await?;
        let code = resp.status().as_u16();
        let body: Bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("reading response: {e}")))?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            Ok(value)
        } else {
            Err(ApiError::from_status(code, &value))
        }
    }
}

fn query(params: &ListParams) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = &params.label_selector {
        q.push(("labelSelector", l.clone()));
    }
    if let Some(f) = &params.field_selector {
        q.push(("fieldSelector", f.clone()));
    }
    q
}

fn parse_event(line: &[u8]) -> Result<WatchEvent, ApiError> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| ApiError::BadRequest(format!("bad watch event: {e}")))?;
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("ADDED") => EventKind::Added,
        Some("MODIFIED") => EventKind::Modified,
        Some("DELETED") => EventKind::Deleted,
        Some("ERROR") => {
            let code = v
                .pointer("/object/code")
                .and_then(Value::as_u64)
                .unwrap_or(500) as u16;
            return Err(ApiError::from_status(code, &v["object"]));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown watch event type {other:?}"
            )))
        }
    };
    let mut v = v;
    let object = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    Ok(WatchEvent {
        kind,
        object: Arc::new(object),
    })
}

#[async_trait::async_trait]
impl ApiClient for HttpClient {
    async fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.send(
            self.http()
                .get(self.url(resource, namespace, Some(name), None)),
        )
        .await
    }

    async fn get_subresource(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
    ) -> Result<Value, ApiError> {
        self.send(
            self.http()
                .get(self.url(resource, namespace, Some(name), Some(subresource))),
        )
        .await
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        let mut v = self
            .send(
                self.http()
                    .get(self.url(resource, namespace, None, None))
                    .query(&query(params)),
            )
            .await?;
        let resource_version = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let items = match v.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items.into_iter().map(Arc::new).collect(),
            _ => Vec::new(),
        };
        Ok(ObjectList {
            items,
            resource_version,
        })
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: u64,
    ) -> Result<WatchStream, ApiError> {
        let mut q = query(params);
        q.push(("watch", "true".into()));
        q.push(("resourceVersion", resource_version.to_string()));
        q.push(("allowWatchBookmarks", "false".into()));
        let resp = self
            .execute(
                self.http()
                    .get(self.url(resource, namespace, None, None))
                    .query(&q),
            )
            .await?;
        let code = resp.status().as_u16();
        if code != 200 {
            let body = resp.bytes().await.unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(ApiError::from_status(code, &v));
        }
        let bytes = resp.bytes_stream().boxed();
        let stream = futures::stream::unfold(
            (bytes, Vec::<u8>::new()),
            |(mut bytes, mut buf)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        return Some((parse_event(&line), (bytes, buf)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        // A broken connection ends the watch like a server-side close: the
                        // caller re-watches from the last revision it saw.
                        Some(Err(_)) | None => return None,
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn create(
        &self,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.send(
            self.http()
                .post(self.url(resource, namespace, None, None))
                .json(&object),
        )
        .await
    }

    async fn update(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.send(
            self.http()
                .put(self.url(resource, namespace, Some(name), subresource))
                .json(&object),
        )
        .await
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
        let ct = match kind {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Json => "application/json-patch+json",
        };
        self.send(
            self.http()
                .patch(self.url(resource, namespace, Some(name), subresource))
                .header("content-type", ct)
                .body(patch.to_string()),
        )
        .await
    }

    async fn delete(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<&str>,
    ) -> Result<Value, ApiError> {
        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "propagationPolicy": propagation.unwrap_or("Background")});
        self.send(
            self.http()
                .delete(self.url(resource, namespace, Some(name), None))
                .json(&body),
        )
        .await
    }

    async fn delete_now(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "propagationPolicy": "Background", "gracePeriodSeconds": 0});
        self.send(
            self.http()
                .delete(self.url(resource, namespace, Some(name), None))
                .json(&body),
        )
        .await
    }

    async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: Value,
    ) -> Result<Value, ApiError> {
        let url = self.url(
            "serviceaccounts",
            Some(namespace),
            Some(service_account),
            Some("token"),
        );
        self.send(self.http().post(url).json(&request)).await
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        let body = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        self.send(
            self.http()
                .post(self.url("pods", Some(namespace), Some(pod), Some("binding")))
                .json(&body),
        )
        .await
        .map(|_| ())
    }
}
