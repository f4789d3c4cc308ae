//! The hand-written digit scanner: `credit_card`, `us_ssn` and `iban`.
//!
//! A regex for "13 to 19 digits with optional single separators, Luhn-valid"
//! either backtracks or runs a large DFA over every byte; walking the digit
//! runs directly touches each byte once and validates as it goes.

use crate::ClassId;
use crate::builtin::{free_after, free_before, iban, ssn_valid};
use crate::scan::Sink;

/// A digit group: `start..end`, and the separator that preceded it in its
/// run (0 for the first group).
#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
    sep: u8,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

const SPACE: u8 = 1;
const DASH: u8 = 2;

/// Luhn doubling of one digit.
const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];

/// Scans the run that starts with the digit at `start` (the byte before it
/// is not a digit) and returns where the run ends.
///
/// A run is a maximal sequence of digit groups joined by one space or one
/// dash. The run as a whole is the `credit_card` candidate (the spec's "one
/// maximal run"), so a 20-digit number never yields a 16-digit card. Any
/// three consecutive groups shaped 3-2-4 with the same separator are a
/// `us_ssn` candidate.
pub(crate) fn scan_run(hs: &[u8], start: usize, sink: &mut Sink<'_>) -> usize {
    if start >= 2
        && hs[start - 2].is_ascii_uppercase()
        && hs[start - 1].is_ascii_uppercase()
        && hs.get(start + 1).is_some_and(u8::is_ascii_digit)
        && free_before(hs, start - 2)
    {
        if let Some(end) = iban(hs, start - 2) {
            sink.emit(ClassId::IBAN, start - 2, end);
        }
    }

    // Fast path for the common lone group (ids, amounts, base64 noise): it
    // can only be an unseparated card, as an SSN needs three groups.
    let first_end = start
        + hs[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    let continues = matches!(hs.get(first_end), Some(b' ' | b'-'))
        && hs.get(first_end + 1).is_some_and(u8::is_ascii_digit);
    if !continues {
        if (13..=19).contains(&(first_end - start))
            && (b'2'..=b'6').contains(&hs[start])
            && free_before(hs, start)
            && free_after(hs, first_end)
            && luhn_valid(&hs[start..first_end])
        {
            sink.emit(ClassId::CREDIT_CARD, start, first_end);
        }
        return first_end;
    }

    let run_free = free_before(hs, start);
    let mut total = 0usize;
    let mut kinds = 0u8;
    // The separator kinds before the last group joined.
    let mut kinds_before_last = 0u8;
    let mut groups = [Group::default(); 3];
    let mut seen = 0usize;
    let mut sep = 0u8;
    let mut i = start;
    loop {
        let gs = i;
        // The hot loop on digit-heavy bodies: count only; Luhn runs later on
        // the few runs whose length and shape can be a card.
        i += hs[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        total += i - gs;
        groups = [
            groups[1],
            groups[2],
            Group {
                start: gs,
                end: i,
                sep,
            },
        ];
        seen += 1;
        if seen >= 3 {
            check_ssn(hs, &groups, run_free, sink);
        }
        match (hs.get(i), hs.get(i + 1)) {
            (Some(&s @ (b' ' | b'-')), Some(d)) if d.is_ascii_digit() => {
                sep = s;
                kinds_before_last = kinds;
                kinds |= if s == b' ' { SPACE } else { DASH };
                i += 1;
            }
            _ => break,
        }
    }

    // One separator kind per number: a run mixing both is not a card.
    let card = |end: usize, total: usize, kinds: u8| {
        kinds != SPACE | DASH
            && (13..=19).contains(&total)
            && (b'2'..=b'6').contains(&hs[start])
            && run_free
            && free_after(hs, end)
            && luhn_valid(&hs[start..end])
    };
    if card(i, total, kinds) {
        sink.emit(ClassId::CREDIT_CARD, start, i);
    } else if seen >= 2 && begins_email(hs, groups[2].start, i) {
        // The last group begins an email's local part (`... 0@x.io`), not
        // the card's digits: the card is the run before it. Otherwise
        // redacting that email would shorten the run and reveal a card the
        // scan had not seen.
        let end = groups[1].end;
        if card(end, total - groups[2].len(), kinds_before_last) {
            sink.emit(ClassId::CREDIT_CARD, start, end);
        }
    }
    i
}

/// Whether an email's local part starts at `group` (whose digits end at
/// `end`): local-part characters up to an `@` that makes an email, and no
/// further back.
fn begins_email(hs: &[u8], group: usize, end: usize) -> bool {
    let at = end
        + hs[end..]
            .iter()
            .take_while(|&&b| crate::builtin::is_local(b))
            .count();
    hs.get(at) == Some(&b'@') && crate::builtin::email(hs, at).is_some_and(|(l, _)| l == group)
}

/// Luhn over the digits of `run` (separators skipped): from the right,
/// every second digit doubled, the sum a multiple of ten.
fn luhn_valid(run: &[u8]) -> bool {
    let sum: u32 = run
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .enumerate()
        .map(|(k, &b)| {
            let d = usize::from(b - b'0');
            if k % 2 == 1 { DOUBLED[d] } else { d as u32 }
        })
        .sum();
    sum % 10 == 0
}

fn check_ssn(hs: &[u8], g: &[Group; 3], run_free: bool, sink: &mut Sink<'_>) {
    let [a, b, c] = g;
    if a.len() != 3 || b.len() != 2 || c.len() != 4 || b.sep != c.sep {
        return;
    }
    // A group that is not the first of its run follows a separator, which is
    // never a letter or digit.
    let left_free = a.sep != 0 || run_free;
    if left_free
        && free_after(hs, c.end)
        && ssn_valid(
            &hs[a.start..a.end],
            &hs[b.start..b.end],
            &hs[c.start..c.end],
        )
    {
        sink.emit(ClassId::US_SSN, a.start, c.end);
    }
}
