//! The request target veto forwards (policy `paths:`).
//!
//! A rule is matched against a normalised path ([`crate::normalize_path`]);
//! a server routes on its own reading of the path it receives. When the two
//! readings differ, a `/admin/**` deny can be walked around with
//! `//admin`, `/x/../admin` or `/.//admin` (nginx merges slashes, most
//! servers remove dot segments). So veto decides on exactly what it sends:
//! the path is put in one normal form and that form is both forwarded and
//! matched, or (with `normalize: refuse`) a path not already in it is
//! refused. The shape follows Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`.

use crate::path::hex;
use std::borrow::Cow;

/// What happens to a path that is not in normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalize {
    /// Forward the normal form (the default).
    Forward,
    /// Refuse the request (400).
    Refuse,
}

/// What happens to `%2F` and `%5C` (an encoded `/` or `\`): servers
/// disagree on whether they separate segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request (400): the default, since no rule can know how
    /// the server will split the path.
    Refuse,
    /// Forward them encoded; rules see `%2F` inside one segment.
    Keep,
    /// Decode them to `/` and forward that.
    Decode,
}

/// The policy's `paths:` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRules {
    pub normalize: Normalize,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> PathRules {
        PathRules {
            normalize: Normalize::Forward,
            escaped_slashes: EscapedSlashes::Refuse,
        }
    }
}

/// Why a target is refused (the 400's reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the path has an invalid percent-encoding (`{0}`)")]
    BadPercent(String),
    #[error(
        "the path has an encoded slash or backslash (`{0}`), which servers split differently; the policy refuses them (paths.escaped_slashes)"
    )]
    EscapedSlash(String),
    #[error(
        "the path has a segment `{0}` that some servers read as `..` (its `;` parameters removed)"
    )]
    DotParams(String),
    #[error(
        "the path `{raw}` is not in normal form (it would be `{normal}`); the policy refuses such paths (paths.normalize: refuse)"
    )]
    NotNormal { raw: String, normal: String },
    #[error(
        "the path has a segment `{0}` of `;` parameters only before a `..`: servers disagree on which segment the `..` removes"
    )]
    ParamsBeforeDots(String),
    #[error("the request target must start with `/`")]
    NotAbsolute,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether a path needs any work at all: the common case is a plain path,
/// borrowed as it is.
fn plain(path: &str) -> bool {
    let b = path.as_bytes();
    b.first() == Some(&b'/')
        && !b.iter().any(|c| matches!(c, b'%' | b'\\'))
        && !path.contains("//")
        && !path
            .split('/')
            .any(|s| s == "." || s == ".." || s.starts_with(".;") || s.starts_with("..;"))
}

/// The target to forward: the path in normal form, the query as sent.
///
/// The normal form: percent-encodings of unreserved characters decoded
/// (`%41` is `A`, `%2e` is `.`), the others kept with upper-case hex; `\`
/// read as `/`; repeated slashes merged; dot segments removed (RFC 3986
/// 5.2.4). `%2F`/`%5C` follow `escaped_slashes`. A fragment is dropped (it
/// never belongs in a request). Borrows when the target is already normal.
pub fn forward_target<'a>(target: &'a str, rules: &PathRules) -> Result<Cow<'a, str>, TargetError> {
    let (before_fragment, _) = target.split_once('#').unwrap_or((target, ""));
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    if !path.starts_with('/') {
        return Err(TargetError::NotAbsolute);
    }
    if plain(path) {
        return Ok(Cow::Borrowed(before_fragment));
    }
    // Pass 1: percent-encodings and backslashes, byte by byte.
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    let end = (i + 3).min(b.len());
                    return Err(TargetError::BadPercent(
                        String::from_utf8_lossy(&b[i..end]).into_owned(),
                    ));
                };
                let v = h * 16 + l;
                if v == b'/' || v == b'\\' {
                    match rules.escaped_slashes {
                        EscapedSlashes::Refuse => {
                            return Err(TargetError::EscapedSlash(
                                String::from_utf8_lossy(&b[i..i + 3]).into_owned(),
                            ));
                        }
                        EscapedSlashes::Keep => {
                            decoded.push_str(if v == b'/' { "%2F" } else { "%5C" })
                        }
                        EscapedSlashes::Decode => decoded.push('/'),
                    }
                } else if is_unreserved(v) {
                    decoded.push(char::from(v));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => {
                decoded.push('/');
                i += 1;
            }
            _ => {
                // Copy the run up to the next byte of interest whole, so
                // multi-byte characters stay intact.
                let start = i;
                while i < b.len() && !matches!(b[i], b'%' | b'\\') {
                    i += 1;
                }
                decoded.push_str(&path[start..i]);
            }
        }
    }
    // Pass 2: segments. Empty segments (repeated slashes) are merged away,
    // dot segments removed; a trailing slash is kept.
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = decoded[1..].split('/').collect();
    let last = segs.len().saturating_sub(1);
    let last_dots = segs.iter().rposition(|s| *s == "..");
    let mut trailing = false;
    for (n, seg) in segs.iter().enumerate() {
        let bare = seg.split(';').next().unwrap_or("");
        if seg.contains(';') && (bare == "." || bare == "..") {
            return Err(TargetError::DotParams((*seg).to_string()));
        }
        // `/a/;x/..`: one server removes `;x` (a segment to it), another
        // `a` (it strips parameters first, and `;x` is then nothing).
        if seg.contains(';') && bare.is_empty() && last_dots.is_some_and(|d| d > n) {
            return Err(TargetError::ParamsBeforeDots((*seg).to_string()));
        }
        match *seg {
            "" => trailing = n == last,
            "." => trailing = n == last,
            ".." => {
                out.pop();
                trailing = n == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(before_fragment.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing || normal.is_empty() {
        normal.push('/');
    }
    if rules.normalize == Normalize::Refuse && normal != path {
        return Err(TargetError::NotNormal {
            raw: path.to_string(),
            normal,
        });
    }
    if let Some(q) = query {
        normal.push('?');
        normal.push_str(q);
    }
    Ok(Cow::Owned(normal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(t: &str) -> Result<String, TargetError> {
        forward_target(t, &PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn normal_form() {
        assert_eq!(fwd("/a/b?x=1").unwrap(), "/a/b?x=1");
        assert!(matches!(
            forward_target("/a/b?x", &PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(fwd("//admin/users").unwrap(), "/admin/users");
        assert_eq!(fwd("/x//../admin").unwrap(), "/admin");
        assert_eq!(fwd("/.//admin").unwrap(), "/admin");
        assert_eq!(fwd("/a/%2e%2e/admin/").unwrap(), "/admin/");
        assert_eq!(fwd("/%41dmin?q=%2e").unwrap(), "/Admin?q=%2e");
        assert_eq!(fwd("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(fwd("/a\\..\\admin").unwrap(), "/admin");
        assert_eq!(fwd("/a/b/").unwrap(), "/a/b/");
        assert_eq!(fwd("/a/b//").unwrap(), "/a/b/");
        assert_eq!(fwd("/..").unwrap(), "/");
        assert_eq!(fwd("/a;x=1/b").unwrap(), "/a;x=1/b");
        assert_eq!(fwd("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(fwd("/a#frag").unwrap(), "/a");
    }

    #[test]
    fn refusals() {
        assert!(matches!(fwd("/a%2Fb"), Err(TargetError::EscapedSlash(_))));
        assert!(matches!(fwd("/a%5cb"), Err(TargetError::EscapedSlash(_))));
        assert!(matches!(
            fwd("/a/..;/admin"),
            Err(TargetError::DotParams(_))
        ));
        assert!(matches!(
            fwd("//;/.3;/;/.."),
            Err(TargetError::ParamsBeforeDots(_))
        ));
        assert_eq!(fwd("/a/;jsessionid=1").unwrap(), "/a/;jsessionid=1");
        assert!(matches!(fwd("/%zz"), Err(TargetError::BadPercent(_))));
        assert!(matches!(fwd("/%4"), Err(TargetError::BadPercent(_))));
        assert!(matches!(fwd("*"), Err(TargetError::NotAbsolute)));
        let keep = PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathRules::default()
        };
        assert_eq!(forward_target("/a%2fb", &keep).unwrap(), "/a%2Fb");
        let decode = PathRules {
            escaped_slashes: EscapedSlashes::Decode,
            ..PathRules::default()
        };
        assert_eq!(
            forward_target("/a%2F..%2Fadmin", &decode).unwrap(),
            "/admin"
        );
        let strict = PathRules {
            normalize: Normalize::Refuse,
            ..PathRules::default()
        };
        assert!(matches!(
            forward_target("//admin", &strict),
            Err(TargetError::NotNormal { .. })
        ));
        assert_eq!(forward_target("/admin?a=b", &strict).unwrap(), "/admin?a=b");
    }
}
