//! Runtime opt-outs against a live `veto run`: in force at once, named as
//! their own rule with their reason, lifted, and every change logged.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "version: 1
defaults: { decision: deny }
machines:
  web: { roles: [frontend] }
services:
  analytics: { hosts: [\"*.segment.test\"] }
rules:
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

fn veto_cli(veto: &Veto, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .args(["--admin", &format!("http://{}", veto.admin), "--data"])
        .arg(veto.data())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn optouts_take_effect_at_once_and_are_logged() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(
        POLICY,
        &[
            "--resolve",
            "api.segment.test=127.0.0.1",
            "--resolve",
            "other.test=127.0.0.1",
        ],
    );
    let port = up.port();
    let segment = format!("http://api.segment.test:{port}/v1/track");
    let other = format!("http://other.test:{port}/");
    assert_eq!(curl(&veto.proxy_url(), &[&segment]).0, 200);

    // By service: refused at once, as its own rule, with its reason.
    let (code, out, err) = veto_cli(
        &veto,
        &[
            "optout",
            "add",
            "--service",
            "analytics",
            "--reason",
            "Incident 42: analytics vendor breached",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("optout-1"), "{out}");
    let (status, head, body) = curl(&veto.proxy_url(), &[&segment]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(header(&head, "veto-rule"), Some("optout-1"));
    assert!(body.contains("Incident 42"), "{body}");
    assert_eq!(
        curl(&veto.proxy_url(), &[&other]).0,
        200,
        "other destinations are untouched"
    );

    // By machine.
    let (_, token, _) = veto.cli(&["machine", "add", "web"]);
    let web_proxy = format!("http://web:{}@{}", token.trim(), veto.addr);
    assert!(eventually(|| curl(&web_proxy, &[&other]).0 == 200));
    let (code, _, err) = veto_cli(
        &veto,
        &[
            "optout",
            "add",
            "--machine",
            "web",
            "--reason",
            "web is being rebuilt",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (status, head, _) = curl(&web_proxy, &[&other]);
    assert_eq!(
        (status, header(&head, "veto-rule")),
        (403, Some("optout-2"))
    );

    // Bad opt-outs are refused before they are stored.
    let (code, _, err) = veto_cli(
        &veto,
        &["optout", "add", "--service", "nope", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown service `nope`"), "{err}");
    let (code, _, err) = veto_cli(
        &veto,
        &["optout", "add", "--host", "a.*.b", "--reason", "x"],
    );
    assert_eq!(code, 1, "{err}");

    let (code, out, _) = veto_cli(&veto, &["optout", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("optout-1") && out.contains("service analytics") && out.contains("optout-2"),
        "{out}"
    );

    // Lifted: traffic flows again.
    let (code, _, err) = veto_cli(
        &veto,
        &["optout", "remove", "1", "--reason", "vendor fixed it"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(curl(&veto.proxy_url(), &[&segment]).0, 200);
    let (code, _, err) = veto_cli(&veto, &["optout", "remove", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no opt-out 1"), "{err}");

    // The change log: who, what, when, why, before/after.
    let (code, out, _) = veto_cli(&veto, &["changes", "--json"]);
    assert_eq!(code, 0);
    let all: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The machine registered above is in the log too, by the command line.
    let added = all.iter().find(|c| c["action"] == "machine.add").unwrap();
    assert!(
        added["actor"].as_str().unwrap().starts_with("cli:"),
        "{added}"
    );
    let log: Vec<&serde_json::Value> = all
        .iter()
        .filter(|c| c["action"].as_str().unwrap().starts_with("optout."))
        .collect();
    let actions: Vec<&str> = log.iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["optout.add", "optout.add", "optout.remove"]);
    assert_eq!(log[2]["reason"], "vendor fixed it");
    assert_eq!(log[2]["before"]["target"]["service"], "analytics");
    assert!(
        log.iter()
            .all(|c| c["actor"] == "admin" && c["time"].as_str().is_some())
    );

    // Opt-outs survive a policy reload.
    write(&veto.policy, &format!("{POLICY}\n"));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(curl(&web_proxy, &[&other]).0, 403);
}

#[test]
fn optouts_expire_by_themselves() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &["--resolve", "other.test=127.0.0.1"]);
    let url = format!("http://other.test:{}/", up.port());
    let (code, _, err) = veto_cli(
        &veto,
        &[
            "optout",
            "add",
            "--host",
            "other.test",
            "--reason",
            "brief freeze",
            "--expires",
            "1s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 403);
    assert!(
        eventually(|| curl(&veto.proxy_url(), &[&url]).0 == 200),
        "the opt-out did not lapse"
    );
}
