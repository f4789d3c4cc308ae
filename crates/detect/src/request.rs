//! Scanning what a request sends, as policy-v1 "Data classes" lists it: the
//! URL (path and query, percent-decoded), header values, and the body as sent
//! and, for JSON and form bodies, decoded "so an escape sequence hides
//! nothing". (gzip/deflate decoding is the caller's job, before this.)

use crate::decode::{
    PosMap, StrLits, base64_decode, form_components, json_unescape, percent_decode, qp_decode,
    transcode,
};
use crate::detector::map_back;
use crate::findings::sort_dedup_tail;
use crate::mime::{Parts, Transfer, conflicting, field};
use crate::{BodyType, Detector, Finding, Findings, Opaque, Part};

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
    /// Anything else: scanned as sent and, when it holds a `%` or a `+`,
    /// form-decoded too (see [`crate::Detector::scan_typed_body`]).
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
    /// or form type whose first non-blank character is `{` or `[` is treated
    /// as JSON too (after a byte order mark, in UTF-8, UTF-16 or UTF-32):
    /// leaving out the header must not be a way to hide data behind `\u`
    /// escapes, and decoding what is not JSON finds nothing new. See
    /// [`BodyType`] for the rest of what the headers and first bytes tell.
    pub fn of(headers: &[(&[u8], &[u8])], body: &[u8]) -> BodyKind {
        BodyType::of(headers, body).kind()
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

/// How deep multipart bodies may nest inside one another; a part nested
/// deeper is not read (and says so, see [`Findings::unreadable`]).
pub(crate) const MAX_NESTING: u8 = 4;

impl Detector {
    /// Scans every part of a request (see [`RequestParts`]) and appends the
    /// findings: URL first, then headers in order, then the body; each part
    /// sorted by position. Ranges are always in the raw bytes of the part.
    pub fn scan_request(&self, parts: RequestParts<'_>, out: &mut Findings) {
        self.scan_url(parts.url, out);
        for (i, (name, value)) in parts.headers.iter().enumerate() {
            self.scan_header(name, value, Part::Header(i), out);
        }
        self.scan_typed_body(parts.body, BodyType::of(parts.headers, parts.body), out);
    }

    /// Scans a header value as sent and, when it holds a `%`, percent-
    /// decoded (`X-User: ada%40example.org`). In a `Cookie` a `+` is also
    /// read as a space, as form decoders (PHP's among them) read cookies.
    pub fn scan_header(&self, name: &[u8], value: &[u8], part: Part, out: &mut Findings) {
        let base = out.items.len();
        self.scan_raw(value, 0, part, out);
        let has_pct = memchr::memchr(b'%', value).is_some();
        let has_plus =
            name.eq_ignore_ascii_case(b"cookie") && memchr::memchr(b'+', value).is_some();
        let whole = [(0, value.len())].into_iter();
        if has_pct {
            let decode = |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| {
                percent_decode(r, a, b, usize::MAX, o, m)
            };
            self.scan_pieces(part, value, whole.clone(), decode, out);
        }
        if has_plus {
            let decode =
                |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| percent_decode(r, a, b, a, o, m);
            self.scan_pieces(part, value, whole, decode, out);
        }
        sort_dedup_tail(&mut out.items, base);
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

    /// Scans a body of a known kind as sent and decoded (see
    /// [`Detector::scan_typed_body`]); only its first bytes can add to the
    /// kind (a byte order mark, UTF-16 JSON).
    pub fn scan_body(&self, body: &[u8], kind: BodyKind, out: &mut Findings) {
        self.scan_typed_body(body, BodyType::from_kind(kind, body), out);
    }

    /// Scans a body as sent and decoded as its type says: JSON string
    /// escapes; form fields, also in a body of another type that holds a
    /// `%` or a `+` (a server may well read it as a form); UTF-16 and
    /// UTF-32 text, transcoded first; each part of a multipart body by its
    /// own headers, after undoing a base64 or quoted-printable transfer
    /// encoding. Values under an encoding redaction cannot rewrite are
    /// marked [`Finding::opaque`]; what cannot be read at all is reported
    /// by [`Findings::unreadable`].
    pub fn scan_typed_body(&self, body: &[u8], ty: BodyType<'_>, out: &mut Findings) {
        let base = out.items.len();
        if ty.conflict {
            out.unreadable
                .get_or_insert("the request names two different Content-Types");
        }
        self.scan_layer(body, ty, false, 0, out);
        sort_dedup_tail(&mut out.items, base);
    }

    /// Appends the findings of `bytes` (in its coordinates, unsorted).
    /// `raw_seen`: the caller has scanned these bytes as they are already.
    fn scan_layer(
        &self,
        bytes: &[u8],
        ty: BodyType<'_>,
        raw_seen: bool,
        depth: u8,
        out: &mut Findings,
    ) {
        let base = out.items.len();
        if ty.foreign {
            out.unreadable.get_or_insert(
                "a charset veto does not read (it reads UTF-8, charsets where ASCII is ASCII, UTF-16 and UTF-32)",
            );
        }
        if !raw_seen {
            self.scan_raw(bytes, 0, Part::Body, out);
        }
        if let Some(boundary) = ty.multipart {
            self.scan_multipart(bytes, boundary, base, depth, out);
            return;
        }
        if let Some(wide) = ty.wide {
            let (mut buf, mut map) = out.scratch.take();
            transcode(bytes, ty.bom, wide, &mut buf, &mut map);
            map.finish(buf.len(), bytes.len());
            let text = BodyType {
                wide: None,
                bom: 0,
                conflict: false,
                foreign: false,
                ..ty
            };
            let mid = out.items.len();
            self.scan_layer(&buf, text, false, depth, out);
            lift(&mut out.items, mid, &map);
            // Even a match in the raw bytes is in code units: no label can
            // be written over it.
            let why = if wide.unit() == 2 {
                Opaque::Utf16
            } else {
                Opaque::Utf32
            };
            for f in &mut out.items[base..] {
                f.opaque.get_or_insert(why);
            }
            out.scratch.give((buf, map));
            return;
        }
        match ty.kind {
            // A literal without a backslash decodes to itself, and the raw
            // scan has seen it; a body without one (most JSON) is done.
            BodyKind::Json if memchr::memchr(b'\\', bytes).is_none() => {}
            BodyKind::Json => {
                let lits = StrLits::new(bytes)
                    .filter(|l| l.has_escape)
                    .map(|l| (l.start, l.end));
                self.scan_pieces(Part::Body, bytes, lits, json_unescape, out);
            }
            // A body of another type is read as a form too when it could
            // be one with escapes: a server that parses it as a form
            // anyway (many do, whatever the type) must not be sent what a
            // `%40` hid.
            BodyKind::Other if memchr::memchr2(b'%', b'+', bytes).is_none() => {}
            BodyKind::Form | BodyKind::Other => {
                // Keys and values decode separately, so `%26` stays inside
                // its value; `+` is a space everywhere in a form.
                let fields = form_components(bytes)
                    .filter(|c| memchr::memchr2(b'%', b'+', &bytes[c.start..c.end]).is_some())
                    .map(|c| (c.start, c.end));
                let decode = |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| {
                    percent_decode(r, a, b, a, o, m)
                };
                self.scan_pieces(Part::Body, bytes, fields, decode, out);
            }
        }
    }

    /// Scans each part of a multipart body (whose raw findings are
    /// `out.items[raw..]`): its header block percent-decoded (RFC 2231
    /// `filename*=UTF-8''…`), its content as its own headers say.
    fn scan_multipart(
        &self,
        bytes: &[u8],
        boundary: &[u8],
        raw: usize,
        depth: u8,
        out: &mut Findings,
    ) {
        if boundary.is_empty() {
            out.unreadable
                .get_or_insert("the multipart body names no boundary, or two");
            return;
        }
        if depth >= MAX_NESTING {
            out.unreadable
                .get_or_insert("the multipart body nests parts more deeply than veto reads");
            return;
        }
        // The raw findings, in order, are walked along with the parts to
        // mark those inside an opaque part or across a part's edge.
        let raw_end = out.items.len();
        out.items[raw..raw_end].sort_unstable_by_key(|f| f.start);
        let mut next_raw = raw;
        for part in Parts::new(bytes, boundary) {
            let (hs, he) = part.head;
            let (cs, ce) = part.body;
            let head = &bytes[hs..he];
            if memchr::memchr(b'%', head).is_some() {
                let decode = |r: &[u8], a, b, o: &mut Vec<u8>, m: &mut PosMap| {
                    percent_decode(r, a, b, usize::MAX, o, m)
                };
                self.scan_pieces(Part::Body, bytes, [(hs, he)].into_iter(), decode, out);
            }
            if conflicting(head) {
                out.unreadable.get_or_insert(
                    "a multipart part names two different Content-Types or transfer encodings",
                );
            }
            let ct = field(head, b"content-type");
            let mid = out.items.len();
            let opaque = match Transfer::of(head) {
                Transfer::Identity => {
                    let content = &bytes[cs..ce];
                    let ty = BodyType::from_content_type(ct, content);
                    // A nested multipart body marks its own raw findings
                    // (those inside its base64 parts), so it scans them.
                    let nested = ty.multipart.is_some();
                    self.scan_layer(content, ty, !nested, depth + 1, out);
                    for f in &mut out.items[mid..] {
                        f.start += cs;
                        f.end += cs;
                    }
                    ty.wide.map(|w| {
                        if w.unit() == 2 {
                            Opaque::Utf16
                        } else {
                            Opaque::Utf32
                        }
                    })
                }
                t @ (Transfer::Base64 | Transfer::QuotedPrintable) => {
                    let (mut buf, mut map) = out.scratch.take();
                    if t == Transfer::Base64 {
                        base64_decode(bytes, cs, ce, &mut buf, &mut map);
                    } else {
                        qp_decode(bytes, cs, ce, &mut buf, &mut map);
                    }
                    map.finish(buf.len(), ce);
                    let ty = BodyType::from_content_type(ct, &buf);
                    self.scan_layer(&buf, ty, false, depth + 1, out);
                    lift(&mut out.items, mid, &map);
                    out.scratch.give((buf, map));
                    let plain = ty.kind == BodyKind::Other && ty.multipart.is_none();
                    match t {
                        Transfer::Base64 => Some(Opaque::Base64),
                        _ if ty.wide.is_some() || !plain => Some(Opaque::QuotedPrintable),
                        // Plain text in quoted-printable: a label written
                        // over whole `=XX` escapes is itself valid there.
                        _ => None,
                    }
                }
                Transfer::Unknown => {
                    out.unreadable.get_or_insert(
                        "a multipart part has a Content-Transfer-Encoding veto does not decode",
                    );
                    None
                }
            };
            if let Some(why) = opaque {
                for f in &mut out.items[mid..] {
                    f.opaque.get_or_insert(why);
                }
            }
            while next_raw < raw_end && out.items[next_raw].start < ce {
                let f = &mut out.items[next_raw];
                if f.start < cs {
                    if f.end > cs {
                        f.opaque.get_or_insert(Opaque::AcrossParts);
                    }
                } else if f.end > ce {
                    f.opaque.get_or_insert(Opaque::AcrossParts);
                } else if let Some(why) = opaque {
                    f.opaque.get_or_insert(why);
                }
                next_raw += 1;
            }
        }
    }
}

/// Maps findings `items[from..]` of a decoded layer back to the raw bytes
/// that layer came from.
fn lift(items: &mut Vec<Finding>, from: usize, map: &PosMap) {
    map_back(items, from, map);
    for f in &mut items[from..] {
        f.decoded = true;
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
