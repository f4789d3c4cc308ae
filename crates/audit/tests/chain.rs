//! The audit trail against a real SQLite file: concurrent producers, the
//! chain verifying, tampering straight in the file being caught and named,
//! queries, inventory, the live stream, and a store removed under the
//! writer.

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use veto_audit::*;

fn decided(i: usize, machine: &str, host: &str, decision: &str) -> (Decided, u64) {
    let ms = 1_767_225_600_000 + i as u64;
    let d = Decided {
        id: new_id(ms),
        time: format_time(ms),
        machine: machine.into(),
        protocol: "https".into(),
        method: Some("POST".into()),
        host: host.into(),
        port: 443,
        path: Some("/v1/x".into()),
        ips: vec!["93.184.215.14".into()],
        dns_lookup: false,
        decision: decision.into(),
        would: None,
        rule: if decision == "deny" {
            "no-pii".into()
        } else {
            "default".into()
        },
        reason: "because".into(),
        data: BTreeMap::from([("email".to_string(), 1)]),
        status: (decision == "deny").then_some(403),
        policy: "sha256:abc".into(),
    };
    (d, ms)
}

/// Writes `n` decisions (every third a refusal) from 8 concurrent tasks,
/// completes the allowed ones, and flushes.
async fn fill(path: &Path, n: usize) -> Writer {
    let w = Writer::start(path, Sync::Normal).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(8) {
                let decision = if i % 3 == 0 { "deny" } else { "allow" };
                let host = format!("h{}.example.com", i % 5);
                let (d, ms) = decided(i, &format!("m{}", i % 2), &host, decision);
                let id = d.id.clone();
                let receipt = w.decide(d, ms).await.unwrap();
                assert_eq!(receipt.hash.len(), 64);
                if decision == "allow" {
                    let c = Completed {
                        protocol: None,
                        id,
                        status: Some(200),
                        bytes_out: 10,
                        bytes_in: 100,
                        duration_ms: 3,
                    };
                    // Both ways of queueing a completion: waiting for
                    // room, and on the spot (given back only when full).
                    if i % 2 == 0 {
                        w.complete(c, ms + 3).await.unwrap();
                    } else if let Err(full) = w.try_complete(c, ms + 3) {
                        let veto_audit::Full::Later(c) = full else {
                            panic!("the writer is gone")
                        };
                        w.complete(c, ms + 3).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    w.flush().await.unwrap();
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_chain_query_and_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    fill(&path, 300).await;
    let conn = open_ro(&path).unwrap();
    let intact = verify(&conn).unwrap().unwrap();
    assert_eq!(intact.records, 300);
    assert_eq!(intact.entries, 300 + 200);

    let mut all = Vec::new();
    query(&conn, &Filter::default(), |r| {
        all.push(r);
        Ok(())
    })
    .unwrap();
    assert_eq!(all.len(), 300);
    let allowed = all.iter().find(|r| r.decision == "allow").unwrap();
    assert_eq!(
        (allowed.status, allowed.bytes_in, allowed.duration_ms),
        (Some(200), 100, 3)
    );
    let refused = all.iter().find(|r| r.decision == "deny").unwrap();
    assert_eq!((refused.status, refused.bytes_in), (Some(403), 0));

    let mut denied = 0;
    let f = Filter {
        decision: Some("deny".into()),
        machine: Some("m0".into()),
        ..Filter::default()
    };
    query(&conn, &f, |r| {
        assert!(r.decision == "deny" && r.machine == "m0");
        denied += 1;
        Ok(())
    })
    .unwrap();
    // i % 3 == 0 and i % 2 == 0: i % 6 == 0, 50 of 300.
    assert_eq!(denied, 50);

    let inv = inventory(&conn).unwrap();
    assert_eq!(inv.len(), 10); // 2 machines x 5 hosts
    let total: u64 = inv.iter().flat_map(|d| d.decisions.values()).sum();
    assert_eq!(total, 300);
    let bytes: u64 = inv.iter().map(|d| d.bytes_in).sum();
    assert_eq!(bytes, 200 * 100);
}

/// Each way of tampering, straight in the SQLite file, is caught and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    fill(&path, 30).await;
    // A consistent copy, WAL included, that each case starts from.
    let pristine = dir.path().join("pristine.db");
    Connection::open(&path)
        .unwrap()
        .execute(&format!("VACUUM INTO '{}'", pristine.display()), [])
        .unwrap();
    let rid_at = |c: &Connection, seq: i64| -> String {
        c.query_row("SELECT rid FROM chain WHERE seq = ?1", [seq], |r| r.get(0))
            .unwrap()
    };
    let cases: &[(&str, &str)] = &[
        (
            "UPDATE chain SET body = replace(body, 'because', 'innocent') WHERE seq = {A}",
            "was edited: its content",
        ),
        (
            "UPDATE chain SET rule = 'other' WHERE seq = {A}",
            "`rule` column does not match",
        ),
        (
            "DELETE FROM chain WHERE seq = {A}",
            "is missing: it was deleted",
        ),
        (
            "UPDATE chain SET seq = -1 WHERE seq = {A}; UPDATE chain SET seq = {A} WHERE seq = {B}; UPDATE chain SET seq = {B} WHERE seq = -1",
            "does not follow the entry before it",
        ),
    ];
    // Make entry 10 a decision, whatever order the concurrent writers gave.
    let c = Connection::open(&pristine).unwrap();
    let ten: i64 = c
        .query_row(
            "SELECT MIN(seq) FROM chain WHERE kind = 0 AND seq >= 10",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(c);
    let cases: Vec<(String, &str)> = cases
        .iter()
        .map(|(sql, e)| {
            (
                sql.replace("{A}", &ten.to_string())
                    .replace("{B}", &(ten + 1).to_string()),
                *e,
            )
        })
        .collect();
    for (i, (sql, expect)) in cases.iter().enumerate() {
        let copy = dir.path().join(format!("case{i}.db"));
        std::fs::copy(&pristine, &copy).unwrap();
        let c = Connection::open(&copy).unwrap();
        assert!(verify(&c).unwrap().is_ok());
        let rid10 = rid_at(&c, ten);
        c.execute_batch(sql).unwrap();
        let broken = match verify(&c).unwrap() {
            Err(b) => b,
            Ok(i) => panic!("{sql}: tampering not caught ({i:?})"),
        };
        let msg = broken.to_string();
        assert!(msg.contains(expect), "{sql}: {msg}");
        if !msg.starts_with("entry") {
            assert!(
                msg.contains(&rid10) || msg.contains(&rid_at(&c, ten)),
                "{msg}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sees_each_decision() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::start(&db_path(dir.path()), Sync::Normal).unwrap();
    let mut live = w.subscribe();
    let (d, ms) = decided(1, "m0", "a.com", "deny");
    let id = d.id.clone();
    w.decide(d, ms).await.unwrap();
    let r = live.recv().await.unwrap();
    assert_eq!(
        (r.id.as_str(), r.decision.as_str(), r.rule.as_str()),
        (id.as_str(), "deny", "no-pii")
    );
    assert_eq!(r.hash.len(), 64);
}

/// A store removed under the running writer: the group in hand is refused,
/// the next one goes to a new file that continues the chain, and verify on
/// the new file reports the lost entries as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_store_fails_closed_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let w = fill(&path, 9).await;
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let (d, ms) = decided(100, "m0", "a.com", "allow");
    let err = w.decide(d, ms).await.unwrap_err();
    assert!(err.to_string().contains("was removed"), "{err}");
    let (d, ms) = decided(101, "m0", "a.com", "allow");
    w.decide(d, ms).await.unwrap();
    let c = open_ro(&path).unwrap();
    let broken = verify(&c).unwrap().unwrap_err();
    assert!(
        broken.to_string().contains("entries 1 to 15 are missing"),
        "{broken}"
    );
}

/// Retention: old entries go behind a checkpoint in the chain, the rest
/// still verifies, the pruning is itself recorded, and removing the
/// checkpoint is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    // 20 records from January (old), then 10 from now.
    let w = fill(&path, 20).await;
    let now = now().0;
    for i in 0..10u64 {
        let (mut d, _) = decided(1000 + i as usize, "m1", "fresh.example", "allow");
        d.id = new_id(now + i);
        d.time = format_time(now + i);
        w.decide(d, now + i).await.unwrap();
    }
    let nothing = w
        .prune(Retention {
            max_age: Some(std::time::Duration::from_secs(400 * 86_400)),
            max_bytes: None,
        })
        .await
        .unwrap();
    assert_eq!(nothing, None, "nothing is older than 400 days");
    let pruned = w
        .prune(Retention {
            max_age: Some(std::time::Duration::from_secs(86_400)),
            max_bytes: None,
        })
        .await
        .unwrap()
        .expect("January is older than a day");
    assert_eq!(pruned.records, 20);
    w.flush().await.unwrap();

    let c = Connection::open(&path).unwrap();
    let intact = verify(&c).unwrap().unwrap();
    assert_eq!(intact.records, 10);
    let mut hosts = Vec::new();
    query(&c, &Filter::default(), |r| {
        hosts.push(r.host);
        Ok(())
    })
    .unwrap();
    assert!(hosts.iter().all(|h| h == "fresh.example") && hosts.len() == 10);
    let mut prunes = Vec::new();
    events(&c, |e| {
        prunes.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0].detail["through_seq"], pruned.through_seq);

    // Without the checkpoint, the missing entries are reported.
    c.execute("DELETE FROM chain WHERE kind = 2", []).unwrap();
    let broken = verify(&c).unwrap().unwrap_err();
    assert!(broken.to_string().contains("missing"), "{broken}");
}

/// A signed-off checkpoint verifies under the node's key; a checkpoint
/// without a signature, or signed by another key, is refused when verify is
/// given the trusted key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_checkpoints_are_signed_off() {
    let old = |i: usize| decided(i, "m0", "old.example", "allow");
    let prune_all = Retention {
        max_age: Some(std::time::Duration::from_secs(86_400)),
        max_bytes: None,
    };

    // The node's own key signs.
    let dir = tempfile::tempdir().unwrap();
    let key = signing::load_or_create(dir.path()).unwrap();
    let w = Writer::start_signed(&db_path(dir.path()), Sync::Normal, Some(key)).unwrap();
    for i in 0..5 {
        let (d, ms) = old(i);
        w.decide(d, ms).await.unwrap();
    }
    w.prune(prune_all).await.unwrap().unwrap();
    w.flush().await.unwrap();
    let trusted = signing::read_public(&signing::public_path(dir.path())).unwrap();
    let c = Connection::open(db_path(dir.path())).unwrap();
    assert!(verify_with(&c, Some(&trusted)).unwrap().is_ok());

    // Unsigned (as someone without the key would append it): refused.
    let other = tempfile::tempdir().unwrap();
    let w2 = Writer::start(&db_path(other.path()), Sync::Normal).unwrap();
    for i in 0..5 {
        let (d, ms) = old(i);
        w2.decide(d, ms).await.unwrap();
    }
    w2.prune(prune_all).await.unwrap().unwrap();
    w2.flush().await.unwrap();
    let c2 = Connection::open(db_path(other.path())).unwrap();
    assert!(
        verify(&c2).unwrap().is_ok(),
        "without a trusted key, an unsigned checkpoint is only chained"
    );
    let broken = verify_with(&c2, Some(&trusted)).unwrap().unwrap_err();
    assert!(broken.to_string().contains("has no signature"), "{broken}");

    // Signed by another key: refused under the trusted one.
    let third = tempfile::tempdir().unwrap();
    let stranger = signing::load_or_create(third.path()).unwrap();
    let w3 = Writer::start_signed(&db_path(third.path()), Sync::Normal, Some(stranger)).unwrap();
    for i in 0..5 {
        let (d, ms) = old(i);
        w3.decide(d, ms).await.unwrap();
    }
    w3.prune(prune_all).await.unwrap().unwrap();
    w3.flush().await.unwrap();
    let c3 = Connection::open(db_path(third.path())).unwrap();
    let broken = verify_with(&c3, Some(&trusted)).unwrap().unwrap_err();
    assert!(
        broken
            .to_string()
            .contains("does not verify under the trusted key"),
        "{broken}"
    );
    let mode = std::fs::metadata(signing::key_path(dir.path())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

/// Commits that never stop must not grow the log without end: checkpoints
/// run beside the writer, and the log starts over once one has copied it
/// all. 20,000 one-entry commits write some 80,000 WAL frames (320 MiB)
/// if the log is never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_bounded_under_endless_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let w = Writer::start(&path, Sync::Normal).unwrap();
    for i in 0..20_000 {
        let (d, ms) = decided(i, "m", "api.example.com", "allow");
        w.decide(d, ms).await.unwrap();
    }
    w.flush().await.unwrap();
    let wal = std::fs::metadata(dir.path().join("audit.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 48 << 20, "the WAL grew to {wal} bytes");
    let conn = open_ro(&path).unwrap();
    assert_eq!(verify(&conn).unwrap().unwrap().records, 20_000);
}

/// One store, one writer: a second `veto run` on the same --data would
/// extend the chain from the same head and fork it. It is refused with a
/// reason; once the first writer is gone, the store is free again.
#[test]
fn a_second_writer_on_one_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let first = Writer::start(&path, Sync::Normal).unwrap();
    let Err(e) = Writer::start(&path, Sync::Normal) else {
        panic!("a second writer on one store was started");
    };
    assert!(matches!(e, veto_audit::AuditError::InUse(_)), "{e}");
    assert!(e.to_string().contains("in use by another veto"), "{e}");
    drop(first);
    let again = Writer::start(&path, Sync::Normal);
    assert!(
        again.is_ok(),
        "the store stays locked after its writer ended"
    );
}
