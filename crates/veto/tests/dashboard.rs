//! The dashboard end to end: a real `veto run`, curl traffic through the
//! proxy, and Debian's headless chromium driven over WebDriver. Screenshots
//! of each main view go to `target/dashboard-screenshots/`.

#[path = "common/admin_http.rs"]
mod admin_http;
mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use admin_http::*;
use common::*;
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;
use webdriver::Browser;

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-delete
    effect: deny
    methods: [DELETE]
    reason: Nothing is deleted through veto.
  - id: no-email-out
    effect: deny
    data: [email]
    reason: Email addresses stay inside.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
    expire_if_unused: 30d
";

/// One browser at a time: two chromiums on a small CI machine make both
/// slow enough to flake.
static BROWSER: Mutex<()> = Mutex::new(());

fn start() -> Veto {
    Veto::start(
        POLICY,
        &[
            "--resolve",
            "shop.test=127.0.0.1",
            "--resolve",
            "blocked.test=127.0.0.1",
        ],
    )
}

fn login(b: &Browser, veto: &Veto, token: &str) {
    b.goto(&format!("http://{}/", veto.admin));
    let field = b.wait("#token", 10);
    b.send_keys(&field, token);
    b.click(&b.wait("#login-button", 5));
    b.wait("#decisions", 10);
}

/// The text of every row of the live table.
fn rows(b: &Browser, class: &str) -> Vec<String> {
    b.texts(&format!("#decisions tbody tr{class}"))
}

#[test]
fn an_operator_watches_decisions_live_and_acts_on_them() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let up = http_upstream(Duration::ZERO);
    let port = up.port();
    let veto = start();
    let proxy = veto.proxy_url();
    for (name, args) in [
        ("web-1", ["--role", "frontend", "--ttl", "3d"]),
        ("billing", ["--role", "billing", "--ttl", "90d"]),
    ] {
        let (code, _, err) =
            veto.cli(&["machine", "add", name, args[0], args[1], args[2], args[3]]);
        assert_eq!(code, 0, "{err}");
    }

    let b = Browser::start();
    b.goto(&format!("http://{}/", veto.admin));
    b.wait("#token", 10);
    b.screenshot("login");
    login(&b, &veto, &veto.admin_token());
    assert_eq!(b.text_of("#role").to_lowercase(), "operator");
    // Let the page subscribe before the traffic.
    b.until("the stream is live", 5, |b| {
        b.text_of("#live-state") == "live"
    });

    let shop = format!("http://shop.test:{port}");
    assert_eq!(curl(&proxy, &[&format!("{shop}/items")]).0, 200);
    assert_eq!(
        curl(&proxy, &["-X", "DELETE", &format!("{shop}/items/7")]).0,
        403
    );
    let email = r#"{"to":"jane.doe@example.com"}"#;
    assert_eq!(curl(&proxy, &["-d", email, &format!("{shop}/mail")]).0, 403);

    // Refused and allowed rows appear live, refusals highlighted.
    b.until("the three decisions show", 5, |b| {
        rows(b, ".deny").len() == 2 && rows(b, ".allow").len() == 1
    });
    let denied = rows(&b, ".deny").join("\n");
    assert!(
        denied.contains(&format!("DELETE shop.test:{port}/items/7"))
            && denied.contains("no-delete"),
        "{denied}"
    );
    assert!(
        denied.contains("no-email-out") && denied.contains("email"),
        "{denied}"
    );
    let allowed = rows(&b, ".allow").join("\n");
    assert!(
        allowed.contains("lab") && allowed.contains(&format!("GET shop.test:{port}/items")),
        "{allowed}"
    );
    // The allowed request's status fills in once the exchange ended.
    b.until("the status of the allowed row", 8, |b| {
        b.text_of("#decisions tbody tr.allow td.status") == "200"
    });
    b.screenshot("live");

    // Filter on the decision: only refusals, old and new.
    b.click(&b.wait("#filter-decision option[value=deny]", 5));
    b.until("only refusals", 5, |b| {
        rows(b, ".allow").is_empty() && rows(b, ".deny").len() == 2
    });
    assert_eq!(curl(&proxy, &[&format!("{shop}/again")]).0, 200);
    assert_eq!(
        curl(&proxy, &["-X", "DELETE", &format!("{shop}/items/8")]).0,
        403
    );
    b.until("the new refusal shows", 5, |b| rows(b, ".deny").len() == 3);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        rows(&b, ".allow").is_empty(),
        "an allowed row got through the filter"
    );
    // And on the rule.
    let rule = b.wait("#filter-rule", 5);
    b.send_keys(&rule, "no-email-out");
    b.click(&b.wait("#apply", 5));
    b.until("only the email refusal", 5, |b| {
        let r = rows(b, "");
        r.len() == 1 && r[0].contains("no-email-out")
    });
    b.click(&b.wait("#clear", 5));
    b.until("everything again", 5, |b| rows(b, "").len() == 5);

    // Paused, new decisions are held and counted, not shown; resuming
    // shows them.
    b.click(&b.wait("#pause", 5));
    assert_eq!(b.text_of("#live-state"), "paused");
    assert_eq!(curl(&proxy, &[&format!("{shop}/while-paused")]).0, 200);
    b.until("the held decision is counted", 5, |b| {
        b.text_of("#shown").contains("1 held")
    });
    assert_eq!(rows(&b, "").len(), 5, "a row appeared while paused");
    b.click(&b.wait("#pause", 5));
    b.until("the held decision shows", 5, |b| {
        let r = rows(b, "");
        r.len() == 6 && r[0].contains("/while-paused")
    });
    assert_eq!(b.text_of("#live-state"), "live");
    assert_eq!(b.text_of("#skipped"), "skipped 0");

    // Opening a refusal shows its rule, reason and trace.
    let refusal = b
        .find_all("#decisions tbody tr.deny")
        .into_iter()
        .find(|r| b.text(r).contains("/items/7"))
        .expect("the DELETE refusal");
    b.click(&refusal);
    b.wait("#trace tbody tr", 5);
    assert_eq!(b.text_of("#detail-rule"), "no-delete");
    assert_eq!(
        b.text_of("#detail-reason"),
        "Nothing is deleted through veto."
    );
    let trace = b.text_of("#trace");
    assert!(trace.contains("no-delete ← decides"), "{trace}");
    assert!(
        trace.contains("methods: `DELETE` is not listed") || trace.contains("matches"),
        "{trace}"
    );
    b.screenshot("decision");
    b.click(&b.wait("#detail-close", 5));

    // Overview: the chart, the top refusals, the policy hash.
    b.goto(&format!("http://{}/#/overview", veto.admin));
    b.wait("#decisions-chart rect.deny", 10);
    b.until("top rules", 5, |b| {
        b.text_of("#top-rules").contains("no-delete")
    });
    assert!(
        b.text_of("#top-destinations")
            .contains(&format!("shop.test:{port}"))
    );
    assert!(b.text_of("#policy-hash").starts_with("sha256:"));
    b.screenshot("overview");

    // Inventory.
    b.goto(&format!("http://{}/#/inventory", veto.admin));
    b.wait("#inventory tbody tr", 10);
    assert!(
        b.text_of("#inventory")
            .contains(&format!("shop.test:{port}"))
    );
    b.screenshot("inventory");

    // Access review: the machine expiring in 3 days is highlighted.
    b.goto(&format!("http://{}/#/access", veto.admin));
    b.wait("#machines tr.expiring[data-name=web-1]", 10);
    assert!(b.find("#machines tr.active[data-name=billing]").is_some());
    // Grants by last use: the lab grant was used by anonymous traffic.
    b.wait("#grants tr[data-rule=lab][data-machine=anonymous]", 10);
    assert!(
        b.text_of("#grants").contains("ago"),
        "{}",
        b.text_of("#grants")
    );
    b.screenshot("access");

    // An opt-out added from the page refuses the next request.
    assert_eq!(
        curl(&proxy, &[&format!("http://blocked.test:{port}/")]).0,
        200
    );
    b.goto(&format!("http://{}/#/optouts", veto.admin));
    let value = b.wait("#optout-value", 10);
    b.send_keys(&value, "blocked.test");
    b.send_keys(
        &b.wait("#optout-reason", 5),
        "Dashboard test: no more blocked.test",
    );
    b.click(&b.wait("#optout-add", 5));
    b.until("the opt-out is listed", 5, |b| {
        b.text_of("#optouts").contains("optout-1")
    });
    let (status, head, body) = curl(&proxy, &[&format!("http://blocked.test:{port}/")]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(header(&head, "veto-rule"), Some("optout-1"));
    assert!(
        body.contains("Dashboard test: no more blocked.test"),
        "{body}"
    );
    b.screenshot("optouts");

    // The change log names the change, who made it and why.
    b.goto(&format!("http://{}/#/changes", veto.admin));
    b.wait("#changes tbody tr", 10);
    let log = b.text_of("#changes");
    assert!(
        log.contains("optout.add")
            && log.contains("admin (dashboard)")
            && log.contains("Dashboard test: no more blocked.test"),
        "{log}"
    );
    b.screenshot("changes");

    // Removing it from the page lets the host through again.
    b.goto(&format!("http://{}/#/optouts", veto.admin));
    b.click(&b.wait("#optouts button.remove", 10));
    b.send_keys(&b.wait("#optouts input.remove-reason", 5), "test over");
    b.click(&b.wait("#optouts button.confirm-remove", 5));
    b.until("the opt-out is gone", 5, |b| {
        b.find("#optouts tbody tr").is_none()
    });
    assert_eq!(
        curl(&proxy, &[&format!("http://blocked.test:{port}/")]).0,
        200
    );
}

#[test]
fn a_paused_page_that_falls_behind_counts_what_it_skipped() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let veto = start();
    let b = Browser::start();
    login(&b, &veto, &veto.admin_token());
    b.until("the stream is live", 5, |b| {
        b.text_of("#live-state") == "live"
    });
    b.click(&b.wait("#pause", 5));
    // The page holds 2,000 decisions while paused; 50 more are skipped,
    // and it says so.
    let statuses = burst(veto.addr, "DELETE", "http://shop.test:9/x", 2_050);
    assert_eq!(statuses.get(&403), Some(&2_050), "{statuses:?}");
    b.until("the overflow is counted", 20, |b| {
        b.text_of("#skipped") == "skipped 50"
    });
    assert!(
        b.text_of("#shown").contains("2000 held"),
        "{}",
        b.text_of("#shown")
    );
    let class = b.script(
        "return document.querySelector('#skipped').className",
        json!([]),
    );
    assert_eq!(
        class,
        json!("pill warn"),
        "the counter stands out once it counts"
    );
    b.screenshot("skipped");
    // Resuming shows the newest held decisions, up to the table's bound.
    b.click(&b.wait("#pause", 5));
    b.until("the held decisions show", 10, |b| rows(b, "").len() == 500);
    assert_eq!(b.text_of("#skipped"), "skipped 50");
}

#[test]
fn a_viewer_sees_no_buttons_and_cannot_change_anything() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let veto = start();
    let viewer = viewer_token(&veto);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(veto.data().join("viewer.token")).unwrap();
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    // An opt-out exists, so that the list has a row a button could be on.
    let (code, _, body) = admin(
        &veto,
        "POST",
        "/v1/optouts",
        &[&bearer(&veto.admin_token())],
        Some(r#"{"host":"blocked.test","reason":"set by the operator"}"#),
    );
    assert_eq!(code, 201, "{body}");

    let b = Browser::start();
    login(&b, &veto, &viewer);
    assert_eq!(b.text_of("#role").to_lowercase(), "viewer");
    b.goto(&format!("http://{}/#/optouts", veto.admin));
    b.wait("#viewer-note", 10);
    b.wait("#optouts tbody tr", 5);
    assert!(b.text_of("#optouts").contains("set by the operator"));
    assert!(
        b.find("#optout-form").is_none(),
        "a viewer got the add form"
    );
    assert!(b.find_all("main button").is_empty(), "a viewer got buttons");
    b.screenshot("viewer-optouts");

    // The server refuses a viewer's change from the page itself...
    let status = b.script_async(
        "const done = arguments[arguments.length - 1];
         fetch('/v1/optouts', {method: 'POST', credentials: 'same-origin',
           headers: {'X-Veto-CSRF': '1', 'Content-Type': 'application/json'},
           body: JSON.stringify({host: 'x.test', reason: 'viewer tries'})})
           .then(r => done(r.status), e => done(String(e)));",
        json!([]),
    );
    assert_eq!(status, json!(403));
    // ... and with the viewer token as a bearer.
    let (code, _, _) = admin(
        &veto,
        "POST",
        "/v1/optouts",
        &[&bearer(&viewer)],
        Some(r#"{"host":"x.test","reason":"viewer tries"}"#),
    );
    assert_eq!(code, 403);
    assert_eq!(
        admin(
            &veto,
            "DELETE",
            "/v1/optouts/1?reason=no",
            &[&bearer(&viewer)],
            None
        )
        .0,
        403
    );
    let (code, _, list) = admin(&veto, "GET", "/v1/optouts", &[&bearer(&viewer)], None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&list)
            .unwrap()
            .len(),
        1
    );
}

/// Sessions and the CSRF rule, without a browser.
#[test]
fn sessions_need_a_token_and_changes_need_the_csrf_header() {
    let veto = start();
    let token = veto.admin_token();

    // The page and its files need no credential and load nothing elsewhere.
    let (code, head, page) = admin(&veto, "GET", "/", &[], None);
    assert_eq!(code, 200);
    assert!(page.contains("/assets/app.js"));
    assert!(
        header(&head, "content-security-policy").is_some_and(|c| c.contains("default-src 'none'"))
    );
    assert_eq!(admin(&veto, "GET", "/assets/live.js", &[], None).0, 200);
    assert_eq!(admin(&veto, "GET", "/assets/nope.js", &[], None).0, 404);

    let (code, _, _) = admin(
        &veto,
        "POST",
        "/v1/login",
        &[],
        Some(r#"{"token":"vetoadm_wrong"}"#),
    );
    assert_eq!(code, 401);
    let (code, head, body) = admin(
        &veto,
        "POST",
        "/v1/login",
        &[],
        Some(&json!({ "token": token }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"operator\""), "{body}");
    let set = header(&head, "set-cookie").expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    let session = set.split(';').next().unwrap().to_string();
    let cookie = format!("Cookie: {session}");

    assert_eq!(admin(&veto, "GET", "/v1/policy", &[&cookie], None).0, 200);
    assert_eq!(admin(&veto, "GET", "/v1/whoami", &[&cookie], None).0, 200);
    let optout = Some(r#"{"host":"blocked.test","reason":"by cookie"}"#);
    let (code, _, body) = admin(&veto, "POST", "/v1/optouts", &[&cookie], optout);
    assert_eq!(code, 403, "a cookie without the CSRF header: {body}");
    assert!(body.contains("X-Veto-CSRF"), "{body}");
    let csrf = "X-Veto-CSRF: 1";
    let (code, _, body) = admin(&veto, "POST", "/v1/optouts", &[&cookie, csrf], optout);
    assert_eq!(code, 201, "{body}");
    // Bearer tokens are not cookies: no CSRF header needed.
    let (code, _, _) = admin(
        &veto,
        "DELETE",
        "/v1/optouts/1?reason=done",
        &[&bearer(&token)],
        None,
    );
    assert_eq!(code, 200);

    // A viewer's session reads, and its changes are refused.
    let (_, head, _) = admin(
        &veto,
        "POST",
        "/v1/login",
        &[],
        Some(&json!({ "token": viewer_token(&veto) }).to_string()),
    );
    let viewer_cookie = format!(
        "Cookie: {}",
        header(&head, "set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
    );
    let (_, _, who) = admin(&veto, "GET", "/v1/whoami", &[&viewer_cookie], None);
    assert!(who.contains("\"viewer\""), "{who}");
    assert_eq!(
        admin(&veto, "GET", "/v1/changes", &[&viewer_cookie], None).0,
        200
    );
    assert_eq!(
        admin(
            &veto,
            "POST",
            "/v1/optouts",
            &[&viewer_cookie, csrf],
            optout
        )
        .0,
        403
    );

    // Logging out ends the session.
    assert_eq!(admin(&veto, "POST", "/v1/logout", &[&cookie], None).0, 200);
    assert_eq!(admin(&veto, "GET", "/v1/policy", &[&cookie], None).0, 401);
    assert_eq!(
        admin(
            &veto,
            "GET",
            "/v1/policy",
            &["Cookie: veto_session=forged"],
            None
        )
        .0,
        401
    );
}

/// The endpoints the dashboard reads, as JSON.
#[test]
fn stats_explain_and_machines() {
    let up = http_upstream(Duration::ZERO);
    let port = up.port();
    let veto = start();
    let token = veto.admin_token();
    let bearer_token = bearer(&token);
    let auth = [bearer_token.as_str()];
    let (code, _, err) = veto.cli(&[
        "machine", "add", "web-1", "--role", "frontend", "--ttl", "2d",
    ]);
    assert_eq!(code, 0, "{err}");
    let proxy = veto.proxy_url();
    curl(&proxy, &[&format!("http://shop.test:{port}/a")]);
    curl(
        &proxy,
        &["-X", "DELETE", &format!("http://shop.test:{port}/b")],
    );
    curl(
        &proxy,
        &["-X", "DELETE", &format!("http://shop.test:{port}/c")],
    );

    let (code, _, body) = admin(&veto, "GET", "/v1/stats?window=3600", &auth, None);
    assert_eq!(code, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["bucket"], 60);
    assert_eq!(s["series"]["deny"].as_array().unwrap().len(), 60);
    assert_eq!(s["totals"]["deny"], 2);
    assert_eq!(s["totals"]["allow"], 1);
    assert_eq!(
        s["top_refusing_rules"][0],
        json!({"rule": "no-delete", "count": 2})
    );
    assert_eq!(
        s["top_refused_destinations"][0],
        json!({"host": "shop.test", "port": port, "count": 2})
    );

    let records = veto.records(&["--decision", "deny"]);
    let id = records[0]["id"].as_str().unwrap();
    let (code, _, body) = admin(&veto, "GET", &format!("/v1/explain?id={id}"), &auth, None);
    assert_eq!(code, 200, "{body}");
    let x: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(x["same_policy"], true);
    assert_eq!(x["record"]["id"], id);
    assert_eq!(x["explain"]["decision"], "deny");
    assert_eq!(x["explain"]["rule"], "no-delete");
    assert_eq!(x["explain"]["request"]["method"], "DELETE");
    let trace = x["explain"]["trace"].as_array().unwrap();
    assert_eq!(trace.len(), 3);
    assert_eq!(trace[0]["rule"], "no-delete");
    assert_eq!(trace[0]["matched"], true);
    assert_eq!(
        trace[1]["why"],
        "data: none of the listed classes was found"
    );
    assert_eq!(
        admin(&veto, "GET", "/v1/explain?id=nope", &auth, None).0,
        404
    );
    assert_eq!(admin(&veto, "GET", "/v1/explain", &auth, None).0, 400);

    let (code, _, body) = admin(&veto, "GET", "/v1/machines", &auth, None);
    assert_eq!(code, 200, "{body}");
    let m: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["name"], "web-1");
    assert_eq!(m[0]["state"], "active");
    let left = m[0]["expires_in_secs"].as_i64().unwrap();
    assert!((2 * 86400 - 60..=2 * 86400).contains(&left), "{left}");
    assert!(body.find("hash").is_none(), "no token hash: {body}");

    for path in [
        "/v1/stats",
        "/v1/explain?id=x",
        "/v1/machines",
        "/v1/whoami",
    ] {
        assert_eq!(admin(&veto, "GET", path, &[], None).0, 401, "{path}");
    }
}

/// A DNS query for `name` (type A), as a resolver sends it.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Lookups on the DNS listener show live like every other decision.
#[test]
fn lookups_show_in_the_live_view() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let veto = Veto::start(
        POLICY,
        &["--dns", "127.0.0.1:0", "--transparent-machine", "ns-1"],
    );
    let dns = veto.dns.expect("veto run names its DNS listener");
    let b = Browser::start();
    login(&b, &veto, &veto.admin_token());
    b.until("the stream is live", 5, |b| {
        b.text_of("#live-state") == "live"
    });
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&dns_query("secret.blocked.example"), dns)
        .unwrap();
    let mut answer = [0u8; 512];
    let (n, _) = sock.recv_from(&mut answer).unwrap();
    assert!(
        n >= 12 && answer[3] & 0x0f == 3,
        "NXDOMAIN expected: {:?}",
        &answer[..n]
    );
    b.until("the refused lookup shows", 5, |b| {
        !rows(b, ".deny").is_empty()
    });
    let row = rows(&b, ".deny").join("\n");
    assert!(
        row.contains("DNS A secret.blocked.example") && row.contains("ns-1"),
        "{row}"
    );
    b.screenshot("dns");
}
