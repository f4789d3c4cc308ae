//! Scanning what a request sends, as policy-v1 "Data classes" lists it: the
//! URL (path and query, percent-decoded), header values, and the body as sent
//! and, for JSON and form bodies, decoded "so an escape sequence hides
//! nothing". (gzip/deflate decoding is the caller's job, before this.)

use crate::decode::{PosMap, StrLits, form_components, json_unescape, percent_decode};
use crate::findings::sort_dedup_tail;
use crate::{Detector, Findings, Part};

/// The parts of an HTTP request that are scanned.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    /// The request target as sent: origin form (`/path?query`) or an
    /// absolute URI, whose scheme and authority are skipped (a host name is
    /// a destination, not data).
    pub url: &'a [u8],
    /// `(name, value)` pairs; values are scanned, and findings name the
    /// index here ([`Part::Header`]). `Content-Type` selects body decoding.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The body, already stripped of any content coding.
    pub body: &'a [u8],
}

/// How a body is decoded for scanning and redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` and `*/*+json`: string values are unescaped.
    Json,
    /// `application/x-www-form-urlencoded`: keys and values are decoded.
    Form,
    /// Scanned as sent only.
    Other,
}

impl BodyKind {
    /// From a `Content-Type` value (parameters and case ignored).
    pub fn from_content_type(value: &[u8]) -> BodyKind {
        let media = value.split(|&b| b == b';').next().unwrap_or_default();
        let media = media.trim_ascii();
        if media.eq_ignore_ascii_case(b"application/json")
            || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
        {
            BodyKind::Json
        } else if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            BodyKind::Form
        } else {
            BodyKind::Other
        }
    }

    /// From the request's first `Content-Type` header. A body without a JSON
    /// or form type whose first non-blank byte is `{` or `[` is treated as
    /// JSON too: leaving out the header must not be a way to hide data
    /// behind `\u` escapes, and decoding what is not JSON finds nothing new.
    pub fn of(headers: &[(&[u8], &[u8])], body: &[u8]) -> BodyKind {
        let declared = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
            .map_or(BodyKind::Other, |(_, v)| BodyKind::from_content_type(v));
        if declared == BodyKind::Other
            && matches!(body.trim_ascii_start().first(), Some(b'{' | b'['))
        {
            BodyKind::Json
        } else {
            declared
        }
    }
}

/// Where the path starts in a request target.
pub(crate) fn path_start(url: &[u8]) -> usize {
    if url.first() == Some(&b'/') {
        return 0;
    }
    if let Some(p) = memchr::memmem::find(url, b"://") {
        let scheme = &url[..p];
        if !scheme.is_empty()
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            let auth = p + 3;
            return url[auth..]
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .map_or(url.len(), |i| auth + i);
        }
    }
    0
}

impl Detector {
    /// Scans every part of a request (see [`RequestParts`]) and appends the
    /// findings: URL first, then headers in order, then the body; each part
    /// sorted by position. Ranges are always in the raw bytes of the part.
    pub fn scan_request(&self, parts: RequestParts<'_>, out: &mut Findings) {
        self.scan_url(parts.url, out);
        for (i, (_, value)) in parts.headers.iter().enumerate() {
            self.scan_part(value, Part::Header(i), out);
        }
        self.scan_body(parts.body, BodyKind::of(parts.headers, parts.body), out);
    }

    /// Scans a request target's path and query, percent-decoded; in the
    /// query `+` is also read as a space (form encoding), so `4111+1111+…`
    /// is seen as the grouped number a server would decode.
    pub fn scan_url(&self, url: &[u8], out: &mut Findings) {
        let base = out.items.len();
        let ps = path_start(url);
        let rest = &url[ps..];
        let query = memchr::memchr(b'?', rest).map(|q| ps + q);
        let has_pct = memchr::memchr(b'%', rest).is_some();
        let has_plus = query.is_some_and(|q| memchr::memchr(b'+', &url[q..]).is_some());
        let whole = [(ps, url.len())].into_iter();
        if has_pct {
            let decode = |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| {
                percent_decode(r, a, b, usize::MAX, o, m)
            };
            self.scan_pieces(Part::Url, url, whole.clone(), decode, out);
        } else {
            self.scan_raw(rest, ps, Part::Url, out);
        }
        if let (Some(q), true) = (query, has_plus) {
            let decode =
                |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| percent_decode(r, a, b, q, o, m);
            self.scan_pieces(Part::Url, url, whole, decode, out);
        }
        sort_dedup_tail(&mut out.items, base);
    }

    /// Scans a body as sent and, for JSON and form bodies, decoded.
    pub fn scan_body(&self, body: &[u8], kind: BodyKind, out: &mut Findings) {
        let base = out.items.len();
        self.scan_raw(body, 0, Part::Body, out);
        match kind {
            // A literal without a backslash decodes to itself, and the raw
            // scan has seen it; a body without one (most JSON) is done.
            BodyKind::Json if memchr::memchr(b'\\', body).is_none() => {}
            BodyKind::Json => {
                let lits = StrLits::new(body)
                    .filter(|l| l.has_escape)
                    .map(|l| (l.start, l.end));
                self.scan_pieces(Part::Body, body, lits, json_unescape, out);
            }
            BodyKind::Form => {
                // Keys and values decode separately, so `%26` stays inside
                // its value; `+` is a space everywhere in a form.
                let fields = form_components(body)
                    .filter(|c| memchr::memchr2(b'%', b'+', &body[c.start..c.end]).is_some())
                    .map(|c| (c.start, c.end));
                let decode = |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| {
                    percent_decode(r, a, b, a, o, m)
                };
                self.scan_pieces(Part::Body, body, fields, decode, out);
            }
            BodyKind::Other => {}
        }
        sort_dedup_tail(&mut out.items, base);
    }
}

impl Detector {
    /// Decodes `pieces` (raw ranges of `raw`) into one buffer and scans it
    /// once. Pieces are joined by a NUL byte that maps back to the raw bytes
    /// between them: no built-in class contains a NUL or treats it as a letter
    /// or digit, so no built-in match joins two pieces (a custom regex can,
    /// exactly as it can across those raw bytes). One scan per part, rather
    /// than one per JSON string or form field, keeps bodies made of many
    /// small escaped values (`"https:\/\/…"`) cheap.
    fn scan_pieces(
        &self,
        part: Part,
        raw: &[u8],
        pieces: impl Iterator<Item = (usize, usize)>,
        decode: impl Fn(&[u8], usize, usize, &mut Vec<u8>, &mut PosMap),
        out: &mut Findings,
    ) {
        let s = &mut out.scratch;
        s.decoded.clear();
        s.map.clear();
        let mut last_end = None;
        for (a, b) in pieces {
            if let Some(prev) = last_end {
                s.map.escape(s.decoded.len(), prev);
                s.decoded.push(0);
            }
            decode(raw, a, b, &mut s.decoded, &mut s.map);
            last_end = Some(b);
        }
        if let Some(end) = last_end {
            s.map.finish(s.decoded.len(), end);
            self.scan_decoded(part, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_kinds() {
        assert_eq!(
            BodyKind::from_content_type(b"Application/JSON; charset=utf-8"),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(b"application/vnd.api+json"),
            BodyKind::Json
        );
        assert_eq!(BodyKind::from_content_type(b"+json"), BodyKind::Other);
        assert_eq!(
            BodyKind::from_content_type(b" application/x-www-form-urlencoded "),
            BodyKind::Form
        );
        assert_eq!(BodyKind::from_content_type(b"text/plain"), BodyKind::Other);
        let ct: &[(&[u8], &[u8])] = &[(b"Content-Type", b"text/plain")];
        assert_eq!(BodyKind::of(ct, b"  {\"a\":1}"), BodyKind::Json);
        assert_eq!(BodyKind::of(ct, b"a=1"), BodyKind::Other);
        assert_eq!(BodyKind::of(&[], b"[1]"), BodyKind::Json);
    }

    #[test]
    fn path_starts() {
        assert_eq!(path_start(b"/a?b"), 0);
        assert_eq!(path_start(b"http://h.example:80/a?b"), 19);
        assert_eq!(path_start(b"https://u:p@h?q"), 13);
        assert_eq!(path_start(b"http://h"), 8);
        assert_eq!(path_start(b"a?b://c"), 0);
    }
}
