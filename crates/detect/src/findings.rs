//! Scan results, and the scratch space that lets scans reuse memory.

use crate::ClassId;
use crate::custom::CustomScratch;
use crate::decode::PosMap;

/// Which part of a request a finding was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The request target's path and query.
    Url,
    /// The value of the header at this index of [`crate::RequestParts::headers`].
    Header(usize),
    /// The body (or, for [`crate::Detector::scan`], the haystack).
    Body,
}

/// One occurrence of a class.
///
/// `start..end` is always a byte range of the part *as it was given* (the raw
/// URL, header value or body), even when the value was only visible after
/// decoding: then the range covers the whole escape sequences that produced
/// it, so replacing the range removes the value and keeps the encoding intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Finding {
    pub class: ClassId,
    pub start: usize,
    pub end: usize,
    pub part: Part,
    /// True when the match was made in a decoded form of the part (percent-
    /// or form-decoded URL, header value or body, JSON string escapes,
    /// UTF-16 text, a base64 or quoted-printable part) and not in its raw
    /// bytes.
    pub decoded: bool,
    /// Set when the value lies under an encoding that redaction cannot
    /// rewrite in place (its raw range is then still the bytes that encode
    /// it, but writing a label there would corrupt the body or leave the
    /// value readable). The redact functions leave such findings alone;
    /// [`crate::redact_typed_body`] refuses them. A caller that must redact
    /// one has to refuse the request instead.
    pub opaque: Option<Opaque>,
}

/// An encoding that redaction cannot rewrite in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opaque {
    /// UTF-16 text (the label would have to be re-encoded, and every raw
    /// finding in it is in code units' bytes).
    Utf16,
    /// UTF-32 text.
    Utf32,
    /// A base64-encoded multipart part.
    Base64,
    /// A quoted-printable multipart part that holds JSON, a form or
    /// another encoding (plain text in one is rewritten in place).
    QuotedPrintable,
    /// A match that runs across the edge of a multipart part.
    AcrossParts,
}

impl Opaque {
    /// What the value is inside, for a person: "UTF-16 text".
    pub fn describe(self) -> &'static str {
        match self {
            Opaque::Utf16 => "UTF-16 text",
            Opaque::Utf32 => "UTF-32 text",
            Opaque::Base64 => "a base64-encoded multipart part",
            Opaque::QuotedPrintable => "a quoted-printable multipart part holding structured data",
            Opaque::AcrossParts => "text running across multipart parts",
        }
    }
}

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Finding {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// Buffers reused between scans so a scan allocates only while they grow.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) decoded: Vec<u8>,
    pub(crate) map: PosMap,
    pub(crate) custom: CustomScratch,
    /// Buffers for nested decodings (a base64 part, UTF-16 text), each
    /// decoded before what is inside it is decoded in turn.
    pub(crate) layers: Vec<(Vec<u8>, PosMap)>,
}

impl Scratch {
    /// An empty buffer and map for one nested decoding; give them back with
    /// [`Scratch::give`].
    pub(crate) fn take(&mut self) -> (Vec<u8>, PosMap) {
        let (mut buf, mut map) = self.layers.pop().unwrap_or_default();
        buf.clear();
        map.clear();
        (buf, map)
    }

    pub(crate) fn give(&mut self, layer: (Vec<u8>, PosMap)) {
        self.layers.push(layer);
    }
}

impl Clone for Scratch {
    // Scratch holds no results, so a clone of `Findings` starts with empty
    // buffers rather than copying them.
    fn clone(&self) -> Scratch {
        Scratch::default()
    }
}

/// The findings of one or more scans. Reuse one per worker with
/// [`Findings::clear`] so steady-state scanning does not allocate.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub(crate) items: Vec<Finding>,
    pub(crate) scratch: Scratch,
    pub(crate) unreadable: Option<&'static str>,
}

impl Findings {
    pub fn new() -> Findings {
        Findings::default()
    }

    /// Forgets the findings, keeping the allocated memory.
    pub fn clear(&mut self) {
        self.items.clear();
        self.unreadable = None;
    }

    /// Why part of what was scanned could not be read (a multipart part in
    /// a transfer encoding veto does not decode, say), if it could not.
    /// Policy-v1 never assumes what it cannot read is harmless: a caller
    /// treats such a request as holding every class.
    pub fn unreadable(&self) -> Option<&'static str> {
        self.unreadable
    }

    /// The first finding that cannot be redacted in place, if any.
    pub fn first_opaque(&self) -> Option<&Finding> {
        self.items.iter().find(|f| f.opaque.is_some())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn as_slice(&self) -> &[Finding] {
        &self.items
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Finding> {
        self.items.iter()
    }

    /// The findings made in one part, e.g. to redact that part.
    pub fn in_part(&self, part: Part) -> impl Iterator<Item = &Finding> + '_ {
        self.items.iter().filter(move |f| f.part == part)
    }

    pub fn contains(&self, class: ClassId) -> bool {
        self.items.iter().any(|f| f.class == class)
    }

    pub fn count(&self, class: ClassId) -> usize {
        self.items.iter().filter(|f| f.class == class).count()
    }

    /// Each class found with its number of occurrences, by class id: what the
    /// audit record keeps (never the values).
    pub fn counts(&self) -> Vec<(ClassId, usize)> {
        let mut classes: Vec<ClassId> = self.items.iter().map(|f| f.class).collect();
        classes.sort_unstable();
        let mut out: Vec<(ClassId, usize)> = Vec::new();
        for c in classes {
            match out.last_mut() {
                Some((last, n)) if *last == c => *n += 1,
                _ => out.push((c, 1)),
            }
        }
        out
    }
}

impl<'a> IntoIterator for &'a Findings {
    type Item = &'a Finding;
    type IntoIter = std::slice::Iter<'a, Finding>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// Sorts `items[base..]` by part and position, and folds together what is
/// one occurrence seen through several views of a part (raw, decoded, `+` as
/// space): the same class at the same range, or overlapping ranges of the
/// same class where one came from a decoded view (raw `nuser@x.com` and
/// decoded `user@x.com` in `"\nuser@x.com"`). The audit counts occurrences,
/// and the folded range covers both, so redaction still removes everything.
/// Overlapping raw findings of one view stay apart: they are distinct matches.
pub(crate) fn sort_dedup_tail(items: &mut Vec<Finding>, base: usize) {
    if items.len().saturating_sub(base) < 2 {
        return;
    }
    items[base..].sort_unstable_by_key(|f| (f.part, f.class, f.start, f.end, f.decoded));
    let mut w = base;
    for r in base + 1..items.len() {
        let cur = items[w];
        let next = items[r];
        let same = cur.part == next.part && cur.class == next.class;
        let dup = same && cur.start == next.start && cur.end == next.end;
        let fold = same && next.start < cur.end && (cur.decoded || next.decoded);
        if dup || fold {
            items[w].end = cur.end.max(next.end);
            items[w].decoded = cur.decoded && next.decoded;
            items[w].opaque = cur.opaque.or(next.opaque);
        } else {
            w += 1;
            items[w] = next;
        }
    }
    items.truncate(w + 1);
    items[base..].sort_unstable_by_key(|f| (f.part, f.start, f.end, f.class));
}
