//! The HTTP/1 head guard: every request head a client sends is read and
//! checked here before hyper sees a byte of it.
//!
//! hyper answers what it cannot parse with a bare `400` or `431` of its own
//! (no reason, no record), and it quietly re-frames a request that carries
//! both `Content-Length` and `Transfer-Encoding` instead of refusing it, so
//! veto never sees either. The guard sits between the socket and hyper: it
//! holds each head back until it is whole, parses it with `httparse`
//! (hyper's own parser), and refuses what two servers could read two ways,
//! with veto's JSON answer and a record, before hyper is involved. Bodies
//! pass straight through, framed by the head that was checked, so the guard
//! always knows where the next head begins. After a `CONNECT` head the
//! bytes are the tunnel's (a refused CONNECT closes its connection).

use crate::head::Refused;
use crate::phase::{self, Ctx};
use crate::state::Shared;
use http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most header fields a head may have, whatever `--max-headers` says.
const MAX_FIELDS: usize = 256;

/// Where the byte stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Gathering the next head.
    Head,
    /// This many body bytes left.
    Length(u64),
    Chunked(Chunk),
    /// After a CONNECT head: the tunnel's bytes, or nothing more.
    Tunnel,
}

/// A chunked body, byte by byte (RFC 9112 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// The size line: hex digits so far, then (`ext`) an extension.
    Size {
        value: u64,
        digits: u8,
        ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer fields; `empty`: nothing on this line yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
}

const CHUNK_START: Chunk = Chunk::Size {
    value: 0,
    digits: 0,
    ext: false,
};

/// Scans chunked framing: how many bytes of `b` belong to the body, and
/// whether it ended there. `Err`: framing hyper would not read either.
fn scan_chunked(st: &mut Chunk, b: &[u8]) -> Result<(usize, bool), &'static str> {
    let bad = "the request's chunked body is malformed";
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        *st = match *st {
            Chunk::Size { value, digits, ext } => match c {
                b'\r' if digits > 0 => Chunk::SizeLf { value },
                _ if ext => Chunk::Size { value, digits, ext },
                b';' if digits > 0 => Chunk::Size {
                    value,
                    digits,
                    ext: true,
                },
                _ => {
                    let d = (c as char).to_digit(16).ok_or(bad)?;
                    if digits >= 15 {
                        return Err("a chunk of the request's body is too large");
                    }
                    Chunk::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                        ext,
                    }
                }
            },
            Chunk::SizeLf { value } if c == b'\n' => {
                if value == 0 {
                    Chunk::Trailer { empty: true }
                } else {
                    Chunk::Data(value)
                }
            }
            Chunk::Data(n) => {
                // Data is skipped whole, not byte by byte.
                let take = (b.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                i += take;
                let left = n - take as u64;
                *st = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            Chunk::DataCr if c == b'\r' => Chunk::DataLf,
            Chunk::DataLf if c == b'\n' => CHUNK_START,
            Chunk::Trailer { empty } => match c {
                b'\r' => Chunk::TrailerLf { empty },
                b'\n' => return Err(bad),
                _ => Chunk::Trailer { empty: false },
            },
            Chunk::TrailerLf { empty } if c == b'\n' => {
                if empty {
                    *st = CHUNK_START;
                    return Ok((i + 1, true));
                }
                Chunk::Trailer { empty: true }
            }
            _ => return Err(bad),
        };
        i += 1;
    }
    Ok((b.len(), false))
}

/// Where a chunked body that begins `b` ends (`Ok(Some(n))`: after `n`
/// bytes), `Ok(None)` if it does not end in `b`, `Err` if it is malformed.
pub fn chunked_end(b: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut st = CHUNK_START;
    scan_chunked(&mut st, b).map(|(n, done)| done.then_some(n))
}

/// A head's verdict as the guard gives it: `None` (incomplete), the head's
/// length, or the status it is refused with.
pub fn head_verdict(b: &[u8], max_fields: usize, max_bytes: usize) -> Option<Result<usize, u16>> {
    check(b, max_fields, max_bytes).map(|r| r.map(|(n, _)| n).map_err(|((s, _), _)| s.as_u16()))
}

/// What a complete head tells: how long it is and how its body is framed,
/// or why it is refused. `None`: not complete yet.
type Checked = Option<Result<(usize, Mode), (Refused, Facts)>>;

/// What the record of a refused head says (as much as could be parsed).
#[derive(Default)]
struct Facts {
    method: Option<String>,
    host: String,
    path: Option<String>,
}

fn check(buf: &[u8], max_fields: usize, max_bytes: usize) -> Checked {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields[..max_fields.clamp(1, MAX_FIELDS)]);
    let too_large = || {
        (
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request head is larger than {max_bytes} bytes or has more than {max_fields} fields"
                ),
            ),
            Facts::default(),
        )
    };
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => return Some(Err(too_large())),
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Err(too_large())),
        Err(e) => {
            return Some(Err((
                (
                    StatusCode::BAD_REQUEST,
                    format!("the request head is malformed: {e}"),
                ),
                Facts::default(),
            )));
        }
    };
    if n > max_bytes {
        return Some(Err(too_large()));
    }
    let facts = || Facts {
        method: req.method.map(str::to_string),
        host: req
            .path
            .and_then(|p| p.parse::<http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_ascii_lowercase))
            .unwrap_or_default(),
        path: req.path.map(|p| p.chars().take(1024).collect::<String>()),
    };
    let mut headers = http::HeaderMap::new();
    for f in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(f.name.as_bytes()),
            http::HeaderValue::from_bytes(f.value),
        ) else {
            continue;
        };
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            headers.append(name, value);
        }
    }
    if let Err(refused) = crate::head::framing(&headers) {
        return Some(Err((refused, facts())));
    }
    // hyper reads the target as an `http::Uri` and answers one it cannot
    // with a bare 400 of its own: refuse it here, with a reason and a record.
    if let Some(p) = req.path
        && p.parse::<http::Uri>().is_err()
    {
        let shown: String = p.chars().take(200).collect();
        return Some(Err((
            (
                StatusCode::BAD_REQUEST,
                format!("the request target `{shown}` is not a valid URI"),
            ),
            facts(),
        )));
    }
    let mode = if req.method == Some("CONNECT") {
        Mode::Tunnel
    } else if headers.contains_key(http::header::TRANSFER_ENCODING) {
        Mode::Chunked(CHUNK_START)
    } else if let Some(v) = headers.get(http::header::CONTENT_LENGTH) {
        match std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(0) => Mode::Head,
            Some(len) => Mode::Length(len),
            None => {
                return Some(Err((
                    (
                        StatusCode::BAD_REQUEST,
                        "the request's Content-Length is not a number".into(),
                    ),
                    facts(),
                )));
            }
        }
    } else {
        Mode::Head
    };
    Some(Ok((n, mode)))
}

/// The answer to a refused head, once its record is committed.
type Answer = tokio::sync::oneshot::Receiver<Vec<u8>>;

/// Where the heads a guard checks come from: the proxy's own listener
/// (plain HTTP; the host is the one the head names), or an opened tunnel
/// (HTTPS to the tunnel's host, by the tunnel's machine), so a refusal's
/// record says what it refused.
#[derive(Clone, Debug)]
pub struct Origin {
    pub protocol: &'static str,
    pub machine: String,
    /// The tunnel's host and port; `None`: the head's own.
    pub target: Option<(String, u16)>,
}

impl Origin {
    pub fn listener() -> Origin {
        Origin {
            protocol: "http",
            machine: "anonymous".into(),
            target: None,
        }
    }
}

/// A client connection's byte stream with every head checked.
pub struct Guarded<IO> {
    io: IO,
    shared: Arc<Shared>,
    origin: Origin,
    /// Bytes read from the client, not yet handed to hyper.
    held: Vec<u8>,
    /// How many of `held` are checked and may go to hyper.
    ready: usize,
    mode: Mode,
    /// When the head being gathered must be complete.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A refusal being recorded, then written; then the stream ends.
    refusing: Option<Answer>,
    written: Option<(Vec<u8>, usize)>,
    done: bool,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, shared: Arc<Shared>, origin: Origin) -> Guarded<IO> {
        Guarded {
            io,
            shared,
            origin,
            held: Vec::new(),
            ready: 0,
            mode: Mode::Head,
            deadline: None,
            refusing: None,
            written: None,
            done: false,
        }
    }

    /// The client stream and the bytes read from it that hyper has not
    /// had (a tunnel's first bytes, read with its CONNECT head).
    pub fn into_parts(self) -> (IO, Vec<u8>) {
        (self.io, self.held)
    }

    /// Refuses the head: its record is written at once (on a task of its
    /// own, so it is written whatever hyper does next), the stream ends for
    /// hyper, which finishes any answer still in flight for an earlier
    /// request, and the refusal is written when hyper shuts the connection
    /// down: never in the middle of another answer.
    fn refuse(&mut self, (status, reason): Refused, facts: Facts) {
        let shared = self.shared.clone();
        self.held.clear();
        self.ready = 0;
        self.deadline = None;
        self.done = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.refusing = Some(rx);
        let origin = self.origin.clone();
        tokio::spawn(async move {
            let mut ctx = Ctx::new();
            ctx.machine = origin.machine;
            let (host, port) = origin.target.unwrap_or((facts.host, 0));
            let facts = crate::head::Facts {
                protocol: origin.protocol,
                method: facts.method,
                host,
                port,
                path: facts.path,
            };
            let recorded =
                phase::record_refusal(&shared, &ctx, &facts, "malformed-request", &reason, status)
                    .await;
            let answer = match recorded {
                Ok(_) => raw_answer(status, &reason, &ctx.id),
                Err(_) => raw_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "veto cannot record this decision, so it refuses it",
                    &ctx.id,
                ),
            };
            let _ = tx.send(answer);
        });
    }
}

/// veto's JSON answer as HTTP/1.1 bytes, closing the connection.
fn raw_answer(status: StatusCode, reason: &str, id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "reason": reason,
        "request_id": id,
    })
    .to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\nveto-request-id: {id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes a refusal's answer once its record is committed.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(answer) = self.refusing.as_mut() {
            let bytes = std::task::ready!(Pin::new(answer).poll(cx)).unwrap_or_default();
            self.refusing = None;
            self.written = Some((bytes, 0));
        }
        if let Some((bytes, at)) = self.written.as_mut() {
            while *at < bytes.len() {
                match Pin::new(&mut self.io).poll_write(cx, &bytes[*at..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => *at += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let _ = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
            self.written = None;
        }
        Poll::Ready(())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.done {
                // The end of the stream, as hyper sees it: it finishes what
                // it is writing and shuts down.
                return Poll::Ready(Ok(()));
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            // Classify what is held.
            if !this.held.is_empty() {
                match this.mode {
                    Mode::Head => {
                        let cfg = &this.shared.config;
                        match check(&this.held, cfg.max_headers, cfg.max_header_bytes) {
                            Some(Ok((n, mode))) => {
                                this.ready = n;
                                this.mode = mode;
                                this.deadline = None;
                                continue;
                            }
                            Some(Err((refused, facts))) => {
                                this.refuse(refused, facts);
                                continue;
                            }
                            None => {}
                        }
                    }
                    Mode::Length(left) => {
                        let n = this
                            .held
                            .len()
                            .min(usize::try_from(left).unwrap_or(usize::MAX));
                        this.ready = n;
                        this.mode = match left - n as u64 {
                            0 => Mode::Head,
                            more => Mode::Length(more),
                        };
                        continue;
                    }
                    Mode::Chunked(mut st) => match scan_chunked(&mut st, &this.held) {
                        Ok((n, ended)) => {
                            this.ready = n;
                            this.mode = if ended { Mode::Head } else { Mode::Chunked(st) };
                            if n > 0 {
                                continue;
                            }
                        }
                        Err(why) => {
                            // Inside a body hyper is reading: the body fails,
                            // and the request's own answer says so.
                            this.done = true;
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                why,
                            )));
                        }
                    },
                    Mode::Tunnel => {
                        this.ready = this.held.len();
                        continue;
                    }
                }
            }
            // Nothing to check in between: read straight into hyper's buffer.
            match this.mode {
                Mode::Tunnel => return Pin::new(&mut this.io).poll_read(cx, buf),
                Mode::Length(left) => {
                    let start = buf.filled().len();
                    std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                    let got = buf.filled().len() - start;
                    let body = got.min(usize::try_from(left).unwrap_or(usize::MAX));
                    if got > body {
                        // The next head came with the body's end: hold it.
                        this.held.extend_from_slice(&buf.filled()[start + body..]);
                        buf.set_filled(start + body);
                    }
                    this.mode = match left - body as u64 {
                        0 => Mode::Head,
                        more => Mode::Length(more),
                    };
                    return Poll::Ready(Ok(()));
                }
                Mode::Head | Mode::Chunked(_) => {}
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // The client is done; a head it never finished goes
                    // nowhere.
                    this.done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.held.extend_from_slice(rb.filled());
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            // Waiting for more of a head: bounded like hyper bounds it.
            if this.mode == Mode::Head && !this.held.is_empty() {
                let wait = this.shared.config.header_timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
                if deadline.as_mut().poll(cx).is_ready() {
                    let why = format!(
                        "the request head did not arrive within {}s (--header-timeout)",
                        wait.as_secs()
                    );
                    this.refuse((StatusCode::REQUEST_TIMEOUT, why), Facts::default());
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_refusal(cx));
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(b: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut st = CHUNK_START;
        scan_chunked(&mut st, b)
    }

    #[test]
    fn chunk_framing() {
        assert_eq!(chunked(b"5\r\nhello\r\n0\r\n\r\nGET"), Ok((15, true)));
        assert_eq!(
            chunked(b"5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\n"),
            Ok((25, true))
        );
        assert_eq!(chunked(b"5\r\nhel"), Ok((6, false)));
        assert!(chunked(b"5\nhello").is_err());
        assert!(chunked(b"zz\r\n").is_err());
        assert!(chunked(b"5\r\nhelloXX").is_err());
        assert!(chunked(b"ffffffffffffffff\r\n").is_err());
        // Split anywhere, the same answer.
        let whole = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..whole.len() {
            let mut st = CHUNK_START;
            let (a, done_a) = scan_chunked(&mut st, &whole[..cut]).unwrap();
            assert_eq!((a, done_a), (cut, false), "cut at {cut}");
            let (b, done_b) = scan_chunked(&mut st, &whole[cut..]).unwrap();
            assert_eq!((a + b, done_b), (whole.len(), true), "cut at {cut}");
        }
    }

    #[test]
    fn heads() {
        let ok = |b: &[u8]| check(b, 100, 65536).unwrap().ok();
        assert_eq!(ok(b"GET / HTTP/1.1\r\n\r\n"), Some((18, Mode::Head)));
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            Some((38, Mode::Length(5)))
        );
        assert_eq!(
            ok(b"CONNECT a:443 HTTP/1.1\r\n\r\n").map(|x| x.1),
            Some(Mode::Tunnel)
        );
        assert!(check(b"GET / HTTP/1.1\r\nHost: a", 100, 65536).is_none());
        let refused = |b: &[u8]| check(b, 100, 65536).unwrap().err().unwrap().0.0;
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(101));
        assert_eq!(
            refused(many.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
