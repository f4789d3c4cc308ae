//! What a body is: the kind its `Content-Type` declares or its first bytes
//! show (JSON, form, multipart), its Unicode encoding (a BOM, a `charset`,
//! or RFC 4627's NUL pattern), and the parts of a multipart body.

use crate::BodyKind;
use crate::decode::Wide;

/// How a body (or a multipart part) is decoded for scanning and redaction,
/// as its `Content-Type` and its first bytes say. Made by
/// [`BodyType::of`]; used by [`crate::Detector::scan_typed_body`] and
/// [`crate::redact_typed_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyType<'a> {
    pub(crate) kind: BodyKind,
    /// For a `multipart/*` body, its boundary (empty when the type names
    /// none, or names two).
    pub(crate) multipart: Option<&'a [u8]>,
    /// UTF-16 or UTF-32 text, transcoded before it is decoded further.
    pub(crate) wide: Option<Wide>,
    /// Bytes of a byte order mark to skip.
    pub(crate) bom: usize,
    /// The headers name two different types: which one a server reads is
    /// anyone's guess, so the scan reports the body unreadable.
    pub(crate) conflict: bool,
    /// A `charset` veto does not read (UTF-7, EBCDIC...): an `@` need not
    /// be the byte `@` there, so the scan reports the body unreadable.
    pub(crate) foreign: bool,
}

impl<'a> BodyType<'a> {
    /// From the request's first `Content-Type` header and the body's first
    /// bytes (see [`BodyKind::of`] for the sniffing).
    /// Two `Content-Type` headers that differ make the type ambiguous (the
    /// first is used, and the scan reports the body unreadable).
    pub fn of(headers: &[(&'a [u8], &'a [u8])], body: &[u8]) -> BodyType<'a> {
        let mut types = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
            .map(|(_, v)| *v);
        let ct = types.next();
        let conflict = ct.is_some_and(|first| types.any(|v| v.trim_ascii() != first.trim_ascii()));
        BodyType {
            conflict,
            ..BodyType::from_content_type(ct, body)
        }
    }

    /// From a `Content-Type` value (or none) and the body's first bytes.
    pub fn from_content_type(ct: Option<&'a [u8]>, body: &[u8]) -> BodyType<'a> {
        let media = ct.map_or(&b""[..], media_type);
        if media.len() > 10 && media[..10].eq_ignore_ascii_case(b"multipart/") {
            let boundary = match ct.map(|v| param(v, b"boundary")) {
                Some(Param::One(b)) => b,
                _ => b"",
            };
            return BodyType {
                kind: BodyKind::Other,
                multipart: Some(boundary),
                wide: None,
                bom: 0,
                conflict: false,
                foreign: false,
            };
        }
        let declared = ct.map_or(BodyKind::Other, BodyKind::from_content_type);
        let (charset, foreign) = match ct.map(|v| param(v, b"charset")) {
            Some(Param::One(c)) => (Some(c), !charset_read(c)),
            None | Some(Param::None) => (None, false),
            // Two charsets: either could be the one a server uses.
            Some(_) => (None, true),
        };
        BodyType {
            foreign,
            ..BodyType::sniff(declared, charset, body)
        }
    }

    /// For a body whose kind is known but whose headers are not: only its
    /// first bytes (a byte order mark, RFC 4627's NUL pattern) add to it.
    pub fn from_kind(kind: BodyKind, body: &[u8]) -> BodyType<'static> {
        BodyType::sniff(kind, None, body)
    }

    fn sniff<'b>(declared: BodyKind, charset: Option<&[u8]>, body: &[u8]) -> BodyType<'b> {
        let (wide, bom) = unicode(declared, charset, body);
        let kind = if declared == BodyKind::Other
            && matches!(first_char(body, bom, wide), Some(b'{' | b'['))
        {
            BodyKind::Json
        } else {
            declared
        };
        BodyType {
            kind,
            multipart: None,
            wide,
            bom,
            conflict: false,
            foreign: false,
        }
    }

    /// JSON, form or other (a multipart body is `Other`: its parts have
    /// kinds of their own).
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    pub fn is_multipart(&self) -> bool {
        self.multipart.is_some()
    }

    /// True for UTF-16 and UTF-32 text (which redaction cannot rewrite).
    pub fn is_wide(&self) -> bool {
        self.wide.is_some()
    }
}

/// The media type of a `Content-Type` value, trimmed.
fn media_type(value: &[u8]) -> &[u8] {
    value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Param<'a> {
    None,
    One(&'a [u8]),
    /// Named twice with different values: which one a server takes is
    /// anyone's guess.
    Ambiguous,
}

/// A parameter of a header value such as `Content-Type` (the name ASCII
/// case-insensitive, a quoted value without its quotes).
pub(crate) fn param<'a>(value: &'a [u8], name: &[u8]) -> Param<'a> {
    let mut found = Param::None;
    let mut rest = match memchr::memchr(b';', value) {
        Some(i) => &value[i + 1..],
        None => return found,
    };
    loop {
        rest = rest.trim_ascii_start();
        let Some(k) = rest.iter().position(|&b| b == b'=' || b == b';') else {
            return found;
        };
        if rest[k] == b';' {
            rest = &rest[k + 1..];
            continue;
        }
        let key = rest[..k].trim_ascii();
        let after = rest[k + 1..].trim_ascii_start();
        let (v, next) = if after.first() == Some(&b'"') {
            match memchr::memchr(b'"', &after[1..]) {
                Some(c) => (&after[1..=c], &after[c + 2..]),
                None => (&after[1..], &[][..]),
            }
        } else {
            let end = memchr::memchr(b';', after).unwrap_or(after.len());
            (after[..end].trim_ascii(), &after[end..])
        };
        if key.eq_ignore_ascii_case(name) {
            found = match found {
                Param::None => Param::One(v),
                Param::One(old) if old == v => Param::One(v),
                _ => Param::Ambiguous,
            };
        }
        match memchr::memchr(b';', next) {
            Some(i) => rest = &next[i + 1..],
            None => return found,
        }
    }
}

/// Whether veto reads text in `charset`: UTF-8 and the charsets where
/// every ASCII byte stands for itself (so an address or a number written
/// in ASCII is the same bytes), and UTF-16/32, which it transcodes.
fn charset_read(charset: &[u8]) -> bool {
    let c = String::from_utf8_lossy(charset.trim_ascii()).to_ascii_lowercase();
    let c = c.trim_matches('"');
    matches!(
        c,
        "utf-8"
            | "utf8"
            | "us-ascii"
            | "ascii"
            | "latin1"
            | "latin-1"
            | "l1"
            | "utf-16"
            | "utf-16le"
            | "utf-16be"
            | "utf-32"
            | "utf-32le"
            | "utf-32be"
            | "ucs-2"
            | "shift_jis"
            | "sjis"
            | "euc-jp"
            | "euc-kr"
            | "gb2312"
            | "gbk"
            | "gb18030"
            | "big5"
            | "koi8-r"
            | "koi8-u"
            | "tis-620"
            | "macintosh"
    ) || ["iso-8859-", "iso8859-", "windows-125", "cp125"]
        .iter()
        .any(|p| {
            c.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The body's Unicode encoding and the length of its byte order mark.
fn unicode(declared: BodyKind, charset: Option<&[u8]>, b: &[u8]) -> (Option<Wide>, usize) {
    match b {
        [0xEF, 0xBB, 0xBF, ..] => return (None, 3),
        [0xFF, 0xFE, 0, 0, ..] => return (Some(Wide::Utf32Le), 4),
        [0, 0, 0xFE, 0xFF, ..] => return (Some(Wide::Utf32Be), 4),
        [0xFF, 0xFE, ..] => return (Some(Wide::Utf16Le), 2),
        [0xFE, 0xFF, ..] => return (Some(Wide::Utf16Be), 2),
        _ => {}
    }
    let named = |n: &[u8]| charset.is_some_and(|c| c.eq_ignore_ascii_case(n));
    if named(b"utf-16le") {
        return (Some(Wide::Utf16Le), 0);
    }
    if named(b"utf-16be") {
        return (Some(Wide::Utf16Be), 0);
    }
    if named(b"utf-32le") {
        return (Some(Wide::Utf32Le), 0);
    }
    if named(b"utf-32be") {
        return (Some(Wide::Utf32Be), 0);
    }
    // RFC 4627 section 3: the first two characters of a JSON text are
    // ASCII, so the NUL bytes among the first four tell the encoding.
    let pattern = match b {
        [0, 0, 0, x, ..] if *x != 0 => Some(Wide::Utf32Be),
        [x, 0, 0, 0, ..] if *x != 0 => Some(Wide::Utf32Le),
        [0, x, 0, _, ..] if *x != 0 => Some(Wide::Utf16Be),
        [x, 0, _, 0, ..] if *x != 0 => Some(Wide::Utf16Le),
        _ => None,
    };
    let first = match b {
        [0, 0, 0, x, ..] | [0, x, ..] | [x, ..] => *x,
        [] => 0,
    };
    let wide_name = named(b"utf-16") || named(b"utf-32") || named(b"ucs-2");
    let jsonish = matches!(first, b'{' | b'[' | b'"' | b' ' | b'\t' | b'\r' | b'\n');
    let use_pattern =
        wide_name || declared == BodyKind::Json || (declared == BodyKind::Other && jsonish);
    match pattern {
        Some(w) if use_pattern => (Some(w), 0),
        // A `charset` naming a wide encoding without a BOM or a pattern:
        // big-endian, as RFC 2781 says.
        _ if named(b"utf-16") || named(b"ucs-2") => (Some(Wide::Utf16Be), 0),
        _ if named(b"utf-32") => (Some(Wide::Utf32Be), 0),
        _ => (None, 0),
    }
}

/// The first character that is not ASCII white space, when it is ASCII.
fn first_char(b: &[u8], bom: usize, wide: Option<Wide>) -> Option<u8> {
    let Some(w) = wide else {
        return b.get(bom..)?.trim_ascii_start().first().copied();
    };
    let unit = w.unit();
    let mut i = bom;
    while i + unit <= b.len() {
        let c = w.at(b, i);
        if !matches!(c, 0x20 | 0x09 | 0x0A | 0x0D) {
            return u8::try_from(c).ok().filter(u8::is_ascii);
        }
        i += unit;
    }
    None
}

/// A multipart part: its header block and its content, as ranges of the
/// body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MimePart {
    pub(crate) head: (usize, usize),
    pub(crate) body: (usize, usize),
}

/// The parts of a multipart body (RFC 2046 section 5.1.1), read leniently:
/// a delimiter line is `--boundary` after a line feed (or at the very
/// start), followed by blanks and a line break or by `--`; line breaks may
/// be bare LFs. A body without a closing delimiter ends its last part.
pub(crate) struct Parts<'a> {
    s: &'a [u8],
    /// `\n--boundary`.
    needle: Vec<u8>,
    /// Just past the last delimiter's boundary.
    at: Option<usize>,
}

impl<'a> Parts<'a> {
    pub(crate) fn new(s: &'a [u8], boundary: &[u8]) -> Parts<'a> {
        let mut needle = Vec::with_capacity(boundary.len() + 3);
        needle.extend_from_slice(b"\n--");
        needle.extend_from_slice(boundary);
        let mut p = Parts {
            s,
            needle,
            at: None,
        };
        p.at = if s.starts_with(&p.needle[1..]) && p.delimiter_ends(p.needle.len() - 1) {
            Some(p.needle.len() - 1)
        } else {
            p.next_delimiter(0).map(|(_, end)| end)
        };
        p
    }

    /// Whether the text just past a boundary at `i` ends a delimiter line.
    fn delimiter_ends(&self, i: usize) -> bool {
        let rest = &self.s[i..];
        if rest.starts_with(b"--") {
            return true;
        }
        let blanks = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        matches!(&rest[blanks..], [] | [b'\n', ..] | [b'\r', b'\n', ..])
    }

    /// The next delimiter at or after `from`: where its `\n` is, and the
    /// end of its boundary.
    fn next_delimiter(&self, from: usize) -> Option<(usize, usize)> {
        let mut from = from;
        loop {
            let k = from + memchr::memmem::find(self.s.get(from..)?, &self.needle)?;
            let end = k + self.needle.len();
            if self.delimiter_ends(end) {
                return Some((k, end));
            }
            from = k + 1;
        }
    }
}

impl Iterator for Parts<'_> {
    type Item = MimePart;
    fn next(&mut self) -> Option<MimePart> {
        let at = self.at.take()?;
        let s = self.s;
        if s[at..].starts_with(b"--") {
            return None;
        }
        let hs = at + memchr::memchr(b'\n', &s[at..])? + 1;
        // The header block ends at an empty line.
        let mut p = hs;
        let (he, cs) = loop {
            match &s[p..] {
                [b'\r', b'\n', ..] => break (p, p + 2),
                [b'\n', ..] => break (p, p + 1),
                rest => match memchr::memchr(b'\n', rest) {
                    Some(k) => p += k + 1,
                    None => break (s.len(), s.len()),
                },
            }
        };
        // From the blank line's own `\n`, so an empty content is seen.
        let ce = match self.next_delimiter(cs.saturating_sub(1).max(hs)) {
            Some((nl, end)) => {
                self.at = Some(end);
                let ce = if nl > cs && s[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                ce.max(cs)
            }
            None => s.len(),
        };
        Some(MimePart {
            head: (hs, he),
            body: (cs, ce),
        })
    }
}

/// The values of the fields `name` in a part's header block.
fn fields<'a>(head: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').filter_map(move |line| {
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The value of the first field `name` in a part's header block.
pub(crate) fn field<'a>(head: &'a [u8], name: &'a [u8]) -> Option<&'a [u8]> {
    fields(head, name).next()
}

/// Whether a part names `Content-Type` or `Content-Transfer-Encoding`
/// twice, differently: which one a server reads is anyone's guess.
pub(crate) fn conflicting(head: &[u8]) -> bool {
    [&b"content-type"[..], b"content-transfer-encoding"]
        .into_iter()
        .any(|name| {
            let mut all = fields(head, name);
            all.next()
                .is_some_and(|first| all.any(|v| !v.eq_ignore_ascii_case(first)))
        })
}

/// A part's `Content-Transfer-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// None, `7bit`, `8bit` or `binary`: the content is as sent.
    Identity,
    Base64,
    QuotedPrintable,
    /// Anything else: veto cannot read it.
    Unknown,
}

impl Transfer {
    pub(crate) fn of(head: &[u8]) -> Transfer {
        let Some(v) = field(head, b"content-transfer-encoding") else {
            return Transfer::Identity;
        };
        let is = |n: &[u8]| v.eq_ignore_ascii_case(n);
        if v.is_empty() || is(b"7bit") || is(b"8bit") || is(b"binary") {
            Transfer::Identity
        } else if is(b"base64") {
            Transfer::Base64
        } else if is(b"quoted-printable") {
            Transfer::QuotedPrintable
        } else {
            Transfer::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let v = b"multipart/form-data; charset=utf-8; boundary=\"a b;c\"; x";
        assert_eq!(param(v, b"BOUNDARY"), Param::One(b"a b;c"));
        assert_eq!(param(v, b"charset"), Param::One(b"utf-8"));
        assert_eq!(param(b"text/plain", b"charset"), Param::None);
        assert_eq!(
            param(b"a/b; ; x; charset = x", b"charset"),
            Param::One(b"x")
        );
        assert_eq!(
            param(b"a/b; boundary=x; boundary=y", b"boundary"),
            Param::Ambiguous
        );
    }

    #[test]
    fn two_types_conflict() {
        let h: &[(&[u8], &[u8])] = &[
            (b"Content-Type", b"text/plain"),
            (b"content-type", b"multipart/form-data; boundary=b"),
        ];
        let ty = BodyType::of(h, b"");
        assert!(ty.conflict && ty.kind == BodyKind::Other && ty.multipart.is_none());
        let h: &[(&[u8], &[u8])] = &[(b"Content-Type", b"a/b"), (b"content-type", b" a/b")];
        assert!(!BodyType::of(h, b"").conflict);
    }

    #[test]
    fn unicode_detection() {
        let t = |ct: &'static [u8], body: &[u8]| {
            let ty = BodyType::from_content_type(Some(ct), body);
            (ty.kind, ty.wide, ty.bom)
        };
        let json = b"application/json".as_slice();
        assert_eq!(
            t(json, b"{\0\"\0"),
            (BodyKind::Json, Some(Wide::Utf16Le), 0)
        );
        assert_eq!(
            t(json, b"\0{\0\""),
            (BodyKind::Json, Some(Wide::Utf16Be), 0)
        );
        assert_eq!(
            t(json, b"{\0\0\0"),
            (BodyKind::Json, Some(Wide::Utf32Le), 0)
        );
        assert_eq!(
            t(json, b"\0\0\0{"),
            (BodyKind::Json, Some(Wide::Utf32Be), 0)
        );
        assert_eq!(
            t(json, b"\xff\xfe{\0"),
            (BodyKind::Json, Some(Wide::Utf16Le), 2)
        );
        assert_eq!(t(json, b"{\"a\":1}"), (BodyKind::Json, None, 0));
        // Sniffed as JSON through a BOM, in any encoding.
        let plain = b"text/plain".as_slice();
        assert_eq!(t(plain, b"\xef\xbb\xbf {}"), (BodyKind::Json, None, 3));
        assert_eq!(
            t(plain, b"\xfe\xff\0 \0["),
            (BodyKind::Json, Some(Wide::Utf16Be), 2)
        );
        assert_eq!(
            t(plain, b"[\0\"\0"),
            (BodyKind::Json, Some(Wide::Utf16Le), 0)
        );
        // Binary that happens to have NULs is not taken for wide text.
        assert_eq!(t(plain, b"\x01\0\0\0"), (BodyKind::Other, None, 0));
        let ct = b"text/plain; charset=UTF-16".as_slice();
        assert_eq!(t(ct, b"a\0=\0"), (BodyKind::Other, Some(Wide::Utf16Le), 0));
        assert_eq!(t(ct, b"xy"), (BodyKind::Other, Some(Wide::Utf16Be), 0));
        let form = b"application/x-www-form-urlencoded".as_slice();
        assert_eq!(t(form, b"a\0=\0"), (BodyKind::Form, None, 0));
    }

    #[test]
    fn multipart_parts() {
        let body = b"preamble\r\n--xy\r\nA: 1\r\n\r\none\r\n--xy  \r\n\r\n\r\n--xy\nB: 2\n\ntwo\n--xyz\n--xy--\r\nepilogue";
        let parts: Vec<(&[u8], &[u8])> = Parts::new(body, b"xy")
            .map(|p| (&body[p.head.0..p.head.1], &body[p.body.0..p.body.1]))
            .collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"A: 1\r\n", b"one"),
            (b"", b""),
            (b"B: 2\n", b"two\n--xyz"),
        ];
        assert_eq!(parts, want);
        // At the very start, and unterminated.
        let body = b"--b\r\nX: y\r\n\r\ndata";
        let p: Vec<MimePart> = Parts::new(body, b"b").collect();
        assert_eq!(p.len(), 1);
        assert_eq!(&body[p[0].body.0..p[0].body.1], b"data");
        assert_eq!(Parts::new(b"no delimiter", b"b").count(), 0);
    }

    #[test]
    fn transfer_encodings() {
        assert_eq!(Transfer::of(b"X: 1\r\n"), Transfer::Identity);
        assert_eq!(
            Transfer::of(b"content-transfer-encoding:  BASE64 \r\n"),
            Transfer::Base64
        );
        assert_eq!(
            Transfer::of(b"Content-Transfer-Encoding: quoted-printable\n"),
            Transfer::QuotedPrintable
        );
        assert_eq!(
            Transfer::of(b"Content-Transfer-Encoding: x-uuencode\n"),
            Transfer::Unknown
        );
        assert_eq!(
            field(b"Content-Type: text/plain\r\nX: 1\r\n", b"content-type"),
            Some(&b"text/plain"[..])
        );
        assert!(!conflicting(b"Content-Type: a/b\r\ncontent-type: A/B\r\n"));
        assert!(conflicting(
            b"Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n"
        ));
    }
}
