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
    /// or form-decoded URL or body, JSON string escapes) and not in its raw
    /// bytes.
    pub decoded: bool,
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
}

impl Findings {
    pub fn new() -> Findings {
        Findings::default()
    }

    /// Forgets the findings, keeping the allocated memory.
    pub fn clear(&mut self) {
        self.items.clear();
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
        } else {
            w += 1;
            items[w] = next;
        }
    }
    items.truncate(w + 1);
    items[base..].sort_unstable_by_key(|f| (f.part, f.start, f.end, f.class));
}
