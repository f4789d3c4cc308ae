//! What the fuzz targets check, as property tests in the normal suite:
//! no input crashes the loader or the matchers, and diagnostics point
//! inside the file. Plus: address classification agrees with the standard
//! library wherever the standard library has an opinion.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use veto_policy::addr::classify;
use veto_policy::{HostPattern, PathGlob, Policy, normalize_host, normalize_path};

const VALID: &str = r#"version: 1
defaults: { decision: deny, mode: enforce, private_networks: deny }
machines:
  web: { roles: [frontend], env: prod }
services:
  stripe: { hosts: [api.stripe.com], ports: [443], tags: [pay] }
detectors:
  emp: { regex: 'EMP-[0-9]{6}' }
rules:
  - id: a
    effect: allow
    from: { roles: [frontend] }
    to: { services: [stripe], hosts: ["*.x.com"], cidrs: [10.0.0.0/8] }
    methods: [GET]
    paths: ["/v1/**"]
    expire_if_unused: 30d
  - id: b
    effect: deny
    reason: no
    data: [emp, email]
"#;

/// Lines as YAML counts them (and editors show them): `\r\n`, `\n` and a
/// lone `\r` each end one.
fn yaml_lines(text: &str) -> u32 {
    text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u32 + 1
}

fn check_diagnostics(text: &str) {
    if let Err(errs) = Policy::compile(text) {
        assert!(!errs.is_empty());
        let lines = yaml_lines(text) + 1;
        for d in errs {
            assert!(
                d.pos.line >= 1 && d.pos.line <= lines.max(1),
                "{d:?} in {text:?}"
            );
            assert!(!d.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_text(text in "\\PC{0,200}") {
        check_diagnostics(&text);
    }

    /// Mutations of a valid policy reach much deeper into the loader than
    /// random text: delete, duplicate or replace a span.
    #[test]
    fn loader_never_panics_on_mutations(at in 0usize..VALID.len(), len in 0usize..40, with in "[ -~\\n]{0,12}") {
        let at = (0..=at).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + len).min(VALID.len());
        let end = (end..=VALID.len()).find(|i| VALID.is_char_boundary(*i)).unwrap_or(VALID.len());
        let text = format!("{}{}{}", &VALID[..at], with, &VALID[end..]);
        check_diagnostics(&text);
    }

    #[test]
    fn host_matchers_never_panic(pattern in "[a-z0-9.*:/\\[\\]-]{0,30}", host in "\\PC{0,40}") {
        let p = HostPattern::parse(&pattern);
        if let (Ok(p), Ok(h)) = (p, normalize_host(&host)) {
            let _ = p.matches(h.as_ref());
        }
    }

    /// A suffix pattern matches exactly the names that end in `.suffix`.
    #[test]
    fn suffix_patterns_match_subdomains_only(labels in proptest::collection::vec("[a-z0-9]{1,6}", 1..4), suffix in "[a-z]{1,6}\\.[a-z]{2,3}") {
        let p = HostPattern::parse(&format!("*.{suffix}")).unwrap();
        let sub = format!("{}.{suffix}", labels.join("."));
        prop_assert!(p.matches(normalize_host(&sub).unwrap().as_ref()));
        prop_assert!(!p.matches(normalize_host(&suffix).unwrap().as_ref()));
        let glued = format!("{}{suffix}", labels.join("."));
        prop_assert!(!p.matches(normalize_host(&glued).unwrap().as_ref()));
    }

    #[test]
    fn paths_never_panic(target in "\\PC{0,60}", glob in "/[a-z*/]{0,20}") {
        let n = normalize_path(&target);
        prop_assert!(n.starts_with('/'));
        prop_assert!(!n.split('/').any(|s| s == "." || s == ".."));
        if let Ok(g) = PathGlob::parse(&glob) {
            let _ = g.matches(&n);
        }
    }

    #[test]
    fn v4_classification_agrees_with_std(bits in any::<u32>()) {
        let ip = Ipv4Addr::from(bits);
        let internal = classify(IpAddr::V4(ip)).is_some();
        if ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_multicast()
            || ip.is_unspecified() || ip.is_documentation() || ip.is_broadcast()
        {
            prop_assert!(internal, "{ip} should be internal");
        }
        // Every embedded form classifies like the address it carries.
        prop_assert_eq!(classify(IpAddr::V6(ip.to_ipv6_mapped())).is_some(), internal);
        let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(bits));
        prop_assert_eq!(classify(IpAddr::V6(nat64)).is_some(), internal);
        let six_to_four = Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(bits) << 80) | 1);
        prop_assert_eq!(classify(IpAddr::V6(six_to_four)).is_some(), internal);
        if bits > 1 {
            prop_assert_eq!(classify(IpAddr::V6(ip.to_ipv6_compatible())).is_some(), internal);
        }
    }

    #[test]
    fn v6_classification_agrees_with_std(bits in any::<u128>()) {
        let ip = Ipv6Addr::from(bits);
        if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_unique_local()
            || ip.is_unicast_link_local()
        {
            prop_assert!(classify(IpAddr::V6(ip)).is_some(), "{ip} should be internal");
        }
    }
}

/// Found by the fuzzer (`fuzz/regressions/policy_load-carriage-returns`):
/// a lone `\r` is a line break to YAML, so its diagnostics count it.
#[test]
fn carriage_returns_are_line_breaks() {
    check_diagnostics("\r\r\0\0");
    let errs = Policy::compile("version: 1\rbogus: 1\r").unwrap_err();
    assert_eq!(errs[0].pos.line, 2, "{errs:?}");
}
