//! Decoders for the encodings an escape sequence could hide data behind
//! (percent, form and JSON string escapes), each recording where every
//! decoded byte came from so findings can be reported in raw coordinates.

/// Maps positions in a decoded buffer back to the raw bytes.
///
/// Memory is proportional to the number of escape sequences (and, for wide
/// or base64 text, of runs), not bytes: runs copied verbatim are one
/// segment each.
#[derive(Debug, Default, Clone)]
pub(crate) struct PosMap {
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Decoded offset where the segment starts.
    dec: usize,
    /// Raw offset where the segment starts.
    raw: usize,
    /// Every `du` decoded bytes came from `ru` raw bytes: 1:1 for bytes
    /// copied verbatim, 1:2 for ASCII in UTF-16, 3:4 for base64. `du == 0`
    /// is an escape: every decoded byte maps to the whole escape (up to the
    /// next segment's `raw`).
    du: u8,
    ru: u8,
}

impl PosMap {
    pub(crate) fn clear(&mut self) {
        self.segs.clear();
    }

    /// Records that raw bytes starting at `raw` were copied to `dec` onwards.
    fn copy(&mut self, dec: usize, raw: usize) {
        self.group(dec, raw, 1, 1);
    }

    /// Records that from `dec` on, every `du` decoded bytes come from the
    /// next `ru` raw bytes, starting at `raw`.
    fn group(&mut self, dec: usize, raw: usize, du: u8, ru: u8) {
        let continues = self.segs.last().is_some_and(|last| {
            let n = dec - last.dec;
            last.du == du
                && last.ru == ru
                && n % usize::from(du) == 0
                && last.raw + n / usize::from(du) * usize::from(ru) == raw
        });
        if continues {
            return;
        }
        self.segs.push(Seg { dec, raw, du, ru });
    }

    /// Records that the escape starting at `raw` produced bytes from `dec`.
    /// Also used for a separator byte standing for the raw bytes between two
    /// decoded pieces.
    pub(crate) fn escape(&mut self, dec: usize, raw: usize) {
        self.segs.push(Seg {
            dec,
            raw,
            du: 0,
            ru: 0,
        });
    }

    /// Closes the map: the decoded buffer ends at `dec`, the raw input at `raw`.
    pub(crate) fn finish(&mut self, dec: usize, raw: usize) {
        self.escape(dec, raw);
    }

    fn seg_of(&self, d: usize) -> usize {
        // The last segment is the sentinel, so a valid `d` is always below it.
        self.segs.partition_point(|s| s.dec <= d).saturating_sub(1)
    }

    /// The raw range that produced decoded bytes `ds..de`, widened to whole
    /// escape sequences (and whole code units or base64 quads). Returns
    /// `None` for an empty or out-of-range span.
    pub(crate) fn to_raw(&self, ds: usize, de: usize) -> Option<(usize, usize)> {
        let end = self.segs.last()?;
        if ds >= de || de > end.dec {
            return None;
        }
        let i = self.seg_of(ds);
        let s = self.segs.get(i)?;
        let s_next = self.segs.get(i + 1).map_or(end.raw, |n| n.raw);
        let rs = if s.du == 0 {
            s.raw
        } else {
            let at = s.raw + (ds - s.dec) / usize::from(s.du) * usize::from(s.ru);
            // A base64 quad split across lines maps approximately; never
            // past the segment.
            at.min(s_next.saturating_sub(1)).max(s.raw)
        };
        let j = self.seg_of(de - 1);
        let e = self.segs.get(j)?;
        let e_next = self.segs.get(j + 1).map_or(end.raw, |n| n.raw);
        let re = if e.du == 0 {
            e_next
        } else {
            let units = (de - 1 - e.dec) / usize::from(e.du) + 1;
            (e.raw + units * usize::from(e.ru)).min(e_next)
        };
        Some((rs, re.max(rs + 1).min(end.raw.max(rs + 1))))
    }
}

pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `raw[start..end]`, appending to `out` and `map` (the
/// caller clears them and calls [`PosMap::finish`]). `+` becomes
/// a space at positions `>= plus_from` (form encoding; pass `usize::MAX` for
/// never). An invalid `%` escape is kept as it is, as servers do.
pub(crate) fn percent_decode(
    raw: &[u8],
    start: usize,
    end: usize,
    plus_from: usize,
    out: &mut Vec<u8>,
    map: &mut PosMap,
) {
    let mut i = start;
    while i < end {
        let b = raw[i];
        if b == b'%' && i + 2 < end {
            if let (Some(hi), Some(lo)) = (hex_val(raw[i + 1]), hex_val(raw[i + 2])) {
                map.escape(out.len(), i);
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        } else if b == b'+' && i >= plus_from {
            map.escape(out.len(), i);
            out.push(b' ');
            i += 1;
            continue;
        }
        map.copy(out.len(), i);
        out.push(b);
        i += 1;
    }
}

/// Decodes the content of a JSON string literal, `raw[start..end]` (between
/// the quotes), appending to `out` and `map` like [`percent_decode`]. Invalid escapes are kept as
/// written; a lone surrogate becomes U+FFFD, as lenient parsers do.
pub(crate) fn json_unescape(
    raw: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
    map: &mut PosMap,
) {
    let mut i = start;
    while i < end {
        let Some(at) = copy_run(raw, i, end, b'\\', out, map) else {
            break;
        };
        i = at;
        // raw[i] is a backslash.
        let simple = match raw.get(i + 1).filter(|_| i + 1 < end) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            map.escape(out.len(), i);
            out.push(c);
            i += 2;
            continue;
        }
        if let Some(u) = hex4(raw, i + 2, end).filter(|_| raw.get(i + 1) == Some(&b'u')) {
            let mut consumed = 6;
            let mut cp = u32::from(u);
            if (0xD800..0xDC00).contains(&cp) {
                let low = hex4(raw, i + 8, end)
                    .filter(|_| raw.get(i + 6) == Some(&b'\\') && raw.get(i + 7) == Some(&b'u'));
                if let Some(lo) = low.filter(|lo| (0xDC00..0xE000).contains(lo)) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                    consumed = 12;
                }
            }
            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
            let mut buf = [0u8; 4];
            map.escape(out.len(), i);
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            i += consumed;
            continue;
        }
        // Not a valid escape: keep the backslash as a literal byte.
        map.copy(out.len(), i);
        out.push(b'\\');
        i += 1;
    }
}

fn hex4(raw: &[u8], at: usize, end: usize) -> Option<u16> {
    if at + 4 > end {
        return None;
    }
    let mut v: u16 = 0;
    for &b in raw.get(at..at + 4)? {
        v = v << 4 | u16::from(hex_val(b)?);
    }
    Some(v)
}

/// A wide Unicode encoding (RFC 8259 section 8.1 asks for UTF-8, but
/// RFC 4627 parsers and many servers accept these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wide {
    Utf16Le,
    Utf16Be,
    Utf32Le,
    Utf32Be,
}

impl Wide {
    pub(crate) fn unit(self) -> usize {
        match self {
            Wide::Utf16Le | Wide::Utf16Be => 2,
            Wide::Utf32Le | Wide::Utf32Be => 4,
        }
    }

    /// The code unit at `i` (the caller checks `i + unit <= len`).
    #[inline]
    pub(crate) fn at(self, raw: &[u8], i: usize) -> u32 {
        match self {
            Wide::Utf16Le => u32::from(u16::from_le_bytes([raw[i], raw[i + 1]])),
            Wide::Utf16Be => u32::from(u16::from_be_bytes([raw[i], raw[i + 1]])),
            Wide::Utf32Le => u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]),
            Wide::Utf32Be => u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]),
        }
    }
}

/// Transcodes UTF-16 or UTF-32 text, `raw[start..]`, to UTF-8, appending
/// to `out` and `map`. A lone surrogate or a value past U+10FFFF becomes
/// U+FFFD; a trailing partial code unit is dropped. ASCII runs map as one
/// segment each.
pub(crate) fn transcode(raw: &[u8], start: usize, wide: Wide, out: &mut Vec<u8>, map: &mut PosMap) {
    let unit = wide.unit();
    let mut i = start;
    while i + unit <= raw.len() {
        let mut cp = wide.at(raw, i);
        let mut len = unit;
        if cp < 0x80 {
            map.group(out.len(), i, 1, unit as u8);
            out.push(cp as u8);
            i += unit;
            continue;
        }
        if unit == 2 && (0xD800..0xDC00).contains(&cp) && i + 4 <= raw.len() {
            let lo = wide.at(raw, i + 2);
            if (0xDC00..0xE000).contains(&lo) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                len = 4;
            }
        }
        let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        map.escape(out.len(), i);
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        i += len;
    }
}

fn b64_val(b: u8) -> Option<u32> {
    match b {
        b'A'..=b'Z' => Some(u32::from(b - b'A')),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Decodes base64 (standard or URL-safe alphabet) in `raw[start..end]`,
/// appending to `out` and `map`. Like lenient MIME decoders it skips every
/// byte outside the alphabet (line breaks, padding, stray characters), so
/// nothing a server would decode is missed. Each run between skipped bytes
/// maps quad by quad (approximately where a quad spans a line break).
pub(crate) fn base64_decode(
    raw: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
    map: &mut PosMap,
) {
    let mut acc: u32 = 0;
    let mut n = 0;
    for (i, &b) in raw.iter().enumerate().take(end).skip(start) {
        let Some(v) = b64_val(b) else { continue };
        if n == 0 {
            map.group(out.len(), i, 3, 4);
        }
        acc = acc << 6 | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
}

/// Copies `raw[i..]` up to the next `stop` byte (or `end`) as it is, and
/// gives the stop byte's position; `None` when the run reached `end`.
fn copy_run(
    raw: &[u8],
    i: usize,
    end: usize,
    stop: u8,
    out: &mut Vec<u8>,
    map: &mut PosMap,
) -> Option<usize> {
    let at = memchr::memchr(stop, &raw[i..end]).map(|rel| i + rel);
    let until = at.unwrap_or(end);
    if until > i {
        map.copy(out.len(), i);
        out.extend_from_slice(&raw[i..until]);
    }
    at
}

/// Decodes quoted-printable text (RFC 2045) in `raw[start..end]`,
/// appending to `out` and `map`: `=XX` (either case) is a byte, `=` before
/// a line break (after optional blanks) is a soft line break and produces
/// nothing; any other `=` is kept, as lenient decoders do.
pub(crate) fn qp_decode(raw: &[u8], start: usize, end: usize, out: &mut Vec<u8>, map: &mut PosMap) {
    let mut i = start;
    while i < end {
        let Some(at) = copy_run(raw, i, end, b'=', out, map) else {
            break;
        };
        i = at;
        // raw[i] is `=`.
        let hex = |k: usize| raw.get(k).filter(|_| k < end).copied().and_then(hex_val);
        if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
            map.escape(out.len(), i);
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        let blanks = raw[i + 1..end]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let after = i + 1 + blanks;
        let brk = match raw.get(after..end) {
            Some([b'\r', b'\n', ..]) => Some(2),
            Some([b'\n', ..]) => Some(1),
            Some([]) => Some(0),
            _ => None,
        };
        if let Some(len) = brk {
            // A soft line break: nothing decoded; the next copy starts a new
            // segment past it.
            i = after + len;
            continue;
        }
        map.copy(out.len(), i);
        out.push(b'=');
        i += 1;
    }
}

/// A JSON string literal: `content` is the range between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrLit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) has_escape: bool,
}

/// Iterates the string literals of a JSON text lexically. It does not
/// validate the JSON: a body that claims to be JSON and is not still has its
/// quoted parts decoded, which is what "an escape hides nothing" needs. An
/// unterminated literal runs to the end of the input.
pub(crate) struct StrLits<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> StrLits<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        StrLits { s, i: 0 }
    }
}

/// The next `"` or `\\` at or after `from`. JSON strings are short, so a
/// plain loop beats memchr's per-call set-up; long ones still move eight
/// bytes per step.
#[inline]
fn next_quote_or_backslash(s: &[u8], from: usize) -> Option<usize> {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HI: u64 = 0x8080_8080_8080_8080;
    const Q: u64 = 0x0101_0101_0101_0101 * b'"' as u64;
    const B: u64 = 0x0101_0101_0101_0101 * b'\\' as u64;
    // High bit of each byte of `w` equal to the byte in `splat` (exact: no
    // carries between bytes).
    let eq = |w: u64, splat: u64| {
        let x = w ^ splat;
        !(((x & LO7) + LO7) | x) & HI
    };
    let mut i = from;
    while i + 8 <= s.len() {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or_default());
        let m = eq(w, Q) | eq(w, B);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s.get(i..)?
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|p| i + p)
}

impl Iterator for StrLits<'_> {
    type Item = StrLit;
    fn next(&mut self) -> Option<StrLit> {
        let s = self.s;
        // Outside a literal only `"` matters (a stray `\\` is skipped).
        let mut open = self.i;
        loop {
            open = next_quote_or_backslash(s, open)?;
            if s[open] == b'"' {
                break;
            }
            open += 1;
        }
        let start = open + 1;
        let mut j = start;
        let mut has_escape = false;
        loop {
            match next_quote_or_backslash(s, j) {
                None => {
                    self.i = s.len();
                    return Some(StrLit {
                        start,
                        end: s.len(),
                        has_escape,
                    });
                }
                Some(at) if s[at] == b'"' => {
                    self.i = at + 1;
                    return Some(StrLit {
                        start,
                        end: at,
                        has_escape,
                    });
                }
                Some(at) => {
                    has_escape = true;
                    j = (at + 2).min(s.len());
                }
            }
        }
    }
}

/// One key or value of a form body: `raw[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FormComponent {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Iterates keys and values of `application/x-www-form-urlencoded` text,
/// each decoded separately (so `%26` decodes into a value, not a separator).
pub(crate) fn form_components(s: &[u8]) -> impl Iterator<Item = FormComponent> + '_ {
    let mut pos = 0;
    s.split(|&b| b == b'&').flat_map(move |field| {
        let start = pos;
        pos += field.len() + 1;
        let (k, v) = match memchr::memchr(b'=', field) {
            Some(eq) => (
                FormComponent {
                    start,
                    end: start + eq,
                },
                Some(FormComponent {
                    start: start + eq + 1,
                    end: start + field.len(),
                }),
            ),
            None => (
                FormComponent {
                    start,
                    end: start + field.len(),
                },
                None,
            ),
        };
        std::iter::once(k).chain(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> (Vec<u8>, PosMap) {
        let mut out = Vec::new();
        let mut map = PosMap::default();
        json_unescape(s.as_bytes(), 0, s.len(), &mut out, &mut map);
        map.finish(out.len(), s.len());
        (out, map)
    }

    #[test]
    fn json_escapes_decode_and_map_back() {
        let (out, map) = json(r"a\u0040b.com");
        assert_eq!(out, b"a@b.com");
        // "@" came from the whole six-byte escape.
        assert_eq!(map.to_raw(1, 2), Some((1, 7)));
        assert_eq!(map.to_raw(0, 7), Some((0, 12)));
        assert_eq!(map.to_raw(2, 4), Some((7, 9)));
    }

    #[test]
    fn json_surrogates_and_invalid_escapes() {
        let (out, map) = json(r"\ud83d\ude00x\q\ud800");
        assert_eq!(out, "\u{1F600}x\\q\u{FFFD}".as_bytes());
        // The emoji's four bytes all map to the twelve-byte pair.
        assert_eq!(map.to_raw(1, 3), Some((0, 12)));
        assert_eq!(map.to_raw(4, 5), Some((12, 13)));
        let (out, _) = json(r"\u12");
        assert_eq!(out, br"\u12");
        let (out, _) = json("\\");
        assert_eq!(out, b"\\");
    }

    #[test]
    fn percent_and_plus() {
        let raw = b"/a%41b?x=1+2%zz%4";
        let mut out = Vec::new();
        let mut map = PosMap::default();
        percent_decode(raw, 0, raw.len(), 6, &mut out, &mut map);
        map.finish(out.len(), raw.len());
        assert_eq!(out, b"/aAb?x=1 2%zz%4");
        assert_eq!(map.to_raw(2, 3), Some((2, 5)));
        assert_eq!(map.to_raw(8, 9), Some((10, 11)));
        out.clear();
        map.clear();
        percent_decode(raw, 0, raw.len(), usize::MAX, &mut out, &mut map);
        map.finish(out.len(), raw.len());
        assert_eq!(out, b"/aAb?x=1+2%zz%4");
    }

    fn decoded(raw: &[u8], f: impl Fn(&[u8], &mut Vec<u8>, &mut PosMap)) -> (Vec<u8>, PosMap) {
        let mut out = Vec::new();
        let mut map = PosMap::default();
        f(raw, &mut out, &mut map);
        map.finish(out.len(), raw.len());
        (out, map)
    }

    #[test]
    fn wide_text_transcodes_and_maps_back() {
        // "é@x" in UTF-16LE after a BOM, then a surrogate pair.
        let raw = b"\xff\xfe\xe9\x00@\x00x\x00\x3d\xd8\x00\xde";
        let (out, map) = decoded(raw, |r, o, m| transcode(r, 2, Wide::Utf16Le, o, m));
        assert_eq!(out, "é@x\u{1F600}".as_bytes());
        assert_eq!(map.to_raw(0, 2), Some((2, 4)));
        assert_eq!(map.to_raw(2, 4), Some((4, 8)));
        assert_eq!(map.to_raw(4, 8), Some((8, 12)));
        let raw = b"\0\0\0a\0\0\0b\0\0\0";
        let (out, map) = decoded(raw, |r, o, m| transcode(r, 0, Wide::Utf32Be, o, m));
        assert_eq!(out, b"ab");
        assert_eq!(map.to_raw(1, 2), Some((4, 8)));
    }

    #[test]
    fn base64_and_quoted_printable() {
        let raw = b"YWJj\r\nZGVm\r\nZw==";
        let (out, map) = decoded(raw, |r, o, m| base64_decode(r, 0, r.len(), o, m));
        assert_eq!(out, b"abcdefg");
        assert_eq!(map.to_raw(3, 6), Some((6, 10)));
        assert_eq!(map.to_raw(6, 7), Some((12, 16)));
        let raw = b"a=40b=\r\nc= d=3d=\n";
        let (out, map) = decoded(raw, |r, o, m| qp_decode(r, 0, r.len(), o, m));
        assert_eq!(out, b"a@bc= d=");
        assert_eq!(map.to_raw(1, 2), Some((1, 4)));
        assert_eq!(map.to_raw(2, 4), Some((4, 9)));
    }

    #[test]
    fn string_literals() {
        let s = br#"{"a":"x\"y","b":12,"c":"\\"} "open"#;
        let lits: Vec<_> = StrLits::new(s)
            .map(|l| (&s[l.start..l.end], l.has_escape))
            .collect();
        let want: Vec<(&[u8], bool)> = vec![
            (b"a", false),
            (br#"x\"y"#, true),
            (b"b", false),
            (b"c", false),
            (br"\\", true),
            (b"open", false),
        ];
        assert_eq!(lits, want);
    }

    #[test]
    fn form_splits() {
        let s = b"a=1&b&=c&&d=e=f";
        let parts: Vec<&[u8]> = form_components(s).map(|c| &s[c.start..c.end]).collect();
        let want: Vec<&[u8]> = vec![b"a", b"1", b"b", b"", b"c", b"", b"d", b"e=f"];
        assert_eq!(parts, want);
    }
}
