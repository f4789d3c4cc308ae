//! The chain's end, anchored by a signed head beside the store: cutting the
//! newest entries is seen by `verify` (with how many are missing), by the
//! next writer that opens the store (which records the cut in the chain for
//! good), and so are a deleted, forged or foreign head.

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use veto_audit::head::{SignedHead, head_path, read};
use veto_audit::*;

fn decided(i: usize) -> (Decided, u64) {
    let ms = 1_767_225_600_000 + i as u64;
    let d = Decided {
        id: new_id(ms),
        time: format_time(ms),
        machine: "m".into(),
        protocol: "http".into(),
        method: Some("GET".into()),
        host: "example.com".into(),
        port: 80,
        path: Some("/".into()),
        ips: vec![],
        dns_lookup: false,
        decision: "allow".into(),
        would: None,
        rule: "default".into(),
        reason: "because".into(),
        data: BTreeMap::new(),
        status: None,
        policy: "sha256:abc".into(),
    };
    (d, ms)
}

/// A node's writer with `n` decisions committed and the head flushed.
async fn node(dir: &Path, from: usize, n: usize) -> Writer {
    let key = signing::load_or_create(dir).unwrap();
    let w = Writer::start_signed(&db_path(dir), Sync::Normal, Some(key)).unwrap();
    for i in from..from + n {
        let (d, ms) = decided(i);
        w.decide(d, ms).await.unwrap();
    }
    w.flush().await.unwrap();
    w
}

fn anchored(dir: &Path) -> Result<Intact, Broken> {
    let db = db_path(dir);
    let hp = head_path(&db);
    let head = read(&hp).unwrap();
    let trusted = signing::read_public(&signing::public_path(dir)).unwrap();
    let c = Connection::open(&db).unwrap();
    verify_anchored(&c, head.as_ref(), &hp, Some(&trusted)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_head_vouches_for_the_whole_chain() {
    let dir = tempfile::tempdir().unwrap();
    let _w = node(dir.path(), 0, 20).await;
    let intact = anchored(dir.path()).unwrap();
    assert_eq!(intact.entries, 20);
    let anchor = intact.anchor.expect("held to the signed head");
    assert_eq!(anchor.seq, 20);
    assert_eq!(anchor.hash, intact.head);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(head_path(&db_path(dir.path()))).unwrap();
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_newest_entries_is_reported_with_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path(), 0, 20).await;
    drop(w);
    let c = Connection::open(db_path(dir.path())).unwrap();
    c.execute("DELETE FROM chain WHERE seq > 13", []).unwrap();
    assert!(
        verify(&c).unwrap().is_ok(),
        "what is left still links: the chain alone cannot tell"
    );
    let broken = anchored(dir.path()).unwrap_err();
    assert!(
        matches!(
            broken,
            Broken::Truncated {
                found: 13,
                signed: 20,
                rewritten: false,
                ..
            }
        ),
        "{broken:?}"
    );
    assert!(
        broken.to_string().contains("7 entries are missing"),
        "{broken}"
    );

    // The next writer to open it records the cut in the chain itself, and
    // the trail never verifies clean again, whatever the head says later.
    let w = node(dir.path(), 100, 3).await;
    let events: Vec<Event> = {
        let mut v = Vec::new();
        events(&c, |e| {
            v.push(e);
            Ok(())
        })
        .unwrap();
        v
    };
    let cut = events.iter().find(|e| e.event == "chain-cut").unwrap();
    assert_eq!(cut.detail["signed_seq"], 20);
    assert_eq!(cut.detail["found_seq"], 13);
    assert_eq!(cut.detail["missing"], 7);
    let broken = anchored(dir.path()).unwrap_err();
    assert!(
        broken.to_string().contains("7 entries were cut off"),
        "{broken}"
    );
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_end_written_anew_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    drop(node(dir.path(), 0, 10).await);
    let db = db_path(dir.path());
    let c = Connection::open(&db).unwrap();
    c.execute("DELETE FROM chain WHERE seq > 6", []).unwrap();
    // Someone without the key writes the end again (a writer that does not
    // sign checks nothing).
    let w = Writer::start(&db, Sync::Normal).unwrap();
    for i in 50..60 {
        let (d, ms) = decided(i);
        w.decide(d, ms).await.unwrap();
    }
    w.flush().await.unwrap();
    let broken = anchored(dir.path()).unwrap_err();
    assert!(
        matches!(
            broken,
            Broken::Truncated {
                signed: 10,
                rewritten: true,
                ..
            }
        ),
        "{broken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_forged_or_foreign_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(node(dir.path(), 0, 5).await);
    let hp = head_path(&db_path(dir.path()));
    let good = read(&hp).unwrap().unwrap();

    // Forged: moved back to hide the newest entries.
    let mut forged = good.clone();
    forged.seq = 3;
    veto_audit::head::write(&hp, &forged).unwrap();
    let broken = anchored(dir.path()).unwrap_err();
    assert!(matches!(broken, Broken::Head { .. }), "{broken:?}");

    // Signed afresh with another key: refused under the trusted one.
    let stranger = tempfile::tempdir().unwrap();
    let other = signing::load_or_create(stranger.path()).unwrap();
    veto_audit::head::write(&hp, &SignedHead::sign(&other, 3, &good.hash, 1)).unwrap();
    let broken = anchored(dir.path()).unwrap_err();
    assert!(broken.to_string().contains("trusted key"), "{broken}");

    // Deleted.
    std::fs::remove_file(&hp).unwrap();
    let broken = anchored(dir.path()).unwrap_err();
    assert!(matches!(broken, Broken::Unanchored { .. }), "{broken:?}");
    // ... and a writer opening the store without it says so in the chain.
    drop(node(dir.path(), 10, 1).await);
    let broken = anchored(dir.path()).unwrap_err();
    assert!(broken.to_string().contains("could not vouch"), "{broken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_follows_busy_writers_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing::load_or_create(dir.path()).unwrap();
    let w = Writer::start_signed(&db_path(dir.path()), Sync::Normal, Some(key)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..400).step_by(8) {
                let (d, ms) = decided(i);
                w.decide(d, ms).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let prune = Retention {
        max_age: Some(std::time::Duration::from_secs(1)),
        max_bytes: None,
    };
    w.prune(prune).await.unwrap().unwrap();
    w.flush().await.unwrap();
    let intact = anchored(dir.path()).unwrap();
    assert_eq!(
        intact.anchor.unwrap().seq,
        401,
        "400 decisions and a checkpoint"
    );
}
