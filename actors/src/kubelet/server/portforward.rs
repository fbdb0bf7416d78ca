//! Port-forward: connections to ports inside a pod's network namespace (its localhost,
//! as the kubelet dials them), carried over SPDY (a data and an error stream per
//! connection, paired by `requestID`; also tunnelled in WebSocket, kubectl 1.31+) or over
//! WebSocket channels (`?ports=`, two channels per port, each opened with the port's
//! number). A port nobody listens on gets its error on the error stream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spdy;
use super::ws::{self, Channels};

/// WebSocket subprotocols of port-forward.
pub const WS_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// kubectl 1.31+: SPDY inside WebSocket binary messages.
pub const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// `X-Stream-Protocol-Version` of port-forward over SPDY.
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod a session forwards into.
#[derive(Debug, Clone)]
pub struct Target {
    /// `namespace/name`, for messages.
    pub pod: String,
    pub uid: String,
    /// The sandbox's network namespace; `None`: the host's.
    pub netns: Option<PathBuf>,
}

impl Target {
    fn error(&self, port: u16, e: &std::io::Error) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {e}",
            self.pod, self.uid
        )
    }
}

/// Connect to `port` on the pod's localhost. Sockets keep the namespace they were made
/// in, so a short-lived thread enters the pod's namespace, connects and hands the socket
/// back (the runtime's threads never change namespace).
pub async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let Some(path) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-netns-dial".into())
        .spawn(move || {
            let _ = tx.send(dial_in(&path, port));
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the dialing thread ended early"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

fn dial_in(netns: &std::path::Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns)?;
    // SAFETY: setns(2) on a namespace file descriptor we hold open; it changes only this
    // thread's network namespace, and the thread ends right after dialing.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e) => {
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
    }
}

/// Serve port-forward over SPDY on `io` (an upgraded connection, or the byte stream of a
/// WebSocket tunnel).
pub async fn serve_spdy<IO>(io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut incoming = spdy::Session::accept(io);
    // Streams wait here for their partner (data and error of one request).
    let mut pending: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    while let Some(stream) = incoming.next().await {
        let headers = stream.headers();
        let kind = headers.get("streamtype").unwrap_or_default().to_string();
        let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
        let request = headers.get("requestid").unwrap_or_default().to_string();
        let Some(port) = port.filter(|p| *p > 0) else {
            tracing::debug!(stream = stream.id(), "port-forward stream without a port");
            stream.reset(spdy::PROTOCOL_ERROR);
            continue;
        };
        stream.reply(spdy::Headers::default(), false);
        let entry = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "data" => entry.0 = Some(stream),
            "error" => entry.1 = Some(stream),
            _ => {
                stream.reset(spdy::PROTOCOL_ERROR);
                continue;
            }
        }
        if let (Some(_), Some(_)) = entry {
            if let Some((Some(data), Some(error))) = pending.remove(&request) {
                tokio::spawn(forward_spdy(data, error, port, target.clone()));
            }
        }
    }
}

async fn forward_spdy(data: spdy::Stream, error: spdy::Stream, port: u16, target: Target) {
    let (mut from_client, mut to_client) = data.split();
    let (_, mut error_w) = error.split();
    match connect(target.netns.clone(), port).await {
        Err(e) => {
            let message = target.error(port, &e);
            tracing::debug!(%message, "port-forward connect failed");
            let _ = error_w.write_all(message.as_bytes()).await;
        }
        Ok(tcp) => {
            let (mut pod_r, mut pod_w) = tcp.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut from_client, &mut pod_w).await;
                let _ = pod_w.shutdown().await;
            };
            // The pod closing its side ends the forward for the client: kubectl waits for
            // the error stream's end before it closes its own connection.
            let down = async {
                let _ = tokio::io::copy(&mut pod_r, &mut to_client).await;
                let _ = to_client.shutdown().await;
                let _ = error_w.shutdown().await;
            };
            tokio::join!(up, down);
        }
    }
    let _ = to_client.shutdown().await;
    let _ = error_w.shutdown().await;
}

/// Serve port-forward over WebSocket channels for `ports` (`?ports=80,8080`).
pub async fn serve_ws<IO>(io: IO, protocol: &str, ports: Vec<u16>, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let chans = Channels::for_protocol(protocol);
    let ws::WsSession {
        mut incoming,
        sender,
    } = ws::start(io);
    // Each channel opens with its port, little-endian, as the kubelet writes it.
    for (i, port) in ports.iter().enumerate() {
        let Ok(ch) = u8::try_from(i * 2) else { break };
        let _ = chans.send(&sender, ch, &port.to_le_bytes()).await;
        let _ = chans.send(&sender, ch + 1, &port.to_le_bytes()).await;
    }
    let mut writers = HashMap::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let Ok(ch) = u8::try_from(i * 2) else { break };
        match connect(target.netns.clone(), port).await {
            Ok(tcp) => {
                let (mut r, w) = tcp.into_split();
                writers.insert(ch, w);
                let sender = sender.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = BytesMut::with_capacity(32 * 1024);
                    loop {
                        buf.reserve(32 * 1024);
                        match r.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let chunk: Bytes = buf.split().freeze();
                                if chans.send(&sender, ch, &chunk).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                let message = target.error(port, &e);
                let _ = chans.send(&sender, ch + 1, message.as_bytes()).await;
            }
        }
    }
    let pump = async {
        while let Some(msg) = incoming.recv().await {
            let Some((ch, data)) = chans.parse(&msg) else {
                continue;
            };
            if let Some(w) = writers.get_mut(&ch) {
                if w.write_all(&data).await.is_err() {
                    writers.remove(&ch);
                }
            }
        }
    };
    let all_done = futures::future::join_all(readers);
    tokio::select! {
        _ = pump => {}
        _ = all_done => {}
    }
    sender.close().await;
}
