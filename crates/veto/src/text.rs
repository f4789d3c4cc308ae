//! Text for terminals. Paths, server names and reasons come from requests
//! a machine sent; printed as they are, `%1b[32mALLOW` decoded from a path
//! or an escape in a TLS server name could paint a refusal as a fake
//! `ALLOW` line, move the cursor or clear the screen. Every human-readable
//! output passes record text through [`printable`]; JSON output is escaped
//! by its encoder.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a character could act on a terminal instead of being shown:
/// C0 and C1 controls, DEL, and the bidirectional overrides that reorder
/// what is shown (the "Trojan Source" characters).
fn acts(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `s` with every such character shown as an escape (`\x1b`, `\u{202e}`).
/// Borrows when there is none (the usual case).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !acts(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_acts_on_a_terminal() {
        assert!(matches!(printable("/plain/path ünïcode"), Cow::Borrowed(_)));
        assert_eq!(printable("/a\x1b[32mALLOW"), "/a\\x1b[32mALLOW");
        assert_eq!(printable("x\ny\r\t"), "x\\x0ay\\x0d\\x09");
        assert_eq!(printable("a\u{7f}\u{9b}b"), "a\\x7f\\x9bb");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }
}
