//! Exec and attach (Kubernetes' remotecommand): a command in a running container (or the
//! container's own process), its stdin,
//! stdout and stderr carried over WebSocket channels (`v5.channel.k8s.io` down to
//! `channel.k8s.io`) or over SPDY streams (`v4.channel.k8s.io` and older), terminal
//! resizes, and the outcome on the error stream (a `Status` from v4 on, so `kubectl exec
//! -- sh -c 'exit 3'` exits 3). A client that goes away takes its process with it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy;
use super::ws::{self, Channels};
use crate::kubelet::runtime::{ExecRequest, Output, Runtime};

/// WebSocket subprotocols of exec and attach, best first.
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v3.base64.channel.k8s.io",
    "v2.channel.k8s.io",
    "v2.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// `X-Stream-Protocol-Version`s of exec and attach over SPDY, best first.
pub const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long a SPDY client has to open the streams it asked for (the kubelet's stream
/// creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closes one of its streams (`[255, channel]`).
const CLOSE: u8 = 255;

/// The protocol generation: 1 (`channel.k8s.io`) to 5.
fn version_of(protocol: &str) -> u8 {
    protocol
        .strip_prefix('v')
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// A terminal size as clients send it (`remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited { code: i64, command: Vec<String> },
    Failed(String),
}

impl Outcome {
    /// What the error stream carries for this outcome at protocol `version`: a Status
    /// from v4 on, else a message for a failure only.
    fn encode(&self, version: u8) -> Option<Vec<u8>> {
        if version >= 4 {
            let status = match self {
                Outcome::Exited { code: 0, .. } => {
                    json!({"metadata": {}, "status": "Success"})
                }
                Outcome::Exited { code, command } => json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": format!(
                        "command terminated with non-zero exit code: command {command:?} exited with {code}"
                    ),
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                }),
                Outcome::Failed(message) => json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "InternalError",
                    "code": 500,
                }),
            };
            return serde_json::to_vec(&status).ok();
        }
        match self {
            Outcome::Exited { code: 0, .. } => None,
            Outcome::Exited { code, command } => {
                Some(format!("command {command:?} exited with {code}").into_bytes())
            }
            Outcome::Failed(message) => Some(message.clone().into_bytes()),
        }
    }
}

/// What the command's side sends the client.
#[derive(Debug)]
pub enum Out {
    Stdout(Bytes),
    Stderr(Bytes),
    Done(Outcome),
}

/// The client's side of a session, whatever carries it.
pub struct Remote {
    /// The client's stdin; the channel closes when the client closes its stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub out: mpsc::Sender<Out>,
    /// Cancelled when the client went away.
    pub gone: CancellationToken,
}

/// What a session connects the client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// A new command in the container (`kubectl exec`).
    Exec,
    /// The container's own process (`kubectl attach`).
    Attach,
}

/// Run `req` in container `id` (or attach to it) and connect it to `remote` until it
/// ends; a client that goes away kills its exec (an attached client just detaches).
pub async fn run(
    runtime: Arc<dyn Runtime>,
    process: Process,
    id: &str,
    req: ExecRequest,
    remote: Remote,
) {
    let Remote {
        stdin,
        resize,
        out,
        gone,
    } = remote;
    let started = match process {
        Process::Exec => runtime.exec_start(id, &req).await,
        Process::Attach => runtime.attach_start(id, &req).await,
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = out.send(Out::Done(Outcome::Failed(e.to_string()))).await;
            return;
        }
    };
    let exec_id = session.id.clone();
    let mut pumps = Vec::new();
    if let (Some(mut input), Some(mut rx)) = (session.stdin, stdin) {
        pumps.push(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // The client closed its stdin: so does the process's.
            let _ = input.shutdown().await;
        }));
    }
    if let Some(mut rx) = resize {
        let (rt, exec) = (runtime.clone(), exec_id.clone());
        pumps.push(tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                let resized = match process {
                    Process::Exec => rt.exec_resize(&exec, size.width, size.height).await,
                    Process::Attach => rt.attach_resize(&exec, size.width, size.height).await,
                };
                if let Err(e) = resized {
                    tracing::debug!(error = %e, "terminal resize failed");
                }
            }
        }));
    }
    let mut output = session.output;
    let mut failure = None;
    let left = loop {
        let chunk = tokio::select! {
            chunk = output.next() => chunk,
            _ = gone.cancelled() => break true,
        };
        let msg = match chunk {
            Some(Ok(Output::Stdout(b))) => Out::Stdout(b),
            Some(Ok(Output::Stderr(b))) => Out::Stderr(b),
            Some(Err(e)) => {
                failure = Some(e.to_string());
                break false;
            }
            None => break false,
        };
        if out.send(msg).await.is_err() {
            break true;
        }
    };
    for pump in &pumps {
        pump.abort();
    }
    if left && process == Process::Attach {
        return;
    }
    if left {
        tracing::debug!(exec = %exec_id, "client went away; killing its process");
        if let Err(e) = runtime.exec_kill(&exec_id).await {
            tracing::warn!(exec = %exec_id, error = %e, "cannot kill an abandoned exec");
        }
        return;
    }
    let outcome = match failure {
        Some(f) => Outcome::Failed(f),
        // The container's output ended: it exited (its status is the pod's to report).
        None if process == Process::Attach => Outcome::Exited {
            code: 0,
            command: Vec::new(),
        },
        None => match runtime.exec_exit_code(&exec_id).await {
            Ok(code) => Outcome::Exited {
                code,
                command: req.command.clone(),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        },
    };
    let _ = out.send(Out::Done(outcome)).await;
}

/// Serve an exec over an upgraded WebSocket connection speaking `protocol`.
pub async fn serve_ws<IO>(
    io: IO,
    protocol: &str,
    runtime: Arc<dyn Runtime>,
    process: Process,
    id: String,
    req: ExecRequest,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let version = version_of(protocol);
    let chans = Channels::for_protocol(protocol);
    let ws::WsSession {
        mut incoming,
        sender,
    } = ws::start(io);
    // The kubelet's signal that the streams are open: an empty message on the lowest
    // channel it writes.
    let first = if req.stdout {
        STDOUT
    } else if req.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = chans.send(&sender, first, &[]).await;
    let gone = CancellationToken::new();
    let (stdin_tx, stdin_rx) = pipe::<Bytes>(req.stdin);
    let (resize_tx, resize_rx) = pipe::<TermSize>(req.tty && version >= 3);
    let reader_gone = gone.clone();
    tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        while let Some(msg) = incoming.recv().await {
            match chans.parse(&msg) {
                Some((STDIN, data)) => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                Some((RESIZE, data)) => {
                    if let (Some(tx), Ok(size)) =
                        (&resize_tx, serde_json::from_slice::<TermSize>(&data))
                    {
                        let _ = tx.send(size).await;
                    }
                }
                Some((CLOSE, data)) if version >= 5 && data.first() == Some(&STDIN) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
        reader_gone.cancel();
    });
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(16);
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let sent = match out {
                Out::Stdout(b) => chans.send(&sender, STDOUT, &b).await,
                Out::Stderr(b) => chans.send(&sender, STDERR, &b).await,
                Out::Done(outcome) => {
                    if let Some(bytes) = outcome.encode(version) {
                        let _ = chans.send(&sender, ERROR, &bytes).await;
                    }
                    sender.close().await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        sender.close().await;
    });
    let remote = Remote {
        stdin: stdin_rx,
        resize: resize_rx,
        out: out_tx,
        gone,
    };
    run(runtime, process, &id, req, remote).await;
    let _ = writer.await;
}

fn pipe<T>(wanted: bool) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    if wanted {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// Serve an exec over an upgraded SPDY connection speaking `protocol`: wait for the
/// streams the request asked for, then run the command over them.
pub async fn serve_spdy<IO>(
    io: IO,
    protocol: &str,
    runtime: Arc<dyn Runtime>,
    process: Process,
    id: String,
    req: ExecRequest,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let version = version_of(protocol);
    let mut incoming = spdy::Session::accept(io);
    let want_resize = req.tty && version >= 3;
    let expected = 1
        + usize::from(req.stdin)
        + usize::from(req.stdout)
        + usize::from(req.stderr && !req.tty)
        + usize::from(want_resize);
    let mut streams: Vec<(String, spdy::Stream)> = Vec::new();
    let collect = async {
        while streams.len() < expected {
            let Some(stream) = incoming.next().await else {
                return false;
            };
            stream.reply(spdy::Headers::default(), false);
            let kind = stream
                .headers()
                .get("streamtype")
                .unwrap_or_default()
                .to_ascii_lowercase();
            streams.push((kind, stream));
        }
        true
    };
    match tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            tracing::debug!("exec client did not open its streams in time");
            incoming.close();
            return;
        }
    }
    let mut take = |kind: &str| {
        streams
            .iter()
            .position(|(k, _)| k == kind)
            .map(|i| streams.swap_remove(i).1)
    };
    let (error, stdin, stdout, stderr, resize) = (
        take("error"),
        take("stdin"),
        take("stdout"),
        take("stderr"),
        take("resize"),
    );
    let gone = CancellationToken::new();
    // Streams after the expected ones are refused; the session's end means the client
    // went away.
    let watcher_gone = gone.clone();
    let closer = incoming.handle();
    tokio::spawn(async move {
        while let Some(extra) = incoming.next().await {
            extra.reset(spdy::REFUSED_STREAM);
        }
        watcher_gone.cancel();
    });
    // Our sides of the client's stdin and resize streams stay open until the end, as the
    // kubelet closes them only then.
    let mut keep_open = Vec::new();
    let stdin_rx = stdin.map(|s| {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let (mut reader, writer) = s.split();
        keep_open.push(writer);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(32 * 1024);
            loop {
                buf.reserve(32 * 1024);
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(buf.split().freeze()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        rx
    });
    let resize_rx = resize.filter(|_| want_resize).map(|s| {
        let (tx, rx) = mpsc::channel::<TermSize>(4);
        let (reader, writer) = s.split();
        keep_open.push(writer);
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            // Go's json.Encoder ends each size with a newline.
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(size) = serde_json::from_str::<TermSize>(&line) {
                    if tx.send(size).await.is_err() {
                        break;
                    }
                }
            }
        });
        rx
    });
    let mut stdout_w = stdout.map(|s| s.split().1);
    let mut stderr_w = stderr.map(|s| s.split().1);
    let mut error_w = error.map(|s| s.split().1);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(16);
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let (w, data) = match out {
                Out::Stdout(b) => (stdout_w.as_mut(), b),
                Out::Stderr(b) => (stderr_w.as_mut().or(stdout_w.as_mut()), b),
                Out::Done(outcome) => {
                    for w in [stdout_w.as_mut(), stderr_w.as_mut()].into_iter().flatten() {
                        let _ = w.shutdown().await;
                    }
                    if let Some(w) = error_w.as_mut() {
                        if let Some(bytes) = outcome.encode(version) {
                            let _ = w.write_all(&bytes).await;
                        }
                        let _ = w.shutdown().await;
                    }
                    break;
                }
            };
            if let Some(w) = w {
                if w.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        drop(keep_open);
        closer.close();
    });
    let remote = Remote {
        stdin: stdin_rx,
        resize: resize_rx,
        out: out_tx,
        gone,
    };
    run(runtime, process, &id, req, remote).await;
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions_are_read_from_their_names() {
        assert_eq!(version_of("v5.channel.k8s.io"), 5);
        assert_eq!(version_of("v4.base64.channel.k8s.io"), 4);
        assert_eq!(version_of("channel.k8s.io"), 1);
    }

    #[test]
    fn a_non_zero_exit_is_a_status_with_the_exit_code_cause_from_v4() {
        let out = Outcome::Exited {
            code: 3,
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        };
        let status: serde_json::Value =
            serde_json::from_slice(&out.encode(4).expect("status")).expect("json");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let ok = Outcome::Exited {
            code: 0,
            command: vec![],
        };
        assert_eq!(ok.encode(3), None);
        let v4: serde_json::Value = serde_json::from_slice(&ok.encode(4).unwrap()).unwrap();
        assert_eq!(v4["status"], "Success");
    }

    #[test]
    fn terminal_sizes_parse_as_clients_send_them() {
        let size: TermSize = serde_json::from_str(r#"{"Width":120,"Height":40}"#).unwrap();
        assert_eq!(
            size,
            TermSize {
                width: 120,
                height: 40
            }
        );
    }
}
