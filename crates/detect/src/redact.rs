//! Redaction: each finding's bytes become `[REDACTED:<class>]`.
//!
//! Findings are in raw coordinates of their part (see [`Finding`]), so every
//! function here takes the part as sent and the findings made in it,
//! typically `findings.in_part(..)` filtered to the classes a `redact` rule
//! names. Overlapping findings are merged and labelled with the class of the
//! one that starts first (the longest, on a tie).
//!
//! The encoding-aware variants keep the part well-formed:
//! - [`redact_json`]: the part of a finding inside a string literal is
//!   replaced inside the literal (widened to whole `\` escapes, label
//!   JSON-escaped); a number token that a finding touches (a card sent as
//!   `4111111111111111`) becomes the string `"[REDACTED:credit_card]"`. A
//!   finding spanning several strings (a PEM key sent as an array of lines,
//!   a custom regex across `","`) becomes one label per string, keeping the
//!   quotes and punctuation between them. So a valid JSON text stays valid.
//! - [`redact_form`] and [`redact_url`]: ranges widen to whole `%XX` escapes
//!   and the label is percent-encoded, so it decodes to `[REDACTED:<class>]`.

use crate::decode::{StrLit, StrLits, hex_val};
use crate::mime::{Parts, Transfer, field};
use crate::request::MAX_NESTING;
use crate::{BodyKind, BodyType, ClassId, Detector, Finding, Opaque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Raw,
    Json,
    Percent,
}

/// Replaces findings byte for byte; for a header value or a body sent as is.
pub fn redact<'a>(
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    redact_with(Syntax::Raw, input, findings, detector)
}

/// Redacts a JSON text, keeping it valid JSON (see the module docs).
pub fn redact_json<'a>(
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    redact_with(Syntax::Json, input, findings, detector)
}

/// Redacts an `application/x-www-form-urlencoded` body.
pub fn redact_form<'a>(
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    redact_with(Syntax::Percent, input, findings, detector)
}

/// Redacts a request target (the same bytes given to `scan_url`).
pub fn redact_url<'a>(
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    redact_with(Syntax::Percent, input, findings, detector)
}

/// Redacts a body the way [`Detector::scan_body`] decoded it.
pub fn redact_body<'a>(
    kind: BodyKind,
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    let syntax = match kind {
        BodyKind::Json => Syntax::Json,
        BodyKind::Form => Syntax::Percent,
        BodyKind::Other => Syntax::Raw,
    };
    redact_with(syntax, input, findings, detector)
}

/// Redacts a body the way [`Detector::scan_typed_body`] decoded it: JSON,
/// form and other bodies as [`redact_body`] does, each multipart part by
/// its own type (a quoted-printable part of plain text too), the rest of a
/// multipart body as sent. Fails, changing nothing, when a finding cannot
/// be rewritten in place ([`Finding::opaque`]: UTF-16 text, a base64
/// part…): the caller must then not send the body at all.
pub fn redact_typed_body<'a>(
    ty: BodyType<'_>,
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Result<Vec<u8>, Opaque> {
    let found: Vec<Finding> = findings
        .into_iter()
        .filter(|f| f.start < f.end.min(input.len()))
        .copied()
        .collect();
    if let Some(why) = found.iter().find_map(|f| f.opaque) {
        return Err(why);
    }
    redact_layer(ty, input, found, detector, 0)
}

fn redact_layer(
    ty: BodyType<'_>,
    input: &[u8],
    found: Vec<Finding>,
    detector: &Detector,
    depth: u8,
) -> Result<Vec<u8>, Opaque> {
    if found.is_empty() {
        return Ok(input.to_vec());
    }
    if let Some(w) = ty.wide {
        return Err(if w.unit() == 2 {
            Opaque::Utf16
        } else {
            Opaque::Utf32
        });
    }
    match ty.multipart {
        Some(boundary) if !boundary.is_empty() && depth < MAX_NESTING => {
            redact_multipart(input, boundary, found, detector, depth)
        }
        // Not read as multipart (the scan said so): as sent.
        Some(_) => Ok(redact_with(Syntax::Raw, input, &found, detector)),
        None => Ok(redact_body(ty.kind, input, &found, detector)),
    }
}

fn redact_multipart(
    input: &[u8],
    boundary: &[u8],
    mut found: Vec<Finding>,
    detector: &Detector,
    depth: u8,
) -> Result<Vec<u8>, Opaque> {
    found.sort_unstable_by_key(|f| f.start);
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0;
    let mut next = 0;
    // The findings starting before `end`, shifted to start at `from`; none
    // may run past `end`.
    let mut take = |from: usize, end: usize| -> Result<Vec<Finding>, Opaque> {
        let mut picked = Vec::new();
        while let Some(f) = found.get(next).filter(|f| f.start < end) {
            if f.end > end || f.start < from {
                return Err(Opaque::AcrossParts);
            }
            picked.push(Finding {
                start: f.start - from,
                end: f.end - from,
                ..*f
            });
            next += 1;
        }
        Ok(picked)
    };
    for part in Parts::new(input, boundary) {
        let (cs, ce) = part.body;
        let outside = take(pos, cs)?;
        out.extend_from_slice(&redact_with(
            Syntax::Raw,
            &input[pos..cs],
            &outside,
            detector,
        ));
        let inside = take(cs, ce)?;
        let content = &input[cs..ce];
        if inside.is_empty() {
            out.extend_from_slice(content);
            pos = ce;
            continue;
        }
        let head = &input[part.head.0..part.head.1];
        let masked = match Transfer::of(head) {
            Transfer::Identity => {
                let ty = BodyType::from_content_type(field(head, b"content-type"), content);
                redact_layer(ty, content, inside, detector, depth + 1)?
            }
            // Only plain text gets here (findings in any other
            // quoted-printable part are opaque).
            Transfer::QuotedPrintable | Transfer::Unknown => {
                redact_with(Syntax::Raw, content, &inside, detector)
            }
            Transfer::Base64 => return Err(Opaque::Base64),
        };
        out.extend_from_slice(&masked);
        pos = ce;
    }
    let rest = take(pos, input.len())?;
    out.extend_from_slice(&redact_with(Syntax::Raw, &input[pos..], &rest, detector));
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    class: ClassId,
    ctx: Ctx,
}

/// How a span's label is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// As is (raw syntax; or JSON that is not valid there anyway).
    Plain,
    /// Percent-encoded.
    Percent,
    /// JSON-escaped, inside a string literal.
    InString,
    /// A JSON string replacing a number token.
    Number,
}

fn redact_with<'a>(
    syntax: Syntax,
    input: &[u8],
    findings: impl IntoIterator<Item = &'a Finding>,
    detector: &Detector,
) -> Vec<u8> {
    let json = (syntax == Syntax::Json).then(|| JsonIndex::new(input));
    let mut spans: Vec<Span> = Vec::new();
    for f in findings {
        // Rewriting these would corrupt what encodes them (see
        // `Finding::opaque`): the caller refuses instead.
        if f.opaque.is_some() {
            continue;
        }
        let end = f.end.min(input.len());
        if f.start >= end {
            continue;
        }
        let mut span = Span {
            start: f.start,
            end,
            class: f.class,
            ctx: Ctx::Plain,
        };
        match (&json, syntax) {
            (Some(idx), _) => idx.snap(&mut span),
            (None, Syntax::Percent) => {
                widen_percent(input, &mut span);
                span.ctx = Ctx::Percent;
            }
            _ => {}
        }
        spans.push(span);
    }
    if spans.is_empty() {
        return input.to_vec();
    }
    let mut merged = merge(spans);
    if let Some(idx) = &json {
        // Split only after merging: merged spans are disjoint, so walking
        // the literals and tokens under them is linear in the input however
        // many findings overlap.
        let mut pieces = Vec::with_capacity(merged.len());
        let mut token_cache = None;
        for s in &merged {
            idx.pieces(input, *s, &mut pieces, &mut token_cache);
        }
        merged = merge(pieces);
    }

    let mut out = Vec::with_capacity(input.len() + 16 * merged.len());
    let mut pos = 0;
    for s in merged {
        out.extend_from_slice(&input[pos..s.start]);
        let label = format!("[REDACTED:{}]", detector.class_name(s.class));
        match s.ctx {
            Ctx::Plain => out.extend_from_slice(label.as_bytes()),
            Ctx::Percent => percent_encode(&label, &mut out),
            Ctx::InString => json_escape(&label, &mut out),
            Ctx::Number => {
                out.push(b'"');
                json_escape(&label, &mut out);
                out.push(b'"');
            }
        }
        pos = s.end;
    }
    out.extend_from_slice(&input[pos..]);
    out
}

/// Sorts and merges overlapping spans; a merged span keeps the class of the
/// one that starts first (the longest on a tie).
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start < last.end => {
                last.end = last.end.max(s.end);
                if last.ctx != s.ctx {
                    // Cannot happen for pieces of a valid JSON text (pieces
                    // that overlap are in the same literal or number), but
                    // never guess: write the label as is.
                    last.ctx = Ctx::Plain;
                }
            }
            _ => merged.push(s),
        }
    }
    merged
}

fn is_pct_escape(input: &[u8], k: usize) -> bool {
    input.get(k) == Some(&b'%')
        && input.get(k + 1).copied().and_then(hex_val).is_some()
        && input.get(k + 2).copied().and_then(hex_val).is_some()
}

/// Widens a span so it never cuts a `%XX` escape in two.
fn widen_percent(input: &[u8], s: &mut Span) {
    for back in 1..=2 {
        if s.start >= back && is_pct_escape(input, s.start - back) {
            s.start -= back;
            break;
        }
    }
    for back in 1..=2 {
        if s.end >= back && is_pct_escape(input, s.end - back) {
            s.end = s.end - back + 3;
            break;
        }
    }
}

/// Percent-encodes all but unreserved characters and `:`.
fn percent_encode(label: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in label.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn json_escape(label: &str, out: &mut Vec<u8>) {
    for &b in label.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
}

/// What a token outside strings is, for redaction.
#[derive(Debug, Clone, Copy)]
enum Token {
    /// `true`, `false`, `null`: no data.
    Literal,
    Number,
    /// Not JSON; replaced as is.
    Other,
}

/// Bytes that separate JSON tokens outside strings.
fn is_structural(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b',' | b':' | b'[' | b']' | b'{' | b'}'
    )
}

/// Where the string literals and their escapes are in a JSON text.
struct JsonIndex {
    lits: Vec<StrLit>,
    /// Escape sequences inside literals, in order, as raw ranges.
    escapes: Vec<(usize, usize)>,
}

impl JsonIndex {
    fn new(input: &[u8]) -> JsonIndex {
        let lits: Vec<StrLit> = StrLits::new(input).collect();
        let mut escapes = Vec::new();
        for lit in lits.iter().filter(|l| l.has_escape) {
            let mut j = lit.start;
            while let Some(rel) = memchr::memchr(b'\\', &input[j..lit.end]) {
                let k = j + rel;
                let unicode = input.get(k + 1) == Some(&b'u')
                    && k + 6 <= lit.end
                    && input[k + 2..k + 6].iter().all(|&b| hex_val(b).is_some());
                let len = if unicode { 6 } else { 2 };
                escapes.push((k, (k + len).min(lit.end)));
                j = (k + len).min(lit.end);
            }
        }
        JsonIndex { lits, escapes }
    }

    /// The escape sequence strictly containing position `p`, if any.
    fn escape_around(&self, p: usize) -> Option<(usize, usize)> {
        let i = self.escapes.partition_point(|&(_, e)| e <= p);
        self.escapes.get(i).filter(|&&(st, _)| st < p).copied()
    }

    /// Widens a span so it never cuts a `\` escape in two.
    fn snap(&self, span: &mut Span) {
        if let Some((st, _)) = self.escape_around(span.start) {
            span.start = st;
        }
        if let Some((_, en)) = self.escape_around(span.end) {
            span.end = en;
        }
    }

    /// Splits a (snapped) span into pieces that can each be replaced without
    /// breaking the JSON: the part inside each string literal it touches,
    /// and each whole number token it touches. Quotes and structure between
    /// them are kept; `true`/`false`/`null` hold no data. Anything else
    /// outside strings (the text is not valid JSON there) is replaced as is.
    fn pieces(
        &self,
        input: &[u8],
        span: Span,
        out: &mut Vec<Span>,
        token_cache: &mut Option<(usize, usize, Token)>,
    ) {
        let (s, e) = (span.start, span.end);
        let piece = |start, end, ctx| Span {
            start,
            end,
            class: span.class,
            ctx,
        };
        // The first literal whose content or closing quote is at or after s.
        let mut i = self.lits.partition_point(|l| l.end < s);
        let mut p = s;
        while p < e {
            match self.lits.get(i) {
                Some(l) if p >= l.start => {
                    let end = e.min(l.end);
                    if p < end {
                        out.push(piece(p, end, Ctx::InString));
                    }
                    // Step over the closing quote.
                    p = end.max(l.end + 1);
                    i += 1;
                }
                next => {
                    // Outside strings up to the next opening quote.
                    let seg_end = next.map_or(e, |l| e.min(l.start - 1));
                    Self::outside(input, p, seg_end, &piece, out, token_cache);
                    p = next.map_or(e, |l| seg_end.max(l.start));
                }
            }
        }
    }

    fn outside(
        input: &[u8],
        a: usize,
        b: usize,
        piece: &impl Fn(usize, usize, Ctx) -> Span,
        out: &mut Vec<Span>,
        token_cache: &mut Option<(usize, usize, Token)>,
    ) {
        let token = |c: u8| !is_structural(c) && c != b'"';
        let mut t = a;
        while t < b {
            if !token(input[t]) {
                t += 1;
                continue;
            }
            let t_end = t + input[t..b].iter().take_while(|&&c| token(c)).count();
            // The whole token, even where the span covers only part of it.
            // Spans arrive in order and disjoint, so with the cache each
            // token is measured and classified once.
            let (ft, ft_end, kind) = match *token_cache {
                Some(c @ (ft, ft_end, _)) if ft <= t && t < ft_end => c,
                _ => {
                    let mut ft = t;
                    while ft > 0 && token(input[ft - 1]) {
                        ft -= 1;
                    }
                    let ft_end = t_end + input[t_end..].iter().take_while(|&&c| token(c)).count();
                    let whole = &input[ft..ft_end];
                    let kind = if matches!(whole, b"true" | b"false" | b"null") {
                        Token::Literal
                    } else if matches!(whole[0], b'-' | b'0'..=b'9')
                        && whole.iter().all(|&c| is_number_byte(c))
                    {
                        Token::Number
                    } else {
                        Token::Other
                    };
                    *token_cache = Some((ft, ft_end, kind));
                    (ft, ft_end, kind)
                }
            };
            match kind {
                Token::Literal => {}
                Token::Number => out.push(piece(ft, ft_end, Ctx::Number)),
                Token::Other => out.push(piece(t, t_end, Ctx::Plain)),
            }
            t = t_end;
        }
    }
}
