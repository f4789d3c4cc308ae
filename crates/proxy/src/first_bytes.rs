//! A tunnel's first client bytes, and what they say: read until they
//! settle (a whole ClientHello, a whole HTTP request line, or anything
//! else), and whether they are an unfinished hello or request line held
//! back to pass as opaque `tcp`. Shared by CONNECT tunnels and the
//! transparent listener.

use crate::sni::{self, Hello};
use crate::state::Shared;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads the client's first bytes, up to a whole ClientHello, waiting at
/// most `wait` (None: as long as the tunnel may idle).
pub(crate) async fn first_bytes<C: AsyncRead + Unpin>(
    client: &mut C,
    wait: std::time::Duration,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => return buf,
        };
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        if settled(&buf) {
            return buf;
        }
    }
}

/// First bytes that begin a TLS handshake but are not a whole, well-formed
/// ClientHello: why the tunnel is refused. Never `tcp`: a hello split or
/// slowed down to dodge the name check must not pass as opaque bytes.
pub(crate) fn unfinished(hello: &Hello, first: &[u8], shared: &Shared) -> Option<String> {
    match hello {
        Hello::Malformed(why) => Some(format!(
            "the tunnel's first bytes begin a TLS handshake, but {why}"
        )),
        Hello::Partial if !first.is_empty() => Some(format!(
            "the tunnel's first bytes begin a TLS handshake, but no whole ClientHello came within {}s",
            shared.config.peek_timeout.as_secs()
        )),
        // A method and a space, then silence: an HTTP request held back
        // to pass as `tcp`. (A bare word alone, `x` or `PING`, waiting for
        // its answer, is some other protocol's and passes.)
        _ if crate::head::http_start(first) == crate::head::Start::Maybe
            && first.contains(&b' ') =>
        {
            Some(format!(
                "the tunnel's first bytes begin an HTTP request, but no whole request line came within {}s",
                shared.config.peek_timeout.as_secs()
            ))
        }
        _ => None,
    }
}

/// Whether a tunnel's first bytes say what it carries: a whole ClientHello,
/// a whole HTTP request line, or neither (bounded, like a hello).
pub(crate) fn settled(first: &[u8]) -> bool {
    let tls_partial = sni::parse(first) == Hello::Partial && first.len() < sni::MAX_HELLO;
    !tls_partial && crate::head::http_start(first) != crate::head::Start::Maybe
}
