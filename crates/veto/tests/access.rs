//! Grants that expire when unused, end to end: lapse, report, review,
//! renew, and a restart that neither forgets a use nor restarts the idle
//! clock. And credentials nobody uses, pruned.

mod common;

use common::{Veto, curl, http_upstream};
use std::process::Command;
use std::time::{Duration, Instant};

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: lab-grant
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
    expire_if_unused: 3s
";

fn cli(veto: &Veto, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .arg("--data")
        .arg(veto.data())
        .current_dir(veto.dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn review(veto: &Veto) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(veto, &["access", "review", "--json", "--within", "1h"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn grant_state(veto: &Veto) -> String {
    review(veto)
        .into_iter()
        .find(|r| r["rule"] == "lab-grant" && r["machine"] == "anonymous")
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn events(veto: &Veto, kind: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(veto, &["audit", "events"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .collect()
}

#[test]
fn a_grant_lapses_is_reported_renewed_and_survives_restarts() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let url = format!("http://{up}/");
    assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 200);
    // (Whole seconds: a grant of 3s can lapse after a little over 2.)
    std::thread::sleep(Duration::from_millis(4100));
    let (status, _, body) = curl(&veto.proxy_url(), &[&url]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("grant `lab-grant` expired"), "{body}");

    // Reported once, in the audit trail and the change log (the sweep runs
    // every 5 seconds).
    assert!(common::eventually(
        || !events(&veto, "grant-expired").is_empty()
    ));
    let e = &events(&veto, "grant-expired")[0];
    assert_eq!(e["detail"]["rule"], "lab-grant");
    assert_eq!(e["detail"]["machine"], "anonymous");
    assert!(e["detail"]["last_used"].is_string(), "{e}");
    assert_eq!(grant_state(&veto), "expired");

    // Renewed: in force on the next request, without a restart.
    let (code, out, err) = cli(
        &veto,
        &[
            "access",
            "renew",
            "lab-grant",
            "--machine",
            "anonymous",
            "--reason",
            "back in use",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("renewed"), "{out}");
    assert!(common::eventually(
        || curl(&veto.proxy_url(), &[&url]).0 == 200
    ));
    assert_eq!(grant_state(&veto), "expiring");
    assert!(common::eventually(
        || !events(&veto, "grant-renewed").is_empty()
    ));
    let r = &events(&veto, "grant-renewed")[0];
    assert_eq!(r["detail"]["reason"], "back in use");
    assert_eq!(events(&veto, "grant-expired").len(), 1, "reported once");

    // Both are in the change log, with who and why.
    let db = rusqlite::Connection::open(veto.data().join("control.db")).unwrap();
    let log: Vec<(String, String, String)> = db
        .prepare("SELECT action, actor, reason FROM changes ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expire = log
        .iter()
        .find(|c| c.0 == "grant.expire")
        .expect("expiry logged");
    assert_eq!(expire.1, "veto");
    assert!(expire.2.contains("lab-grant"), "{expire:?}");
    let renew = log
        .iter()
        .find(|c| c.0 == "grant.renew")
        .expect("renewal logged");
    assert!(renew.1.starts_with("cli:"), "{renew:?}");
    assert_eq!(renew.2, "back in use");

    // A use, then a restart one second later, and no use after it: the
    // grant lapses counted from that last use, not from the restart (which
    // would keep it alive about a second longer).
    assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 200);
    let used = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let (dir, policy) = veto.stop();
    let veto = Veto::start_in(dir, policy, &[]);
    std::thread::sleep(Duration::from_millis(3600).saturating_sub(used.elapsed()));
    let (status, _, body) = curl(&veto.proxy_url(), &[&url]);
    assert_eq!(status, 403, "{body}");
}

#[test]
fn unused_credentials_are_pruned_and_tokens_are_never_stored() {
    // No expiring grant here: only credentials age.
    let veto = Veto::start(&POLICY.replace("    expire_if_unused: 3s\n", ""), &[]);
    let (_, token, _) = cli(
        &veto,
        &["machine", "add", "old-batch", "--reason", "nightly job"],
    );
    let token = token.trim().to_string();
    let (_, kept, _) = cli(&veto, &["machine", "add", "web"]);
    let up = http_upstream(Duration::ZERO);
    let url = format!("http://{up}/");
    let web = format!("http://web:{}@{}", kept.trim(), veto.addr);
    std::thread::sleep(Duration::from_millis(2100));
    assert!(common::eventually(|| curl(&web, &[&url]).0 == 200));
    // A clean stop writes the uses not yet written (they go in batches).
    let (dir, policy) = veto.stop();
    let veto = Veto::start_in(dir, policy, &[]);

    // Dry run: says what it would do, does nothing.
    let (code, out, err) = cli(&veto, &["access", "prune", "--unused", "2s", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would revoke old-batch"), "{out}");
    assert!(!out.contains("web"), "web was just used: {out}");
    let (code, out, err) = cli(&veto, &["access", "prune", "--unused", "2s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked old-batch"), "{out}");
    let old = format!("http://old-batch:{token}@{}", veto.addr);
    let web = format!("http://web:{}@{}", kept.trim(), veto.addr);
    assert!(common::eventually(|| curl(&old, &[&url]).0 == 407));
    assert_eq!(curl(&web, &[&url]).0, 200);

    // Every change is in the change log; no token is anywhere in the store.
    let db = rusqlite::Connection::open(veto.data().join("control.db")).unwrap();
    let actions: Vec<String> = db
        .prepare("SELECT action FROM changes ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(actions, ["machine.add", "machine.add", "machine.revoke"]);
    for file in [
        "identity.db",
        "identity.db-wal",
        "control.db",
        "control.db-wal",
    ] {
        if let Ok(bytes) = std::fs::read(veto.data().join(file)) {
            for t in [&token, kept.trim()] {
                assert!(
                    !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                    "a token in {file}"
                );
            }
        }
    }
}
