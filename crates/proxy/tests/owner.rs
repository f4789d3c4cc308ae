//! One owner of what the policy in force is made of: reloads and opt-out
//! changes racing each other (thousands of interleavings, on a real
//! multi-threaded runtime) never lose an update. Whatever order they land
//! in, what is in force afterwards is the latest file with the latest
//! opt-outs, compiled together, and every snapshot ever in force was one
//! text with exactly the opt-outs compiled into it.

use std::sync::{Arc, Mutex};
use veto_policy::{DataSet, Host, NoGrants, Protocol, Request};
use veto_proxy::owner::Change;
use veto_proxy::{Active, Config, OwnedOptOut, Shared};

fn text(v: usize) -> String {
    format!("version: 1\n# file version {v}\ndefaults: {{ decision: allow }}\n")
}

fn optouts(n: usize) -> Vec<OwnedOptOut> {
    (0..n % 4 + 1)
        .map(|k| OwnedOptOut {
            rule_id: format!("optout-{n}-{k}"),
            kind: "host".into(),
            value: format!("h{n}-{k}.test"),
            reason: "racing".into(),
        })
        .collect()
}

/// Whether `active`'s policy refuses the hosts its opt-outs name, and only
/// those (of the opt-outs of `others` steps too).
fn consistent(active: &Active, others: usize) -> bool {
    let named: Vec<&str> = active.optouts.iter().map(|o| o.value.as_str()).collect();
    let denied = |host: &str| {
        let h = Host::Name(host.into());
        let req = Request {
            machine: "m",
            protocol: Protocol::Http,
            host: h.as_ref(),
            port: 80,
            ips: &[],
            method: "GET",
            path: "/",
            data: DataSet::EMPTY,
            now: 0,
        };
        active.policy.decide(&req, &NoGrants).effect() == veto_policy::Effect::Deny
    };
    named.iter().all(|h| denied(h))
        && (0..others)
            .flat_map(optouts)
            .all(|o| denied(&o.value) == named.contains(&o.value.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_and_optout_changes_never_lose_an_update() {
    const STEPS: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let writer =
        veto_audit::Writer::start(&veto_audit::db_path(dir.path()), veto_audit::Sync::Normal)
            .unwrap();
    let first = Active::compile(&text(0), "t", &[], 0).unwrap();
    let shared = Shared::new(
        Config::default(),
        first,
        writer,
        "127.0.0.1:9".parse().unwrap(),
        None,
    );
    // The truth each change reads: the file on disk and the control store.
    let file = Arc::new(Mutex::new(text(0)));
    let store = Arc::new(Mutex::new(Vec::<OwnedOptOut>::new()));

    let reloads = {
        let (shared, file) = (shared.clone(), file.clone());
        tokio::spawn(async move {
            for v in 1..=STEPS {
                *file.lock().unwrap() = text(v);
                let f = file.clone();
                let read = Box::new(move || Ok((f.lock().unwrap().clone(), "veto.yaml".into())));
                shared.change(Change::Text(read), "file").await.unwrap();
                if v % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Two writers of opt-outs, as the admin API and the expiry loop are:
    // each stores, then asks for the set in force to be re-read.
    let optout_tasks: Vec<_> = (0..2)
        .map(|t| {
            let (shared, store) = (shared.clone(), store.clone());
            tokio::spawn(async move {
                for n in (t..STEPS).step_by(2) {
                    *store.lock().unwrap() = optouts(n);
                    let s = store.clone();
                    let read = Box::new(move || Ok(s.lock().unwrap().clone()));
                    let trigger = if t == 0 { "admin" } else { "expiry" };
                    shared.change(Change::OptOuts(read), trigger).await.unwrap();
                }
            })
        })
        .collect();
    // Meanwhile every snapshot a request could see is whole.
    let watcher = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < 3_000 {
                let a = shared.policy.load_full();
                assert!(consistent(&a, 12), "a snapshot mixed two changes");
                seen += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    reloads.await.unwrap();
    for t in optout_tasks {
        t.await.unwrap();
    }
    watcher.await.unwrap();

    let now = shared.policy.load_full();
    assert_eq!(
        &*now.source,
        text(STEPS).as_str(),
        "the latest file is in force"
    );
    assert_eq!(
        *now.optouts,
        *store.lock().unwrap(),
        "the latest opt-outs are in force"
    );
    assert!(consistent(&now, STEPS));
}
