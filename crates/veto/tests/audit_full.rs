//! A full disk under the audit store: veto refuses with 503 and a reason
//! (fails closed), and recovers by itself once space is back, with the chain
//! intact. The disk is a real tmpfs of a few hundred KiB, mounted in a mount
//! namespace of the test's own (unshare), so nothing leaks to the machine.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = ALLOW_LOOPBACK;

fn in_ns(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .output()
        .unwrap()
}

#[test]
fn full_disk_fails_closed_and_recovers() {
    let up = http_upstream(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("veto.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let veto_bin = env!("CARGO_BIN_EXE_veto");
    let script = format!(
        "mount -t tmpfs -o size=512k tmpfs {store} && exec {veto_bin} run --listen 127.0.0.1:0 --admin 127.0.0.1:0 --policy {policy} --data {store}/data",
        store = store.display(),
        policy = policy.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let veto = Veto::spawn(cmd, dir, policy);
    let pid = veto.child.id();
    let url = format!("http://{up}/x");
    assert_eq!(
        curl(&veto.proxy_url(), &[&url]).0,
        200,
        "{}",
        veto.stderr.lock().unwrap()
    );

    // Fill the disk to the last block.
    let fill = in_ns(
        pid,
        &format!(
            "dd if=/dev/zero of={}/filler bs=4k 2>/dev/null; sync; df -k {}",
            store.display(),
            store.display()
        ),
    );
    assert!(
        String::from_utf8_lossy(&fill.stdout).contains("100%"),
        "{fill:?}"
    );

    let mut refused = None;
    for _ in 0..200 {
        let (status, head, body) = curl(&veto.proxy_url(), &[&url]);
        if status == 503 {
            refused = Some((head, body));
            break;
        }
        assert_eq!(status, 200, "{head}{body}");
    }
    let (head, body) = refused.expect("a full disk never made veto refuse");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("cannot record this decision"),
        "{j}"
    );
    assert!(
        head.to_ascii_lowercase().contains("veto-request-id"),
        "{head}"
    );

    // Space comes back: veto serves again without a restart.
    in_ns(pid, &format!("rm -f {}/filler", store.display()));
    assert!(
        eventually(|| curl(&veto.proxy_url(), &[&url]).0 == 200),
        "{}",
        veto.stderr.lock().unwrap()
    );
    let verify = in_ns(
        pid,
        &format!("{veto_bin} audit verify --data {}/data", store.display()),
    );
    assert!(verify.status.success(), "{verify:?}");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));
}
