//! `veto audit verify|query|export` and `veto inventory` on a real store,
//! written by the real audit writer, read by the real binary.

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::path::Path;
use veto_audit::{Completed, Decided, Sync, Writer, db_path, format_time, new_id};

/// As `veto run` writes it: signed with the node's key (checkpoints and the
/// chain's head).
async fn write_store(dir: &Path) {
    let key = veto_audit::signing::load_or_create(dir).unwrap();
    let w = Writer::start_signed(&db_path(dir), Sync::Normal, Some(key)).unwrap();
    let now = veto_audit::now().0;
    for i in 0..12u64 {
        // Four an hour old, the rest recent.
        let ms = if i < 4 { now - 3_600_000 } else { now - 1_000 } + i;
        let deny = i % 3 == 0;
        let d = Decided {
            id: new_id(ms),
            time: format_time(ms),
            machine: if i % 2 == 0 {
                "web".into()
            } else {
                "billing".into()
            },
            protocol: "http".into(),
            method: Some("GET".into()),
            host: if i % 4 == 0 {
                "api.segment.io".into()
            } else {
                "api.stripe.com".into()
            },
            port: 443,
            path: Some("/".into()),
            ips: vec![],
            dns_lookup: false,
            decision: if deny { "deny".into() } else { "allow".into() },
            would: None,
            rule: if deny {
                "no-pii".into()
            } else {
                "billing-to-stripe".into()
            },
            reason: "r".into(),
            data: BTreeMap::new(),
            status: deny.then_some(403),
            policy: "sha256:x".into(),
        };
        let id = d.id.clone();
        w.decide(d, ms).await.unwrap();
        if !deny {
            w.complete(
                Completed {
                    id,
                    protocol: None,
                    status: Some(200),
                    bytes_out: 5,
                    bytes_in: 50,
                    duration_ms: 2,
                },
                ms,
            )
            .await
            .unwrap();
        }
    }
    w.flush().await.unwrap();
}

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

fn lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_on_a_real_store() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path()).await;

    let (code, out, _) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("audit chain intact: 12 records, 20 entries"),
        "{out}"
    );

    let (code, out, _) = veto(dir.path(), &["audit", "query"]);
    assert_eq!(code, 0);
    let all = lines(&out);
    assert_eq!(all.len(), 12);
    for key in [
        "id",
        "time",
        "machine",
        "protocol",
        "method",
        "host",
        "port",
        "path",
        "ips",
        "decision",
        "rule",
        "reason",
        "data",
        "status",
        "bytes_out",
        "bytes_in",
        "duration_ms",
        "policy",
        "prev",
        "hash",
    ] {
        assert!(all[0].get(key).is_some(), "record lacks {key}: {}", all[0]);
    }
    assert_eq!(all[1]["prev"], all[0]["hash"], "the chain links records");

    let (_, out, _) = veto(
        dir.path(),
        &["audit", "query", "--decision", "deny", "--machine", "web"],
    );
    // deny: i % 3 == 0; web: i even -> i in {0, 6}
    assert_eq!(lines(&out).len(), 2);
    let (_, out, _) = veto(
        dir.path(),
        &[
            "audit",
            "query",
            "--host",
            "api.segment.io",
            "--rule",
            "no-pii",
        ],
    );
    // segment: i % 4 == 0 -> {0, 4, 8}; no-pii: i % 3 == 0 -> {0, 3, 6, 9}
    assert_eq!(lines(&out).len(), 1);
    let (_, out, _) = veto(dir.path(), &["audit", "query", "--since", "10m"]);
    assert_eq!(lines(&out).len(), 8);
    let (code, _, err) = veto(dir.path(), &["audit", "query", "--decision", "maybe"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--decision must be allow, deny or redact"),
        "{err}"
    );

    let (_, out, _) = veto(dir.path(), &["audit", "export", "--format", "jsonl"]);
    assert_eq!(lines(&out).len(), 12);

    let (code, out, _) = veto(dir.path(), &["inventory"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("MACHINE"), "{out}");
    let (_, out, _) = veto(dir.path(), &["inventory", "--json"]);
    let inv = lines(&out);
    let total: u64 = inv
        .iter()
        .map(|d| {
            d["decisions"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(total, 12);

    // Tamper with one record's decision straight in the file.
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let rid: String = conn
        .query_row(
            "SELECT rid FROM chain WHERE kind = 0 AND decision = 'deny' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("UPDATE chain SET body = replace(body, '\"deny\"', '\"allow\"') WHERE rid = ?1 AND kind = 0", [&rid]).unwrap();
    drop(conn);
    let (code, _, err) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains(&rid) && err.contains("was edited"), "{err}");
}

/// The newest entries cut off straight in the file: the chain alone still
/// links, the signed head tells, with how many are gone; a copy of the head
/// kept elsewhere (`--head`) tells even when the one beside the store was
/// put back from an older backup or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_end_is_reported_with_how_many_entries_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path()).await;
    let head = veto_audit::head::head_path(&db_path(dir.path()));
    let kept = dir.path().join("kept.head");
    std::fs::copy(&head, &kept).unwrap();
    let (code, out, _) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 0);
    assert!(out.contains("signed head at entry 20"), "{out}");

    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    conn.execute("DELETE FROM chain WHERE seq > 15", [])
        .unwrap();
    drop(conn);
    let (code, _, err) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the chain was cut: it ends at entry 15")
            && err.contains("5 entries are missing"),
        "{err}"
    );

    std::fs::remove_file(&head).unwrap();
    let (code, _, err) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no signed head"), "{err}");
    let kept_arg = kept.display().to_string();
    let (code, _, err) = veto(dir.path(), &["audit", "verify", "--head", &kept_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("5 entries are missing"), "{err}");
}

#[test]
fn missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = veto(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("veto: no audit store at") && err.lines().count() == 1,
        "{err}"
    );
}
