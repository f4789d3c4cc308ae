//! What a request head says, read once and checked before anything is
//! decided: framing that two servers could read two ways, a target that
//! names two hosts, a port out of range, a method overridden by a header.
//! Each check here closes a way a request could be decided as one thing
//! and acted on as another.

use http::{HeaderMap, Request, StatusCode};

/// A request the head checks refuse: the status and why.
pub type Refused = (StatusCode, String);

/// What the record of a request says when veto answers before deciding
/// (a malformed head, bad credentials): taken from the head as sent,
/// bounded, so even a refused request leaves a readable trace.
#[derive(Clone, Debug)]
pub struct Facts {
    pub protocol: &'static str,
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
}

/// Longest host and path kept in such a record.
const MAX_FACT: usize = 1024;

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FACT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Facts {
    pub fn of<B>(req: &Request<B>, protocol: &'static str) -> Facts {
        let connect = req.method() == http::Method::CONNECT;
        let host = req
            .uri()
            .host()
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_string())
            })
            .unwrap_or_default();
        Facts {
            protocol: if connect { "tcp" } else { protocol },
            method: (!connect).then(|| req.method().as_str().to_string()),
            host: bounded(&host.to_ascii_lowercase()),
            port: req.uri().port_u16().unwrap_or(0),
            path: (!connect).then(|| bounded(req.uri().path())),
        }
    }
}

/// Framing that two servers could read two ways is refused outright
/// (RFC 9112 6.3): the proxy and the upstream must never disagree about
/// where one request ends and the next begins. A transfer coding other
/// than `chunked` is not implemented (501, RFC 9112 6.1): veto would pass
/// on a body it did not read.
pub fn framing(h: &HeaderMap) -> Result<(), Refused> {
    let bad = |why: &str| Err((StatusCode::BAD_REQUEST, why.to_string()));
    let te: Vec<_> = h.get_all(http::header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() && !cl.is_empty() {
        return bad(
            "the request has both Content-Length and Transfer-Encoding (request smuggling)",
        );
    }
    if cl.len() > 1 && cl.windows(2).any(|w| w[0] != w[1]) {
        return bad("the request has conflicting Content-Length headers (request smuggling)");
    }
    if te.is_empty() {
        return Ok(());
    }
    let codings: Vec<String> = te
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if codings.last().map(String::as_str) != Some("chunked") {
        return bad("the request's Transfer-Encoding does not end in chunked (request smuggling)");
    }
    if codings.len() > 1 {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "the request's Transfer-Encoding `{}` is not implemented: only `chunked` is (veto would pass on a body it cannot read)",
                codings.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A request names exactly one host: two `Host` headers are malformed
/// (RFC 9112 3.2), and an HTTP/2 request whose `host` names another
/// authority than its `:authority` is too (RFC 9113 8.3.1). An HTTP/1.1
/// absolute-form request's own `Host` is replaced by its target's authority
/// when forwarded (RFC 9112 3.2.2), so it may differ.
pub fn one_host<B>(req: &Request<B>) -> Result<(), Refused> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "the request has more than one Host header".into(),
        ));
    }
    if req.version() == http::Version::HTTP_2
        && let (Some(h), Some(a)) = (first, req.uri().authority())
        && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "the request's host header `{}` names another authority than its :authority `{a}`",
                String::from_utf8_lossy(h.as_bytes())
            ),
        ));
    }
    Ok(())
}

/// The target's port: the URI's, or the scheme's default. A port that is
/// not a number from 1 to 65535 is malformed, never the default.
pub fn port(authority: &http::uri::Authority, default: u16) -> Result<u16, Refused> {
    let text = authority.as_str();
    // The port follows the last `:` that is not inside an IPv6 literal.
    let given = match text.rfind(':') {
        Some(i) if !text[i..].contains(']') => Some(&text[i + 1..]),
        _ => None,
    };
    match given {
        None | Some("") => Ok(default),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err((
                StatusCode::BAD_REQUEST,
                format!("the port `{}` is not a number from 1 to 65535", bounded(p)),
            )),
        },
    }
}

/// Headers servers and frameworks read as the real method of a request.
const OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// The overriding method found so far; a second, different one is a 400.
#[derive(Default)]
struct Override(Option<String>);

impl Override {
    fn note(&mut self, m: &str) -> Result<(), Refused> {
        let m = m.trim().to_ascii_uppercase();
        match &self.0 {
            _ if m.is_empty() => Ok(()),
            Some(prev) if *prev != m => Err((
                StatusCode::BAD_REQUEST,
                format!("the request overrides its method twice, as `{prev}` and `{m}`"),
            )),
            _ => {
                self.0 = Some(m);
                Ok(())
            }
        }
    }
}

/// The method a server may act on instead of the request line's: an
/// override header, or `_method=` in the query (Rails, Laravel, Express's
/// method-override). `methods` rules see it too (the stricter decision of
/// the two wins). `Err`: overrides that disagree with each other.
pub fn method_override(headers: &HeaderMap, target: &str) -> Result<Option<String>, Refused> {
    let mut found = Override::default();
    let mut note = |m: &str| found.note(m);
    for name in OVERRIDES {
        for v in headers.get_all(name) {
            note(&String::from_utf8_lossy(v.as_bytes()))?;
        }
    }
    if let Some((_, query)) = target.split_once('?') {
        for pair in query.split('&') {
            if let Some(v) = pair
                .split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("_method"))
                .map(|(_, v)| v)
            {
                note(v)?;
            }
        }
    }
    Ok(found.0)
}

/// The method a request described by a person (`veto policy test`,
/// `explain`) overrides its own with, read exactly as the proxy reads it:
/// the override headers, `_method=` in the query and, for a POST whose
/// type a framework reads it from, in the body. `Err`: two that disagree.
pub fn described_override(
    method: &str,
    headers: &[(&str, &str)],
    target: &str,
    body: &[u8],
) -> Result<Option<String>, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    let mut found = Override(method_override(&map, target).map_err(|(_, why)| why)?);
    if method.eq_ignore_ascii_case("POST")
        && body_may_override(&map)
        && let Some(m) = body_method(body).map_err(|(_, why)| why)?
    {
        found.note(&m).map_err(|(_, why)| why)?;
    }
    Ok(found.0.filter(|m| !m.eq_ignore_ascii_case(method)))
}

/// Whether a body's type is one a framework reads `_method` from: forms
/// (Rails, Laravel, Express's method-override), multipart forms, and JSON
/// (Laravel merges it into its input).
pub fn body_may_override(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
        let v = v.as_bytes();
        let media = v
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let is = |m: &[u8]| media.eq_ignore_ascii_case(m);
        is(b"application/x-www-form-urlencoded")
            || is(b"multipart/form-data")
            || is(b"application/json")
            || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
    })
}

/// `_method` in a form, multipart or JSON body, read every way a framework
/// could read it (whatever the body's declared type: the client chose
/// that too). `Err`: it is given twice with different values.
pub fn body_method(body: &[u8]) -> Result<Option<String>, Refused> {
    let mut found = Override::default();
    let mut note = |m: &str| found.note(m);
    // Every reading a framework could make: the form pairs, any multipart
    // part named `_method`, a top-level JSON `_method`.
    for pair in body.split(|b| *b == b'&') {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => continue,
        };
        if form_decode(k).trim().eq_ignore_ascii_case("_method") {
            note(&form_decode(v))?;
        }
    }
    let quoted = |w: &[u8]| w.eq_ignore_ascii_case(b"\"_method");
    for (at, _) in body.windows(8).enumerate().filter(|(_, w)| quoted(w)) {
        let rest = &body[at + 8..];
        // multipart: `name="_method"` then the part's value after its head.
        let named = at >= 5 && body[at - 5..at].eq_ignore_ascii_case(b"name=");
        if rest.first() == Some(&b'"')
            && named
            && let Some(h) = memchr_pos(rest, b"\r\n\r\n")
        {
            let value = &rest[h + 4..];
            let end = memchr_pos(value, b"\r\n").unwrap_or(value.len());
            note(&String::from_utf8_lossy(&value[..end]))?;
        }
    }
    if body.trim_ascii_start().first() == Some(&b'{')
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(serde_json::Value::String(m)) = o.get("_method")
    {
        note(m)?;
    }
    Ok(found.0)
}

fn memchr_pos(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A form key or value: `+` is a space, `%XX` a byte.
fn form_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                match u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a tunnel's first bytes begin an HTTP/1 request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// They do not (TLS, another protocol, nothing yet).
    No,
    /// What came so far could still be the start of a request line.
    Maybe,
    /// A method, a target and `HTTP/1.`: a request.
    Yes,
}

/// Classifies a tunnel's first bytes as the start of an HTTP/1 request
/// line, so plain HTTP sent through a CONNECT can be decided request by
/// request instead of passing as opaque `tcp`. A request line trickled in
/// a byte at a time stays `Maybe` until it is whole (the caller bounds
/// that wait, as it does a ClientHello's).
pub fn http_start(b: &[u8]) -> Start {
    const MAX_METHOD: usize = 32;
    const MAX_LINE: usize = 8192;
    const VERSION: &[u8] = b"HTTP/1.";
    let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let method = b.iter().take_while(|c| tchar(**c)).count();
    if b.is_empty() || method > MAX_METHOD {
        return Start::No;
    }
    if method == b.len() {
        return Start::Maybe;
    }
    if method == 0 || b[method] != b' ' {
        return Start::No;
    }
    let rest = &b[method + 1..];
    let target = rest
        .iter()
        .take_while(|c| **c > b' ' && **c != 0x7f)
        .count();
    if target == rest.len() {
        return if b.len() < MAX_LINE {
            Start::Maybe
        } else {
            Start::No
        };
    }
    if target == 0 || rest[target] != b' ' {
        return Start::No;
    }
    let version = &rest[target + 1..];
    let n = version.len().min(VERSION.len());
    if version[..n] != VERSION[..n] {
        Start::No
    } else if n < VERSION.len() {
        Start::Maybe
    } else {
        Start::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let a = |s: &str| s.parse::<http::uri::Authority>().unwrap();
        assert_eq!(port(&a("h"), 80), Ok(80));
        assert_eq!(port(&a("h:8080"), 80), Ok(8080));
        assert_eq!(port(&a("[::1]"), 80), Ok(80));
        assert_eq!(port(&a("[::1]:81"), 80), Ok(81));
        assert!(port(&a("h:65536"), 80).is_err());
        assert!(port(&a("h:0"), 80).is_err());
        assert!(port(&a("h:99999999999"), 80).is_err());
    }

    #[test]
    fn overrides() {
        let mut h = HeaderMap::new();
        assert_eq!(method_override(&h, "/a?x=1").unwrap(), None);
        assert_eq!(
            method_override(&h, "/a?_method=delete").unwrap().as_deref(),
            Some("DELETE")
        );
        h.insert("x-http-method-override", "PUT".parse().unwrap());
        assert_eq!(method_override(&h, "/a").unwrap().as_deref(), Some("PUT"));
        assert!(method_override(&h, "/a?_method=GET").is_err());
    }

    #[test]
    fn codings() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", "gzip, chunked".parse().unwrap());
        assert_eq!(framing(&h).unwrap_err().0, StatusCode::NOT_IMPLEMENTED);
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        assert!(framing(&h).is_ok());
        h.insert("transfer-encoding", "chunked, gzip".parse().unwrap());
        assert_eq!(framing(&h).unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn http_starts() {
        use Start::*;
        for (b, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Yes),
            (b"POST http://x/ HTTP/1.0", Yes),
            (b"G", Maybe),
            (b"GET", Maybe),
            (b"GET /a", Maybe),
            (b"GET /a HT", Maybe),
            (b"GET /a HTTP/2", No),
            (b"GET  /", No),
            (b"\x16\x03\x01", No),
            (b"SSH-2.0-x\r\n", No),
            (b"hello world\n", No),
            (b"", No),
        ] {
            assert_eq!(http_start(b), want, "{:?}", String::from_utf8_lossy(b));
        }
    }
}
