//! The token cleaner (kube-controller-manager's `tokencleaner`): a bootstrap token's
//! Secret is deleted when its `expiration` passes, so the token is gone for good rather
//! than merely refused.

use std::time::Duration;

use tracing::Instrument;

use crate::api::{meta, ApiError};
use crate::gateway::auth::bootstrap_token::{self, NAMESPACE};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
    SharedClock,
};

pub struct TokenCleaner {
    clock: SharedClock,
}

impl TokenCleaner {
    pub fn new(clock: SharedClock) -> Self {
        TokenCleaner { clock }
    }
}

#[async_trait::async_trait]
impl Reconciler for TokenCleaner {
    fn name(&self) -> &'static str {
        "token-cleaner"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("secrets")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let s = &change.object;
        if meta::namespace(s) == Some(NAMESPACE) && bootstrap_token::is_token_secret(s) {
            vec![key_of(s)]
        } else {
            vec![]
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("clean_token", secret = %key);
        async {
            let Some(secret) = ctx.cache("secrets").get(key) else {
                return Ok(Action::Done);
            };
            let expires = match bootstrap_token::expiration(&secret) {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(Action::Done),
                Err(raw) => {
                    tracing::warn!(expiration = %raw, "bootstrap token with an unreadable expiration; it is refused");
                    return Ok(Action::Done);
                }
            };
            let now = self.clock.now();
            if now < expires {
                let wait = (expires - now).to_std().unwrap_or(Duration::ZERO);
                return Ok(Action::RequeueAfter(self.clock.sleep_for(wait)));
            }
            let (ns, name) = split_key(key);
            tracing::info!("deleting an expired bootstrap token");
            match ctx.client.delete("secrets", ns, name, None).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
                Err(e) => Err(e.into()),
            }
        }
        .instrument(span)
        .await
    }
}
