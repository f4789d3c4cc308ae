//! The identity store and the credentials snapshot, on a real SQLite file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use veto_identity::{IdentityError, Refusal, Store, db_path};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn added_machine_is_accepted_with_its_token() {
    let (dir, s) = store();
    assert!(db_path(dir.path()).exists());
    let token = s
        .add(
            "billing-worker",
            &roles(&["billing"]),
            Some("prod"),
            None,
            None,
        )
        .unwrap();
    assert!(token.starts_with("veto_"));
    let creds = s.snapshot().unwrap();
    assert_eq!(
        creds.check("billing-worker", &token, now()),
        Ok("billing-worker")
    );
    let c = creds.get("billing-worker").unwrap();
    assert_eq!(c.roles, ["billing"]);
    assert_eq!(c.env.as_deref(), Some("prod"));
}

#[test]
fn wrong_token_and_unknown_machine_are_refused() {
    let (_dir, s) = store();
    let token = s.add("web", &[], None, None, None).unwrap();
    let other = s.add("crm", &[], None, None, None).unwrap();
    let creds = s.snapshot().unwrap();
    let t = now();
    assert_eq!(creds.check("web", "veto_nope", t), Err(Refusal::BadToken));
    assert_eq!(creds.check("web", &other, t), Err(Refusal::BadToken));
    assert_eq!(creds.check("web", "", t), Err(Refusal::BadToken));
    assert_eq!(
        creds.check("nobody", &token, t),
        Err(Refusal::UnknownMachine)
    );
    // The 407 does not tell a guesser whether the name exists, and never
    // echoes what was presented.
    assert_eq!(
        Refusal::BadToken.to_string(),
        Refusal::UnknownMachine.to_string()
    );
    assert!(!Refusal::BadToken.to_string().contains("veto_nope"));
}

#[test]
fn revoked_machine_is_refused_by_the_next_snapshot() {
    let (_dir, s) = store();
    let token = s.add("web", &[], None, None, None).unwrap();
    let before = s.snapshot().unwrap();
    s.revoke("web").unwrap();
    // A snapshot is a snapshot: the proxy reloads on a version change.
    assert_eq!(before.check("web", &token, now()), Ok("web"));
    let after = s.snapshot().unwrap();
    let at = match after.check("web", &token, now()) {
        Err(Refusal::Revoked { at }) => at,
        other => panic!("expected Revoked, got {other:?}"),
    };
    assert!((now() - at).abs() < 60);
    assert!(
        Refusal::Revoked { at }.to_string().contains("revoked at "),
        "{}",
        Refusal::Revoked { at }
    );
    // Only the right token learns that it was revoked.
    assert_eq!(after.check("web", "veto_x", now()), Err(Refusal::BadToken));

    // Revoking again, or revoking a stranger, is an error.
    assert!(matches!(
        s.revoke("web"),
        Err(IdentityError::AlreadyRevoked { .. })
    ));
    assert!(matches!(s.revoke("ghost"), Err(IdentityError::Unknown(_))));

    // The name can be registered again, with a new token; the old one stays
    // refused and the history stays listed.
    let fresh = s.add("web", &[], None, None, None).unwrap();
    let again = s.snapshot().unwrap();
    assert_eq!(again.check("web", &fresh, now()), Ok("web"));
    assert_eq!(again.check("web", &token, now()), Err(Refusal::BadToken));
    let list = s.list().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].revoked_at.is_some() && list[1].revoked_at.is_none());
}

#[test]
fn ttl_expires_at_the_supplied_time() {
    let (_dir, s) = store();
    let token = s
        .add(
            "ci-runner",
            &[],
            None,
            Some(Duration::from_secs(3600)),
            None,
        )
        .unwrap();
    let creds = s.snapshot().unwrap();
    let expires = creds.get("ci-runner").unwrap().expires.unwrap();
    assert!((expires - now() - 3600).abs() < 60);
    assert_eq!(
        creds.check("ci-runner", &token, expires - 1),
        Ok("ci-runner")
    );
    assert_eq!(
        creds.check("ci-runner", &token, expires),
        Err(Refusal::Expired { at: expires })
    );
    assert_eq!(
        creds.check("ci-runner", &token, expires + 86_400),
        Err(Refusal::Expired { at: expires })
    );
    assert!(
        Refusal::Expired { at: expires }
            .to_string()
            .contains("expired at 20")
    );
    // An expired machine still holds its name until revoked.
    assert!(matches!(
        s.add("ci-runner", &[], None, None, None),
        Err(IdentityError::Exists(_))
    ));
    // Zero and absurd durations are refused.
    assert!(matches!(
        s.add("a", &[], None, Some(Duration::ZERO), None),
        Err(IdentityError::InvalidDuration { .. })
    ));
    assert!(matches!(
        s.add("a", &[], None, Some(Duration::from_secs(u64::MAX)), None),
        Err(IdentityError::InvalidDuration { .. })
    ));
}

#[test]
fn idle_ttl_is_stored() {
    let (_dir, s) = store();
    s.add("w", &[], None, None, Some(Duration::from_secs(30 * 86_400)))
        .unwrap();
    let list = s.list().unwrap();
    assert_eq!(list[0].idle_ttl, Some(30 * 86_400));
    assert_eq!(list[0].last_used, None);
}

#[test]
fn duplicate_add_is_refused() {
    let (_dir, s) = store();
    let token = s.add("web", &[], None, None, None).unwrap();
    let err = s.add("web", &[], None, None, None).unwrap_err();
    assert!(matches!(err, IdentityError::Exists(_)));
    assert!(err.to_string().contains("already exists"), "{err}");
    // The first token still works: a refused add changed nothing.
    assert_eq!(s.snapshot().unwrap().check("web", &token, now()), Ok("web"));
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn names_are_validated() {
    let (_dir, s) = store();
    for good in ["a", "web-1", "billing.worker_2", "A9", &"x".repeat(128)] {
        s.add(good, &[], None, None, None)
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        "-web",
        ".web",
        "web:1",
        "web 1",
        "wéb",
        "web/1",
        &"x".repeat(129),
    ] {
        assert!(
            matches!(
                s.add(bad, &[], None, None, None),
                Err(IdentityError::InvalidName { .. })
            ),
            "{bad:?} was accepted"
        );
    }
    for reserved in ["anonymous", "Anonymous"] {
        assert!(matches!(
            s.add(reserved, &[], None, None, None),
            Err(IdentityError::Reserved(_))
        ));
    }
    // Roles and env follow the policy language's names (and a role cannot
    // smuggle the `,` the store joins them with).
    assert!(matches!(
        s.add("r", &roles(&["a,b"]), None, None, None),
        Err(IdentityError::InvalidName { what: "role", .. })
    ));
    assert!(matches!(
        s.add("r", &[], Some("pr od"), None, None),
        Err(IdentityError::InvalidName { what: "env", .. })
    ));
    let t = s
        .add("r", &roles(&["b", "a", "b"]), None, None, None)
        .unwrap();
    let creds = s.snapshot().unwrap();
    assert_eq!(creds.check("r", &t, now()), Ok("r"));
    assert_eq!(creds.get("r").unwrap().roles, ["b", "a"]);
}

#[test]
fn the_token_is_never_written_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = Vec::new();
    {
        let s = Store::open(dir.path()).unwrap();
        for i in 0..20 {
            tokens.push(
                s.add(&format!("m{i}"), &roles(&["r"]), None, None, None)
                    .unwrap(),
            );
        }
        s.revoke("m3").unwrap();
        // Look while the store is open too (WAL and shared-memory files).
        assert_no_token_on_disk(dir.path(), &tokens);
    }
    assert_no_token_on_disk(dir.path(), &tokens);
}

fn assert_no_token_on_disk(dir: &std::path::Path, tokens: &[String]) {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for t in tokens {
            // Whole token, and its random part alone.
            for needle in [t.as_str(), &t["veto_".len()..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "a token is on disk"
                );
            }
        }
    }
    assert!(files >= 1);
}

#[test]
fn version_changes_with_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let v0 = s.version().unwrap();
    assert_eq!(s.version().unwrap(), v0, "reading changes nothing");
    s.add("web", &[], None, None, None).unwrap();
    let v1 = s.version().unwrap();
    assert_ne!(v1, v0);
    let _ = s.list().unwrap();
    let snap = s.snapshot().unwrap();
    assert_eq!(snap.version(), v1);
    assert_eq!(s.version().unwrap(), v1);
    // A refused add changes nothing.
    assert!(s.add("web", &[], None, None, None).is_err());
    assert_eq!(s.version().unwrap(), v1);
    s.revoke("web").unwrap();
    let v2 = s.version().unwrap();
    assert_ne!(v2, v1);
    assert_ne!(v2, v0);

    // Another connection (the CLI while the proxy runs) is seen too.
    let other = Store::open(dir.path()).unwrap();
    other.add("crm", &[], None, None, None).unwrap();
    let v3 = s.version().unwrap();
    assert_ne!(v3, v2);
    assert!(s.snapshot().unwrap().get("crm").is_some());
}

#[test]
fn store_and_credentials_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<veto_identity::Credentials>();
}

#[test]
fn rotation_keeps_the_old_token_for_the_overlap_then_says_rotated() {
    let (_dir, s) = store();
    let old = s.add("web", &[], None, None, None).unwrap();
    let new = s.rotate("web", Some(Duration::from_secs(3600))).unwrap();
    assert_ne!(old, new);
    let c = s.snapshot().unwrap();
    let t = now();
    assert_eq!(c.check("web", &new, t), Ok("web"));
    assert_eq!(
        c.check("web", &old, t),
        Ok("web"),
        "the old token works during the overlap"
    );
    let until = match c.check("web", &old, t + 7200) {
        Err(Refusal::Rotated { at }) => {
            assert!(at >= t + 3600 && at <= t + 3602);
            at
        }
        other => panic!("expected Rotated, got {other:?}"),
    };
    // Both sides of the boundary, on the injected clock.
    assert_eq!(c.check("web", &old, until - 1), Ok("web"));
    assert_eq!(
        c.check("web", &old, until),
        Err(Refusal::Rotated { at: until })
    );
    assert_eq!(c.check("web", &new, t + 7200), Ok("web"));
    assert!(
        c.check("web", &old, t + 7200)
            .unwrap_err()
            .to_string()
            .contains("rotated")
    );

    // Without an overlap the old token stops at once; a wrong token is still
    // just a wrong token.
    let newer = s.rotate("web", None).unwrap();
    let c = s.snapshot().unwrap();
    assert!(matches!(
        c.check("web", &new, now() + 1),
        Err(Refusal::Rotated { .. })
    ));
    assert_eq!(c.check("web", &newer, now()), Ok("web"));
    assert_eq!(c.check("web", "veto_nope", now()), Err(Refusal::BadToken));

    // A revoked machine cannot be rotated, and its old token is revoked too.
    s.revoke("web").unwrap();
    assert!(matches!(
        s.rotate("web", None),
        Err(IdentityError::Unknown(_))
    ));
    assert!(matches!(
        s.snapshot().unwrap().check("web", &newer, now()),
        Err(Refusal::Revoked { .. })
    ));
    assert!(matches!(
        s.rotate("ghost", None),
        Err(IdentityError::Unknown(_))
    ));
}

#[test]
fn idle_ttl_counts_from_the_last_use_in_memory_or_stored() {
    let (_dir, s) = store();
    let token = s
        .add("cron", &[], None, None, Some(Duration::from_secs(60)))
        .unwrap();
    let creds = s.snapshot().unwrap();
    let created = creds.get("cron").unwrap().created;
    // Never used: counts from creation.
    assert_eq!(creds.check("cron", &token, created + 59), Ok("cron"));
    assert_eq!(
        creds.check("cron", &token, created + 60),
        Err(Refusal::Idle {
            since: created,
            limit: 60
        })
    );
    // A use the proxy holds in memory keeps it alive...
    assert_eq!(
        creds.check_used("cron", &token, created + 100, Some(created + 50)),
        Ok("cron")
    );
    // ...and so does one written to the store, once read back.
    s.record_uses(&[("cron".into(), created + 90)]).unwrap();
    s.record_uses(&[("cron".into(), created + 10)]).unwrap();
    let creds = s.snapshot().unwrap();
    assert_eq!(creds.get("cron").unwrap().last_used, Some(created + 90));
    assert_eq!(creds.check("cron", &token, created + 149), Ok("cron"));
    let refused = creds.check("cron", &token, created + 150).unwrap_err();
    assert!(refused.to_string().contains("idle limit 1m"), "{refused}");
    // A machine proven by certificate is held to the same limits.
    assert_eq!(creds.check_machine("cron", created + 100, None), Ok("cron"));
    assert!(creds.check_machine("cron", created + 150, None).is_err());
    assert_eq!(
        creds.check_machine("nobody", created, None),
        Err(Refusal::UnknownMachine)
    );
}
