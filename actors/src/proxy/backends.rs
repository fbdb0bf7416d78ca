//! Choosing a backend for a connection: round-robin over the ready endpoints, optional
//! client-IP affinity, and skipping a backend that refuses so the client is not failed
//! while a dead pod's endpoint is still being removed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a backend that refused a connection is passed over.
const QUARANTINE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("service has no ready endpoints")]
    NoEndpoints,
    #[error("every endpoint refused or failed: last error {0}")]
    AllFailed(#[source] io::Error),
}

/// How to open a connection to a backend (a fake in tests).
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    type Conn: Send;
    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Conn>;
}

/// The backends of one service port. Replacing the list leaves open connections alone.
#[derive(Default)]
pub struct Backends {
    list: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
    /// Client-IP affinity timeout, when the service asks for `sessionAffinity: ClientIP`.
    affinity: RwLock<Option<Duration>>,
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
    refused: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Backends {
    pub fn set(&self, backends: Vec<SocketAddr>, affinity: Option<Duration>) {
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = backends;
        *self.affinity.write().unwrap_or_else(|e| e.into_inner()) = affinity;
    }

    pub fn snapshot(&self) -> Vec<SocketAddr> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The order to try backends in for this client: its sticky backend first (if any and
    /// still present), then round-robin, with recently refusing backends last.
    pub fn candidates(&self, client: IpAddr) -> Vec<SocketAddr> {
        let list = self.snapshot();
        if list.is_empty() {
            return list;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        let mut order: Vec<SocketAddr> = list
            .iter()
            .cycle()
            .skip(start)
            .take(list.len())
            .copied()
            .collect();
        let now = Instant::now();
        {
            let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            order.sort_by_key(|a| {
                refused
                    .get(a)
                    .is_some_and(|t| now.duration_since(*t) < QUARANTINE)
            });
        }
        let affinity = *self.affinity.read().unwrap_or_else(|e| e.into_inner());
        if let Some(timeout) = affinity {
            let sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((addr, at)) = sticky.get(&client) {
                if now.duration_since(*at) < timeout {
                    if let Some(pos) = order.iter().position(|a| a == addr) {
                        let a = order.remove(pos);
                        order.insert(0, a);
                    }
                }
            }
        }
        order
    }

    fn record(&self, client: IpAddr, chosen: SocketAddr) {
        if self
            .affinity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            self.sticky
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(client, (chosen, Instant::now()));
        }
    }

    fn refuse(&self, addr: SocketAddr) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, Instant::now());
    }

    /// Connect this client to a backend, moving on to the next when one fails.
    pub async fn connect<C: Connector>(
        &self,
        connector: &C,
        client: IpAddr,
    ) -> Result<(SocketAddr, C::Conn), ConnectError> {
        let mut last = None;
        for addr in self.candidates(client) {
            match connector.connect(addr).await {
                Ok(conn) => {
                    self.record(client, addr);
                    return Ok((addr, conn));
                }
                Err(e) => {
                    tracing::debug!(backend = %addr, error = %e, "backend failed; trying the next");
                    self.refuse(addr);
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => ConnectError::AllFailed(e),
            None => ConnectError::NoEndpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct Fake {
        refusing: HashSet<SocketAddr>,
    }

    #[async_trait::async_trait]
    impl Connector for Fake {
        type Conn = SocketAddr;
        async fn connect(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
            if self.refusing.contains(&addr) {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            } else {
                Ok(addr)
            }
        }
    }

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, i])
    }

    #[tokio::test]
    async fn round_robin_spreads_connections_evenly() {
        let b = Backends::default();
        b.set(addrs(3), None);
        let fake = Fake {
            refusing: HashSet::new(),
        };
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..300 {
            let (a, _) = b.connect(&fake, client(1)).await.expect("connects");
            *counts.entry(a).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| *c == 100), "{counts:?}");
    }

    #[tokio::test]
    async fn a_refusing_backend_is_skipped_and_the_client_still_connects() {
        let b = Backends::default();
        let all = addrs(3);
        b.set(all.clone(), None);
        let fake = Fake {
            refusing: [all[1]].into_iter().collect(),
        };
        for _ in 0..30 {
            let (a, _) = b.connect(&fake, client(1)).await.expect("connects");
            assert_ne!(a, all[1]);
        }
    }

    #[tokio::test]
    async fn client_ip_affinity_keeps_a_client_on_one_backend() {
        let b = Backends::default();
        b.set(addrs(3), Some(Duration::from_secs(60)));
        let fake = Fake {
            refusing: HashSet::new(),
        };
        let (first, _) = b.connect(&fake, client(7)).await.expect("connects");
        for _ in 0..10 {
            assert_eq!(
                b.connect(&fake, client(7)).await.expect("connects").0,
                first
            );
        }
    }

    #[tokio::test]
    async fn no_backends_is_a_clear_error() {
        let b = Backends::default();
        let fake = Fake {
            refusing: HashSet::new(),
        };
        assert!(matches!(
            b.connect(&fake, client(1)).await,
            Err(ConnectError::NoEndpoints)
        ));
    }
}
