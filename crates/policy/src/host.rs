//! Destination hosts and host patterns.
//!
//! Both sides go through one normaliser (lower case, trailing dot removed,
//! IDN to punycode, WHATWG IPv4 forms read as IPv4), so a pattern and a
//! request can never disagree about what a name means.

use std::net::{IpAddr, Ipv6Addr};

/// A normalised destination host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(Box<str>),
    Ip(IpAddr),
}

/// A borrowed view of a [`Host`], which is what a decision is made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRef<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

impl Host {
    pub fn as_ref(&self) -> HostRef<'_> {
        match self {
            Host::Name(n) => HostRef::Name(n),
            Host::Ip(ip) => HostRef::Ip(*ip),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl std::fmt::Display for HostRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRef::Name(n) => f.write_str(n),
            HostRef::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("host `{0}` has an empty label")]
    EmptyLabel(String),
    #[error("host `{0}` is not a valid host name or address")]
    Invalid(String),
}

/// Normalises a destination host as the policy language defines it.
///
/// Accepts a bracketed or bare IPv6 literal.
pub fn normalize_host(input: &str) -> Result<Host, HostError> {
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = input.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::Invalid(input.to_string()));
    }
    if input.contains(':') {
        return input
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::Invalid(input.to_string()));
    }
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    if trimmed.split('.').any(str::is_empty) {
        return Err(HostError::EmptyLabel(input.to_string()));
    }
    // Fast path: an already-normal name skips the WHATWG machinery. A name
    // whose last label starts with a digit may be an IPv4 form (`127.1`,
    // `0x7f.1`), so it always takes the full path.
    let last = trimmed.rsplit('.').next().unwrap_or(trimmed);
    let simple = trimmed
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !trimmed.starts_with("xn--")
        && !trimmed.contains(".xn--")
        && !last.starts_with(|c: char| c.is_ascii_digit());
    if simple {
        return Ok(Host::Name(trimmed.into()));
    }
    match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(d)) => {
            if d.is_empty() || d.split('.').any(str::is_empty) {
                return Err(HostError::EmptyLabel(input.to_string()));
            }
            Ok(Host::Name(d.into_boxed_str()))
        }
        Ok(url::Host::Ipv4(ip)) => Ok(Host::Ip(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(Host::Ip(IpAddr::V6(ip))),
        Err(_) => Err(HostError::Invalid(input.to_string())),
    }
}

/// A name `normalize_host` returns as it is: lower-case ASCII letters,
/// digits, `-` and `.`, no empty label, no trailing dot, no punycode label
/// to check, and a last label that cannot make it an IPv4 form.
fn is_normal_name(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if first == b'.' || last == b'.' {
        return false;
    }
    let mut prev = b'.';
    for &c in b {
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || (c == b'.' && prev == b'.')
        {
            return false;
        }
        prev = c;
    }
    let last_label = s.rsplit('.').next().unwrap_or(s);
    !last_label.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("xn--")
        && !s.contains(".xn--")
}

/// A host pattern of the policy language.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `api.stripe.com`: that host only.
    Exact(Box<str>),
    /// `*.example.com`, stored as `example.com`: every subdomain, never the apex.
    Suffix(Box<str>),
    /// `*` alone: every host name (never an IP literal).
    AnyName,
}

impl HostPattern {
    /// Parses a pattern; the error is a message for the policy author.
    pub fn parse(input: &str) -> Result<HostPattern, String> {
        if input == "*" {
            return Ok(HostPattern::AnyName);
        }
        // Fast path: a name (or `*.` and a name) that is already normal,
        // which is what the checks below and `normalize_host` accept
        // unchanged.
        let (suffix, rest) = match input.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if is_normal_name(rest) {
            let name: Box<str> = rest.into();
            return Ok(if suffix {
                HostPattern::Suffix(name)
            } else {
                HostPattern::Exact(name)
            });
        }
        if input.contains("://") {
            return Err(format!(
                "host pattern `{input}` has a scheme; write the host alone"
            ));
        }
        if input.contains('/') {
            return Err(format!(
                "host pattern `{input}` has a path; paths go in `paths`"
            ));
        }
        if input.contains('[') || input.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "host pattern `{input}` is an IP address; host patterns never match IP literals, use `cidrs`"
            ));
        }
        if input.contains(':') {
            return Err(format!(
                "host pattern `{input}` has a port; ports go in `ports`"
            ));
        }
        if rest.contains('*') {
            return Err(format!(
                "host pattern `{input}`: `*` is allowed only alone or as a whole first label (`*.example.com`)"
            ));
        }
        let name = match normalize_host(rest) {
            Ok(Host::Name(n)) => n,
            Ok(Host::Ip(_)) => {
                return Err(format!(
                    "host pattern `{input}` is an IP address; host patterns never match IP literals, use `cidrs`"
                ));
            }
            Err(HostError::EmptyLabel(_) | HostError::Empty) => {
                return Err(format!("host pattern `{input}` has an empty label"));
            }
            Err(HostError::Invalid(_)) => {
                return Err(format!("host pattern `{input}` is not a valid host name"));
            }
        };
        Ok(if suffix {
            HostPattern::Suffix(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether the pattern matches a normalised host.
    pub fn matches(&self, host: HostRef<'_>) -> bool {
        let HostRef::Name(name) = host else {
            return false;
        };
        match self {
            HostPattern::AnyName => true,
            HostPattern::Exact(e) => **e == *name,
            HostPattern::Suffix(s) => {
                name.len() > s.len()
                    && name.ends_with(&**s)
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
            HostPattern::AnyName => f.write_str("*"),
        }
    }
}

/// The proper suffixes of a name at label boundaries, longest first:
/// `a.b.c` yields `b.c`, then `c`. Used to look up `*.` patterns without
/// allocating.
pub fn parent_suffixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        normalize_host(s).unwrap()
    }

    #[test]
    fn normalises_like_the_spec() {
        assert_eq!(
            name("API.Example.COM."),
            Host::Name("api.example.com".into())
        );
        assert_eq!(
            name("bücher.example"),
            Host::Name("xn--bcher-kva.example".into())
        );
        assert_eq!(name("127.1"), Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(name("0x7f.0.0.1"), Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(name("2130706433"), Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(name("[::1]"), Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            name("::ffff:1.2.3.4"),
            Host::Ip("::ffff:1.2.3.4".parse().unwrap())
        );
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host(".").is_err());
        assert!(normalize_host("").is_err());
        assert!(normalize_host("a b").is_err());
    }

    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.Example.com.").unwrap();
        assert_eq!(p, HostPattern::Suffix("example.com".into()));
        assert!(p.matches(name("a.b.example.com").as_ref()));
        assert!(!p.matches(name("example.com").as_ref()));
        assert!(!p.matches(name("badexample.com").as_ref()));
        assert!(HostPattern::AnyName.matches(name("x").as_ref()));
        assert!(!HostPattern::AnyName.matches(name("1.2.3.4").as_ref()));
        for bad in [
            "a.*.com",
            "*example.com",
            "**.a",
            "a..b",
            "x.com:443",
            "http://x.com",
            "x.com/a",
            "10.0.0.1",
            "*.",
            "",
            "::1",
            "[::1]",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parent_suffixes("a.b.c").collect::<Vec<_>>(), ["b.c", "c"]);
    }

    /// `HostPattern::parse` as it was before its fast path.
    fn parse_without_fast_path(input: &str) -> Result<HostPattern, String> {
        if input == "*" {
            return Ok(HostPattern::AnyName);
        }
        if input.contains("://") || input.contains('/') {
            return Err("scheme or path".into());
        }
        if input.contains('[') || input.parse::<IpAddr>().is_ok() {
            return Err("ip".into());
        }
        if input.contains(':') {
            return Err("port".into());
        }
        let (suffix, rest) = match input.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if rest.contains('*') {
            return Err("star".into());
        }
        match normalize_host(rest) {
            Ok(Host::Name(n)) if suffix => Ok(HostPattern::Suffix(n)),
            Ok(Host::Name(n)) => Ok(HostPattern::Exact(n)),
            _ => Err("invalid".into()),
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// The fast path accepts exactly what the full path accepts, as it
        /// would.
        #[test]
        fn fast_path_agrees(input in "(\\*\\.)?[a-zA-Z0-9.*:/-]{0,6}(xn--)?[a-z0-9.-]{0,12}") {
            let fast = HostPattern::parse(&input);
            let slow = parse_without_fast_path(&input);
            prop_assert_eq!(fast.is_ok(), slow.is_ok(), "{}", input);
            if let (Ok(f), Ok(s)) = (fast, slow) {
                prop_assert_eq!(f, s);
            }
        }
    }
}
