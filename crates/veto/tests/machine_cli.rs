//! `veto machine add|revoke|list`, run as the real binary on a fresh
//! `--data` directory.

use assert_cmd::Command;
use std::path::Path;

fn veto(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("veto")
        .unwrap()
        .args(args)
        .arg("--data")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn add_list_revoke_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Nothing yet, and listing creates nothing.
    let (code, out, _) = veto(d, &["machine", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "(no machines registered)");
    assert!(!d.join("identity.db").exists());

    let (code, out, err) = veto(
        d,
        &[
            "machine",
            "add",
            "billing-worker",
            "--role",
            "billing",
            "--role",
            "payments",
            "--env",
            "prod",
            "--ttl",
            "30d",
            "--idle-ttl",
            "7d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // The token alone on stdout, so `TOKEN=$(veto machine add …)` works.
    let token = out.trim().to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(token.starts_with("veto_"), "{out}");
    // The hint says how to use it without repeating it.
    assert!(
        err.contains("curl -x http://billing-worker:TOKEN@127.0.0.1:3128"),
        "{err}"
    );
    assert!(!err.contains(&token));

    let (code, out, err) = veto(d, &["machine", "add", "web"]);
    assert_eq!(code, 0, "{err}");
    let web_token = out.trim().to_string();
    assert_ne!(web_token, token);

    let (code, table, _) = veto(d, &["machine", "list"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    for col in [
        "NAME",
        "ROLES",
        "ENV",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "REVOKED",
    ] {
        assert!(rows[0].contains(col), "{table}");
    }
    assert!(rows[1].starts_with("billing-worker"), "{table}");
    assert!(rows[1].contains("billing,payments") && rows[1].contains("prod"));
    assert!(rows[2].starts_with("web") && rows[2].contains("never"));

    let (code, out, _) = veto(d, &["machine", "list", "--json"]);
    assert_eq!(code, 0);
    let all = json_lines(&out);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["name"], "billing-worker");
    assert_eq!(all[0]["roles"], serde_json::json!(["billing", "payments"]));
    assert_eq!(all[0]["env"], "prod");
    assert_eq!(all[0]["state"], "active");
    assert_eq!(all[0]["idle_ttl_secs"], 7 * 86_400);
    assert!(all[0]["expires"].as_str().unwrap().ends_with('Z'));
    assert_eq!(all[1]["expires"], serde_json::Value::Null);
    assert_eq!(all[1]["revoked"], serde_json::Value::Null);

    // Neither listing shows a token or its hash.
    for listing in [&table, &out] {
        for t in [&token, &web_token] {
            assert!(!listing.contains(t.as_str()));
            assert!(!listing.contains(&t["veto_".len()..]));
        }
        assert!(!listing.contains("hash"));
    }

    let (code, out, err) = veto(d, &["machine", "revoke", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");

    let (_, out, _) = veto(d, &["machine", "list", "--json"]);
    let all = json_lines(&out);
    assert_eq!(all[1]["name"], "web");
    assert_eq!(all[1]["state"], "revoked");
    assert!(all[1]["revoked"].as_str().unwrap().ends_with('Z'));
    let (_, table, _) = veto(d, &["machine", "list"]);
    let web = table.lines().find(|l| l.starts_with("web")).unwrap();
    assert!(web.trim_end().ends_with('Z'), "revoked time shown: {table}");

    // A revoked name can be registered again.
    let (code, out, err) = veto(d, &["machine", "add", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("veto_"));
}

#[test]
fn refusals_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (code, _, _) = veto(d, &["machine", "add", "web"]);
    assert_eq!(code, 0);
    let (code, out, err) = veto(d, &["machine", "add", "web"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "no token for a refused add: {out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("veto: ") && err.contains("`web` already exists"),
        "{err}"
    );

    for (args, want) in [
        (&["machine", "add", "web:1"][..], "invalid machine name"),
        (&["machine", "add", "anonymous"][..], "reserved"),
        (
            &["machine", "add", "x", "--role", "a b"][..],
            "invalid role",
        ),
        (&["machine", "add", "x", "--ttl", "0s"][..], "invalid ttl"),
        (
            &["machine", "revoke", "ghost"][..],
            "no machine named `ghost`",
        ),
    ] {
        let (code, out, err) = veto(d, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }

    let (code, _, _) = veto(d, &["machine", "revoke", "web"]);
    assert_eq!(code, 0);
    let (code, _, err) = veto(d, &["machine", "revoke", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("already revoked"), "{err}");

    // Bad usage is clap's: exit 2.
    let (code, _, _) = veto(d, &["machine", "add", "x", "--ttl", "soon"]);
    assert_eq!(code, 2);
    let (code, _, _) = veto(d, &["machine", "add"]);
    assert_eq!(code, 2);

    // A revoke in an empty data directory creates nothing.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = veto(empty.path(), &["machine", "revoke", "web"]);
    assert_eq!(code, 1, "{err}");
    assert!(!empty.path().join("identity.db").exists());
}
