//! Grants that expire when unused, across a fleet: a use through one agent
//! keeps the grant alive on the others, a lapse is logged once by the
//! server, and a renewal through the CLI reaches every agent.

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use common::http_upstream;
use fleet::*;
use std::time::{Duration, Instant};

/// `g` lapses after 8 s unused. The test's timings leave seconds of room
/// on either side of that (the engine counts whole seconds).
const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: g
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
    expire_if_unused: 8s
";

fn changes(
    server: std::net::SocketAddr,
    data: &std::path::Path,
    action: &str,
) -> Vec<serde_json::Value> {
    let (code, v) = http_get(server, "/v1/changes", &token(data, "viewer"));
    assert_eq!(code, 200);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == action)
        .cloned()
        .collect()
}

#[test]
fn a_grant_lives_lapses_and_is_renewed_fleet_wide() {
    let up = http_upstream(Duration::ZERO);
    let url = format!("http://api.test:{}/", up.port());
    let dir = tempfile::tempdir().unwrap();
    let sdata = dir.path().join("server");
    let store = format!("sqlite:{}", sdata.join("control.db").display());
    let srv = server(&store, &sdata, "127.0.0.1:0");
    let addr = srv.addr;
    let (code, t1, err) = cli(addr, &sdata, &["agents", "add", "edge-1"]);
    assert_eq!(code, 0, "{err}");
    let (_, t2, _) = cli(addr, &sdata, &["agents", "add", "edge-2"]);
    let a1 = agent(addr, t1.trim(), &dir.path().join("a1"));
    let a2 = agent(addr, t2.trim(), &dir.path().join("a2"));

    let policy = write(dir.path(), "policy.yaml", POLICY);
    let (code, _, err) = cli(
        addr,
        &sdata,
        &["policy", "push", &policy, "--reason", "grants"],
    );
    assert_eq!(code, 0, "{err}");
    let pushed = Instant::now();
    for a in [&a1, &a2] {
        assert!(
            within(Duration::from_secs(5), || status(a, &url) == 200).is_some(),
            "the policy did not reach an agent"
        );
    }

    // Used only through edge-1, once a second, for 11 s: longer than the
    // grant's 8 s. edge-2 never sees this traffic; alone, it would count
    // from the rule's first load and refuse.
    while pushed.elapsed() < Duration::from_secs(11) {
        assert_eq!(status(&a1, &url), 200);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        status(&a2, &url),
        200,
        "edge-2 did not learn of the uses through edge-1"
    );

    // The server's review shows the fleet's last use.
    let (code, out, err) = cli(addr, &sdata, &["access", "review", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let used = rows
        .iter()
        .find(|r| r["kind"] == "grant" && r["rule"] == "g" && r["machine"] == "anonymous")
        .unwrap_or_else(|| panic!("no grant row for anonymous: {out}"));
    assert_eq!(used["state"], "expiring", "{used}");
    assert!(used["last_used"].is_string(), "{used}");

    // Left unused (no polling here: an allowed request is a use), it
    // lapses on both, and the server logs that once.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(status(&a1, &url), 403, "the grant did not lapse on edge-1");
    assert_eq!(status(&a2, &url), 403, "the grant did not lapse on edge-2");
    let (_, _, body) = common::curl(&format!("http://{}", a2.addr), &[&url]);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        j["reason"].as_str().unwrap().contains("grant `g` expired"),
        "{body}"
    );
    assert!(
        within(Duration::from_secs(5), || !changes(
            addr,
            &sdata,
            "grant.expire"
        )
        .is_empty())
        .is_some(),
        "no grant.expire in the change log"
    );
    std::thread::sleep(Duration::from_secs(2));
    let expired = changes(addr, &sdata, "grant.expire");
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["actor"], "veto-server");
    assert_eq!(expired[0]["before"]["machine"], "anonymous");
    assert!(
        expired[0]["reason"]
            .as_str()
            .unwrap()
            .contains("grant `g` expired for machine `anonymous`"),
        "{}",
        expired[0]
    );

    // A viewer cannot renew; an operator can, and both agents allow again
    // within a second.
    let viewer = token(&sdata, "viewer");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veto"))
        .args([
            "access",
            "renew",
            "g",
            "--machine",
            "anonymous",
            "--reason",
            "x",
        ])
        .args(["--server", &format!("http://{addr}"), "--token", &viewer])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let (code, _, err) = cli(
        addr,
        &sdata,
        &[
            "access",
            "renew",
            "nope",
            "--machine",
            "anonymous",
            "--reason",
            "typo",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no rule `nope`"), "{err}");
    let (code, _, err) = cli(
        addr,
        &sdata,
        &[
            "access",
            "renew",
            "g",
            "--machine",
            "*",
            "--reason",
            "everyone",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("names a machine"), "{err}");

    let (code, out, err) = cli(
        addr,
        &sdata,
        &[
            "access",
            "renew",
            "g",
            "--machine",
            "anonymous",
            "--reason",
            "the batch job is back",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("renewed"), "{out}");
    for a in [&a1, &a2] {
        assert!(
            within(Duration::from_secs(1), || status(a, &url) == 200).is_some(),
            "the renewal did not reach an agent within 1 s"
        );
    }
    let renewed = changes(addr, &sdata, "grant.renew");
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert_eq!(renewed[0]["reason"], "the batch job is back");
    assert!(
        renewed[0]["actor"].as_str().unwrap().starts_with("admin"),
        "{}",
        renewed[0]
    );
    assert_eq!(renewed[0]["before"]["machine"], "anonymous");
    assert!(renewed[0]["after"]["last_used"].is_string());
}
