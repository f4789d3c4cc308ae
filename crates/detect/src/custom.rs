//! Custom classes from the policy: regexes and keyword lists.
//!
//! Both are searched so that one class's match never hides another's
//! (`EMP-[0-9]{6}` must not hide `[0-9]{6}`, `top secret` must not hide
//! `secret`): a redact rule for the hidden class would leak it. Exact
//! overlapping search is slow (about 0.5 GB/s here, as neither Aho-Corasick's
//! overlapping mode nor a `MatchKind::All` DFA can use the SIMD literal
//! prefilters), so each kind first runs a fast leftmost pass that, in the
//! common case, finds nothing and ends the work; otherwise the first match
//! bounds where the exact search starts (no match of any pattern can start
//! before the leftmost one).
//!
//! - Regexes: one `meta::Regex` over all of them (leftmost-first, with
//!   literal prefilters) as the fast pass; then one `MatchKind::All` pass
//!   says which occur, and only those are searched for positions.
//! - Keywords: the haystack is ASCII-lowercased into scratch space (a
//!   case-insensitive automaton gets no SIMD prefilter; a copy costs far
//!   less), a leftmost Aho-Corasick finds the first candidate, then an
//!   overlapping one finds them all and each is checked for whole words.

use aho_corasick::AhoCorasick;
use regex_automata::{Input, MatchKind, PatternSet, meta};
use regex_syntax::hir::{Hir, HirKind, Look};

use crate::scan::Sink;
use crate::{ClassId, CustomClass, CustomPattern, DetectError};

#[derive(Debug, Clone, Default)]
pub(crate) struct Custom {
    /// All regexes, leftmost-first: the fast pass. Only with two or more.
    any: Option<meta::Regex>,
    /// All regexes in `MatchKind::All` mode. Only with two or more.
    set: Option<meta::Regex>,
    regexes: Vec<(ClassId, meta::Regex)>,
    keywords: Option<Keywords>,
}

#[derive(Debug, Clone)]
struct Keywords {
    /// Lower-case keywords, leftmost-longest: the fast pass.
    first: AhoCorasick,
    /// The same, standard semantics for overlapping search.
    all: AhoCorasick,
    /// Per pattern: its class, and whether it starts / ends with a word
    /// character (only then must its neighbour not be one).
    info: Vec<(ClassId, bool, bool)>,
}

/// Per-scan buffers for custom classes, kept in [`crate::Findings`].
#[derive(Debug, Default)]
pub(crate) struct CustomScratch {
    patset: Option<PatternSet>,
    lower: Vec<u8>,
}

fn build_error(name: impl Into<String>) -> impl FnOnce(String) -> DetectError {
    move |reason| DetectError::Build {
        name: name.into(),
        reason,
    }
}

impl Custom {
    pub(crate) fn new(classes: &[(ClassId, &CustomClass)]) -> Result<Custom, DetectError> {
        let mut hirs = Vec::new();
        let mut regexes = Vec::new();
        let mut words: Vec<Vec<u8>> = Vec::new();
        let mut info = Vec::new();
        for &(id, class) in classes {
            let name = || class.name.clone();
            match &class.pattern {
                CustomPattern::Regex(pattern) => {
                    let hir =
                        parse(pattern).map_err(|(reason, offset)| DetectError::InvalidRegex {
                            name: name(),
                            reason,
                            offset,
                        })?;
                    if hir.properties().minimum_len() == Some(0) {
                        return Err(DetectError::MatchesEmpty { name: name() });
                    }
                    let re = meta::Regex::builder()
                        .build_from_hir(&hir)
                        .map_err(|e| build_error(name())(e.to_string()))?;
                    regexes.push((id, re));
                    hirs.push(hir);
                }
                CustomPattern::Keywords(list) => {
                    if list.is_empty() {
                        return Err(DetectError::NoKeywords { name: name() });
                    }
                    let first = words.len();
                    for (index, w) in list.iter().enumerate() {
                        if !w.chars().any(char::is_alphanumeric) {
                            return Err(DetectError::InvalidKeyword {
                                name: name(),
                                index,
                            });
                        }
                        let lower = w.as_bytes().to_ascii_lowercase();
                        // Repeats within one class would count one word twice.
                        if words[first..].contains(&lower) {
                            continue;
                        }
                        let starts = w.chars().next().is_some_and(char::is_alphanumeric);
                        let ends = w.chars().next_back().is_some_and(char::is_alphanumeric);
                        words.push(lower);
                        info.push((id, starts, ends));
                    }
                }
            }
        }
        let (any, set) = if regexes.len() > 1 {
            // Blame every regex class: a combined build fails on size only.
            let names = || {
                classes
                    .iter()
                    .filter(|(_, c)| matches!(c.pattern, CustomPattern::Regex(_)))
                    .map(|(_, c)| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let any = meta::Regex::builder()
                .build_many_from_hir(&hirs)
                .map_err(|e| build_error(names())(e.to_string()))?;
            let set = meta::Regex::builder()
                .configure(meta::Regex::config().match_kind(MatchKind::All))
                .build_many_from_hir(&hirs)
                .map_err(|e| build_error(names())(e.to_string()))?;
            (Some(any), Some(set))
        } else {
            (None, None)
        };
        let keywords = if words.is_empty() {
            None
        } else {
            let build = |kind| {
                AhoCorasick::builder()
                    .match_kind(kind)
                    .build(&words)
                    .map_err(|e| build_error("keywords")(e.to_string()))
            };
            Some(Keywords {
                first: build(aho_corasick::MatchKind::LeftmostLongest)?,
                all: build(aho_corasick::MatchKind::Standard)?,
                info,
            })
        };
        Ok(Custom {
            any,
            set,
            regexes,
            keywords,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.regexes.is_empty() && self.keywords.is_none()
    }

    pub(crate) fn scan(&self, hs: &[u8], sink: &mut Sink<'_>, scratch: &mut CustomScratch) {
        if let (Some(any), Some(set)) = (&self.any, &self.set) {
            if let Some(first) = any.find(hs) {
                let from = first.start();
                let n = set.pattern_len();
                let ps = match &mut scratch.patset {
                    Some(ps) if ps.capacity() == n => ps,
                    slot => slot.insert(PatternSet::new(n)),
                };
                ps.clear();
                set.which_overlapping_matches(&Input::new(hs).range(from..), ps);
                for pid in ps.iter() {
                    if let Some((class, re)) = self.regexes.get(pid.as_usize()) {
                        for m in re.find_iter(Input::new(hs).range(from..)) {
                            sink.emit(*class, m.start(), m.end());
                        }
                    }
                }
            }
        } else if let Some((class, re)) = self.regexes.first() {
            for m in re.find_iter(hs) {
                sink.emit(*class, m.start(), m.end());
            }
        }

        if let Some(kw) = &self.keywords {
            let lower = &mut scratch.lower;
            lower.clear();
            lower.extend(hs.iter().map(u8::to_ascii_lowercase));
            let Some(first) = kw.first.find(lower.as_slice()) else {
                return;
            };
            let input = aho_corasick::Input::new(lower.as_slice()).range(first.start()..);
            for m in kw.all.find_overlapping_iter(input) {
                let Some(&(class, starts, ends)) = kw.info.get(m.pattern().as_usize()) else {
                    continue;
                };
                if (!starts || !word_before(hs, m.start())) && (!ends || !word_after(hs, m.end())) {
                    sink.emit(class, m.start(), m.end());
                }
            }
        }
    }
}

/// Parses a pattern with Rust `regex` syntax and makes its word boundaries
/// ASCII. A Unicode `\b` makes the DFA give up on the first non-ASCII byte
/// and fall back to a far slower engine for the whole haystack; ASCII `\b`
/// keeps the per-request path on the DFA. Returns (reason, offset) on error.
fn parse(pattern: &str) -> Result<Hir, (String, Option<usize>)> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| match e {
            regex_syntax::Error::Parse(e) => (e.kind().to_string(), Some(e.span().start.offset)),
            regex_syntax::Error::Translate(e) => {
                (e.kind().to_string(), Some(e.span().start.offset))
            }
            e => (e.to_string(), None),
        })?;
    if hir.properties().look_set().contains_word_unicode() {
        Ok(ascii_word_boundaries(hir))
    } else {
        Ok(hir)
    }
}

fn ascii_word_boundaries(hir: Hir) -> Hir {
    match hir.into_kind() {
        HirKind::Look(look) => Hir::look(match look {
            Look::WordUnicode => Look::WordAscii,
            Look::WordUnicodeNegate => Look::WordAsciiNegate,
            Look::WordStartUnicode => Look::WordStartAscii,
            Look::WordEndUnicode => Look::WordEndAscii,
            Look::WordStartHalfUnicode => Look::WordStartHalfAscii,
            Look::WordEndHalfUnicode => Look::WordEndHalfAscii,
            other => other,
        }),
        HirKind::Repetition(mut r) => {
            r.sub = Box::new(ascii_word_boundaries(*r.sub));
            Hir::repetition(r)
        }
        HirKind::Capture(mut c) => {
            c.sub = Box::new(ascii_word_boundaries(*c.sub));
            Hir::capture(c)
        }
        HirKind::Concat(v) => Hir::concat(v.into_iter().map(ascii_word_boundaries).collect()),
        HirKind::Alternation(v) => {
            Hir::alternation(v.into_iter().map(ascii_word_boundaries).collect())
        }
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Class(c) => Hir::class(c),
    }
}

/// Word characters for keywords: letters and digits, including non-ASCII
/// ones (so `secret` is not a whole word in `secretário`). `_` is not one:
/// `project_falcon` does contain the word `falcon`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

fn word_before(hs: &[u8], at: usize) -> bool {
    let head = &hs[..at.min(hs.len())];
    match head.last() {
        None => false,
        Some(&b) if b.is_ascii() => b.is_ascii_alphanumeric(),
        Some(_) => {
            let from = head.len().saturating_sub(4);
            (from..head.len()).any(|k| {
                std::str::from_utf8(&head[k..])
                    .ok()
                    .and_then(|s| s.chars().next_back())
                    .is_some_and(is_word_char)
            })
        }
    }
}

fn word_after(hs: &[u8], at: usize) -> bool {
    let tail = hs.get(at..).unwrap_or_default();
    match tail.first() {
        None => false,
        Some(&b) if b.is_ascii() => b.is_ascii_alphanumeric(),
        Some(_) => (1..=tail.len().min(4)).any(|k| {
            std::str::from_utf8(&tail[..k])
                .ok()
                .and_then(|s| s.chars().next())
                .is_some_and(is_word_char)
        }),
    }
}
