//! Fakes at the boundary for the runtime's tests: an API client answering from scripts.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::StreamExt;
use serde_json::Value;

use crate::api::ApiError;
use crate::client::{ApiClient, ListParams, ObjectList, PatchType, WatchEvent, WatchStream};

/// Answers lists and watches from scripts; a watch with no script left stays open.
#[derive(Default)]
pub struct Scripted {
    pub lists: Mutex<VecDeque<ObjectList>>,
    pub watches: Mutex<VecDeque<Vec<Result<WatchEvent, ApiError>>>>,
    pub watched_from: Mutex<Vec<u64>>,
}

fn unsupported<T>() -> Result<T, ApiError> {
    Err(ApiError::NoRoute)
}

#[async_trait::async_trait]
impl ApiClient for Scripted {
    async fn get(&self, _: &str, _: Option<&str>, _: &str) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn get_subresource(
        &self,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: &str,
    ) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn list(&self, _: &str, _: Option<&str>, _: &ListParams) -> Result<ObjectList, ApiError> {
        let next = self
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        next.ok_or_else(|| ApiError::ServiceUnavailable("no more lists".into()))
    }
    async fn watch(
        &self,
        _: &str,
        _: Option<&str>,
        _: &ListParams,
        from: u64,
    ) -> Result<WatchStream, ApiError> {
        self.watched_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(from);
        match self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            Some(events) => Ok(futures::stream::iter(events).boxed()),
            None => Ok(futures::stream::pending().boxed()),
        }
    }
    async fn create(&self, _: &str, _: Option<&str>, _: Value) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn update(
        &self,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: Option<&str>,
        _: Value,
    ) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn patch(
        &self,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: Option<&str>,
        _: PatchType,
        _: Value,
    ) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn delete(
        &self,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: Option<&str>,
    ) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn delete_now(&self, _: &str, _: Option<&str>, _: &str) -> Result<Value, ApiError> {
        unsupported()
    }
    async fn bind(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        unsupported()
    }
}
