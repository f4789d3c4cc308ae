//! The built-in scan: two linear passes, each driven by a prefilter, with
//! validators run only on candidates.
//!
//! 1. Aho-Corasick over the literal anchors (`AKIA`…, `ghp_`…, `github_pat_`,
//!    `-----BEGIN`, JWT header openings). All anchors are three bytes or
//!    more, so the SIMD "Teddy" searcher stays selective.
//! 2. A SWAR loop that jumps eight bytes at a time to the next digit or `@`:
//!    digits start the card/SSN/IBAN run scanner, `@` the e-mail check. `@`
//!    is here rather than in pass 1 because a one-byte pattern would make
//!    every common letter a Teddy candidate.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::builtin::{
    PemMarkers, aws_access_key, email, free_before, github_classic, github_fine_grained,
    private_key,
};
use crate::digits::scan_run;
use crate::jwt::{b64url_run, jwt};
use crate::{ClassId, Finding, Part};

/// JWT headers decoded per base64url run. A real token has one candidate; a
/// run full of them (`eyJ-eyJ-…`: `-` and `_` are no letters for the
/// boundary rule) would otherwise cost quadratic time.
const JWT_TRIES_PER_RUN: u32 = 8;

/// Collects findings for one part.
pub(crate) struct Sink<'a> {
    pub(crate) items: &'a mut Vec<Finding>,
    pub(crate) part: Part,
    pub(crate) decoded: bool,
}

impl Sink<'_> {
    #[inline]
    pub(crate) fn emit(&mut self, class: ClassId, start: usize, end: usize) {
        self.items.push(Finding {
            class,
            start,
            end,
            part: self.part,
            decoded: self.decoded,
            opaque: None,
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Anchor {
    Aws,
    GithubClassic,
    GithubFineGrained,
    PrivateKey,
    Jwt,
}

const ANCHORS: &[(&str, Anchor)] = &[
    ("AKIA", Anchor::Aws),
    ("ASIA", Anchor::Aws),
    ("AIDA", Anchor::Aws),
    ("AROA", Anchor::Aws),
    ("AGPA", Anchor::Aws),
    ("AIPA", Anchor::Aws),
    ("ANPA", Anchor::Aws),
    ("ANVA", Anchor::Aws),
    ("ghp_", Anchor::GithubClassic),
    ("gho_", Anchor::GithubClassic),
    ("ghu_", Anchor::GithubClassic),
    ("ghs_", Anchor::GithubClassic),
    ("ghr_", Anchor::GithubClassic),
    ("github_pat_", Anchor::GithubFineGrained),
    ("-----BEGIN", Anchor::PrivateKey),
    // Every way a JSON object header can open, base64url-encoded: `{"` and a
    // key starting at or above `@` is `eyJ` (nearly all real headers), below
    // `@` (a digit, `$`, an empty key) `eyI`; `{` and white space: space
    // `eyA`, LF `ewo`, tab `ewk`, CR `ew0`.
    ("eyJ", Anchor::Jwt),
    ("eyI", Anchor::Jwt),
    ("eyA", Anchor::Jwt),
    ("ewo", Anchor::Jwt),
    ("ewk", Anchor::Jwt),
    ("ew0", Anchor::Jwt),
];

#[derive(Debug, Clone)]
pub(crate) struct Builtin {
    anchors: AhoCorasick,
}

impl Builtin {
    pub(crate) fn new() -> Result<Builtin, aho_corasick::BuildError> {
        let anchors = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS.iter().map(|(p, _)| p))?;
        Ok(Builtin { anchors })
    }

    pub(crate) fn scan(&self, hs: &[u8], sink: &mut Sink<'_>) {
        let mut pem = PemMarkers::default();
        let mut jwt_run_end = 0;
        let mut jwt_tries = 0;
        for m in self.anchors.find_iter(hs) {
            let s = m.start();
            let Some(&(_, anchor)) = ANCHORS.get(m.pattern().as_usize()) else {
                continue;
            };
            let (class, end) = match anchor {
                Anchor::Aws => (ClassId::AWS_ACCESS_KEY, aws_access_key(hs, s)),
                Anchor::GithubClassic => (ClassId::GITHUB_TOKEN, github_classic(hs, s)),
                Anchor::GithubFineGrained => (ClassId::GITHUB_TOKEN, github_fine_grained(hs, s)),
                Anchor::PrivateKey => (ClassId::PRIVATE_KEY, private_key(hs, s, &mut pem)),
                Anchor::Jwt => {
                    // Anchors inside a run share its end; only those that
                    // start a token count against the run's budget.
                    if s >= jwt_run_end {
                        jwt_run_end = b64url_run(hs, s);
                        jwt_tries = 0;
                    }
                    let mut end = None;
                    if free_before(hs, s) && jwt_tries < JWT_TRIES_PER_RUN {
                        jwt_tries += 1;
                        end = jwt(hs, s, jwt_run_end);
                    }
                    (ClassId::JWT, end)
                }
            };
            if let Some(end) = end {
                sink.emit(class, s, end);
            }
        }

        let mut i = 0;
        while let Some(p) = next_digit_or_at(hs, i) {
            if hs[p] == b'@' {
                if let Some((s, e)) = email(hs, p) {
                    sink.emit(ClassId::EMAIL, s, e);
                }
                i = p + 1;
            } else {
                i = scan_run(hs, p, sink);
            }
        }
    }
}

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI: u64 = 0x8080_8080_8080_8080;
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// High bit set in each byte of `w` that is an ASCII digit or `@`, exactly
/// (no carries between bytes: each byte's low seven bits plus a constant
/// stay below 0x100).
#[inline]
fn digit_or_at_mask(w: u64) -> u64 {
    let low = w & LO7;
    let ge_0 = low + splat(0x80 - b'0');
    let gt_9 = low + splat(0x80 - b'9' - 1);
    let digit = ge_0 & !gt_9;
    let x = w ^ splat(b'@');
    let at = !(((x & LO7) + LO7) | x);
    (digit | at) & !w & HI
}

/// The index of the next ASCII digit or `@` at or after `from`.
#[inline]
fn next_digit_or_at(hs: &[u8], from: usize) -> Option<usize> {
    let rest = hs.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut base = from;
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let m = digit_or_at_mask(w);
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b.is_ascii_digit() || b == b'@')
        .map(|p| base + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_mask_is_exact_for_every_byte() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut bytes = [b'x'; 8];
                bytes[pos] = b;
                let m = digit_or_at_mask(u64::from_le_bytes(bytes));
                let want = b.is_ascii_digit() || b == b'@';
                assert_eq!(m != 0, want, "byte {b:#x} at {pos}");
                if want {
                    assert_eq!(m.trailing_zeros() / 8, pos as u32);
                }
            }
        }
    }

    #[test]
    fn next_finds_in_chunks_and_tail() {
        let hs = b"abcdefghijklmnop@qrstu9";
        assert_eq!(next_digit_or_at(hs, 0), Some(16));
        assert_eq!(next_digit_or_at(hs, 17), Some(22));
        assert_eq!(next_digit_or_at(hs, 23), None);
        assert_eq!(next_digit_or_at(hs, 99), None);
    }
}
