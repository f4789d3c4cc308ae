//! Validators for the built-in classes. Each takes the haystack and the
//! position of a candidate found by the prefilter and returns the end of the
//! match, or `None`. None of them looks further than the candidate needs, so
//! the whole scan stays linear.

/// The spec's rule for every built-in class: a match never touches another
/// ASCII digit or letter on either side.
#[inline]
pub(crate) fn free_before(hs: &[u8], start: usize) -> bool {
    start == 0 || hs.get(start - 1).is_none_or(|b| !b.is_ascii_alphanumeric())
}

#[inline]
pub(crate) fn free_after(hs: &[u8], end: usize) -> bool {
    hs.get(end).is_none_or(|b| !b.is_ascii_alphanumeric())
}

fn count_while(hs: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    hs.get(from..)
        .unwrap_or_default()
        .iter()
        .take(max)
        .take_while(|&&b| pred(b))
        .count()
}

fn is_base32_upper(b: u8) -> bool {
    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
}

/// `AKIA`-style prefix at `s` (already matched) + 16 of `A-Z2-7`.
pub(crate) fn aws_access_key(hs: &[u8], s: usize) -> Option<usize> {
    let end = s + 20;
    (free_before(hs, s) && count_while(hs, s + 4, 16, is_base32_upper) == 16 && free_after(hs, end))
        .then_some(end)
}

/// `ghp_`-style prefix at `s` + 36 letters or digits.
pub(crate) fn github_classic(hs: &[u8], s: usize) -> Option<usize> {
    let end = s + 40;
    (free_before(hs, s)
        && count_while(hs, s + 4, 36, |b| b.is_ascii_alphanumeric()) == 36
        && free_after(hs, end))
    .then_some(end)
}

/// `github_pat_` at `s` + 82 letters, digits or `_`.
pub(crate) fn github_fine_grained(hs: &[u8], s: usize) -> Option<usize> {
    let end = s + 11 + 82;
    (free_before(hs, s)
        && count_while(hs, s + 11, 82, |b| b.is_ascii_alphanumeric() || b == b'_') == 82
        && free_after(hs, end))
    .then_some(end)
}

const PK_TAIL: &[u8] = b"PRIVATE KEY-----";
/// How far past the BEGIN line we look for the END line or key body: the
/// largest RSA keys in PEM are about 12 KiB.
const PK_BODY_LIMIT: usize = 64 * 1024;

/// From `p`, the optional words of an armour label (RFC 7468 label
/// characters, single spaces) followed by `PRIVATE KEY-----`; returns the end.
fn private_key_label(hs: &[u8], mut p: usize) -> Option<usize> {
    for _ in 0..16 {
        if hs.get(p..)?.starts_with(PK_TAIL) {
            return Some(p + PK_TAIL.len());
        }
        let w = count_while(hs, p, 65, |b| (0x21..=0x7e).contains(&b));
        if w == 0 || w > 64 || hs.get(p + w) != Some(&b' ') {
            return None;
        }
        p += w + 1;
    }
    None
}

/// The next occurrence of a fixed marker at or after a position, remembered
/// so a scan with many anchors searches each stretch of the haystack once
/// (a fresh search per anchor would make 1 MB of BEGIN lines quadratic).
#[derive(Debug, Default)]
pub(crate) struct NextMarker {
    searched_from: usize,
    found: Option<usize>,
    valid: bool,
}

impl NextMarker {
    pub(crate) fn find(&mut self, hs: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
        let reusable =
            self.valid && self.searched_from <= from && self.found.is_none_or(|at| at >= from);
        if !reusable {
            self.found = memchr::memmem::find(hs.get(from..)?, needle).map(|rel| from + rel);
            self.searched_from = from;
            self.valid = true;
        }
        self.found
    }
}

/// Remembered END and BEGIN positions for [`private_key`], one per scan.
#[derive(Debug, Default)]
pub(crate) struct PemMarkers {
    end: NextMarker,
    begin: NextMarker,
    /// Where the last key's base64 body ran into a BEGIN line. That BEGIN
    /// touches the body's last character, but the body is part of a finding
    /// (redacted with it), so the BEGIN is not glued to foreign text and
    /// starts a key of its own. Without this, redacting the first key would
    /// expose the second to a rescan.
    body_ran_into: Option<usize>,
}

/// `-----BEGIN <words> PRIVATE KEY-----` at `s` (the anchor `-----BEGIN`).
///
/// The class is the armour line, but the finding extends over the key to its
/// END line (or, when there is none before the next BEGIN, over the base64
/// body) so that redacting it masks the key and not just its label.
pub(crate) fn private_key(hs: &[u8], s: usize, marks: &mut PemMarkers) -> Option<usize> {
    let p = s + b"-----BEGIN".len();
    let after_body = marks.body_ran_into == Some(s);
    if !(free_before(hs, s) || after_body) || hs.get(p) != Some(&b' ') {
        return None;
    }
    let armour_end = private_key_label(hs, p + 1)?;
    if !free_after(hs, armour_end) {
        return None;
    }
    let limit = hs.len().min(armour_end + PK_BODY_LIMIT);
    let next_begin = marks
        .begin
        .find(hs, armour_end, b"-----BEGIN")
        .unwrap_or(hs.len());
    let end_line = marks
        .end
        .find(hs, armour_end, b"-----END ")
        .filter(|&at| at < limit && at < next_begin)
        .and_then(|at| private_key_label(hs, at + b"-----END ".len()));
    if let Some(end) = end_line {
        return Some(end);
    }
    let window = &hs[armour_end..limit];
    let body = window
        .iter()
        .take_while(|&&b| {
            b.is_ascii_alphanumeric() || b"+/=\\%".contains(&b) || b.is_ascii_whitespace()
        })
        .count();
    // Trailing whitespace is not part of the key.
    let body = window[..body]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if armour_end + body == next_begin {
        marks.body_ran_into = Some(next_begin);
    }
    Some(armour_end + body)
}

/// Characters of an e-mail local part. Deliberately narrower than RFC 5322's
/// atext: `=`, `&`, `'`, `/`, `%` and friends are legal but, in practice, are
/// far more often the query string, an escape or quoting around an address,
/// and including them would make a finding (and its redaction) swallow `to=`
/// or `a=1&`.
pub(crate) fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')
}

fn is_label(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// `local@domain` around the `@` at `at`: the domain has a dot and ends with
/// a label of two or more letters. Returns the match range.
pub(crate) fn email(hs: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut l = at;
    while l > 0 && is_local(hs[l - 1]) {
        l -= 1;
    }
    // A local part does not start with a dot ("...see.a@b.com" is "a@b.com").
    while l < at && hs[l] == b'.' {
        l += 1;
    }
    if l == at {
        return None;
    }
    // Labels separated by single dots; the match ends after the last label
    // that is all letters (2+) and is not the first label.
    let mut p = at + 1;
    let mut labels = 0usize;
    let mut end = None;
    loop {
        let n = count_while(hs, p, usize::MAX, is_label);
        if n == 0 {
            break;
        }
        if labels > 0 && n >= 2 && hs[p..p + n].iter().all(u8::is_ascii_alphabetic) {
            end = Some(p + n);
        }
        labels += 1;
        p += n;
        if hs.get(p) == Some(&b'.') && hs.get(p + 1).is_some_and(|&b| is_label(b)) {
            p += 1;
        } else {
            break;
        }
    }
    let end = end?;
    free_after(hs, end).then_some((l, end))
}

/// An IBAN starting at `s`, where `hs[s..s+2]` are upper-case letters and
/// `hs[s+2..s+4]` digits (the caller checked, and that `s` is free before).
///
/// Upper case only: ISO 13616's electronic format is upper case, and
/// accepting lower case would turn about 1 in 97 lower-case identifiers of
/// the right shape (hex digests, base36 ids) into IBANs.
pub(crate) fn iban(hs: &[u8], s: usize) -> Option<usize> {
    let ok = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let mut p = s + 4;
    let mut n = 4;
    if hs.get(p) == Some(&b' ') && hs.get(p + 1).is_some_and(|&b| ok(b)) {
        // Groups of four separated by single spaces; the last may be short.
        while hs.get(p) == Some(&b' ') && n <= 34 {
            let g = count_while(hs, p + 1, 5, ok);
            if g == 0 {
                break;
            }
            if g == 5 {
                return None;
            }
            p += 1 + g;
            n += g;
            if g < 4 {
                break;
            }
        }
    } else {
        let g = count_while(hs, p, 31, ok);
        p += g;
        n += g;
    }
    if !(15..=34).contains(&n) || !free_after(hs, p) {
        return None;
    }
    let rearranged = hs[s + 4..p].iter().chain(&hs[s..s + 4]);
    let mut r: u32 = 0;
    for &b in rearranged {
        if b.is_ascii_digit() {
            r = (r * 10 + u32::from(b - b'0')) % 97;
        } else if b.is_ascii_uppercase() {
            r = (r * 100 + u32::from(b - b'A' + 10)) % 97;
        }
    }
    (r == 1).then_some(p)
}

/// Area not 000, 666 or 900-999; group not 00; serial not 0000.
pub(crate) fn ssn_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let num = |d: &[u8]| d.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0'));
    let (a, g, s) = (num(area), num(group), num(serial));
    a != 0 && a != 666 && a < 900 && g != 0 && s != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_extents() {
        let hs = b"to=...john.doe+x@mail.example.com. next";
        let at = hs.iter().position(|&b| b == b'@').unwrap();
        let (s, e) = email(hs, at).unwrap();
        assert_eq!(&hs[s..e], b"john.doe+x@mail.example.com");
        let hs = b"a@b.com.x1";
        assert_eq!(email(hs, 1), Some((0, 7)));
        assert_eq!(email(b"a@localhost", 1), None);
        assert_eq!(email(b"a@b.c", 1), None);
        assert_eq!(email(b"a@b.c0m", 1), None);
        assert_eq!(email(b"@b.com", 0), None);
        assert_eq!(email(b"a@b.comX", 1), Some((0, 8)));
    }

    #[test]
    fn iban_checksum_and_groups() {
        assert_eq!(iban(b"DE89370400440532013000", 0), Some(22));
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00", 0), Some(27));
        assert_eq!(iban(b"DE88370400440532013000", 0), None);
        assert_eq!(iban(b"DE89 37040044 0532 0130 00", 0), None);
        assert_eq!(iban(b"GB82WEST12345698765432", 0), Some(22));
        assert_eq!(iban(b"GB82west12345698765432", 0), None);
    }

    #[test]
    fn private_key_extends_to_end_line() {
        let pk = |hs: &[u8]| private_key(hs, 0, &mut PemMarkers::default());
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\nAAA=\n-----END RSA PRIVATE KEY-----\nx";
        assert_eq!(pk(pem), Some(pem.len() - 2));
        let cut = b"-----BEGIN PRIVATE KEY-----\nMIIB\nAA==\n\n\"}";
        assert_eq!(pk(cut), Some(cut.len() - 4));
        // The END line of the next key does not belong to this one.
        let two = b"-----BEGIN PRIVATE KEY-----\nAA\n-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----";
        assert_eq!(pk(two), Some(30));
        assert_eq!(pk(b"-----BEGIN PUBLIC KEY-----"), None);
        assert_eq!(pk(b"-----BEGIN  PRIVATE KEY-----"), None);
    }
}
