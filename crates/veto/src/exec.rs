//! `veto exec -- CMD ARGS…`: one command whose only way out is veto.
//!
//! The command runs in a network namespace made for it (`netns.rs`). Proxy
//! variables point the clients that honour them at veto's proxy listener;
//! every other TCP connection is redirected to veto's transparent listener;
//! DNS goes to veto; the rest is dropped. Every decision is recorded under
//! the command's machine name in the usual audit trail. veto stops (drains
//! and flushes its audit) when the command ends, removes the namespace, and
//! exits with the command's status.

use crate::netns::{self, Netns};
use crate::run::{Bound, RunArgs};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

pub struct ExecArgs {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Run the command as this user and group (`sudo`'s caller by
    /// default), not as root: root is for the namespace, not the command.
    pub user: Option<(u32, u32)>,
    /// What veto runs with: policy, data, resolver, timeouts. Its
    /// listeners, admin and machine are set here.
    pub run: RunArgs,
    pub machine: String,
}

/// The machine name a command is recorded as when none is given: its
/// program's file name.
pub fn default_machine(command: &[String]) -> String {
    command
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "exec".into())
}

/// Who ran `sudo veto exec`: the command runs as them, not as root.
pub fn sudo_caller() -> Option<(u32, u32)> {
    let id = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?)).filter(|(u, _)| *u != 0)
}

/// The listeners inside the namespace: the proxy on 127.0.0.1, the
/// transparent listener and DNS on 127.0.0.1 and, where IPv6 is on, ::1.
fn bind_inside(ns: &Netns) -> Result<Bound, String> {
    ns.inside(|| {
        let plain = TcpListener::bind((Ipv4Addr::LOCALHOST, netns::PROXY_PORT))
            .map_err(|e| format!("cannot listen in the namespace: {e}"))?;
        let mut transparent = vec![
            TcpListener::bind((Ipv4Addr::LOCALHOST, netns::TRANSPARENT_PORT))
                .map_err(|e| format!("cannot listen in the namespace: {e}"))?,
        ];
        if let Ok(l) = TcpListener::bind((Ipv6Addr::LOCALHOST, netns::TRANSPARENT_PORT)) {
            transparent.push(l);
        }
        let dns_on = |ip: std::net::IpAddr| {
            let at = SocketAddr::new(ip, netns::DNS_PORT);
            Ok::<_, std::io::Error>((UdpSocket::bind(at)?, TcpListener::bind(at)?))
        };
        let mut dns = vec![
            dns_on(Ipv4Addr::LOCALHOST.into())
                .map_err(|e| format!("cannot listen for DNS in the namespace: {e}"))?,
        ];
        if let Ok(pair) = dns_on(Ipv6Addr::LOCALHOST.into()) {
            dns.push(pair);
        }
        Ok(Bound {
            plain,
            transparent,
            dns,
        })
    })?
}

/// Runs the command under veto; its exit status (128 + the signal that
/// ended it, as shells say).
pub fn exec(mut a: ExecArgs) -> Result<i32, String> {
    if a.command.is_empty() {
        return Err("veto exec needs a command: veto exec [OPTIONS] -- CMD ARGS…".into());
    }
    netns::preflight()?;
    let ns = Netns::create(format!("veto-exec-{}", std::process::id()))?;
    let bound = bind_inside(&ns)?;
    let proxy = format!("http://127.0.0.1:{}", netns::PROXY_PORT);
    a.run.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, netns::PROXY_PORT));
    a.run.bound = Some(bound);
    a.run.admin = None;
    a.run.quiet = true;
    a.run.config.transparent_machine.clone_from(&a.machine);
    a.run.config.listener_machine = Some(a.machine.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ns_name = ns.name.clone();
    let status = rt.block_on(async move {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        a.run.ready = Some(ready_tx);
        a.run.stop = Some(stop_rx);
        let mut veto = tokio::spawn(crate::run::run(a.run));
        tokio::select! {
            r = ready_rx => if r.is_err() {
                // `run` ended before it was ready: its error says why.
                return Err(match (&mut veto).await {
                    Ok(Err(e)) => e,
                    _ => "veto stopped before it was ready".into(),
                });
            },
            r = &mut veto => return Err(match r {
                Ok(Err(e)) => e,
                _ => "veto stopped before it was ready".into(),
            }),
        }
        // `ip netns exec` enters the namespace (as root), then setpriv
        // drops to the user before the command starts.
        let mut argv: Vec<String> = vec!["netns".into(), "exec".into(), ns_name.clone()];
        if let Some((uid, gid)) = a.user {
            argv.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        let mut child = tokio::process::Command::new("ip")
            .args(&argv)
            .args(&a.command)
            .env("http_proxy", &proxy)
            .env("https_proxy", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("HTTPS_PROXY", &proxy)
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", a.command[0]))?;
        let status = wait_forwarding(&mut child).await;
        let _ = stop_tx.send(());
        match veto.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("veto: {e}"),
            Err(e) => eprintln!("veto: {e}"),
        }
        status
    });
    drop(ns);
    status
}

/// Waits for the command; SIGTERM and SIGHUP sent to veto are passed on to
/// it (Ctrl-C reaches it from the terminal by itself).
async fn wait_forwarding(child: &mut tokio::process::Child) -> Result<i32, String> {
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        let sig = tokio::select! {
            s = child.wait() => {
                let s = s.map_err(|e| e.to_string())?;
                return Ok(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
            }
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
            // The terminal sent it to the command too; veto waits for it.
            _ = int.recv() => continue,
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill with a pid of our own child, still unreaped.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
