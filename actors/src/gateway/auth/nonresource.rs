//! Authorization of requests outside the resource API: discovery (`/api`, `/apis/...`),
//! `/openapi/...`, `/version`, `/healthz`, `/metrics`. Resource requests are authorized
//! by the resource handler, which knows the verb and resource.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use super::{user_of, Attributes};
use crate::gateway::{render, AppState};

/// Whether `path` addresses resources (`/api/v1/<more>`, `/apis/<group>/<version>/<more>`)
/// rather than discovery or another non-resource endpoint.
pub fn is_resource_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.first() {
        Some(&"api") => segs.len() > 2,
        Some(&"apis") => segs.len() > 3,
        _ => false,
    }
}

/// Middleware: a non-resource request goes on only when the chain allows the user its
/// HTTP method (lower-cased, as Kubernetes' non-resource verbs are) on the path.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path().to_string();
    if !is_resource_path(&path) {
        if let Some(state) = req.app_data::<web::Data<AppState>>().cloned() {
            let user = user_of(req.request());
            let verb = req.method().as_str().to_ascii_lowercase();
            let attrs = Attributes::for_path(&user, &verb, &path);
            if let Err(e) = state.authorization.check(&attrs) {
                tracing::debug!(user = %user.name, %verb, %path, "non-resource request forbidden");
                let (http, _) = req.into_parts();
                return Ok(ServiceResponse::new(http, render::error_response(&e)));
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_is_not_a_resource_request_but_anything_below_it_is() {
        for p in [
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/",
            "/apis",
            "/apis/rbac.authorization.k8s.io",
            "/apis/rbac.authorization.k8s.io/v1/",
            "/version",
            "/openapi/v3/api/v1",
            "/healthz",
        ] {
            assert!(!is_resource_path(p), "{p}");
        }
        for p in [
            "/api/v1/pods",
            "/api/v1/namespaces/default/pods/x",
            "/apis/coordination.k8s.io/v1/leases",
        ] {
            assert!(is_resource_path(p), "{p}");
        }
    }
}
