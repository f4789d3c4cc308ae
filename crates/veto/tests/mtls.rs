//! Client certificates end to end: `veto ca init`, `veto machine cert`, and
//! curl speaking TLS to the proxy's `--listen-tls` with `--proxy-cert`.

mod common;

use common::{Veto, http_upstream};
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "version: 1
defaults: { decision: deny }
machines:
  billing: { roles: [billing] }
rules:
  - id: billing-lab
    effect: allow
    from: { roles: [billing] }
    to: { cidrs: [127.0.0.0/8] }
";

fn veto_cli(data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start(extra: &[&str]) -> Veto {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = veto_cli(&data, &["ca", "init"]);
    assert_eq!(code, 0, "{err}");
    let policy = dir.path().join("veto.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut args = vec!["--listen-tls", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Veto::start_in(dir, policy, &args)
}

/// curl through the TLS listener; (status, body, curl's exit code).
fn curl_tls(veto: &Veto, cert: Option<(&str, &str)>, url: &str) -> (Vec<u16>, String, i32) {
    let ca = veto.data().join("ca.pem").display().to_string();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-w", "\n%{http_code}\n"])
        .arg("-x")
        .arg(format!("https://{}", veto.tls.unwrap()))
        .args(["--proxy-cacert", &ca]);
    if let Some((c, k)) = cert {
        cmd.args(["--proxy-cert", c, "--proxy-key", k]);
    }
    cmd.arg(url);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes = text.lines().filter_map(|l| l.parse::<u16>().ok()).collect();
    (codes, text, out.status.code().unwrap_or(-1))
}

#[test]
fn machines_prove_who_they_are_with_certificates() {
    let up = http_upstream(Duration::ZERO);
    let veto = start(&[]);
    let data = veto.data();
    let url = format!("http://{up}/");
    let out = tempfile::tempdir().unwrap();
    let outp = out.path().display().to_string();

    // A certificate is issued only to a registered machine.
    let (code, _, err) = veto_cli(&data, &["machine", "cert", "billing", "--out", &outp]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("billing"), "{err}");
    let (code, _, err) = veto_cli(&data, &["machine", "add", "billing"]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = veto_cli(
        &data,
        &["machine", "cert", "billing", "--out", &outp, "--ttl", "1h"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("spiffe://veto.local/machine/billing"), "{err}");
    let cert = out.path().join("billing.pem").display().to_string();
    let key = out.path().join("billing.key").display().to_string();
    assert_eq!(stdout.trim(), cert);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // With the certificate: billing, allowed. Without: anonymous, refused.
    assert!(common::eventually(|| curl_tls(
        &veto,
        Some((&cert, &key)),
        &url
    )
    .0 == [200]));
    let (codes, body, _) = curl_tls(&veto, None, &url);
    assert_eq!(codes, [403], "{body}");
    let recs = veto.records(&["--machine", "billing"]);
    assert!(
        !recs.is_empty() && recs.iter().all(|r| r["rule"] == "billing-lab"),
        "{recs:?}"
    );

    // Revoked: refused on the next request, even on a connection kept
    // alive across the change (curl reuses it for the second URL after the
    // first, slow one; the revocation lands while the first is in flight).
    let slow = http_upstream(Duration::from_millis(3000));
    let first = format!("http://{slow}/slow");
    let handle = {
        let (veto_tls, ca) = (veto.tls.unwrap(), data.join("ca.pem"));
        let (cert, key, url) = (cert.clone(), key.clone(), url.clone());
        std::thread::spawn(move || {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "--max-time",
                    "20",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{num_connects}\n",
                ])
                .arg("-x")
                .arg(format!("https://{veto_tls}"))
                .arg("--proxy-cacert")
                .arg(&ca)
                .args(["--proxy-cert", &cert, "--proxy-key", &key])
                .args([&first, "-o", "/dev/null", &url])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = veto_cli(&data, &["machine", "revoke", "billing"]);
    assert_eq!(code, 0, "{err}");
    let lines = handle.join().unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines,
        ["200 1", "407 0"],
        "the second request reused the connection and was refused"
    );
    let (codes, body, _) = curl_tls(&veto, Some((&cert, &key)), &url);
    assert_eq!(codes, [407], "{body}");
    assert!(body.contains("revoked"), "{body}");

    // Registered again: the old certificate stays refused; a new one works.
    let (code, _, err) = veto_cli(&data, &["machine", "add", "billing"]);
    assert_eq!(code, 0, "{err}");
    assert!(common::eventually(|| {
        let (codes, body, _) = curl_tls(&veto, Some((&cert, &key)), &url);
        codes == [407] && body.contains("registered again")
    }));
    let (code, _, err) = veto_cli(&data, &["machine", "cert", "billing", "--out", &outp]);
    assert_eq!(code, 0, "{err}");
    assert!(common::eventually(|| curl_tls(
        &veto,
        Some((&cert, &key)),
        &url
    )
    .0 == [200]));
}

#[test]
fn bad_certificates_are_refused_with_a_reason() {
    let up = http_upstream(Duration::ZERO);
    let veto = start(&[]);
    let data = veto.data();
    let url = format!("http://{up}/");
    veto_cli(&data, &["machine", "add", "billing"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = veto_ca::Ca::load(&data).unwrap().unwrap();
    let write = |name: &str,
                 chain: Vec<rustls::pki_types::CertificateDer<'static>>,
                 key: rustls::pki_types::PrivateKeyDer<'static>| {
        let c = dir.path().join(format!("{name}.pem"));
        let k = dir.path().join(format!("{name}.key"));
        let pem: String = chain
            .iter()
            .map(|d| veto_ca::to_pem("CERTIFICATE", d))
            .collect();
        std::fs::write(&c, pem).unwrap();
        std::fs::write(&k, veto_ca::to_pem("PRIVATE KEY", key.secret_der())).unwrap();
        (c.display().to_string(), k.display().to_string())
    };

    // Another trust domain, signed by veto's own CA.
    let (chain, key) = ca
        .client_cert("elsewhere.example", "billing", Duration::from_secs(3600))
        .unwrap();
    let other_td = write("other-td", chain, key);
    // Self-signed (its own CA, unknown to veto).
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = veto_ca::Ca::init(stranger_dir.path()).unwrap();
    let (chain, key) = stranger
        .client_cert("veto.local", "billing", Duration::from_secs(3600))
        .unwrap();
    let self_signed = write("stranger", chain, key);
    // Expired: valid from an hour ago until a second from now.
    let (chain, key) = ca
        .client_cert("veto.local", "billing", Duration::from_secs(1))
        .unwrap();
    let expired = write("expired", chain, key);
    std::thread::sleep(Duration::from_millis(2500));

    for ((c, k), why) in [
        (&other_td, "trust domain `elsewhere.example`"),
        (&self_signed, "not signed by veto's CA"),
        (&expired, "expired"),
    ] {
        let (codes, body, _) = curl_tls(&veto, Some((c, k)), &url);
        assert_eq!(codes, [407], "{why}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
}

#[test]
fn an_external_ca_is_accepted_with_common_names() {
    let up = http_upstream(Duration::ZERO);
    let pki = tempfile::tempdir().unwrap();
    let external = veto_ca::Ca::init(pki.path()).unwrap();
    let ext_ca = pki.path().join("ca.pem").display().to_string();
    let veto = start(&["--client-ca", &ext_ca, "--client-id", "cn"]);
    let data = veto.data();
    veto_cli(&data, &["machine", "add", "billing"]);
    let (chain, key) = external
        .client_cert("corp.example", "billing", Duration::from_secs(3600))
        .unwrap();
    let c = pki.path().join("billing.pem");
    let k = pki.path().join("billing.key");
    let pem: String = chain
        .iter()
        .map(|d| veto_ca::to_pem("CERTIFICATE", d))
        .collect();
    std::fs::write(&c, pem).unwrap();
    std::fs::write(&k, veto_ca::to_pem("PRIVATE KEY", key.secret_der())).unwrap();
    let (c, k) = (c.display().to_string(), k.display().to_string());
    let url = format!("http://{up}/");
    assert!(common::eventually(|| curl_tls(&veto, Some((&c, &k)), &url)
        .0
        == [200]));
    let recs = veto.records(&["--machine", "billing"]);
    assert!(!recs.is_empty(), "decided as billing");
}
