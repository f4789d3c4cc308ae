//! The control plane end to end: `veto server`, agents that dial out to it,
//! curl behind each agent, the CLI in between. Real processes on loopback;
//! the replica test uses a real PostgreSQL (see `scripts/test`).

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/webdriver.rs"]
mod webdriver;

use fleet::*;

use common::{curl, http_upstream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ALLOW: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

const DENY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: lockdown
    effect: deny
    to: { hosts: [api.test] }
    reason: Locked down by the fleet policy.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

/// An agent's shipped chain at the server: contiguous from 1 and linked.
fn shipped(server: SocketAddr, data: &Path, agent: &str) -> Vec<serde_json::Value> {
    let (code, v) = http_get(
        server,
        &format!("/v1/audit?agent={agent}&limit=10000"),
        &token(data, "viewer"),
    );
    assert_eq!(code, 200);
    v.as_array().cloned().unwrap_or_default()
}

fn chain_ok(entries: &[serde_json::Value]) -> bool {
    let mut prev: Option<&str> = None;
    for (i, e) in entries.iter().enumerate() {
        if e["seq"].as_i64() != Some(i as i64 + 1) {
            return false;
        }
        let kind = veto_audit::Kind::from_i64(e["kind"].as_i64().unwrap()).unwrap();
        let (p, body, hash) = (
            e["prev"].as_str().unwrap(),
            e["body"].as_str().unwrap(),
            e["hash"].as_str().unwrap(),
        );
        if prev.is_some_and(|q| q != p) || veto_audit::chain_hash(p, kind, body) != hash {
            return false;
        }
        prev = Some(hash);
    }
    true
}

fn local_head(data: &Path) -> i64 {
    let conn = veto_audit::open_ro(&veto_audit::db_path(data)).unwrap();
    veto_audit::head(&conn).unwrap().0
}

#[test]
fn one_server_two_agents_policy_optouts_audit_and_an_outage() {
    let up = http_upstream(Duration::ZERO);
    let url = format!("http://api.test:{}/", up.port());
    let dir = tempfile::tempdir().unwrap();
    let sdata = dir.path().join("server");
    let store = format!("sqlite:{}", sdata.join("control.db").display());
    let srv = server(&store, &sdata, "127.0.0.1:0");
    let addr = srv.addr;

    // Agents before any policy: they fail closed, and say why.
    let (code, t1, err) = cli(addr, &sdata, &["agents", "add", "edge-1", "--env", "prod"]);
    assert_eq!(code, 0, "{err}");
    let (_, t2, _) = cli(addr, &sdata, &["agents", "add", "edge-2", "--env", "prod"]);
    let (d1, d2) = (dir.path().join("a1"), dir.path().join("a2"));
    let a1 = agent(addr, t1.trim(), &d1);
    let a2 = agent(addr, t2.trim(), &d2);
    let (s, _, body) = curl(&format!("http://{}", a1.addr), &[&url]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("has not received a policy"), "{body}");

    // A policy pushed through the CLI reaches both.
    let allow = write(dir.path(), "allow.yaml", ALLOW);
    let (code, out, err) = cli(
        addr,
        &sdata,
        &["policy", "push", &allow, "--reason", "go live"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 1"), "{out}");
    for a in [&a1, &a2] {
        assert!(within(Duration::from_secs(5), || status(a, &url) == 200).is_some());
    }

    // An opt-out refuses the next request on both within a second; removing
    // it restores traffic.
    let (code, _, err) = cli(
        addr,
        &sdata,
        &[
            "optout",
            "add",
            "--host",
            "api.test",
            "--reason",
            "vendor breach",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for a in [&a1, &a2] {
        let took = within(Duration::from_secs(1), || status(a, &url) == 403);
        assert!(took.is_some(), "the opt-out was not in force within 1 s");
    }
    let (_, _, body) = curl(&format!("http://{}", a2.addr), &[&url]);
    assert!(
        body.contains("optout-1") && body.contains("vendor breach"),
        "{body}"
    );
    let (code, _, err) = cli(
        addr,
        &sdata,
        &["optout", "remove", "1", "--reason", "fixed"],
    );
    assert_eq!(code, 0, "{err}");
    for a in [&a1, &a2] {
        assert!(within(Duration::from_secs(1), || status(a, &url) == 200).is_some());
    }

    // A new version, then a rollback to the first.
    let deny = write(dir.path(), "deny.yaml", DENY);
    cli(
        addr,
        &sdata,
        &["policy", "push", &deny, "--reason", "lockdown"],
    );
    for a in [&a1, &a2] {
        assert!(within(Duration::from_secs(2), || status(a, &url) == 403).is_some());
    }
    let (code, out, err) = cli(
        addr,
        &sdata,
        &["policy", "rollback", "1", "--reason", "too strict"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 3"), "{out}");
    for a in [&a1, &a2] {
        assert!(within(Duration::from_secs(2), || status(a, &url) == 200).is_some());
    }

    // Machines kept by the server: accepted by every agent, revoked everywhere.
    let (code, tok, err) = cli(
        addr,
        &sdata,
        &[
            "machine",
            "add",
            "billing",
            "--role",
            "billing",
            "--reason",
            "new service",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let tok = tok.trim().to_string();
    for a in [&a1, &a2] {
        let proxy = format!("http://billing:{tok}@{}", a.addr);
        assert!(within(Duration::from_secs(3), || curl(&proxy, &[&url]).0 == 200).is_some());
    }
    // Its use reaches the server with the agents' status.
    assert!(
        within(Duration::from_secs(6), || {
            let (_, out, _) = cli(addr, &sdata, &["machine", "list", "--json"]);
            out.lines()
                .any(|l| l.contains("\"billing\"") && !l.contains("\"last_used\":null"))
        })
        .is_some()
    );
    let (code, _, err) = cli(
        addr,
        &sdata,
        &["machine", "revoke", "billing", "--reason", "decommissioned"],
    );
    assert_eq!(code, 0, "{err}");
    for a in [&a1, &a2] {
        let proxy = format!("http://billing:{tok}@{}", a.addr);
        assert!(within(Duration::from_secs(3), || curl(&proxy, &[&url]).0 == 407).is_some());
    }

    // The change log has every change, with who and why.
    let (_, out, _) = cli(addr, &sdata, &["changes", "--json"]);
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "agent.add",
            "agent.add",
            "policy.push",
            "optout.add",
            "optout.remove",
            "policy.push",
            "policy.rollback",
            "machine.add",
            "machine.revoke"
        ]
    );

    // Agents report what they enforce: one hash for env prod.
    let viewer = token(&sdata, "viewer");
    assert!(
        within(Duration::from_secs(5), || {
            let (_, v) = http_get(addr, "/v1/agents", &viewer);
            v["envs"]["prod"]["consistent"] == true
                && v["agents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|a| a["policy_hash"].is_string())
        })
        .is_some()
    );
    // A viewer cannot change anything.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {viewer}"))
        .args(["-d", r#"{"host":"x.test","reason":"r"}"#])
        .arg(format!("http://{addr}/v1/optouts"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    // The server dies while traffic flows: agents keep enforcing and spool.
    drop(srv);
    for _ in 0..5 {
        assert_eq!(status(&a1, &url), 200);
        assert_eq!(status(&a2, &url), 200);
    }
    // Back, on the same store: everything arrives, once, and verifies.
    let srv = server(&store, &sdata, &addr.to_string());
    for (name, data) in [("edge-1", &d1), ("edge-2", &d2)] {
        let ok = within(Duration::from_secs(15), || {
            let head = local_head(data);
            let entries = shipped(srv.addr, &sdata, name);
            entries.len() as i64 == head && head > 0
        });
        assert!(ok.is_some(), "{name}: not everything arrived");
        let entries = shipped(srv.addr, &sdata, name);
        assert!(
            chain_ok(&entries),
            "{name}: the shipped chain does not verify"
        );
        // The server holds it to the agent's signed head, which reaches
        // the last shipped entry once the agent has nothing left to send.
        let mut said = String::new();
        let ok = within(Duration::from_secs(15), || {
            let (code, out, err) = cli(srv.addr, &sdata, &["audit", "verify", "--agent", name]);
            said = format!("{out}{err}");
            code == 0 && !out.contains("spooled")
        });
        assert!(ok.is_some(), "{name}: {said}");
        assert!(
            said.contains(&format!("audit chain of agent {name} at the server intact")),
            "{said}"
        );
    }
}

#[test]
fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let sdata: PathBuf = dir.path().join("server");
    let store = format!("sqlite:{}", sdata.join("control.db").display());
    let srv = server(&store, &sdata, "127.0.0.1:0");
    let admin = token(&sdata, "admin");
    let (code, doc) = http_get(srv.addr, "/openapi.json", "");
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    // Every documented operation exists (an unknown route is a bare 404 or
    // 405; the API's own 4xx answers carry a reason).
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "999999").replace("{name}", "nobody");
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-w",
                    "\n%{http_code}",
                    "-X",
                    &method.to_uppercase(),
                    "-H",
                ])
                .arg(format!("Authorization: Bearer {admin}"))
                .args([
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    "{}",
                    "--max-time",
                    "2",
                ])
                .arg(format!("http://{}{concrete}", srv.addr))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if path == "/v1/agent/config" {
                continue; // a stream: covered by the fleet test
            }
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            assert_ne!(code, "405", "{method} {path}");
            assert!(
                code != "404" || body.contains("reason"),
                "{method} {path}: not routed"
            );
        }
    }
    // Every route in the code is documented.
    let src = include_str!("../../server/src/api.rs");
    for line in src
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let path = line.split('"').nth(1).unwrap();
        assert!(paths.contains_key(path), "{path} is not in openapi.json");
    }
}

#[test]
fn replicas_on_one_postgres_reach_each_others_agents() {
    let admin_url = std::env::var("VETO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("veto_fleet_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([&admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .expect("psql (scripts/test installs PostgreSQL)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);

    let up = http_upstream(Duration::ZERO);
    let target = format!("http://api.test:{}/", up.port());
    let dir = tempfile::tempdir().unwrap();
    // Both replicas share the tokens (one data directory) and the database.
    let sdata = dir.path().join("server");
    let a = server(&url, &sdata, "127.0.0.1:0");
    let b = server(&url, &sdata, "127.0.0.1:0");
    let allow = write(dir.path(), "allow.yaml", ALLOW);
    cli(
        a.addr,
        &sdata,
        &["policy", "push", &allow, "--reason", "go live"],
    );
    let (code, t, err) = cli(a.addr, &sdata, &["agents", "add", "edge-b"]);
    assert_eq!(code, 0, "{err}");
    // The agent is connected to replica B.
    let edge = agent(b.addr, t.trim(), &dir.path().join("edge"));
    assert!(within(Duration::from_secs(5), || status(&edge, &target) == 200).is_some());
    // A change through replica A reaches it within a second.
    let (code, _, err) = cli(
        a.addr,
        &sdata,
        &[
            "optout", "add", "--host", "api.test", "--reason", "incident",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        within(Duration::from_secs(1), || status(&edge, &target) == 403).is_some(),
        "replica B's agent did not hear replica A's opt-out within 1 s"
    );
    drop((edge, a, b));
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

#[test]
fn agents_dial_a_tls_server_and_verify_it() {
    let up = http_upstream(Duration::ZERO);
    let url = format!("http://api.test:{}/", up.port());
    let dir = tempfile::tempdir().unwrap();
    // The server's certificate, from a CA the agent is told to trust.
    let pki = dir.path().join("pki");
    let ca = veto_ca::Ca::init(&pki).unwrap();
    let (chain, key) = ca
        .server_leaf("127.0.0.1", Duration::from_secs(3600))
        .unwrap();
    let pem: String = chain
        .iter()
        .map(|c| veto_ca::to_pem("CERTIFICATE", c))
        .collect();
    let cert = write(dir.path(), "server.pem", &pem);
    let key = write(
        dir.path(),
        "server.key",
        &veto_ca::to_pem("PRIVATE KEY", key.secret_der()),
    );
    let sdata = dir.path().join("server");
    let d = sdata.display().to_string();
    let store = format!("sqlite:{}", sdata.join("control.db").display());
    let srv = spawn(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store,
            "--data",
            &d,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "veto: control plane on https://",
    );
    let admin = token(&sdata, "admin");
    let ca_pem = pki.join("ca.pem").display().to_string();
    let https = |args: &[&str], path: &str| {
        let out = Command::new("curl")
            .args(["-s", "--cacert", &ca_pem, "-H"])
            .arg(format!("Authorization: Bearer {admin}"))
            .args(["-H", "Content-Type: application/json"])
            .args(args)
            .arg(format!("https://{}{path}", srv.addr))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    https(
        &[
            "-d",
            &serde_json::json!({"text": ALLOW, "reason": "go"}).to_string(),
        ],
        "/v1/policy",
    );
    let t1 = https(&["-d", r#"{"name":"tls-1"}"#], "/v1/agents")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let t2 = https(&["-d", r#"{"name":"tls-2"}"#], "/v1/agents")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let server_url = format!("https://{}", srv.addr);
    let agent_with = |t: &str, data: &Path, extra: &[&str]| {
        let d = data.display().to_string();
        let mut args = vec![
            "agent",
            "--server",
            &server_url,
            "--token",
            t,
            "--listen",
            "127.0.0.1:0",
            "--data",
            &d,
            "--resolve",
            "api.test=127.0.0.1",
        ];
        args.extend_from_slice(extra);
        spawn(&args, "veto: proxy listening on http://")
    };
    // Trusting the server's CA: the policy arrives.
    let trusted = agent_with(&t1, &dir.path().join("a1"), &["--server-ca", &ca_pem]);
    assert!(within(Duration::from_secs(5), || status(&trusted, &url) == 200).is_some());
    // Not trusting it (system roots only): nothing is accepted from it, and
    // the agent stays closed.
    let untrusting = agent_with(&t2, &dir.path().join("a2"), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let (s, _, body) = curl(&format!("http://{}", untrusting.addr), &[&url]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("has not received a policy"), "{body}");

    // The CLI talks to an https:// server too, verifying it.
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args([
            "optout", "add", "--host", "api.test", "--reason", "over TLS",
        ])
        .args(["--server", &server_url, "--token", &admin])
        .env("VETO_SERVER_CA", &ca_pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(within(Duration::from_secs(3), || status(&trusted, &url) == 403).is_some());
    // Without the CA, the CLI refuses to talk to it.
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["optout", "list", "--server", &server_url, "--token", &admin])
        .env_remove("VETO_SERVER_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be trusted"));
}

#[test]
fn the_server_dashboard_shows_agents_and_acts_on_optouts() {
    let up = http_upstream(Duration::ZERO);
    let url = format!("http://api.test:{}/", up.port());
    let dir = tempfile::tempdir().unwrap();
    let sdata = dir.path().join("server");
    let store = format!("sqlite:{}", sdata.join("control.db").display());
    let srv = server(&store, &sdata, "127.0.0.1:0");
    // `lab` is a grant here, so the access review has a row to renew.
    let allow = write(
        dir.path(),
        "allow.yaml",
        &format!("{ALLOW}    expire_if_unused: 30d\n"),
    );
    cli(
        srv.addr,
        &sdata,
        &["policy", "push", &allow, "--reason", "go live"],
    );
    let (_, t, _) = cli(
        srv.addr,
        &sdata,
        &["agents", "add", "edge-dash", "--env", "prod"],
    );
    let edge = agent(srv.addr, t.trim(), &dir.path().join("edge"));
    assert!(within(Duration::from_secs(5), || status(&edge, &url) == 200).is_some());

    let b = webdriver::Browser::start();
    b.goto(&format!("http://{}/", srv.addr));
    let input = b.wait("#token", 10);
    b.send_keys(&input, &token(&sdata, "operator"));
    b.click(&b.find("#login button").unwrap());
    b.until("the agent and its env show", 10, |b| {
        b.text_of("#agents").contains("edge-dash")
            && b.text_of("#envs").contains("every agent enforces")
    });
    assert!(b.text_of("#who").contains("operator"));
    assert!(b.text_of("#versions").contains("go live"));

    // An opt-out added from the page refuses the agent's next request.
    b.send_keys(&b.find("#optout-value").unwrap(), "api.test");
    b.send_keys(&b.find("#optout-reason").unwrap(), "from the dashboard");
    b.click(&b.find("#add-optout button").unwrap());
    b.until("the opt-out is listed", 5, |b| {
        b.text_of("#optouts").contains("from the dashboard")
    });
    assert!(within(Duration::from_secs(3), || status(&edge, &url) == 403).is_some());
    b.until("the change log shows it", 5, |b| {
        b.text_of("#changes").contains("optout.add")
    });

    // The access review shows the grant the agent's traffic used, and an
    // operator renews it from the page (the reason typed into the prompt).
    b.until("the grant's use shows", 10, |b| {
        b.find("#access tr[data-kind=grant][data-machine=anonymous]")
            .is_some()
    });
    b.script(
        "window.prompt = () => 'renewed from the dashboard';",
        serde_json::json!([]),
    );
    b.click(
        &b.find("#access tr[data-machine=anonymous] button.renew")
            .unwrap(),
    );
    b.until("the renewal is in the change log", 5, |b| {
        let log = b.text_of("#changes");
        log.contains("grant.renew") && log.contains("renewed from the dashboard")
    });
    b.screenshot("server-dashboard");

    // A viewer sees the page without the buttons.
    b.script(
        "sessionStorage.clear(); location.reload();",
        serde_json::json!([]),
    );
    let input = b.wait("#token", 10);
    b.send_keys(&input, &token(&sdata, "viewer"));
    b.click(&b.find("#login button").unwrap());
    b.until("logged in as viewer", 10, |b| {
        b.text_of("#who").contains("viewer")
    });
    b.until("the list shows", 5, |b| {
        b.text_of("#optouts").contains("from the dashboard")
    });
    let hidden = b.script(
        "return [...document.querySelectorAll('[data-needs]')].every(e => e.hidden)",
        serde_json::json!([]),
    );
    assert_eq!(hidden, serde_json::json!(true));
}
