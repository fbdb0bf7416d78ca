//! Leader election through a coordination.k8s.io Lease, as client-go's leaderelection
//! does it for kube-scheduler and kube-controller-manager: when several servers share a
//! datastore, only the holder of `kube-system/<component>` runs that component.
//!
//! Every `retry_period` a candidate reads the Lease. It takes a Lease that does not exist,
//! is its own, or has not been renewed for `lease_duration` *as this candidate observed
//! it* (the time it last saw the holder or renewTime change, by its own clock, so clock
//! skew between servers does not matter); every write is a compare-and-swap on the
//! Lease's resourceVersion, so two candidates never both win. A leader that has not
//! renewed within `renew_deadline` stops leading at once, before its lease can run out
//! for the others.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use super::clock::SharedClock;
use crate::api::ApiError;
use crate::client::ApiClient;

/// One component's election (client-go's `LeaderElectionConfig`).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// The Lease, and the component it is for (`kube-scheduler`).
    pub name: String,
    /// Who this candidate is (`hostname_<id>`): written as `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// kube-scheduler's and kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    pub fn new(name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate remembers between rounds.
#[derive(Debug, Default)]
pub struct Candidate {
    /// The holder and renewTime last read, and when (by our clock) they last changed.
    observed: Option<(String, String, DateTime<Utc>)>,
    /// When we last wrote the Lease as its holder.
    renewed: Option<DateTime<Utc>>,
}

/// Whether this round left us holding the Lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    Leading,
    /// Someone else holds it (named).
    Following(String),
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Candidate {
    /// One try to acquire or renew (client-go's `tryAcquireOrRenew`).
    pub async fn round(
        &mut self,
        client: &dyn ApiClient,
        cfg: &LeaseConfig,
        clock: &SharedClock,
    ) -> Result<Round, ApiError> {
        let now = clock.now();
        let ns = Some(cfg.namespace.as_str());
        let spec = |acquired: &str, transitions: i64| {
            json!({
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": cfg.lease_duration.as_secs(),
                "acquireTime": acquired,
                "renewTime": micro_time(now),
                "leaseTransitions": transitions,
            })
        };
        let current = match client.get("leases", ns, &cfg.name).await {
            Err(ApiError::NotFound { .. }) => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": spec(&micro_time(now), 0),
                });
                return match client.create("leases", ns, lease).await {
                    Ok(_) => {
                        self.renewed = Some(now);
                        Ok(Round::Leading)
                    }
                    Err(ApiError::AlreadyExists { .. }) => Ok(Round::Following(String::new())),
                    Err(e) => Err(e),
                };
            }
            other => other?,
        };
        let holder = current["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let renew_time = current["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let changed =
            !matches!(&self.observed, Some((h, r, _)) if *h == holder && *r == renew_time);
        if changed {
            self.observed = Some((holder.clone(), renew_time, now));
        }
        let seen_at = self.observed.as_ref().map(|(_, _, t)| *t).unwrap_or(now);
        let duration = current["spec"]["leaseDurationSeconds"]
            .as_i64()
            .map(|s| chrono::Duration::seconds(s.max(1)))
            .unwrap_or_else(|| {
                chrono::Duration::from_std(cfg.lease_duration).unwrap_or(chrono::Duration::MAX)
            });
        let ours = holder == cfg.identity;
        if !ours && !holder.is_empty() && seen_at + duration > now {
            return Ok(Round::Following(holder));
        }
        let transitions = current["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
        let (acquired, transitions) = if ours {
            (
                current["spec"]["acquireTime"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| micro_time(now)),
                transitions,
            )
        } else {
            (micro_time(now), transitions + 1)
        };
        let mut next = current.clone();
        next["spec"] = spec(&acquired, transitions);
        // The read's resourceVersion is the precondition: a candidate that lost the race
        // gets a conflict, and follows.
        match client.update("leases", ns, &cfg.name, None, next).await {
            Ok(_) => {
                if !ours {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, previous = %holder, "acquired the lease");
                }
                self.renewed = Some(now);
                Ok(Round::Leading)
            }
            Err(ApiError::Conflict { .. }) => Ok(Round::Following(holder)),
            Err(e) => Err(e),
        }
    }

    /// Whether a leader may still act: its last renewal is within the renew deadline.
    pub fn within_deadline(&self, cfg: &LeaseConfig, now: DateTime<Utc>) -> bool {
        let deadline =
            chrono::Duration::from_std(cfg.renew_deadline).unwrap_or(chrono::Duration::MAX);
        self.renewed.is_some_and(|r| now - r < deadline)
    }
}

/// Run the election for ever (until the receiver is dropped): the channel says whether
/// this candidate leads now.
pub fn elect(
    client: Arc<dyn ApiClient>,
    cfg: LeaseConfig,
    clock: SharedClock,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    actix::spawn(async move {
        let mut candidate = Candidate::default();
        loop {
            // A round that hangs (the datastore gone) counts as failed before the
            // deadline is past.
            let round = tokio::time::timeout(
                cfg.renew_deadline / 2,
                candidate.round(&*client, &cfg, &clock),
            )
            .await
            .unwrap_or_else(|_| Err(ApiError::Timeout("lease round".into())));
            let leading = match round {
                Ok(Round::Leading) => true,
                Ok(Round::Following(_)) => false,
                Err(e) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "lease round failed");
                    // A leader that cannot renew keeps going only until its deadline.
                    *tx.borrow() && candidate.within_deadline(&cfg, clock.now())
                }
            };
            if leading != *tx.borrow() {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, leading, "leadership changed");
                if tx.send(leading).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(cfg.retry_period).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::client::{ListParams, ObjectList, PatchType, WatchStream};
    use serde_json::Value;

    /// One Lease behind get, create and a compare-and-swap update, as the API has it.
    #[derive(Default)]
    struct OneLease(Mutex<(Option<Value>, u64)>);

    #[async_trait::async_trait]
    impl ApiClient for OneLease {
        async fn get(&self, _: &str, _: Option<&str>, name: &str) -> Result<Value, ApiError> {
            let s = self.0.lock().unwrap();
            s.0.clone()
                .ok_or_else(|| ApiError::not_found("leases", name))
        }
        async fn get_subresource(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: &str,
        ) -> Result<Value, ApiError> {
            Err(ApiError::NoRoute)
        }
        async fn list(
            &self,
            _: &str,
            _: Option<&str>,
            _: &ListParams,
        ) -> Result<ObjectList, ApiError> {
            Err(ApiError::NoRoute)
        }
        async fn watch(
            &self,
            _: &str,
            _: Option<&str>,
            _: &ListParams,
            _: u64,
        ) -> Result<WatchStream, ApiError> {
            Err(ApiError::NoRoute)
        }
        async fn create(
            &self,
            _: &str,
            _: Option<&str>,
            mut obj: Value,
        ) -> Result<Value, ApiError> {
            let mut s = self.0.lock().unwrap();
            if s.0.is_some() {
                return Err(ApiError::AlreadyExists {
                    resource: "leases".into(),
                    name: "l".into(),
                });
            }
            s.1 += 1;
            obj["metadata"]["resourceVersion"] = json!(s.1.to_string());
            s.0 = Some(obj.clone());
            Ok(obj)
        }
        async fn update(
            &self,
            _: &str,
            _: Option<&str>,
            name: &str,
            _: Option<&str>,
            mut obj: Value,
        ) -> Result<Value, ApiError> {
            let mut s = self.0.lock().unwrap();
            let current =
                s.0.as_ref()
                    .map(|c| c["metadata"]["resourceVersion"].clone());
            if current != Some(obj["metadata"]["resourceVersion"].clone()) {
                return Err(ApiError::conflict("leases", name, "modified"));
            }
            s.1 += 1;
            obj["metadata"]["resourceVersion"] = json!(s.1.to_string());
            s.0 = Some(obj.clone());
            Ok(obj)
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
            Err(ApiError::NoRoute)
        }
        async fn delete(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<&str>,
        ) -> Result<Value, ApiError> {
            Err(ApiError::NoRoute)
        }
        async fn delete_now(&self, _: &str, _: Option<&str>, _: &str) -> Result<Value, ApiError> {
            Err(ApiError::NoRoute)
        }
        async fn bind(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
            Err(ApiError::NoRoute)
        }
    }

    #[actix_rt::test]
    async fn one_leader_at_a_time_and_a_takeover_only_after_the_lease_runs_out() {
        let api = OneLease::default();
        let (clock, fake) = SharedClock::fake(Utc::now());
        let a_cfg = LeaseConfig::new("kube-scheduler", "a");
        let b_cfg = LeaseConfig::new("kube-scheduler", "b");
        let (mut a, mut b) = (Candidate::default(), Candidate::default());

        assert_eq!(a.round(&api, &a_cfg, &clock).await.unwrap(), Round::Leading);
        assert_eq!(
            b.round(&api, &b_cfg, &clock).await.unwrap(),
            Round::Following("a".into())
        );
        // a renews every retry period: b never takes over, however long it waits.
        for _ in 0..20 {
            fake.advance(Duration::from_secs(2));
            assert_eq!(a.round(&api, &a_cfg, &clock).await.unwrap(), Round::Leading);
            assert_eq!(
                b.round(&api, &b_cfg, &clock).await.unwrap(),
                Round::Following("a".into())
            );
        }
        // a stops renewing: b follows until it has seen the same renewTime for the
        // lease's duration, then takes it, counting a transition.
        fake.advance(Duration::from_secs(14));
        assert_eq!(
            b.round(&api, &b_cfg, &clock).await.unwrap(),
            Round::Following("a".into())
        );
        assert!(!a.within_deadline(&a_cfg, clock.now()));
        fake.advance(Duration::from_secs(2));
        assert_eq!(b.round(&api, &b_cfg, &clock).await.unwrap(), Round::Leading);
        let lease = api.get("leases", None, "kube-scheduler").await.unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // a comes back: it reads b's lease and follows.
        assert_eq!(
            a.round(&api, &a_cfg, &clock).await.unwrap(),
            Round::Following("b".into())
        );
    }

    #[actix_rt::test]
    async fn of_two_candidates_racing_for_a_free_lease_one_wins() {
        let api = OneLease::default();
        let clock = SharedClock::default();
        let a_cfg = LeaseConfig::new("kube-controller-manager", "a");
        let b_cfg = LeaseConfig::new("kube-controller-manager", "b");
        let (mut a, mut b) = (Candidate::default(), Candidate::default());
        let (ra, rb) = futures::join!(a.round(&api, &a_cfg, &clock), b.round(&api, &b_cfg, &clock));
        let leaders = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|r| **r == Round::Leading)
            .count();
        assert_eq!(leaders, 1);
    }
}
