//! The three engines must agree on every sampled request, or the timings
//! compare different work.

use super::*;
use veto_policy::{By, Effect as VetoEffect, NoGrants};

/// What veto decided for each request, and which kind of outcome it was.
#[derive(Debug, Default)]
struct Mix {
    allowed: usize,
    denied_by_rule: usize,
    denied_by_default: usize,
}

fn agree(n: usize, cedar_every: usize) -> Mix {
    let shape = Shape::generate(n);
    assert_eq!(shape.rules.len(), n);
    let policy = veto::compile(&veto::yaml(&shape)).expect("the generated policy is valid");
    let cedar = cedar::Cedar::new(&shape).expect("the cedar policies parse");
    assert_eq!(cedar.policy_count(), n);
    let mut rego = rego::Rego::new(&shape).expect("the Rego policy loads");
    let reqs = shape.requests();
    assert_eq!(reqs.len(), REQUESTS);
    let mut mix = Mix::default();
    for (i, r) in reqs.iter().enumerate() {
        let vr = veto::VetoReq::new(&policy, r).expect("request");
        let d = policy.decide(&vr.request(), &NoGrants);
        let veto_allows = match d.effect() {
            VetoEffect::Allow => true,
            VetoEffect::Deny => false,
            VetoEffect::Redact => panic!("the shape has no redact rule"),
        };
        match (veto_allows, d.applied.by) {
            (true, _) => mix.allowed += 1,
            (false, By::Default) => mix.denied_by_default += 1,
            (false, By::Rule(_)) => mix.denied_by_rule += 1,
            (false, other) => panic!("request {i} {r:?}: unexpected refusal {other:?}"),
        }
        let input = rego::Rego::input(r).expect("input");
        let rego_allows = rego.allows(&input).expect("regorus evaluates");
        assert_eq!(
            veto_allows, rego_allows,
            "veto vs rego, {n} rules, request {i}: {r:?}"
        );
        if i % cedar_every == 0 {
            let cr = cedar.request(r).expect("cedar request");
            assert_eq!(
                veto_allows,
                cedar.allows(&cr),
                "veto vs cedar, {n} rules, request {i}: {r:?}"
            );
        }
    }
    // Shown with `--nocapture`: the mix each size exercises.
    eprintln!("{n} rules: {mix:?}");
    mix
}

#[test]
fn engines_agree_at_10_rules() {
    agree(10, 1);
}

#[test]
fn engines_agree_at_1000_rules() {
    let mix = agree(1_000, 1);
    // The sample must exercise every kind of outcome, in real proportions.
    assert!(mix.allowed >= 200, "{mix:?}");
    assert!(mix.denied_by_rule >= 100, "{mix:?}");
    assert!(mix.denied_by_default >= 200, "{mix:?}");
}

#[test]
fn engines_agree_at_10000_rules() {
    // Cedar checks every policy on every request: a debug build would take
    // minutes over the whole sample, so it checks every 20th request.
    let mix = agree(10_000, 20);
    assert!(mix.allowed >= 200, "{mix:?}");
    assert!(mix.denied_by_rule >= 100, "{mix:?}");
    assert!(mix.denied_by_default >= 200, "{mix:?}");
}

#[test]
fn generation_is_deterministic() {
    let a = Shape::generate(1_000);
    let b = Shape::generate(1_000);
    assert_eq!(veto::yaml(&a), veto::yaml(&b));
    assert_eq!(cedar::policies(&a), cedar::policies(&b));
    assert_eq!(format!("{:?}", a.requests()), format!("{:?}", b.requests()));
}

#[test]
fn helpers_for_rego() {
    let r = Req {
        machine: "m0001".into(),
        host: "a.b.v1.com".into(),
        ip: None,
        port: 443,
        method: "GET",
        data: vec![],
    };
    assert_eq!(r.suffixes(), ["b.v1.com", "v1.com", "com"]);
    let ip = Req {
        host: "44.1.2.3".into(),
        ip: Some(Ipv4Addr::new(44, 1, 2, 3)),
        ..r
    };
    assert!(ip.suffixes().is_empty());
    assert_eq!(ip.nets(), ["44.1.2.0/24", "44.1.0.0/16"]);
}
