//! The private-network classification of addresses (policy-v1, "Private
//! networks"), as a pure function.
//!
//! IPv6 forms that carry an IPv4 address inside them are classified by the
//! address they carry: otherwise `::ffff:127.0.0.1` or `64:ff9b::a9fe:a9fe`
//! would walk past the guard to loopback or the metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is internal: the range it falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Internal {
    /// The special range, in CIDR notation.
    pub range: &'static str,
    /// What the range is for.
    pub what: &'static str,
    /// Set when the range was found in an IPv4 address embedded in IPv6.
    pub embedded: Option<Ipv4Addr>,
}

const V4: &[(u32, u8, &str, &str)] = &[
    (0x0000_0000, 8, "0.0.0.0/8", "this network"),
    (0x0a00_0000, 8, "10.0.0.0/8", "private-use"),
    (
        0x6440_0000,
        10,
        "100.64.0.0/10",
        "shared address space (CGNAT)",
    ),
    (0x7f00_0000, 8, "127.0.0.0/8", "loopback"),
    (
        0xa9fe_0000,
        16,
        "169.254.0.0/16",
        "link-local and cloud metadata",
    ),
    (0xac10_0000, 12, "172.16.0.0/12", "private-use"),
    (0xc000_0000, 24, "192.0.0.0/24", "IETF protocol assignments"),
    (
        0xc000_0200,
        24,
        "192.0.2.0/24",
        "documentation (TEST-NET-1)",
    ),
    (0xc058_6300, 24, "192.88.99.0/24", "6to4 relay anycast"),
    (0xc0a8_0000, 16, "192.168.0.0/16", "private-use"),
    (0xc612_0000, 15, "198.18.0.0/15", "benchmarking"),
    (
        0xc633_6400,
        24,
        "198.51.100.0/24",
        "documentation (TEST-NET-2)",
    ),
    (
        0xcb00_7100,
        24,
        "203.0.113.0/24",
        "documentation (TEST-NET-3)",
    ),
    (0xe000_0000, 4, "224.0.0.0/4", "multicast"),
    (0xf000_0000, 4, "240.0.0.0/4", "reserved and broadcast"),
];

const V6: &[(u128, u8, &str, &str)] = &[
    (0, 128, "::/128", "unspecified"),
    (1, 128, "::1/128", "loopback"),
    (
        0x0064_ff9b_0001 << 80,
        48,
        "64:ff9b:1::/48",
        "local-use NAT64",
    ),
    (0x0100 << 112, 64, "100::/64", "discard-only"),
    (0x2001_0000 << 96, 32, "2001::/32", "Teredo"),
    (0x2001_0002 << 96, 48, "2001:2::/48", "benchmarking"),
    (0x2001_0db8 << 96, 32, "2001:db8::/32", "documentation"),
    (0x3fff << 112, 20, "3fff::/20", "documentation"),
    (0xfc00 << 112, 7, "fc00::/7", "unique local"),
    (0xfe80 << 112, 10, "fe80::/10", "link-local"),
    (0xfec0 << 112, 10, "fec0::/10", "site-local (deprecated)"),
    (0xff00 << 112, 8, "ff00::/8", "multicast"),
];

fn in_prefix<T>(addr: T, net: T, len: u8, bits: u32) -> bool
where
    T: Copy + std::ops::Shr<u32, Output = T> + PartialEq,
{
    let shift = bits - u32::from(len);
    if shift == bits {
        return true;
    }
    addr >> shift == net >> shift
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> Option<Internal> {
    let a = u32::from(ip);
    V4.iter()
        .find(|(net, len, ..)| in_prefix(a, *net, *len, 32))
        .map(|&(_, _, range, what)| Internal {
            range,
            what,
            embedded: None,
        })
}

/// The IPv4 address an IPv6 address carries, for the forms the spec names:
/// IPv4-mapped, IPv4-compatible, NAT64 well-known prefix and 6to4.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let a = u128::from(ip);
    let low32 = Ipv4Addr::from((a & 0xffff_ffff) as u32);
    if a >> 32 == 0xffff {
        return Some(low32); // ::ffff:0:0/96
    }
    if a >> 32 == 0 && a > 1 {
        return Some(low32); // ::/96 (:: and ::1 are classified on their own)
    }
    if a >> 32 == 0x0064_ff9b << 64 {
        return Some(low32); // 64:ff9b::/96
    }
    if a >> 112 == 0x2002 {
        return Some(Ipv4Addr::from(((a >> 80) & 0xffff_ffff) as u32)); // 2002::/16
    }
    None
}

/// Classifies an IPv6 address, looking inside the embedded-IPv4 forms.
pub fn classify_v6(ip: Ipv6Addr) -> Option<Internal> {
    let a = u128::from(ip);
    if let Some(&(_, _, range, what)) = V6
        .iter()
        .find(|(net, len, ..)| in_prefix(a, *net, *len, 128))
    {
        return Some(Internal {
            range,
            what,
            embedded: None,
        });
    }
    let v4 = embedded_v4(ip)?;
    classify_v4(v4).map(|i| Internal {
        embedded: Some(v4),
        ..i
    })
}

/// Whether an address is internal (policy-v1 "Private networks"), and why.
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        classify(s.parse().unwrap()).is_some()
    }

    #[test]
    fn ranges_and_embedded_forms() {
        for s in [
            "0.1.2.3",
            "10.1.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.19.1.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::ffff:127.0.0.1",
            "3fff::1",
        ] {
            assert!(internal(s), "{s} should be internal");
        }
        for s in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860::8888",
        ] {
            assert!(!internal(s), "{s} should be public");
        }
        let i = classify("::ffff:169.254.169.254".parse().unwrap()).unwrap();
        assert_eq!(i.range, "169.254.0.0/16");
        assert_eq!(i.embedded, Some(Ipv4Addr::new(169, 254, 169, 254)));
    }
}
