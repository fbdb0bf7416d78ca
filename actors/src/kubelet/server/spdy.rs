//! SPDY/3.1, server side, as Kubernetes clients speak it.
//!
//! kubectl exec / attach / port-forward use Go's `github.com/moby/spdystream`
//! (its framer is the one from `golang.org/x/net/spdy`). kubectl 1.31+ may
//! tunnel the same byte stream inside WebSocket binary messages: any
//! `AsyncRead + AsyncWrite` works here, and frames split across messages are
//! reassembled by the codec.
//!
//! We are the server: the client opens streams with SYN_STREAM (odd ids), we
//! answer SYN_REPLY, both sides send DATA and half-close with FLAG_FIN.
//! moby/spdystream enforces no flow-control windows, so neither do we:
//! WINDOW_UPDATE and SETTINGS are parsed and ignored.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tracing::{debug, trace, warn};

/// Control frames carry version 3 (SPDY/3.1 did not change the number).
pub const VERSION: u16 = 3;
/// FLAG_FIN (DATA, SYN_STREAM, SYN_REPLY, HEADERS).
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM).
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS (SETTINGS).
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;
/// RST_STREAM status codes a server uses (SPDY/3 section 2.6.3).
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
#[cfg(test)]
pub const CANCEL: u32 = 5;
/// Largest DATA frame a [`StreamWriter`] sends (what Go's io.Copy uses).
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const ID_MASK: u32 = 0x7fff_ffff;
/// The 24-bit length field caps every frame's payload at 16 MiB - 1.
const MAX_WIRE_LEN: usize = 0xff_ffff;
/// Bound on an inflated header block, so a tiny compressed block cannot make
/// us allocate much (Kubernetes sends a few short headers).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Chunks buffered per stream before the connection reader waits for the
/// consumer: a slow consumer slows the peer down instead of growing memory.
const STREAM_BUFFER_CHUNKS: usize = 64;
/// DATA frames (and PING replies) queued for the writer task per session.
const WRITE_QUEUE_FRAMES: usize = 64;
/// Opened streams waiting in [`Incoming`] before the reader waits.
const INCOMING_BACKLOG: usize = 32;
/// The writer task gathers queued frames into writes of about this size.
const WRITE_BATCH: usize = 64 * 1024;

/// The SPDY/3 header compression dictionary (SPDY/3 draft, section 2.6.10.1),
/// as Go's framer uses it. Its Adler-32 is [`DICTIONARY_ADLER32`].
const HEADER_DICTIONARY: &[u8; 1423] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05trac\
    e\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-langu\
    age\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0dc\
    ache-control\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\
    \x10content-language\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-\
    md5\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06ex\
    pect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modified\
    -since\0\0\0\x0dif-none-match\0\0\0\x08if-range\0\0\0\x13if-unmodified-since\0\0\0\x0dla\
    st-modified\0\0\0\x08location\0\0\0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authe\
    nticate\0\0\0\x13proxy-authorization\0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-afte\
    r\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\0\0\0\x11transfer-encoding\0\0\0\x07upgra\
    de\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\0\0\0\x07warning\0\0\0\x10www-authenti\
    cate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\
    \x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\
    \x06origin100101201202205206300302303304305306307402405406407408409410411412413414415416\
    417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad \
    Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implem\
    ented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mo\
    n, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,appl\
    ication/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,d\
    eflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
/// Adler-32 of [`HEADER_DICTIONARY`]: the DICTID in the zlib header of the
/// first header block Go sends (`78 f9 e3 c6 a7 c2`).
const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY frame of {0} bytes exceeds the limit of {1}")]
    FrameTooLarge(usize, usize),
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("SPDY header compression: {0}")]
    Compression(String),
}

fn zlib_error(e: impl std::fmt::Display) -> SpdyError {
    SpdyError::Compression(e.to_string())
}

/// A header block. Names are lowercase (SPDY requires it; Go lowercases on
/// both ends); a name with several values (NUL-joined on the wire) appears
/// once per value, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a value; the name is lowercased.
    pub fn add(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of `name`, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.add(name.as_ref(), value);
        }
        headers
    }
}

/// One frame. Control frames carry version 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `entries` are (flags, id, value).
    Settings {
        clear: bool,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
}

/// Frame codec holding the connection's two zlib contexts. SPDY compresses
/// all header blocks of one direction as one zlib stream (preset dictionary,
/// a sync flush after each block), so a codec must see every frame of its
/// direction in order. Each context is made on first use, so a codec used for
/// one direction only never allocates the other.
#[derive(Debug)]
pub struct Codec {
    inflate: Option<Decompress>,
    deflate: Option<Compress>,
    max_frame_len: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::with_max_frame_len(MAX_WIRE_LEN)
    }
}

fn valid_id(stream_id: u32) -> Result<u32, SpdyError> {
    match stream_id {
        1..=ID_MASK => Ok(stream_id),
        _ => Err(SpdyError::Malformed("stream id 0 or over 31 bits")),
    }
}

impl Codec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses frames with a payload over `max` bytes (the wire allows at most
    /// 16 MiB - 1, the default).
    pub fn with_max_frame_len(max: usize) -> Self {
        let max_frame_len = max.min(MAX_WIRE_LEN);
        Codec {
            inflate: None,
            deflate: None,
            max_frame_len,
        }
    }

    fn decode_control(
        &mut self,
        kind: u16,
        flags: u8,
        p: &[u8],
    ) -> Result<Option<Frame>, SpdyError> {
        // Fixed part of each type, checked once so the reads below are in
        // bounds. NOOP, CREDENTIAL and newer types carry no compressed header
        // block, so skipping them keeps the zlib context in step.
        let fixed = match kind {
            TYPE_SYN_STREAM => 10,
            TYPE_SYN_REPLY | TYPE_HEADERS | TYPE_PING | TYPE_GOAWAY | TYPE_SETTINGS => 4,
            TYPE_RST_STREAM | TYPE_WINDOW_UPDATE => 8,
            _ => return Ok(None),
        };
        if p.len() < fixed {
            return Err(SpdyError::Malformed(
                "control frame shorter than its fields",
            ));
        }
        let word = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        let (id, fin) = (word(0) & ID_MASK, flags & FLAG_FIN != 0);
        if matches!(
            kind,
            TYPE_SYN_STREAM | TYPE_SYN_REPLY | TYPE_HEADERS | TYPE_RST_STREAM
        ) {
            valid_id(id)?;
        }
        Ok(Some(match kind {
            TYPE_SYN_STREAM => Frame::SynStream {
                stream_id: id,
                associated_to: word(4) & ID_MASK,
                priority: p[8] >> 5,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers: self.inflate_headers(&p[10..])?,
            },
            TYPE_SYN_REPLY => {
                let headers = self.inflate_headers(&p[4..])?;
                Frame::SynReply {
                    stream_id: id,
                    fin,
                    headers,
                }
            }
            TYPE_HEADERS => {
                let headers = self.inflate_headers(&p[4..])?;
                Frame::Headers {
                    stream_id: id,
                    fin,
                    headers,
                }
            }
            TYPE_RST_STREAM => Frame::RstStream {
                stream_id: id,
                status: word(4),
            },
            TYPE_SETTINGS => {
                let count = word(0) as usize;
                // Checked before collecting: a bogus count reserves nothing.
                if count > (p.len() - 4) / 8 {
                    return Err(SpdyError::Malformed("SETTINGS count exceeds the frame"));
                }
                let entry = |at| ((word(at) >> 24) as u8, word(at) & 0xff_ffff, word(at + 4));
                let entries = (0..count).map(|i| entry(4 + 8 * i)).collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            TYPE_PING => Frame::Ping { id: word(0) },
            // SPDY/2 had no status word: tolerate its absence.
            TYPE_GOAWAY => Frame::GoAway {
                last_good_stream_id: id,
                status: if p.len() >= 8 { word(4) } else { 0 },
            },
            _ => Frame::WindowUpdate {
                stream_id: id,
                delta: word(4) & ID_MASK,
            },
        }))
    }

    /// Inflates one header block: the next piece of the peer's zlib stream,
    /// ending in a sync flush, so all it holds comes out now.
    fn inflate_headers(&mut self, mut input: &[u8]) -> Result<Headers, SpdyError> {
        let z = self.inflate.get_or_insert_with(|| Decompress::new(true));
        let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(zlib_error("header block over 1 MiB"));
                }
                out.reserve(out.len());
            }
            let (in_before, out_before) = (z.total_in(), out.len());
            let result = z.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(z.total_in() - in_before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            let room_left = out.len() < out.capacity();
            match result {
                // The peer ended its zlib stream; any later block will fail.
                Ok(Status::StreamEnd) => break,
                // Input used up without filling the output: all is out.
                Ok(_) if room_left && input.is_empty() => break,
                Ok(_) if room_left && used == 0 && out.len() == out_before => {
                    return Err(zlib_error("inflate made no progress"));
                }
                Ok(_) => {}
                // zlib stops at a header that names a preset dictionary; Go's
                // names the SPDY/3 one.
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ADLER32) => {
                        z.set_dictionary(HEADER_DICTIONARY).map_err(zlib_error)?;
                    }
                    Some(other) => {
                        return Err(zlib_error(format!("unknown dictionary {other:#x}")))
                    }
                    None => return Err(zlib_error(e)),
                },
            }
        }
        parse_header_block(&out)
    }

    /// Compresses one header block onto `dst`, sync-flushed so that the peer
    /// can inflate it from this frame alone.
    fn deflate_headers(&mut self, headers: &Headers, dst: &mut BytesMut) -> Result<(), SpdyError> {
        let raw = encode_header_block(headers)?;
        let z = match &mut self.deflate {
            Some(z) => z,
            none => {
                let mut z = Compress::new(Compression::default(), true);
                // FDICT and the dictionary's Adler-32 go into the zlib header,
                // as in Go's.
                z.set_dictionary(HEADER_DICTIONARY).map_err(zlib_error)?;
                none.insert(z)
            }
        };
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        // zlib's rule for a flush: done once the input is used up and output
        // space was left over.
        while !input.is_empty() || out.len() == out.capacity() {
            out.reserve(256);
            let before = z.total_in();
            z.compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(zlib_error)?;
            let used = usize::try_from(z.total_in() - before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
        }
        dst.extend_from_slice(&out);
        Ok(())
    }
}

/// SPDY/3 header block: u32 count, then u32-length-prefixed name and value;
/// several values of one name are joined with NUL. Every length is checked
/// against what is left before it is used.
fn parse_header_block(mut p: &[u8]) -> Result<Headers, SpdyError> {
    let short = || SpdyError::Malformed("header block shorter than its lengths");
    let string = |p: &mut &[u8]| -> Result<String, SpdyError> {
        let len = p.try_get_u32().map_err(|_| short())? as usize;
        let (bytes, rest) = p.split_at_checked(len).ok_or_else(short)?;
        *p = rest;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    let count = p.try_get_u32().map_err(|_| short())? as usize;
    // Each entry takes 8 bytes at least: a bogus count reserves nothing.
    if count > p.len() / 8 {
        return Err(short());
    }
    let mut headers = Headers(Vec::with_capacity(count));
    for _ in 0..count {
        let name = string(&mut p)?.to_ascii_lowercase();
        let value = string(&mut p)?;
        headers
            .0
            .extend(value.split('\0').map(|v| (name.clone(), v.to_owned())));
    }
    Ok(headers)
}

/// Hop-by-hop names that Go's framer rejects in a reply, failing the whole
/// connection.
const FORBIDDEN_HEADERS: [&str; 4] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
];

fn encode_header_block(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    // Go's reader also fails on a repeated or uppercase name: group values
    // by lowercased name, in first-seen order.
    let mut grouped: Vec<(String, String)> = Vec::new();
    for (name, value) in headers.iter() {
        let name = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            debug!(%name, "dropping a hop-by-hop header from a SPDY header block");
        } else if let Some((_, joined)) = grouped.iter_mut().find(|(n, _)| *n == name) {
            joined.push('\0');
            joined.push_str(value);
        } else {
            grouped.push((name, value.to_owned()));
        }
    }
    let mut raw = (grouped.len() as u32).to_be_bytes().to_vec();
    for s in grouped.iter().flat_map(|(n, v)| [n, v]) {
        raw.put_u32(s.len() as u32);
        raw.put_slice(s.as_bytes());
    }
    // Refused before compressing: dropping a frame after compression would
    // desynchronise the peer's zlib context.
    if raw.len() > MAX_HEADER_BLOCK {
        return Err(SpdyError::FrameTooLarge(raw.len(), MAX_HEADER_BLOCK));
    }
    Ok(raw)
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = SpdyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        // Loops only to skip unknown control frames.
        while src.len() >= 8 {
            let word0 = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
            let (flags, len) = (src[4], usize::from(src[5]) << 16 | usize::from(src[6]) << 8);
            let len = len | usize::from(src[7]);
            if len > self.max_frame_len {
                return Err(SpdyError::FrameTooLarge(len, self.max_frame_len));
            }
            if src.len() < 8 + len {
                src.reserve(8 + len - src.len());
                return Ok(None);
            }
            src.advance(8);
            let payload = src.split_to(len).freeze();
            if word0 & 0x8000_0000 == 0 {
                let stream_id = valid_id(word0)?;
                let fin = flags & FLAG_FIN != 0;
                return Ok(Some(Frame::Data {
                    stream_id,
                    fin,
                    data: payload,
                }));
            }
            let version = (word0 >> 16) as u16 & 0x7fff;
            if version != VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
            if let Some(frame) = self.decode_control(word0 as u16, flags, &payload)? {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }
}

impl Encoder<Frame> for Codec {
    type Error = SpdyError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        let mut body = BytesMut::new();
        // Every field is checked before the zlib context is touched, so a
        // refused frame leaves the codec usable.
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_WIRE_LEN {
                    return Err(SpdyError::FrameTooLarge(data.len(), MAX_WIRE_LEN));
                }
                dst.reserve(8 + data.len());
                dst.put_u32(valid_id(stream_id)?);
                dst.put_u32(u32::from(fin) << 24 | data.len() as u32);
                dst.put_slice(&data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                body.put_u32(valid_id(stream_id)?);
                body.put_u32(associated_to & ID_MASK);
                body.put_u16(u16::from(priority.min(7)) << 13); // priority, credential slot 0
                self.deflate_headers(&headers, &mut body)?;
                (
                    TYPE_SYN_STREAM,
                    u8::from(fin) | u8::from(unidirectional) << 1,
                )
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                body.put_u32(valid_id(stream_id)?);
                self.deflate_headers(&headers, &mut body)?;
                (TYPE_SYN_REPLY, u8::from(fin))
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                body.put_u32(valid_id(stream_id)?);
                self.deflate_headers(&headers, &mut body)?;
                (TYPE_HEADERS, u8::from(fin))
            }
            // Go's reader fails the connection on status 0.
            Frame::RstStream { status: 0, .. } => return Err(SpdyError::Malformed("RST status 0")),
            Frame::RstStream { stream_id, status } => {
                body.put_u32(valid_id(stream_id)?);
                body.put_u32(status);
                (TYPE_RST_STREAM, 0)
            }
            Frame::Settings { clear, entries } => {
                body.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    body.put_u32(u32::from(flags) << 24 | (id & 0xff_ffff));
                    body.put_u32(value);
                }
                (TYPE_SETTINGS, u8::from(clear))
            }
            // Go's reader fails the connection on id 0 too.
            Frame::Ping { id: 0 } => return Err(SpdyError::Malformed("PING id 0")),
            Frame::Ping { id } => {
                body.put_u32(id);
                (TYPE_PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                body.put_u32(last_good_stream_id & ID_MASK);
                body.put_u32(status);
                (TYPE_GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id & ID_MASK);
                body.put_u32(delta & ID_MASK);
                (TYPE_WINDOW_UPDATE, 0)
            }
        };
        // A header block is at most 1 MiB before compression, so this holds.
        if body.len() > MAX_WIRE_LEN {
            return Err(SpdyError::FrameTooLarge(body.len(), MAX_WIRE_LEN));
        }
        dst.reserve(8 + body.len());
        dst.put_u32(0x8000_0000 | u32::from(VERSION) << 16 | u32::from(kind));
        dst.put_u32(u32::from(flags) << 24 | body.len() as u32);
        dst.put_slice(&body);
        Ok(())
    }
}

fn broken_pipe(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, why)
}

/// Work for the writer task, in FIFO order. A DATA frame (or PING reply)
/// holds a permit of the bounded queue until it is written.
enum Out {
    Frame(Frame, Option<OwnedSemaphorePermit>),
    /// Write what was queued before, then close the connection.
    Shutdown,
}

/// Per stream, shared by its handles and the connection reader.
#[derive(Default)]
struct StreamState {
    id: u32,
    replied: AtomicBool,
    /// We sent FIN (in DATA or SYN_REPLY).
    finished: AtomicBool,
    /// Either side reset the stream.
    reset: AtomicBool,
}

/// The connection reader's view of a stream, kept until both sides
/// finished or it was reset (so a late RST still stops our writer).
struct Entry {
    /// Feeds the [`StreamReader`]; None once the peer finished or the reader
    /// was dropped (later data is discarded).
    tx: Option<mpsc::Sender<Bytes>>,
    remote_closed: bool,
    state: Arc<StreamState>,
}

struct Shared {
    out: mpsc::UnboundedSender<Out>,
    /// Bounds the frames queued by writers and ping replies.
    permits: Arc<Semaphore>,
    /// Nothing more may be queued.
    closed: AtomicBool,
    /// Highest stream id the peer opened, for our GOAWAY.
    last_peer_stream: AtomicU32,
    streams: Mutex<HashMap<u32, Entry>>,
    /// Cancelled when the writer task finished: the session is over.
    done: CancellationToken,
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, HashMap<u32, Entry>> {
        // No code panics while holding the lock; if it did, the map is fine.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a control frame. Unbounded, but each comes from one user call
    /// or one frame the peer sent, never per byte.
    fn send(&self, frame: Frame) -> io::Result<()> {
        if self.closed.load(SeqCst) {
            return Err(broken_pipe("SPDY session closed"));
        }
        let sent = self.out.send(Out::Frame(frame, None));
        sent.map_err(|_| broken_pipe("SPDY session closed"))
    }

    /// GOAWAY after whatever is queued, then the connection closes.
    fn close(&self, status: u32) {
        let last_good_stream_id = self.last_peer_stream.load(SeqCst);
        let _ = self.send(Frame::GoAway {
            last_good_stream_id,
            status,
        });
        self.end();
    }

    /// Nothing more can be queued: blocked writers wake with BrokenPipe, the
    /// writer task drains the queue and closes, and dropping every stream's
    /// sender gives its reader EOF after the data already buffered.
    fn end(&self) {
        self.closed.store(true, SeqCst);
        self.permits.close();
        let _ = self.out.send(Out::Shutdown);
        let streams = std::mem::take(&mut *self.streams());
        drop(streams); // outside the lock
    }

    /// One side finished (FIN); the entry goes once both have.
    fn half_closed(&self, id: u32, remote: bool) {
        let mut streams = self.streams();
        let Some(entry) = streams.get_mut(&id) else {
            return;
        };
        if remote {
            (entry.tx, entry.remote_closed) = (None, true);
        }
        if entry.remote_closed && entry.state.finished.load(SeqCst) {
            streams.remove(&id);
        }
    }
}

/// The server side of a session over any byte stream.
pub struct Session;

impl Session {
    /// Starts the session on `io` and returns the streams the peer opens. It
    /// spawns a reader and a writer task with `tokio::spawn`, so it must run
    /// inside a Tokio runtime (a current-thread one will do).
    pub fn accept<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> Incoming {
        let (read_half, write_half) = tokio::io::split(io);
        let (out, out_rx) = mpsc::unbounded_channel();
        let (incoming_tx, rx) = mpsc::channel(INCOMING_BACKLOG);
        let shared = Arc::new(Shared {
            out,
            permits: Arc::new(Semaphore::new(WRITE_QUEUE_FRAMES)),
            closed: AtomicBool::new(false),
            last_peer_stream: AtomicU32::new(0),
            streams: Mutex::new(HashMap::new()),
            done: CancellationToken::new(),
        });
        tokio::spawn(write_loop(write_half, out_rx, shared.done.clone()));
        tokio::spawn(read_loop(read_half, shared.clone(), incoming_tx));
        Incoming {
            rx,
            handle: SessionHandle { shared },
        }
    }
}

async fn write_loop<W>(mut io: W, mut rx: mpsc::UnboundedReceiver<Out>, done: CancellationToken)
where
    W: AsyncWrite + Unpin,
{
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH + MAX_DATA_CHUNK + 64);
    let mut permits = Vec::new();
    let mut next = rx.recv().await;
    while let Some(Out::Frame(frame, permit)) = next {
        // Only an invalid frame of ours fails, before it touched any state:
        // drop it and carry on.
        if let Err(e) = codec.encode(frame, &mut buf) {
            warn!(error = %e, "dropping a SPDY frame that cannot be encoded");
        }
        permits.extend(permit);
        // Gather what is queued into one write of whole frames (a WebSocket
        // adapter mapping writes to messages then never splits a frame).
        next = match rx.try_recv() {
            Ok(item) if buf.len() < WRITE_BATCH => Some(item),
            item => {
                if let Err(e) = write_out(&mut io, &mut buf).await {
                    debug!(error = %e, "SPDY connection write failed");
                    break;
                }
                permits.clear(); // written: let more DATA in
                match item {
                    Ok(item) => Some(item),
                    Err(_) => rx.recv().await,
                }
            }
        };
    }
    let _ = write_out(&mut io, &mut buf).await; // what came before Shutdown
    let _ = io.shutdown().await;
    rx.close(); // later sends fail at once
    done.cancel(); // stops the reader if it still runs
}

async fn write_out<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    let written = io.write_all(buf).await;
    buf.clear(); // after a failure nothing more is tried
    written?;
    io.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(
    io: R,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut frames = FramedRead::new(io, Codec::new());
    let mut last_id = 0;
    loop {
        let frame = tokio::select! {
            _ = shared.done.cancelled() => break,
            frame = frames.next() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            None => break, // the peer closed the connection
            Some(Err(SpdyError::Io(e))) => {
                debug!(error = %e, "SPDY connection read failed");
                break;
            }
            Some(Err(e)) => {
                warn!(error = %e, "SPDY protocol error, closing the session");
                shared.close(PROTOCOL_ERROR);
                break;
            }
        };
        tokio::select! {
            _ = shared.done.cancelled() => break,
            go_on = handle_frame(&shared, &incoming, &mut last_id, frame) => if !go_on { break },
        }
    }
    shared.end();
}

/// Acts on one frame from the peer; false ends the session.
async fn handle_frame(
    shared: &Arc<Shared>,
    incoming: &mpsc::Sender<Stream>,
    last_id: &mut u32,
    frame: Frame,
) -> bool {
    match frame {
        Frame::SynStream {
            stream_id: id,
            fin,
            headers,
            ..
        } => {
            // Client streams are odd and increasing (SPDY/3 section 2.3.2).
            if id % 2 == 0 || id <= *last_id {
                debug!(id, "SYN_STREAM with an invalid id");
                let _ = shared.send(Frame::RstStream {
                    stream_id: id,
                    status: PROTOCOL_ERROR,
                });
                return true;
            }
            *last_id = id;
            if shared.closed.load(SeqCst) {
                return true; // after our GOAWAY new streams are ignored
            }
            shared.last_peer_stream.store(id, SeqCst);
            let state = Arc::new(StreamState {
                id,
                ..StreamState::default()
            });
            let (tx, rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
            // Registered before it is handed out, so the data right behind
            // the SYN_STREAM is kept. With FIN, its reader is at EOF.
            let entry = Entry {
                tx: (!fin).then_some(tx),
                remote_closed: fin,
                state: state.clone(),
            };
            shared.streams().insert(id, entry);
            let permits = PollSemaphore::new(shared.permits.clone());
            let writer = StreamWriter {
                shared: shared.clone(),
                state,
                permits,
            };
            let reader = StreamReader {
                rx,
                pending: Bytes::new(),
            };
            if let Err(mpsc::error::SendError(stream)) = incoming
                .send(Stream {
                    headers,
                    reader,
                    writer,
                })
                .await
            {
                stream.reset(REFUSED_STREAM); // nobody accepts streams any more
            }
        }
        Frame::Data {
            stream_id: id,
            fin,
            data,
        } => {
            let tx = shared.streams().get(&id).and_then(|e| e.tx.clone());
            match tx {
                // Waiting here is the backpressure: a full stream buffer
                // stops reading the connection.
                Some(tx) if !data.is_empty() && tx.send(data).await.is_err() => {
                    // Its reader was dropped: discard this and later data.
                    if let Some(entry) = shared.streams().get_mut(&id) {
                        entry.tx = None;
                    }
                }
                Some(_) => {}
                None => trace!(id, "discarding DATA for a stream without a reader"),
            }
            if fin {
                shared.half_closed(id, true);
            }
        }
        Frame::Headers {
            stream_id,
            fin: true,
            ..
        } => shared.half_closed(stream_id, true),
        Frame::RstStream { stream_id, status } => {
            debug!(stream_id, status, "SPDY stream reset by the peer");
            if let Some(entry) = shared.streams().remove(&stream_id) {
                entry.state.reset.store(true, SeqCst);
            }
        }
        Frame::Ping { id } => {
            // The reply takes a queue permit: a peer that pings without
            // reading stalls its own reads instead of growing our queue.
            if let Ok(permit) = shared.permits.clone().acquire_owned().await {
                let _ = shared
                    .out
                    .send(Out::Frame(Frame::Ping { id }, Some(permit)));
            }
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            debug!(last_good_stream_id, status, "SPDY peer sent GOAWAY");
            return false;
        }
        // We open no streams, and Go enforces no windows either.
        _ => {}
    }
    true
}

/// The streams the peer opens, in order.
pub struct Incoming {
    rx: mpsc::Receiver<Stream>,
    handle: SessionHandle,
}

impl Incoming {
    /// The next stream the peer opened; None once the session ended (peer
    /// closed, GOAWAY, error, or [`Incoming::close`]).
    pub async fn next(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }

    /// Sends GOAWAY and closes the connection once queued frames are written.
    pub fn close(&self) {
        self.handle.close();
    }

    /// A cloneable handle, to close the session or wait for its end.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }
}

/// The session lasts until the peer goes away or [`SessionHandle::close`];
/// dropping the handles does not end it.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Sends GOAWAY (status OK) after the frames already queued, then closes
    /// the connection. Writes from then on fail with BrokenPipe.
    pub fn close(&self) {
        self.shared.close(0);
    }

    /// Resolves once the connection is closed.
    #[cfg(test)]
    pub async fn closed(&self) {
        self.shared.done.cancelled().await;
    }
}

/// A stream the peer opened. Answer it with [`Stream::reply`] (the first
/// write or the writer's drop does it otherwise) or refuse it with
/// [`Stream::reset`].
pub struct Stream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.writer.state.id
    }

    /// The SYN_STREAM's headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Answers the SYN_STREAM (only the first call sends anything).
    pub fn reply(&self, headers: Headers, fin: bool) {
        self.writer.reply(headers, fin);
    }

    /// RST_STREAM with `status` (e.g. [`CANCEL`]): our reader ends, writes fail.
    pub fn reset(&self, status: u32) {
        self.writer.reset(status);
    }

    /// The peer's data, and our side of the stream.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The peer's data on one stream: EOF once the peer sent FIN or reset the
/// stream, or the session ended. Drain it or drop it: while its buffer is
/// full, the whole connection waits (that is the backpressure).
pub struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && buf.remaining() > 0 {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                None => break, // EOF
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Our side of one stream. Each write becomes one DATA frame of at most
/// [`MAX_DATA_CHUNK`] bytes; shutdown, or dropping the writer, sends FIN.
/// Writes wait while the session's queue is full, and fail with BrokenPipe
/// once the stream finished or was reset or the session ended. Flush returns
/// at once: the writer task sends queued frames in order.
pub struct StreamWriter {
    shared: Arc<Shared>,
    state: Arc<StreamState>,
    permits: PollSemaphore,
}

impl StreamWriter {
    /// See [`Stream::reply`].
    pub fn reply(&self, headers: Headers, fin: bool) {
        if self.state.reset.load(SeqCst) || self.state.replied.swap(true, SeqCst) {
            return;
        }
        self.state.finished.fetch_or(fin, SeqCst);
        let _ = self.shared.send(Frame::SynReply {
            stream_id: self.state.id,
            fin,
            headers,
        });
        self.shared.half_closed(self.state.id, false);
    }

    /// See [`Stream::reset`].
    pub fn reset(&self, status: u32) {
        if self.state.reset.swap(true, SeqCst) {
            return;
        }
        self.state.replied.store(true, SeqCst); // a RST answers SYN_STREAM too
        let _ = self.shared.send(Frame::RstStream {
            stream_id: self.state.id,
            status,
        });
        self.shared.streams().remove(&self.state.id); // our reader ends
    }

    fn check_writable(&self) -> io::Result<()> {
        match () {
            _ if self.shared.closed.load(SeqCst) => Err(broken_pipe("SPDY session closed")),
            _ if self.state.reset.load(SeqCst) => Err(broken_pipe("SPDY stream reset")),
            _ if self.state.finished.load(SeqCst) => Err(broken_pipe("SPDY stream finished")),
            _ => Ok(()),
        }
    }

    /// Sends FIN: on an empty DATA frame, or on the SYN_REPLY if none went
    /// out yet (Go drops DATA that comes before the SYN_REPLY).
    fn finish(&self) -> io::Result<()> {
        if self.state.reset.load(SeqCst) || self.state.finished.swap(true, SeqCst) {
            return Ok(());
        }
        let (stream_id, fin) = (self.state.id, true);
        let sent = match self.state.replied.swap(true, SeqCst) {
            true => self.shared.send(Frame::Data {
                stream_id,
                fin,
                data: Bytes::new(),
            }),
            false => self.shared.send(Frame::SynReply {
                stream_id,
                fin,
                headers: Headers::new(),
            }),
        };
        self.shared.half_closed(stream_id, false);
        sent
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_writable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let Some(permit) = ready!(this.permits.poll_acquire(cx)) else {
            return Poll::Ready(Err(broken_pipe("SPDY session closed")));
        };
        this.check_writable()?; // it may have changed while we waited
        let stream_id = this.state.id;
        if !this.state.replied.swap(true, SeqCst) {
            // Go drops DATA that comes before the SYN_REPLY.
            this.shared.send(Frame::SynReply {
                stream_id,
                fin: false,
                headers: Headers::new(),
            })?;
        }
        let data = Bytes::copy_from_slice(&buf[..buf.len().min(MAX_DATA_CHUNK)]);
        let n = data.len();
        let frame = Frame::Data {
            stream_id,
            fin: false,
            data,
        };
        let sent = this.shared.out.send(Out::Frame(frame, Some(permit)));
        Poll::Ready(
            sent.map(|()| n)
                .map_err(|_| broken_pipe("SPDY session closed")),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish())
    }
}

impl Drop for StreamWriter {
    /// Like a TCP write half, dropping it half-closes the stream.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use std::collections::HashSet;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::time::timeout;
    use tokio_util::codec::Framed;

    /// SYN_STREAMs 1 and 3 as moby/spdystream's framer wrote them (Go 1.19
    /// compress/zlib, BestCompression, SPDY dictionary), headers streamType,
    /// port and requestID; the second block is compressed against the first.
    const GO_SYN_STREAMS: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a48f95b044e\
        ea160616060c0c0c9c4590f8ca04a5634603704a2c294a4dcc851636aca9a0a800000000ffff800300010000\
        001a00000003000000000000826a469502954389848d04000000ffff";
    const SECOND: Duration = Duration::from_secs(10);

    fn hex(s: &str) -> BytesMut {
        let digit = |i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex");
        (0..s.len()).step_by(2).map(digit).collect::<Vec<_>>()[..].into()
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    fn syn(stream_id: u32, fin: bool, pairs: &[(&str, &str)]) -> Frame {
        let (headers, associated_to, priority, unidirectional) = (hdrs(pairs), 0, 0, false);
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin,
            unidirectional,
            headers,
        }
    }

    fn data(stream_id: u32, fin: bool, bytes: &[u8]) -> Frame {
        Frame::Data {
            stream_id,
            fin,
            data: Bytes::copy_from_slice(bytes),
        }
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let (mut codec, mut buf) = (Codec::new(), BytesMut::new());
        frames
            .iter()
            .for_each(|f| codec.encode(f.clone(), &mut buf).expect("encode"));
        buf
    }

    fn decode_all(codec: &mut Codec, buf: &mut BytesMut) -> Result<Vec<Frame>, SpdyError> {
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one_that_go_names() {
        let (mut a, mut b) = (1u32, 0u32); // Adler-32
        for &byte in HEADER_DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(
            (HEADER_DICTIONARY.len(), b << 16 | a),
            (1423, DICTIONARY_ADLER32)
        );
        // Go's first header block starts 78 f9 (FDICT) and this DICTID...
        assert_eq!(
            hex(GO_SYN_STREAMS)[18..24],
            [0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]
        );
        // ...and so does ours (0x78 0x9c: FDICT set, default level).
        let ours = encode_all(&[syn(1, false, &[("a", "b")])]);
        assert_eq!((ours[18], ours[19] & 0x20), (0x78, 0x20));
        assert_eq!(ours[20..24], DICTIONARY_ADLER32.to_be_bytes());
    }

    #[test]
    fn header_blocks_compressed_by_go_decode() {
        let frames = decode_all(&mut Codec::new(), &mut hex(GO_SYN_STREAMS)).expect("decode");
        assert_eq!(frames.len(), 2);
        for (frame, (id, kind)) in frames.iter().zip([(1, "error"), (3, "data")]) {
            let Frame::SynStream {
                stream_id,
                headers,
                fin: false,
                ..
            } = frame
            else {
                panic!("{frame:?}")
            };
            assert_eq!((*stream_id, headers.iter().count()), (id, 3));
            assert_eq!(headers.get("streamType"), Some(kind));
            assert_eq!(
                (headers.get("port"), headers.get("REQUESTID")),
                (Some("8080"), Some("0"))
            );
        }
    }

    #[test]
    fn a_syn_stream_round_trips_through_the_codec() {
        let headers = hdrs(&[
            ("streamtype", "stdin"),
            ("multi", "a"),
            ("Multi", "b"),
            ("e", ""),
        ]);
        let frame = Frame::SynStream {
            stream_id: 5,
            associated_to: 3,
            priority: 7,
            fin: true,
            unidirectional: true,
            headers,
        };
        let decoded = decode_all(
            &mut Codec::new(),
            &mut encode_all(std::slice::from_ref(&frame)),
        )
        .expect("decode");
        assert_eq!(decoded, [frame]);
    }

    #[test]
    fn every_frame_type_round_trips_sharing_one_zlib_context() {
        let frames = vec![
            syn(1, false, &[("streamtype", "error"), ("port", "80")]),
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            },
            syn(3, false, &[("streamtype", "data"), ("port", "80")]),
            Frame::SynReply {
                stream_id: 3,
                fin: true,
                headers: hdrs(&[("x", "1")]),
            },
            Frame::Headers {
                stream_id: 3,
                fin: true,
                headers: hdrs(&[("y", "2")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: CANCEL,
            },
            Frame::Settings {
                clear: true,
                entries: vec![(1, 7, 65536), (0, 4, 100)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 1,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1 << 20,
            },
            data(1, true, b"hello"),
            data(1, false, b""),
        ];
        let mut buf = encode_all(&frames);
        let mut later = buf.clone();
        assert_eq!(
            decode_all(&mut Codec::new(), &mut buf).expect("decode"),
            frames
        );
        // A fresh context cannot read the second SYN_STREAM alone.
        later.advance(8 + usize::from(later[7]));
        later.advance(8 + usize::from(later[7]));
        assert!(matches!(
            Codec::new().decode(&mut later),
            Err(SpdyError::Compression(_))
        ));
    }

    #[test]
    fn a_truncated_frame_waits_for_more_bytes() {
        let whole = encode_all(&[syn(1, false, &[("port", "1")]), data(1, false, b"abc")]);
        let (mut codec, mut buf, mut frames) = (Codec::new(), BytesMut::new(), Vec::new());
        for (fed, &byte) in (1..).zip(whole.iter()) {
            buf.put_u8(byte);
            frames.extend(codec.decode(&mut buf).expect("decode"));
            // Nothing until the SYN_STREAM is whole, the DATA (11 bytes) at the end.
            let expected = usize::from(fed >= whole.len() - 11) + usize::from(fed == whole.len());
            assert_eq!(frames.len(), expected);
        }
        assert_eq!((frames.len(), buf.len()), (2, 0));
    }

    #[test]
    fn bogus_lengths_are_errors_not_panics() {
        let malformed = |bytes: &[u8]| {
            let result = Codec::new().decode(&mut bytes.into());
            assert!(matches!(result, Err(SpdyError::Malformed(_))), "{result:?}");
        };
        malformed(&[
            0x80, 3, 0, 4, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1,
        ]); // SETTINGS count
        malformed(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]); // short RST_STREAM
        malformed(&[0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // stream 0
        malformed(&[0, 0, 0, 0, 0, 0, 0, 1, 0]); // DATA on stream 0
        let mut big = encode_all(&[data(1, false, &[0; 100])]);
        let result = Codec::with_max_frame_len(64).decode(&mut big);
        assert!(matches!(result, Err(SpdyError::FrameTooLarge(100, 64))));
        // A header block whose first name length points past its end.
        let mut raw = encode_header_block(&hdrs(&[("name", "value")])).expect("block");
        assert_eq!(
            parse_header_block(&raw).expect("parse"),
            hdrs(&[("name", "value")])
        );
        raw[7] = 0xff;
        assert!(parse_header_block(&raw).is_err() && parse_header_block(&raw[..3]).is_err());
        // Random control and data frames must never panic (a fixed LCG).
        let mut seed = 0x2545_f491_u64;
        for round in 0..3000 {
            let mut buf: BytesMut = (0..48)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect::<Vec<_>>()[..]
                .into();
            (buf[0], buf[1], buf[5], buf[6]) = (if round % 2 == 0 { 0x80 } else { 1 }, 3, 0, 0);
            let _ = decode_all(&mut Codec::new(), &mut buf);
        }
        let mut out = BytesMut::new();
        assert!(Codec::new().encode(data(0, false, b"x"), &mut out).is_err());
        assert!(Codec::new()
            .encode(
                Frame::RstStream {
                    stream_id: 1,
                    status: 0
                },
                &mut out
            )
            .is_err());
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut buf: BytesMut = [0x80, 3, 0, 10, 0, 0, 0, 3, 1, 2, 3][..].into(); // CREDENTIAL
        Codec::new()
            .encode(Frame::Ping { id: 7 }, &mut buf)
            .expect("ping");
        assert_eq!(
            decode_all(&mut Codec::new(), &mut buf).expect("decode"),
            [Frame::Ping { id: 7 }]
        );
    }

    /// A client built on the same codec (so compressing like Go does).
    struct Client(Framed<DuplexStream, Codec>, HashSet<u32>);

    impl Client {
        async fn send(&mut self, frame: Frame) {
            self.0.send(frame).await.expect("client send");
        }

        /// The next frame, checking that no DATA comes before its SYN_REPLY.
        async fn recv(&mut self) -> Option<Frame> {
            let frame = timeout(SECOND, self.0.next())
                .await
                .expect("client timed out");
            let frame = frame.map(|f| f.expect("client decode"));
            match &frame {
                Some(Frame::SynReply { stream_id, .. }) => assert!(self.1.insert(*stream_id)),
                Some(Frame::Data { stream_id, .. }) => assert!(self.1.contains(stream_id)),
                _ => {}
            }
            frame
        }

        /// Data of stream `id` until its FIN.
        async fn read_stream(&mut self, id: u32) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                match self.recv().await.expect("frames until FIN") {
                    Frame::SynReply {
                        stream_id,
                        fin: true,
                        ..
                    } if stream_id == id => return out,
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } if stream_id == id => {
                        out.extend_from_slice(&data);
                        if fin {
                            return out;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn start() -> (Client, Incoming) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (
            Client(Framed::new(client, Codec::new()), HashSet::new()),
            Session::accept(server),
        )
    }

    async fn accept(incoming: &mut Incoming) -> Stream {
        timeout(SECOND, incoming.next())
            .await
            .expect("accept timed out")
            .expect("a stream")
    }

    async fn read_all(reader: &mut StreamReader) -> Vec<u8> {
        let mut out = Vec::new();
        timeout(SECOND, reader.read_to_end(&mut out))
            .await
            .expect("read timed out")
            .expect("read");
        out
    }

    // #[tokio::test] runs a current-thread runtime, like actix's.
    #[tokio::test]
    async fn streams_carry_data_both_ways_and_fin_half_closes() {
        let (mut client, mut incoming) = start();
        client
            .send(syn(
                1,
                false,
                &[("streamtype", "error"), ("requestid", "0")],
            ))
            .await;
        client
            .send(syn(3, false, &[("streamtype", "data"), ("requestid", "0")]))
            .await;
        let (error, stream) = (accept(&mut incoming).await, accept(&mut incoming).await);
        assert_eq!(
            (error.id(), error.headers().get("streamType")),
            (1, Some("error"))
        );
        assert_eq!(
            (stream.id(), stream.headers().get("StreamType")),
            (3, Some("data"))
        );
        error.reply(Headers::new(), false);
        let (mut reader, mut writer) = stream.split();
        client.send(data(1, true, b"")).await; // port-forward's client closes its error stream
        client.send(data(3, false, b"ping ")).await;
        client.send(data(3, true, b"me")).await;
        assert_eq!(read_all(&mut reader).await, b"ping me");
        writer
            .write_all(b"pong")
            .await
            .expect("write after the peer's FIN");
        writer.shutdown().await.expect("shutdown");
        assert!(
            writer.write_all(b"late").await.is_err(),
            "write after our FIN"
        );
        assert_eq!(client.read_stream(3).await, b"pong");
        let (mut error_reader, error_writer) = error.split();
        assert_eq!(read_all(&mut error_reader).await, b"");
        drop(error_writer); // FIN on drop
        assert_eq!(client.read_stream(1).await, b"");
    }

    #[tokio::test]
    async fn many_streams_work_at_once() {
        let (mut client, mut incoming) = start();
        let server = tokio::spawn(async move {
            while let Some(stream) = incoming.next().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    tokio::io::copy(&mut reader, &mut writer)
                        .await
                        .expect("echo");
                });
            }
        });
        for id in (1..200).step_by(2) {
            client.send(syn(id, false, &[("port", "80")])).await;
            client
                .send(data(id, true, format!("stream {id}").as_bytes()))
                .await;
        }
        let mut echoed = HashMap::new();
        while echoed.len() < 100 {
            match client.recv().await.expect("a frame") {
                Frame::Data {
                    stream_id,
                    fin: false,
                    data,
                } => drop(echoed.insert(stream_id, data)),
                frame => assert!(matches!(frame, Frame::SynReply { .. } | Frame::Data { .. })),
            }
        }
        assert!(echoed
            .iter()
            .all(|(id, data)| *data == format!("stream {id}")));
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await;
        timeout(SECOND, server)
            .await
            .expect("Incoming ends after GOAWAY")
            .expect("server");
    }

    #[tokio::test]
    async fn a_ping_is_echoed_and_settings_and_window_updates_are_ignored() {
        let (mut client, _incoming) = start();
        client
            .send(Frame::Settings {
                clear: false,
                entries: vec![(0, 7, 1 << 20)],
            })
            .await;
        client
            .send(Frame::WindowUpdate {
                stream_id: 0,
                delta: 1000,
            })
            .await;
        client.send(Frame::Ping { id: 1 }).await;
        client.send(Frame::Ping { id: 3 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 1 }));
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 3 }));
    }

    #[tokio::test]
    async fn goaway_from_the_peer_ends_incoming_and_readers_and_writes_fail() {
        let (mut client, mut incoming) = start();
        client.send(syn(1, false, &[])).await;
        let (mut reader, mut writer) = accept(&mut incoming).await.split();
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await;
        assert!(incoming.next().await.is_none());
        assert_eq!(read_all(&mut reader).await, b"");
        let err = writer
            .write_all(b"x")
            .await
            .expect_err("write after the session ended");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        incoming.handle().closed().await;
        assert_eq!(
            client.recv().await,
            None,
            "the server closed the connection"
        );
    }

    #[tokio::test]
    async fn connection_eof_ends_the_session() {
        let (client, mut incoming) = start();
        drop(client);
        assert!(incoming.next().await.is_none());
        timeout(SECOND, incoming.handle().closed())
            .await
            .expect("session closed");
    }

    #[tokio::test]
    async fn close_sends_goaway_after_queued_frames() {
        let (mut client, mut incoming) = start();
        client.send(syn(1, false, &[])).await;
        client.send(syn(3, false, &[])).await;
        let (_reader, mut writer) = accept(&mut incoming).await.split();
        let _second = accept(&mut incoming).await;
        writer.write_all(b"bye").await.expect("write");
        incoming.close();
        assert!(writer.write_all(b"x").await.is_err());
        assert_eq!(
            client.recv().await,
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new()
            })
        );
        assert_eq!(client.recv().await, Some(data(1, false, b"bye")));
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 3,
                status: 0
            })
        );
        assert_eq!(client.recv().await, None);
        assert!(incoming.next().await.is_none());
    }

    #[tokio::test]
    async fn resets_end_the_reader_and_fail_writes() {
        let (mut client, mut incoming) = start();
        client.send(syn(1, false, &[])).await;
        let (mut reader, mut writer) = accept(&mut incoming).await.split();
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: CANCEL,
            })
            .await;
        assert_eq!(read_all(&mut reader).await, b"");
        assert!(writer.write_all(b"x").await.is_err());
        client.send(syn(3, false, &[])).await;
        let stream = accept(&mut incoming).await;
        stream.reset(REFUSED_STREAM);
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: REFUSED_STREAM
            })
        );
        let (mut reader, mut writer) = stream.split();
        assert_eq!(read_all(&mut reader).await, b"");
        assert!(writer.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn data_for_dropped_or_unknown_streams_is_discarded_and_bad_ids_are_refused() {
        let (mut client, mut incoming) = start();
        client.send(syn(1, false, &[])).await;
        let (reader, _writer) = accept(&mut incoming).await.split();
        drop(reader);
        for _ in 0..(2 * STREAM_BUFFER_CHUNKS) {
            client.send(data(1, false, b"ignored")).await;
        }
        client.send(data(99, false, b"unknown")).await;
        client.send(syn(1, false, &[])).await; // an id used before
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: PROTOCOL_ERROR
            })
        );
        client.send(Frame::Ping { id: 5 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 5 }));
    }

    #[tokio::test]
    async fn a_ten_mebibyte_transfer_arrives_intact_both_ways() {
        let (Client(framed, _), mut incoming) = start();
        let (mut sink, mut frames) = framed.split();
        let payload: Vec<u8> = (0..10u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();
        let sent = payload.clone();
        let sender = tokio::spawn(async move {
            sink.send(syn(1, false, &[])).await.expect("syn");
            for chunk in sent.chunks(20_000) {
                sink.send(data(1, false, chunk)).await.expect("data");
            }
            sink.send(data(1, true, b"")).await.expect("fin");
        });
        let (mut reader, mut writer) = accept(&mut incoming).await.split();
        let echo = tokio::spawn(async move { tokio::io::copy(&mut reader, &mut writer).await });
        let mut received = Vec::with_capacity(payload.len());
        loop {
            let frame = timeout(SECOND, frames.next())
                .await
                .expect("transfer timed out");
            match frame.expect("frames").expect("decode") {
                Frame::Data { data, fin, .. } => {
                    assert!(data.len() <= MAX_DATA_CHUNK);
                    received.extend_from_slice(&data);
                    if fin {
                        break;
                    }
                }
                frame => assert!(
                    matches!(frame, Frame::SynReply { stream_id: 1, .. }),
                    "{frame:?}"
                ),
            }
        }
        assert_eq!(
            echo.await.expect("echo").expect("copy"),
            payload.len() as u64
        );
        assert!(received == payload, "10 MiB came back altered");
        sender.await.expect("sender");
    }
}
