//! The store conformance suite: every scenario runs against SQLite and
//! against a real PostgreSQL server (a fresh database per scenario).
//! PostgreSQL is found at `VETO_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); `scripts/test` installs
//! and starts it when the machine has none. Without it these tests fail:
//! they never skip silently.

use std::future::Future;
use std::time::Duration;
use veto_server::store::{Entry, Target};
use veto_server::{Location, Store};

/// Real chained entries, as an agent ships them; `tag` tells trails apart.
fn chained(tag: &str, n: i64) -> Vec<Entry> {
    let mut prev = veto_audit::GENESIS.to_string();
    (1..=n)
        .map(|seq| {
            let body = format!("{{\"n\":{seq},\"t\":\"{tag}\"}}");
            let hash = veto_audit::chain_hash(&prev, veto_audit::Kind::Completion, &body);
            Entry {
                seq,
                kind: 1,
                body,
                prev: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// An entry chained after `e`, with its own body.
fn follow(e: &Entry, tag: &str) -> Entry {
    let body = format!("{{\"n\":{},\"t\":\"{tag}\"}}", e.seq + 1);
    Entry {
        seq: e.seq + 1,
        kind: 1,
        hash: veto_audit::chain_hash(&e.hash, veto_audit::Kind::Completion, &body),
        body,
        prev: e.hash.clone(),
    }
}

fn admin_url() -> String {
    std::env::var("VETO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test server, dropped afterwards.
pub struct PgDb {
    pub url: String,
    pub name: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        let name = format!(
            "veto_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (scripts/test starts one): {e}"));
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs `scenario` on a fresh SQLite store and a fresh PostgreSQL store.
async fn both<F, Fut>(scenario: F)
where
    F: Fn(Store, Location) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::Sqlite(dir.path().join("control.db"));
    scenario(Store::open(&loc).await.unwrap(), loc).await;
    let db = PgDb::new().await;
    let loc = Location::Postgres(db.url.clone());
    scenario(Store::open(&loc).await.unwrap(), loc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_versions_are_kept_and_logged() {
    both(|s, loc| async move {
        assert!(s.policy_current().await.unwrap().is_none());
        let v1 = s
            .policy_push(
                "a".into(),
                "h1".into(),
                "admin".into(),
                "first".into(),
                "policy.push",
            )
            .await
            .unwrap();
        let v2 = s
            .policy_push(
                "b".into(),
                "h2".into(),
                "ops".into(),
                "second".into(),
                "policy.push",
            )
            .await
            .unwrap();
        assert!(v2.version > v1.version, "{loc:?}");
        assert_eq!(s.policy_current().await.unwrap().unwrap().text, "b");
        assert_eq!(
            s.policy_version(v1.version).await.unwrap().unwrap().text,
            "a"
        );
        let versions = s.policy_versions().await.unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [v2.version, v1.version]
        );
        let log = s.changes().await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].action, "policy.push");
        assert_eq!(log[1].actor, "ops");
        assert_eq!(log[1].before["hash"], "h1");
        assert_eq!(log[1].after["hash"], "h2");
        // Reopening runs no migration twice and keeps everything.
        drop(s);
        let s = Store::open(&loc).await.unwrap();
        assert_eq!(s.policy_current().await.unwrap().unwrap().hash, "h2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optouts_are_added_removed_and_announced() {
    both(|s, loc| async move {
        let mut heard = s.subscribe();
        let o = s
            .optout_add(
                Target::Host("api.segment.io".into()),
                "incident 42".into(),
                None,
                "ops".into(),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), heard.recv())
            .await
            .unwrap_or_else(|_| panic!("{loc:?}: the change was not announced"))
            .unwrap();
        assert!(
            s.optout_add(Target::Machine("m".into()), "  ".into(), None, "ops".into())
                .await
                .is_err()
        );
        assert_eq!(s.optouts().await.unwrap(), vec![o.clone()]);
        let removed = s
            .optout_remove(o.id, "fixed".into(), "ops".into())
            .await
            .unwrap();
        assert_eq!(removed, o);
        assert!(
            s.optout_remove(o.id, "".into(), "ops".into())
                .await
                .is_err()
        );
        assert!(s.optouts().await.unwrap().is_empty());
        let actions: Vec<String> = s
            .changes()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.action)
            .collect();
        assert_eq!(actions, ["optout.add", "optout.remove"], "{loc:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enroll_report_and_ship_audit_once() {
    both(|s, loc| async move {
        let token = s
            .agent_add("edge-1".into(), Some("prod".into()), "admin".into())
            .await
            .unwrap();
        assert!(token.starts_with("vagent_"));
        assert!(
            s.agent_add("edge-1".into(), None, "admin".into())
                .await
                .is_err(),
            "{loc:?}"
        );
        assert_eq!(
            s.agent_by_token(&token).await.unwrap().as_deref(),
            Some("edge-1")
        );
        assert_eq!(s.agent_by_token("vagent_nope").await.unwrap(), None);
        s.agent_report("edge-1".into(), "0.1.0".into(), Some("sha256:x".into()), 3)
            .await
            .unwrap();
        let a = &s.agents().await.unwrap()[0];
        assert_eq!(
            (a.spool, a.policy_hash.as_deref(), a.env.as_deref()),
            (3, Some("sha256:x"), Some("prod"))
        );

        let trail = chained("a", 9);
        let entry = |seq: i64| trail[seq as usize - 1].clone();
        let batch: Vec<Entry> = (1..=3).map(entry).collect();
        assert_eq!(
            s.audit_ingest("edge-1".into(), batch.clone(), None)
                .await
                .unwrap(),
            3
        );
        // A retried batch, overlapping the next: every entry once.
        let again: Vec<Entry> = (2..=5).map(entry).collect();
        assert_eq!(
            s.audit_ingest("edge-1".into(), again, None).await.unwrap(),
            5
        );
        let stored = s.audit_entries("edge-1".into(), 0, 100).await.unwrap();
        assert_eq!(stored, (1..=5).map(entry).collect::<Vec<_>>());
        assert_eq!(
            s.audit_entries("edge-1".into(), 3, 1).await.unwrap(),
            vec![entry(4)]
        );
        // A different entry under a stored seq (a reset trail), or a gap,
        // is refused, never acknowledged.
        let forged = follow(&entry(2), "b");
        let err = s
            .audit_ingest("edge-1".into(), vec![forged], None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("differs"), "{loc:?}: {err}");
        let err = s
            .audit_ingest("edge-1".into(), vec![entry(9)], None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("6 to 8 are missing"),
            "{loc:?}: {err}"
        );
        assert_eq!(
            s.audit_entries("edge-1".into(), 0, 100)
                .await
                .unwrap()
                .len(),
            5
        );
    })
    .await;
}

/// What an agent ships is checked as `veto audit verify` checks a local
/// trail: entries that do not hash or do not follow are refused, and the
/// chain's end is held to the agent's signed head, whose key is pinned and
/// which never moves back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_chains_are_checked_and_held_to_the_signed_head() {
    both(|s, loc| async move {
        let dir = tempfile::tempdir().unwrap();
        let key = veto_audit::signing::load_or_create(dir.path()).unwrap();
        let sign = |e: &Entry| veto_audit::head::SignedHead::sign(&key, e.seq, &e.hash, 1_000);
        let trail = chained("a", 8);
        let ship = |from: usize, to: usize| trail[from - 1..to].to_vec();
        let refused = |r: Result<i64, veto_server::store::StoreError>, what: &str| {
            let err = r.unwrap_err().to_string();
            assert!(err.contains(what), "{loc:?}: {err}");
        };

        // Edited after chaining, or not following its predecessor.
        let mut edited = ship(1, 3);
        edited[1].body = "{\"n\":2,\"t\":\"edited\"}".into();
        refused(s.audit_ingest("a1".into(), edited, None).await, "does not hash");
        let mut unlinked = ship(1, 3);
        unlinked[2] = follow(&chained("z", 2)[1], "a");
        refused(
            s.audit_ingest("a1".into(), unlinked, None).await,
            "does not follow",
        );
        assert!(s.audit_entries("a1".into(), 0, 10).await.unwrap().is_empty());

        // A batch and the head that vouches for it, then a head ahead of
        // what has shipped (the rest still spooled at the agent).
        let h5 = sign(&trail[4]);
        assert_eq!(
            s.audit_ingest("a1".into(), ship(1, 5), Some(h5.clone())).await.unwrap(),
            5
        );
        assert_eq!(s.audit_head("a1".into()).await.unwrap(), Some(h5.clone()));
        let h7 = sign(&trail[6]);
        s.audit_ingest("a1".into(), vec![], Some(h7.clone())).await.unwrap();
        let check = s.audit_verify("a1".into()).await.unwrap();
        assert_eq!((check.entries, check.unshipped, check.broken), (5, 2, None));

        // A head that moves back (the agent's trail was cut), one of
        // another key, one forged, or one naming another entry: refused.
        refused(
            s.audit_ingest("a1".into(), ship(6, 6), Some(h5.clone())).await,
            "was cut",
        );
        let other = tempfile::tempdir().unwrap();
        let stranger = veto_audit::signing::load_or_create(other.path()).unwrap();
        let foreign = veto_audit::head::SignedHead::sign(&stranger, 8, &trail[7].hash, 2_000);
        refused(
            s.audit_ingest("a1".into(), ship(6, 8), Some(foreign)).await,
            "another key",
        );
        let mut forged = sign(&trail[7]);
        forged.seq = 9;
        refused(
            s.audit_ingest("a1".into(), ship(6, 8), Some(forged)).await,
            "not valid",
        );
        let wrong = veto_audit::head::SignedHead::sign(&key, 3, &trail[1].hash, 3_000);
        refused(
            s.audit_ingest("a2".into(), ship(1, 3), Some(wrong)).await,
            "not the one",
        );
        assert_eq!(
            s.audit_ingest("a1".into(), ship(6, 8), Some(sign(&trail[7]))).await.unwrap(),
            8
        );
        let check = s.audit_verify("a1".into()).await.unwrap();
        assert_eq!((check.entries, check.unshipped, check.broken), (8, 0, None));

        // An agent whose own writer found its trail cut says so in the
        // chain: the server's walk reports it.
        let ev = veto_audit::Event {
            id: veto_audit::new_id(1),
            time: veto_audit::format_time(1),
            event: "chain-cut".into(),
            detail: serde_json::json!({"signed_seq": 12, "found_seq": 8, "missing": 4, "signed_time": "t"}),
        };
        let body = serde_json::to_string(&ev).unwrap();
        let cut = Entry {
            seq: 9,
            kind: 2,
            hash: veto_audit::chain_hash(&trail[7].hash, veto_audit::Kind::Event, &body),
            body,
            prev: trail[7].hash.clone(),
        };
        s.audit_ingest("a1".into(), vec![cut], None).await.unwrap();
        let check = s.audit_verify("a1".into()).await.unwrap();
        let broken = check.broken.unwrap();
        assert!(broken.contains("4 entries were cut off"), "{loc:?}: {broken}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_reaches_the_other() {
    let db = PgDb::new().await;
    let loc = Location::Postgres(db.url.clone());
    let (a, b) = tokio::join!(Store::open(&loc), Store::open(&loc));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut heard = b.subscribe();
    // The listener announces itself once connected; drain that first.
    let _ = tokio::time::timeout(Duration::from_secs(2), heard.recv()).await;
    a.optout_add(
        Target::Service("analytics".into()),
        "breach".into(),
        None,
        "ops".into(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(2), heard.recv())
        .await
        .expect("replica B heard replica A's change")
        .unwrap();
    assert_eq!(b.optouts().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_are_added_rotated_revoked_and_used() {
    both(|s, loc| async move {
        let t = s
            .machine_add(
                "web".into(),
                vec!["frontend".into()],
                Some("prod".into()),
                Some(3600),
                None,
                "ops".into(),
                "new".into(),
            )
            .await
            .unwrap();
        assert!(t.starts_with("veto_"), "{loc:?}");
        assert!(
            s.machine_add(
                "web".into(),
                vec![],
                None,
                None,
                None,
                "ops".into(),
                "again".into()
            )
            .await
            .is_err()
        );
        assert!(
            s.machine_add(
                "anonymous".into(),
                vec![],
                None,
                None,
                None,
                "ops".into(),
                "".into()
            )
            .await
            .is_err()
        );
        let m = &s.machines().await.unwrap()[0];
        assert_eq!(
            (m.name.as_str(), m.roles.clone(), m.env.as_deref()),
            ("web", vec!["frontend".to_string()], Some("prod"))
        );
        assert_eq!(m.hash.len(), 32);
        let t2 = s
            .machine_rotate("web".into(), 60, "ops".into(), "rotation".into())
            .await
            .unwrap();
        assert_ne!(t, t2);
        let m = &s.machines().await.unwrap()[0];
        assert!(m.old.is_some());
        s.machine_uses(vec![("web".into(), 100), ("web".into(), 50)])
            .await
            .unwrap();
        assert_eq!(s.machines().await.unwrap()[0].last_used, Some(100));
        s.machine_revoke("web".into(), "ops".into(), "gone".into())
            .await
            .unwrap();
        assert!(
            s.machine_revoke("web".into(), "ops".into(), "".into())
                .await
                .is_err()
        );
        assert!(s.machines().await.unwrap()[0].revoked_at.is_some());
        // A revoked name can be registered again.
        s.machine_add(
            "web".into(),
            vec![],
            None,
            None,
            None,
            "ops".into(),
            "back".into(),
        )
        .await
        .unwrap();
        assert!(s.machines().await.unwrap()[0].revoked_at.is_none());
        let actions: Vec<String> = s
            .changes()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.action)
            .collect();
        assert_eq!(
            actions,
            [
                "machine.add",
                "machine.rotate",
                "machine.revoke",
                "machine.add"
            ]
        );
        // The change log never holds a token.
        let log = serde_json::to_string(&s.changes().await.unwrap()).unwrap();
        assert!(!log.contains(&t) && !log.contains(&t2));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_are_made_again_after_a_restart() {
    let db = PgDb::new().await;
    let s = Store::open(&Location::Postgres(db.url.clone()))
        .await
        .unwrap();
    s.policy_push(
        "a".into(),
        "h".into(),
        "ops".into(),
        "r".into(),
        "policy.push",
    )
    .await
    .unwrap();
    // What a database restart or failover does to open connections.
    let (admin, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = db.url.rsplit('/').next().unwrap().to_string();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.policy_current().await.unwrap().unwrap().hash, "h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_keep_the_latest_use_and_log_renewals_and_lapses_once() {
    use veto_server::store::GrantUse;
    both(|s, loc| async move {
        let u = |rule: &str, machine: &str, at: i64| GrantUse {
            rule: rule.into(),
            machine: machine.into(),
            last_used: at,
        };
        // Uses from two agents, out of order: the latest counts.
        s.grant_uses(vec![
            u("g", "web", 100),
            u("g", "web", 300),
            u("g", "db", 50),
        ])
        .await
        .unwrap();
        s.grant_uses(vec![u("g", "web", 200)]).await.unwrap();
        let state = s.grants().await.unwrap();
        assert_eq!(
            state.uses,
            vec![u("g", "db", 50), u("g", "web", 300)],
            "{loc:?}"
        );
        // A rule's first load is kept, never moved.
        s.grant_rules_loaded(vec!["g".into()], 10).await.unwrap();
        s.grant_rules_loaded(vec!["g".into(), "h".into()], 20)
            .await
            .unwrap();
        let first = s.grants().await.unwrap().first_loaded;
        assert_eq!((first["g"], first["h"]), (10, 20), "{loc:?}");

        // A renewal is a change: logged with who and why, and announced.
        let mut heard = s.subscribe();
        while heard.try_recv().is_ok() {}
        let at = s
            .grant_renew("g".into(), "db".into(), "operator".into(), "back".into())
            .await
            .unwrap();
        assert!(at >= veto_server::store::unix_now() - 5);
        tokio::time::timeout(Duration::from_secs(2), heard.recv())
            .await
            .expect("the renewal was announced")
            .unwrap();
        let state = s.grants().await.unwrap();
        assert!(state.uses.contains(&u("g", "db", at)), "{loc:?}");
        assert!(
            s.grant_renew("g".into(), "db".into(), "operator".into(), " ".into())
                .await
                .is_err(),
            "a renewal without a reason"
        );

        // A lapse is logged once, however often it is seen.
        let lapse = veto_identity::review::Lapse {
            rule: "g".into(),
            machine: "web".into(),
            last_used: Some(300),
            since: 300,
            idle: 60,
        };
        assert!(s.grant_expired(&lapse).await.unwrap());
        assert!(!s.grant_expired(&lapse).await.unwrap());
        let log = s.changes().await.unwrap();
        let renew: Vec<_> = log.iter().filter(|c| c.action == "grant.renew").collect();
        assert_eq!(renew.len(), 1);
        assert_eq!(renew[0].actor, "operator");
        assert_eq!(renew[0].reason, "back");
        assert_eq!(renew[0].before["last_used"], veto_identity::format_time(50));
        let expired: Vec<_> = log.iter().filter(|c| c.action == "grant.expire").collect();
        assert_eq!(expired.len(), 1, "{loc:?}");
        assert_eq!(expired[0].actor, "veto-server");
        assert_eq!(expired[0].before["machine"], "web");
        // A later lapse of the same grant (used again since) is a new one.
        let again = veto_identity::review::Lapse {
            since: 900,
            last_used: Some(900),
            ..lapse
        };
        assert!(s.grant_expired(&again).await.unwrap());
    })
    .await;
}

/// The test server over TLS (`scripts/test` provides it): a URL with
/// `sslmode=verify-full` and `sslrootcert`, for database `db`.
fn tls_url(db: &str) -> String {
    let url = std::env::var("VETO_TEST_POSTGRES_TLS").unwrap_or_else(|_| {
        "postgres://postgres@localhost:5432/postgres?sslmode=verify-full\
         &sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem&hostaddr=127.0.0.1"
            .into()
    });
    let (base, query) = url.split_once('?').expect("a TLS URL has options");
    format!("{}/{db}?{query}", base.rsplit_once('/').unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_is_verified() {
    let db = PgDb::new().await;
    let url = tls_url(&db.name);
    let s = Store::open(&Location::Postgres(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL over TLS at {url}: {e}"));
    s.policy_push(
        "t".into(),
        "h".into(),
        "ops".into(),
        "over TLS".into(),
        "policy.push",
    )
    .await
    .unwrap();
    assert_eq!(s.policy_current().await.unwrap().unwrap().text, "t");
    // The sessions really are TLS (asked of the server, not assumed).
    let check = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await;
    let (c, conn) = check.unwrap();
    tokio::spawn(conn);
    let tls_sessions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.datname = $1 AND s.ssl",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls_sessions >= 1, "no TLS session to {}", db.name);

    // A certificate that does not chain to the given root is refused...
    let wrong_root = url
        .split('&')
        .map(|p| {
            if p.starts_with("sslrootcert=") {
                "sslrootcert=/etc/ssl/certs/ca-certificates.crt".to_string()
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let e = Store::open(&Location::Postgres(wrong_root)).await.err();
    let e = e.expect("an unverifiable server was accepted").to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // ... and so is the right certificate under another name.
    let wrong_name = url.replace("@localhost:", "@127.0.0.1:");
    let e = Store::open(&Location::Postgres(wrong_name)).await.err();
    let e = e
        .expect("a certificate for another name was accepted")
        .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queries_share_a_bounded_pool() {
    let db = PgDb::new().await;
    let url = format!("{}?pool_max_size=3&application_name=veto_pool_test", db.url);
    let s = Store::open(&Location::Postgres(url)).await.unwrap();
    let (mut c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Hold the change log locked: every read of it waits, each on a
    // connection of its own, up to the pool's size; the rest queue.
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.changes().await.unwrap() })
        })
        .collect();
    let (c2, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = || async {
        c2.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'veto_pool_test'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    // Three pooled connections plus the LISTEN one, and never more.
    let t = std::time::Instant::now();
    while count().await < 4 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count().await, 4);
    tx.rollback().await.unwrap();
    for call in calls {
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the queued reads finish once the lock is gone")
            .unwrap();
    }
}
