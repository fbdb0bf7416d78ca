//! Zones as the node lifecycle controller sees them: each zone's state from how many of
//! its nodes are ready, the rate at which a zone may taint its nodes NoExecute, and the
//! token bucket per zone that enforces it (kube-controller-manager's zone states and
//! `RateLimitedTimedQueue`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::node_lifecycle::NodeLifecycleConfig;

/// The labels a node's zone is read from (region and zone, as `GetZoneKey`).
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A zone's health, as `ComputeZoneState` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    /// More than two nodes and at least the unhealthy threshold of them not ready.
    PartialDisruption,
    /// No node ready.
    FullDisruption,
}

pub(super) fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The zone key of a node: its region and zone labels.
pub(super) fn zone_of(node: &Value) -> String {
    let label = |k: &str| {
        node.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    format!("{}:\u{0}:{}", label(REGION_LABEL), label(ZONE_LABEL))
}

/// The state of every zone at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ZoneView {
    /// State and size by zone key.
    pub zones: HashMap<String, (ZoneState, usize)>,
    /// Every node of every zone is down: the control plane is probably the one cut off,
    /// and nothing is evicted.
    pub all_fully_disrupted: bool,
}

impl ZoneView {
    pub(super) fn build(
        nodes: impl IntoIterator<Item = (String, bool)>,
        threshold: f64,
    ) -> ZoneView {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for (zone, ready) in nodes {
            let c = counts.entry(zone).or_default();
            if ready {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        let zones: HashMap<String, (ZoneState, usize)> = counts
            .into_iter()
            .map(|(z, (ready, not_ready))| {
                (
                    z,
                    (zone_state(ready, not_ready, threshold), ready + not_ready),
                )
            })
            .collect();
        let all_fully_disrupted =
            !zones.is_empty() && zones.values().all(|(s, _)| *s == ZoneState::FullDisruption);
        ZoneView {
            zones,
            all_fully_disrupted,
        }
    }

    /// Nodes per second the zone may taint NoExecute (`setLimiterInZone`).
    pub(super) fn rate(&self, zone: &str, cfg: &NodeLifecycleConfig) -> f64 {
        match self.zones.get(zone) {
            Some((ZoneState::PartialDisruption, size)) => {
                if *size > cfg.large_cluster_threshold {
                    cfg.secondary_eviction_rate
                } else {
                    0.0
                }
            }
            _ => cfg.eviction_rate,
        }
    }
}

/// Take a token from a zone's bucket (of one token, refilled at `rate` per second):
/// `Ok` when there was one, else when the next comes (`None`: never at this rate).
pub(super) fn take_token(
    next_free: &mut HashMap<String, DateTime<Utc>>,
    zone: &str,
    rate: f64,
    now: DateTime<Utc>,
) -> Result<(), Option<DateTime<Utc>>> {
    if rate.is_nan() || rate <= 0.0 {
        return Err(None);
    }
    let interval = chrono::Duration::microseconds((1e6 / rate).min(1e15) as i64);
    match next_free.get(zone) {
        Some(at) if *at > now => Err(Some(*at)),
        _ => {
            next_free.insert(zone.to_string(), now + interval);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SharedClock;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cfg() -> NodeLifecycleConfig {
        NodeLifecycleConfig::default()
    }

    #[test]
    fn zones_are_normal_partially_or_fully_disrupted() {
        assert_eq!(zone_state(3, 0, 0.55), ZoneState::Normal);
        assert_eq!(
            zone_state(1, 2, 0.55),
            ZoneState::Normal,
            "two down is normal"
        );
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal, "50% < 55%");
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);

        let z = |name: &str| format!(":\u{0}:{name}");
        let view = ZoneView::build([(z("a"), false), (z("a"), false), (z("b"), true)], 0.55);
        assert_eq!(view.zones[&z("a")].0, ZoneState::FullDisruption);
        assert!(!view.all_fully_disrupted, "zone b is up");
        // A fully disrupted zone still evicts at the normal rate when others are up.
        assert_eq!(view.rate(&z("a"), &cfg()), 0.1);
        let all_down = ZoneView::build([(z("a"), false), (z("b"), false)], 0.55);
        assert!(all_down.all_fully_disrupted);
        assert!(!ZoneView::build([], 0.55).all_fully_disrupted);
    }

    #[test]
    fn a_partially_disrupted_zone_taints_slowly_if_large_and_not_at_all_if_small() {
        let z = ":\u{0}:".to_string();
        let mut nodes: Vec<(String, bool)> = (0..4).map(|_| (z.clone(), false)).collect();
        nodes.push((z.clone(), true));
        let small = ZoneView::build(nodes.clone(), 0.55);
        assert_eq!(small.zones[&z].0, ZoneState::PartialDisruption);
        assert_eq!(small.rate(&z, &cfg()), 0.0);
        let large_cfg = NodeLifecycleConfig {
            large_cluster_threshold: 4,
            ..cfg()
        };
        assert_eq!(small.rate(&z, &large_cfg), 0.01);
    }

    #[test]
    fn the_zone_rate_limiter_gives_one_node_per_interval() {
        let (clock, fake) = SharedClock::fake(t("2026-01-01T00:00:00Z"));
        let mut buckets = HashMap::new();
        assert_eq!(take_token(&mut buckets, "a", 0.1, clock.now()), Ok(()));
        assert_eq!(
            take_token(&mut buckets, "a", 0.1, clock.now()),
            Err(Some(t("2026-01-01T00:00:10Z")))
        );
        // Zones have buckets of their own.
        assert_eq!(take_token(&mut buckets, "b", 0.1, clock.now()), Ok(()));
        fake.advance(Duration::from_secs(9));
        assert!(take_token(&mut buckets, "a", 0.1, clock.now()).is_err());
        fake.advance(Duration::from_secs(1));
        assert_eq!(take_token(&mut buckets, "a", 0.1, clock.now()), Ok(()));
        // A long quiet spell does not save up tokens: the bucket holds one.
        fake.advance(Duration::from_secs(3600));
        assert_eq!(take_token(&mut buckets, "a", 0.1, clock.now()), Ok(()));
        assert!(take_token(&mut buckets, "a", 0.1, clock.now()).is_err());
        assert_eq!(take_token(&mut buckets, "c", 0.0, clock.now()), Err(None));
    }
}
