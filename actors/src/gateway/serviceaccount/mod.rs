//! Service accounts on the API server's side: the tokens it signs ([`token`]), the
//! TokenRequest subresource ([`request`]), the ServiceAccount admission of pods
//! ([`admission`]), and the issuer's OIDC discovery documents (served here).

pub mod admission;
pub mod request;
pub mod token;

use actix_web::{web, HttpResponse};

use super::{render, AppState};
use crate::api::ApiError;

fn issuer_document(
    state: &AppState,
    body: impl Fn(&token::TokenIssuer) -> serde_json::Value,
    content_type: &str,
) -> HttpResponse {
    match state.objects.token_issuer() {
        Some(issuer) => HttpResponse::Ok()
            .content_type(content_type)
            // As kube-apiserver: public keys and metadata may be cached for an hour.
            .insert_header(("cache-control", "public, max-age=3600"))
            .body(body(issuer).to_string()),
        None => render::error_response(&ApiError::NoRoute),
    }
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    issuer_document(&state, token::TokenIssuer::discovery, "application/json")
}

/// `GET /openid/v1/jwks`.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    issuer_document(&state, token::TokenIssuer::jwks, "application/jwk-set+json")
}
