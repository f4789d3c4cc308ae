//! `jwt`: three base64url parts joined by dots, the first decoding to a JSON
//! object with an `alg` member.
//!
//! The header is decoded and parsed as a stream, so a candidate costs no
//! allocation and no more work than its own length. A small validating JSON
//! reader is written here rather than pulling in serde_json: it must run on
//! the proxy's per-request path and only ever needs "is this an object, and
//! does it have `alg`".

use crate::builtin::free_before;

/// Headers longer than this (base64url characters) are not considered: even
/// one carrying an `x5c` certificate chain stays well below it.
const MAX_HEADER: usize = 64 * 1024;
/// Nesting deeper than this is not a JWT header.
const MAX_DEPTH: u32 = 32;

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Where the run of base64url characters starting at `from` ends.
pub(crate) fn b64url_run(hs: &[u8], from: usize) -> usize {
    from + hs
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| is_b64url(b))
        .count()
}

/// A JWT whose header starts at `s` (where the prefilter saw the base64url
/// encoding of `{` followed by `"` or white space) and ends at `h_end`, the
/// end of its base64url run. Returns the end of the token.
pub(crate) fn jwt(hs: &[u8], s: usize, h_end: usize) -> Option<usize> {
    if !free_before(hs, s) {
        return None;
    }
    if h_end - s > MAX_HEADER || hs.get(h_end) != Some(&b'.') {
        return None;
    }
    let p_end = b64url_run(hs, h_end + 1);
    if p_end == h_end + 1 || hs.get(p_end) != Some(&b'.') {
        return None;
    }
    // The signature may be empty (`alg: none` tokens still carry claims).
    let end = b64url_run(hs, p_end + 1);
    header_has_alg(&hs[s..h_end]).then_some(end)
}

/// Decodes unpadded base64url one byte at a time.
struct B64<'a> {
    s: &'a [u8],
    buf: [u8; 3],
    len: u8,
    pos: u8,
}

fn b64_val(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'-' => 62,
        _ => 63,
    }
}

impl Iterator for B64<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        if self.pos == self.len {
            let n = self.s.len().min(4);
            if n < 2 {
                return None;
            }
            let mut v = 0u32;
            for i in 0..4 {
                v = v << 6 | u32::from(self.s.get(i).filter(|_| i < n).map_or(0, |&b| b64_val(b)));
            }
            self.buf = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
            self.len = (n - 1) as u8;
            self.pos = 0;
            self.s = &self.s[n..];
        }
        let b = self.buf[usize::from(self.pos)];
        self.pos += 1;
        Some(b)
    }
}

fn header_has_alg(b64: &[u8]) -> bool {
    if b64.len() % 4 == 1 {
        return false;
    }
    let mut r = Reader {
        it: B64 {
            s: b64,
            buf: [0; 3],
            len: 0,
            pos: 0,
        },
        peeked: None,
    };
    r.top_object_has_alg() == Some(true)
}

/// A JSON reader over a byte stream; every method returns `None` on invalid
/// JSON.
struct Reader<I: Iterator<Item = u8>> {
    it: I,
    peeked: Option<u8>,
}

impl<I: Iterator<Item = u8>> Reader<I> {
    fn peek(&mut self) -> Option<u8> {
        if self.peeked.is_none() {
            self.peeked = self.it.next();
        }
        self.peeked
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek();
        self.peeked = None;
        b
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.bump()? == b).then_some(())
    }

    fn top_object_has_alg(&mut self) -> Option<bool> {
        self.ws();
        self.expect(b'{')?;
        let found = self.members(0)?;
        self.ws();
        // Nothing may follow the object.
        self.peek().is_none().then_some(found)
    }

    /// The members of an object whose `{` was consumed, through its `}`.
    /// Returns whether one of the keys is `alg`.
    fn members(&mut self, depth: u32) -> Option<bool> {
        let mut found = false;
        self.ws();
        if self.peek()? == b'}' {
            self.bump();
            return Some(false);
        }
        loop {
            self.ws();
            self.expect(b'"')?;
            found |= self.string_equals(b"alg")?;
            self.ws();
            self.expect(b':')?;
            self.value(depth + 1)?;
            self.ws();
            match self.bump()? {
                b',' => continue,
                b'}' => return Some(found),
                _ => return None,
            }
        }
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.bump()? {
            b'{' => self.members(depth).map(|_| ()),
            b'[' => {
                self.ws();
                if self.peek()? == b']' {
                    self.bump();
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.bump()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'"' => self.string_equals(b"").map(|_| ()),
            b't' => self.word(b"rue"),
            b'f' => self.word(b"alse"),
            b'n' => self.word(b"ull"),
            b @ (b'-' | b'0'..=b'9') => self.number(b),
            _ => None,
        }
    }

    fn word(&mut self, rest: &[u8]) -> Option<()> {
        rest.iter().try_for_each(|&b| self.expect(b))
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.bump();
            n += 1;
        }
        n
    }

    fn number(&mut self, first: u8) -> Option<()> {
        let first = if first == b'-' { self.bump()? } else { first };
        if !first.is_ascii_digit() {
            return None;
        }
        if first != b'0' {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.bump();
            (self.digits() > 0).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    /// The rest of a string whose `"` was consumed. Returns whether its
    /// decoded value equals `want` (ASCII), so `"\u0061lg"` is `alg` too.
    fn string_equals(&mut self, want: &[u8]) -> Option<bool> {
        let mut i = 0usize;
        let mut eq = true;
        loop {
            let c: u32 = match self.bump()? {
                b'"' => return Some(eq && i == want.len()),
                b'\\' => match self.bump()? {
                    b @ (b'"' | b'\\' | b'/') => u32::from(b),
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => 10,
                    b'r' => 13,
                    b't' => 9,
                    b'u' => {
                        let mut v = 0u32;
                        for _ in 0..4 {
                            v = v << 4 | u32::from(crate::decode::hex_val(self.bump()?)?);
                        }
                        v
                    }
                    _ => return None,
                },
                b if b < 0x20 => return None,
                b => u32::from(b),
            };
            eq = eq && want.get(i).is_some_and(|&w| u32::from(w) == c);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in s.as_bytes().chunks(3) {
            let v = c
                .iter()
                .enumerate()
                .fold(0u32, |v, (i, &b)| v | u32::from(b) << (16 - 8 * i));
            for i in 0..=c.len() {
                out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn header_check() {
        assert!(header_has_alg(
            b64(r#"{"alg":"HS256","typ":"JWT"}"#).as_bytes()
        ));
        assert!(header_has_alg(
            b64("{ \"typ\" : [1, {\"a\":null}], \"alg\" : -1.5e3 }\n").as_bytes()
        ));
        assert!(header_has_alg(b64(r#"{"\u0061lg":"none"}"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"typ":"JWT"}"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"algo":"x"}"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"x":{"alg":1}}"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"alg":"x"} x"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"alg":01}"#).as_bytes()));
        assert!(!header_has_alg(b64(r#"{"alg":"x",}"#).as_bytes()));
        assert!(!header_has_alg(b"e"));
        let deep = format!("{{\"alg\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(!header_has_alg(b64(&deep).as_bytes()));
    }

    #[test]
    fn token_shape() {
        let h = b64(r#"{"alg":"HS256"}"#);
        let at0 = |t: &str| jwt(t.as_bytes(), 0, b64url_run(t.as_bytes(), 0));
        let t = format!("{h}.eyJzdWIiOiIxIn0.sig");
        assert_eq!(at0(&t), Some(t.len()));
        let none = format!("{h}.eyJzdWIiOiIxIn0.");
        assert_eq!(at0(&none), Some(none.len()));
        assert_eq!(at0(&format!("{h}..sig")), None);
        assert_eq!(at0(&format!("{h}.x")), None);
    }
}
