//! The reviews (authentication.k8s.io, authorization.k8s.io): create-only, answered from
//! the request by the gateway's reviewers and never stored.

use k8s_openapi::api::{authentication, authorization};
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::validation::{self, DecodeError};

pub static SELF_SUBJECT_REVIEW: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    name: "selfsubjectreviews",
    singular: "selfsubjectreview",
    kind: "SelfSubjectReview",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authentication::v1::SelfSubjectReview>),
    strategy: &Review::<authentication::v1::SelfSubjectReview>::of(
        "SelfSubjectReview",
        "authentication.k8s.io/v1",
    ),
    storage: Storage::Review,
};

pub static SELF_SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    name: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    kind: "SelfSubjectAccessReview",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authorization::v1::SelfSubjectAccessReview>),
    strategy: &Review::<authorization::v1::SelfSubjectAccessReview>::of(
        "SelfSubjectAccessReview",
        "authorization.k8s.io/v1",
    ),
    storage: Storage::Review,
};

pub static TOKEN_REVIEW: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    name: "tokenreviews",
    singular: "tokenreview",
    kind: "TokenReview",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authentication::v1::TokenReview>),
    strategy: &Review::<authentication::v1::TokenReview>::of(
        "TokenReview",
        "authentication.k8s.io/v1",
    ),
    storage: Storage::Review,
};

pub static SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    name: "subjectaccessreviews",
    singular: "subjectaccessreview",
    kind: "SubjectAccessReview",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authorization::v1::SubjectAccessReview>),
    strategy: &Review::<authorization::v1::SubjectAccessReview>::of(
        "SubjectAccessReview",
        "authorization.k8s.io/v1",
    ),
    storage: Storage::Review,
};

pub static LOCAL_SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    name: "localsubjectaccessreviews",
    singular: "localsubjectaccessreview",
    kind: "LocalSubjectAccessReview",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authorization::v1::LocalSubjectAccessReview>),
    strategy: &Review::<authorization::v1::LocalSubjectAccessReview>::of(
        "LocalSubjectAccessReview",
        "authorization.k8s.io/v1",
    ),
    storage: Storage::Review,
};

pub static SELF_SUBJECT_RULES_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    name: "selfsubjectrulesreviews",
    singular: "selfsubjectrulesreview",
    kind: "SelfSubjectRulesReview",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<authorization::v1::SelfSubjectRulesReview>),
    strategy: &Review::<authorization::v1::SelfSubjectRulesReview>::of(
        "SelfSubjectRulesReview",
        "authorization.k8s.io/v1",
    ),
    storage: Storage::Review,
};

/// A review's strategy: only its type is checked; the reviewer answers it.
#[derive(Debug)]
pub struct Review<T>(
    std::marker::PhantomData<fn() -> T>,
    &'static str,
    &'static str,
);

impl<T> Review<T> {
    const fn of(kind: &'static str, api_version: &'static str) -> Self {
        Review(std::marker::PhantomData, kind, api_version)
    }
}

impl<T> Strategy for Review<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + 'static,
{
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<T>(self.1, self.2, obj)
    }
}
