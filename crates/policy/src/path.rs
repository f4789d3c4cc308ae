//! Request paths and path globs.
//!
//! A path is matched after percent-decoding (except `%2F`, which would turn
//! one segment into two), reading `\` as `/`, merging repeated slashes,
//! dropping `;` parameters from each segment (as servlet containers do) and
//! removing dot segments, so `/a/%2e%2e/admin`, `//admin`, `/admin;x` and
//! `/admin` cannot be told apart by a rule: some server would not either.
//! What is forwarded is put in the same form first (`target.rs`).

use std::borrow::Cow;

/// Normalises a request target's path for matching: drops the query and
/// fragment, percent-decodes everything but `%2F`, reads `\` as `/`,
/// merges slashes, drops `;` parameters, removes dot segments. Borrows when
/// nothing needs to change.
pub fn normalize_path(target: &str) -> Cow<'_, str> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let raw = &target[..end];
    let needs_decode = raw.contains('%');
    let needs_work = raw.contains(['\\', ';'])
        || raw.contains("//")
        || raw.split('/').any(|s| s == "." || s == "..");
    if !needs_decode && !needs_work && raw.starts_with('/') {
        return Cow::Borrowed(raw);
    }
    let decoded: Cow<'_, str> = if needs_decode {
        Cow::Owned(percent_decode_keep_slash(raw))
    } else {
        Cow::Borrowed(raw)
    };
    Cow::Owned(remove_dot_segments(&decoded.replace('\\', "/")))
}

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_keep_slash(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let v = h * 16 + l;
            if v == b'/' {
                out.extend_from_slice(b"%2F");
            } else {
                out.push(v);
            }
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 section 5.2.4, on an absolute path, with empty segments merged
/// away. The result starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segs.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segs.iter().enumerate() {
        // `;` parameters are not part of the segment for matching.
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len() + 1);
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing || s.is_empty() {
        s.push('/');
    }
    s
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    /// `**`: zero or more whole segments.
    Any,
    /// A segment with `*` wildcards that stay within it.
    Glob(Box<str>),
}

/// A compiled path glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob {
    text: Box<str>,
    segs: Box<[Seg]>,
}

/// Paths longer than this many segments are matched on the heap; the common
/// case uses a bitmask of reachable positions on the stack.
const FAST_SEGS: usize = 127;

impl PathGlob {
    pub fn parse(text: &str) -> Result<PathGlob, String> {
        if !text.starts_with('/') {
            return Err(format!("path glob `{text}` must start with `/`"));
        }
        if text.contains(['?', '#']) {
            return Err(format!(
                "path glob `{text}` has a query or fragment; paths are matched without them"
            ));
        }
        let mut segs = Vec::new();
        for s in text[1..].split('/') {
            if s == "**" {
                segs.push(Seg::Any);
            } else if s.contains("**") {
                return Err(format!(
                    "path glob `{text}`: `**` must be a whole segment (`/a/**/b`)"
                ));
            } else {
                segs.push(Seg::Glob(s.into()));
            }
        }
        Ok(PathGlob {
            text: text.into(),
            segs: segs.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches a normalised path (see [`normalize_path`]).
    pub fn matches(&self, path: &str) -> bool {
        let path = path.strip_prefix('/').unwrap_or(path);
        let n = path.split('/').count();
        if n > FAST_SEGS {
            let segs: Vec<&str> = path.split('/').collect();
            return self.matches_slow(&segs);
        }
        let mut buf: [&str; FAST_SEGS] = [""; FAST_SEGS];
        for (slot, s) in buf.iter_mut().zip(path.split('/')) {
            *slot = s;
        }
        let segs = &buf[..n];
        // Bit j set: the pattern so far matches the first j path segments.
        let mut reach: u128 = 1;
        let all = if n + 1 >= 128 {
            u128::MAX
        } else {
            (1u128 << (n + 1)) - 1
        };
        for seg in self.segs.iter() {
            reach = match seg {
                Seg::Any => {
                    // Everything from the lowest reachable position onwards.
                    if reach == 0 {
                        return false;
                    }
                    all & !((1u128 << reach.trailing_zeros()) - 1)
                }
                Seg::Glob(g) => {
                    let mut next = 0u128;
                    let mut r = reach;
                    while r != 0 {
                        let j = r.trailing_zeros() as usize;
                        r &= r - 1;
                        if j < n && wildcard(g.as_bytes(), segs[j].as_bytes()) {
                            next |= 1u128 << (j + 1);
                        }
                    }
                    next
                }
            };
            if reach == 0 {
                return false;
            }
        }
        reach & (1u128 << n) != 0
    }

    fn matches_slow(&self, segs: &[&str]) -> bool {
        let n = segs.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for seg in self.segs.iter() {
            let mut next = vec![false; n + 1];
            match seg {
                Seg::Any => {
                    if let Some(first) = reach.iter().position(|&r| r) {
                        next[first..].iter_mut().for_each(|x| *x = true);
                    }
                }
                Seg::Glob(g) => {
                    for j in 0..n {
                        if reach[j] && wildcard(g.as_bytes(), segs[j].as_bytes()) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        reach[n]
    }
}

/// `*` matches any run of bytes within a segment. Greedy with one backtrack
/// point, which is linear enough for path segments.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize_path("/a/b?x=1"), "/a/b");
        assert_eq!(normalize_path("/a/%2e%2e/admin/x"), "/admin/x");
        assert_eq!(normalize_path("/a/../admin/"), "/admin/");
        assert_eq!(normalize_path("/a%2Fb/c"), "/a%2Fb/c");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize_path("/%41dmin"), "/Admin");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path("/a/."), "/a/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/%zz"), "/%zz");
        assert_eq!(normalize_path("/%4"), "/%4");
        assert_eq!(normalize_path("//admin//users"), "/admin/users");
        assert_eq!(normalize_path("/a\\..\\admin"), "/admin");
        assert_eq!(normalize_path("/a%5C..%5Cadmin"), "/admin");
        assert_eq!(normalize_path("/admin;jsessionid=1/users"), "/admin/users");
        assert_eq!(normalize_path("/a/b//"), "/a/b/");
    }

    #[test]
    fn globs() {
        let g = PathGlob::parse("/admin/**").unwrap();
        for p in ["/admin", "/admin/", "/admin/a/b"] {
            assert!(g.matches(p), "{p}");
        }
        assert!(!g.matches("/administrator"));
        assert!(!g.matches("/Admin"));
        let g = PathGlob::parse("/v*/users/*").unwrap();
        assert!(g.matches("/v1/users/42"));
        assert!(!g.matches("/v1/users/42/x"));
        assert!(!g.matches("/v1/x/users/42"));
        let g = PathGlob::parse("/a/**/z").unwrap();
        assert!(g.matches("/a/z"));
        assert!(g.matches("/a/b/c/z"));
        assert!(!g.matches("/a/b/c"));
        assert!(PathGlob::parse("/**").unwrap().matches("/"));
        assert!(PathGlob::parse("a").is_err());
        assert!(PathGlob::parse("/a**").is_err());
        let long = "/x".repeat(300);
        assert!(PathGlob::parse("/**/x").unwrap().matches(&long));
        assert!(!PathGlob::parse("/**/y").unwrap().matches(&long));
    }
}
