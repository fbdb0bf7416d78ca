//! Each connection's first request head, read before actix-web sees it: actix hands a
//! handler the raw stream after an upgrade only for WebSocket, and older clients (kubectl
//! up to 1.29, SPDY fallbacks) upgrade exec, attach and port-forward to `SPDY/3.1`. Such
//! a head is rewritten to a WebSocket upgrade carrying the protocol the client asked for
//! in `X-Skiff-Upgrade` (a header the client cannot set itself: any it sent is removed),
//! so the request goes through the same authentication, authorization and node proxy as
//! every other, and the node is asked for the client's real protocol.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The header that carries the client's real upgrade to the streams handler.
pub const REAL_UPGRADE: &str = "x-skiff-upgrade";
/// Heads larger than this are left for actix to judge (it answers 431).
const MAX_HEAD: usize = 64 * 1024;

/// A connection with bytes already read from it put back in front.
pub struct Sniffed<T> {
    pub inner: T,
    prefix: Bytes,
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T> Sniffed<T> {
    /// The connection as it is (HTTP/2 has no upgrades to look for).
    pub fn passthrough(inner: T) -> Self {
        Sniffed {
            inner,
            prefix: Bytes::new(),
        }
    }
}

/// Read the first request head of `io` (within `timeout`; a slow or silent client is
/// actix's to time out) and rewrite it if it asks for a non-WebSocket upgrade.
pub async fn sniff<T: AsyncRead + Unpin>(mut io: T, timeout: Duration) -> Sniffed<T> {
    let mut buf = BytesMut::with_capacity(4096);
    let read_head = async {
        loop {
            if find_end(&buf).is_some() || buf.len() >= MAX_HEAD {
                return;
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read_head).await;
    let prefix = match find_end(&buf) {
        Some(end) => rewrite(&buf[..end]).map_or_else(
            || buf.clone().freeze(),
            |head| {
                let mut out = BytesMut::from(&head[..]);
                out.extend_from_slice(&buf[end..]);
                out.freeze()
            },
        ),
        None => buf.freeze(),
    };
    Sniffed { inner: io, prefix }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The head rewritten when it must be (a SPDY upgrade, or a client's own
/// `X-Skiff-Upgrade`); `None` to pass it on as it is.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(head).ok()? else {
        return None;
    };
    let upgrade = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
        .unwrap_or("");
    let spdy = upgrade.to_ascii_lowercase().starts_with("spdy/");
    let forged = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case(REAL_UPGRADE));
    if !spdy && !forged {
        return None;
    }
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(
        format!(
            "{} {} HTTP/1.{}\r\n",
            req.method?,
            req.path?,
            req.version.unwrap_or(1)
        )
        .as_bytes(),
    );
    for h in req.headers.iter() {
        let drop = h.name.eq_ignore_ascii_case(REAL_UPGRADE)
            || (spdy && h.name.eq_ignore_ascii_case("upgrade"));
        if !drop {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if spdy {
        out.extend_from_slice(b"Upgrade: websocket\r\n");
        out.extend_from_slice(format!("{REAL_UPGRADE}: {upgrade}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spdy_upgrade_becomes_a_websocket_one_carrying_the_real_protocol() {
        let head = b"POST /api/v1/namespaces/d/pods/p/exec?command=ls HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
        let out = String::from_utf8(rewrite(head).expect("rewritten")).unwrap();
        assert!(out.starts_with("POST /api/v1/namespaces/d/pods/p/exec?command=ls HTTP/1.1\r\n"));
        assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
        assert!(out.contains("x-skiff-upgrade: SPDY/3.1\r\n"), "{out}");
        assert!(out.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
        assert!(!out.contains("Upgrade: SPDY"), "{out}");
    }

    #[test]
    fn ordinary_requests_pass_untouched_and_forged_markers_are_removed() {
        let plain = b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(rewrite(plain), None);
        let ws = b"GET /x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(rewrite(ws), None);
        let forged = b"GET /x HTTP/1.1\r\nX-Skiff-Upgrade: SPDY/3.1\r\nUpgrade: websocket\r\n\r\n";
        let out = String::from_utf8(rewrite(forged).expect("rewritten")).unwrap();
        assert!(
            !out.to_ascii_lowercase().contains("x-skiff-upgrade"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_bytes_after_the_head_follow_the_rewritten_head() {
        let input = b"GET /x HTTP/1.1\r\nUpgrade: SPDY/3.1\r\n\r\nBODY".to_vec();
        let mut s = sniff(&input[..], Duration::from_secs(1)).await;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\nBODY"), "{text}");
        assert!(text.contains("x-skiff-upgrade: SPDY/3.1"));
    }
}
