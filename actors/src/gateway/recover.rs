//! Panic recovery for requests, as kube-apiserver's `WithPanicRecovery` filter: a handler
//! that panics on one request answers that request with a 500 `Status` and is logged; the
//! connection, its worker and every other request carry on.

use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use futures::FutureExt;

use super::render;
use crate::api::ApiError;

/// Kubernetes' words for a request that made the server panic.
pub const PANIC_MESSAGE: &str =
    "This request caused apiserver to panic. Look in the logs for details.";

pub async fn recover(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (method, path) = (req.method().clone(), req.path().to_string());
    // Sound: nothing the panicking handler borrowed is looked at again; the shared state
    // it reaches (the store, caches) is behind actors and locks that recover on their own.
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(res) => res.map(ServiceResponse::map_into_boxed_body),
        Err(payload) => {
            let message = crate::runtime::guard::panic_message(payload.as_ref());
            tracing::error!(%method, path, panic = message, "request handler panicked");
            // An error rather than a response: the request itself went with the panic
            // (and a clone of it taken beforehand would break routing).
            Err(Panicked.into())
        }
    }
}

/// The answer to a request whose handler panicked.
#[derive(Debug, thiserror::Error)]
#[error("{PANIC_MESSAGE}")]
struct Panicked;

impl actix_web::ResponseError for Panicked {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        render::error_response(&ApiError::Internal(PANIC_MESSAGE.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, web, App, HttpResponse};

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_and_the_next_request_is_served() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(recover))
                .route(
                    "/boom",
                    web::get().to(|| async {
                        panic!("bad object");
                        #[allow(unreachable_code)]
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/ok",
                    web::get().to(|| async { HttpResponse::Ok().body("fine") }),
                ),
        )
        .await;
        let err = test::try_call_service(&app, test::TestRequest::get().uri("/boom").to_request())
            .await
            .expect_err("the panic is an error response");
        let res = err.error_response();
        assert_eq!(res.status(), 500);
        let bytes = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "InternalError");
        assert_eq!(body["message"], PANIC_MESSAGE);
        let res = test::call_service(&app, test::TestRequest::get().uri("/ok").to_request()).await;
        assert_eq!(res.status(), 200);
    }
}
