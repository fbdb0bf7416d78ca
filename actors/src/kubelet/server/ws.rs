//! WebSocket on the node server: the handshake answer, a session of messages over an
//! upgraded connection (pings answered, fragments joined), and Kubernetes' channel
//! framing on top (`v5.channel.k8s.io` and older: the first byte of each message names
//! the stream; the `base64.` variants send text).

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, Message};

/// Largest message accepted from a client (kubectl sends at most 32 KiB at a time).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Messages queued towards the peer before writers wait.
const QUEUE: usize = 64;

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    String::from_utf8_lossy(&actix_http::ws::hash_key(key.trim().as_bytes())).into_owned()
}

/// The first protocol of ours a client offers (`Sec-WebSocket-Protocol`, comma-separated,
/// possibly over several headers), in the client's order as Go's server picks it.
pub fn choose_protocol<'a>(offered: &[&str], ours: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .find_map(|p| ours.iter().find(|o| o.eq_ignore_ascii_case(p)).copied())
}

/// Sends messages to the peer; cheap to clone. Sends fail once the peer is gone.
#[derive(Clone)]
pub struct WsSender(mpsc::Sender<Message>);

impl WsSender {
    pub async fn send(&self, data: Bytes) -> std::io::Result<()> {
        self.0
            .send(Message::Binary(data))
            .await
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }

    pub async fn send_text(&self, text: String) -> std::io::Result<()> {
        self.0
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }

    /// A normal close; the connection ends once it is written.
    pub async fn close(&self) {
        let reason = CloseReason {
            code: CloseCode::Normal,
            description: None,
        };
        let _ = self.0.send(Message::Close(Some(reason))).await;
    }
}

/// One WebSocket connection: the peer's data messages (binary or text payloads, in
/// order; `None` once the peer closed or went away) and a sender.
pub struct WsSession {
    pub incoming: mpsc::Receiver<Bytes>,
    pub sender: WsSender,
}

/// Run a WebSocket session (server side) on an upgraded connection.
pub fn start<IO>(io: IO) -> WsSession
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let framed = Framed::new(io, Codec::new().max_size(MAX_MESSAGE));
    let (mut sink, mut frames) = framed.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        // Everybody let go or it was closed: end the connection.
        out_rx.close();
        let _ = sink.close().await;
    });
    let pong = WsSender(out_tx.clone());
    tokio::spawn(async move {
        let mut partial: Option<BytesMut> = None;
        while let Some(frame) = frames.next().await {
            let data = match frame {
                Ok(Frame::Binary(b) | Frame::Text(b)) => b,
                Ok(Frame::Continuation(item)) => match item {
                    Item::FirstBinary(b) | Item::FirstText(b) => {
                        partial = Some(BytesMut::from(&b[..]));
                        continue;
                    }
                    Item::Continue(b) => {
                        match partial.as_mut() {
                            Some(p) if p.len() + b.len() <= MAX_MESSAGE => p.extend_from_slice(&b),
                            _ => break,
                        }
                        continue;
                    }
                    Item::Last(b) => match partial.take() {
                        Some(mut p) => {
                            p.extend_from_slice(&b);
                            p.freeze()
                        }
                        None => break,
                    },
                },
                Ok(Frame::Ping(p)) => {
                    let _ = pong.0.send(Message::Pong(p)).await;
                    continue;
                }
                Ok(Frame::Pong(_)) => continue,
                Ok(Frame::Close(_)) => {
                    pong.close().await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    break;
                }
            };
            if in_tx.send(data).await.is_err() {
                // Nobody reads any more: drain until the peer closes.
                continue;
            }
        }
    });
    WsSession {
        incoming: in_rx,
        sender: WsSender(out_tx),
    }
}

/// Kubernetes' channel framing, binary or base64 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    pub base64: bool,
}

impl Channels {
    pub fn for_protocol(protocol: &str) -> Channels {
        Channels {
            base64: protocol.contains("base64"),
        }
    }

    /// One message on channel `ch`.
    pub async fn send(&self, to: &WsSender, ch: u8, data: &[u8]) -> std::io::Result<()> {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push(char::from(b'0' + ch));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            to.send_text(text).await
        } else {
            let mut msg = BytesMut::with_capacity(1 + data.len());
            msg.extend_from_slice(&[ch]);
            msg.extend_from_slice(data);
            to.send(msg.freeze()).await
        }
    }

    /// The channel and payload of a message from the client; `None` for an empty or
    /// undecodable one.
    pub fn parse(&self, msg: &Bytes) -> Option<(u8, Bytes)> {
        let (&first, rest) = msg.split_first()?;
        if self.base64 {
            let ch = first.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((ch, Bytes::from(data)))
        } else {
            Some((first, msg.slice(1..)))
        }
    }
}

/// A WebSocket session as a byte stream: binary messages in, binary messages out (what
/// the SPDY-over-WebSocket tunnel of port-forward carries).
pub fn into_byte_stream(session: WsSession) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut read, mut write) = tokio::io::split(ours);
    let WsSession {
        mut incoming,
        sender,
    } = session;
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(msg) = incoming.recv().await {
            if write.write_all(&msg).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        sender.close().await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_the_rfc_gives() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_first_offered_protocol_we_speak_is_chosen() {
        let ours = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
        assert_eq!(
            choose_protocol(&["v4.channel.k8s.io, v5.channel.k8s.io"], &ours),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(choose_protocol(&["chat"], &ours), None);
    }

    #[test]
    fn base64_channels_prefix_an_ascii_digit() {
        let c = Channels::for_protocol("base64.channel.k8s.io");
        let msg = Bytes::from_static(b"1aGk=");
        assert_eq!(c.parse(&msg), Some((1, Bytes::from_static(b"hi"))));
        let raw = Channels::for_protocol("v5.channel.k8s.io");
        assert_eq!(
            raw.parse(&Bytes::from_static(b"\x00ab")),
            Some((0, Bytes::from_static(b"ab")))
        );
    }
}
