//! `veto run`: the whole system on one machine — the edge proxy with its
//! audit store under `--data`, reloading its policy on change and SIGHUP,
//! draining on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use veto_audit::{Sync, Writer};
use veto_proxy::owner::Change;
use veto_proxy::{Active, Config, OwnedOptOut, Shared};

pub use crate::listen::Bound;

/// The built-in starter policy (examples/starter/veto.yaml): private
/// networks and cloud metadata refused, everything else in report mode.
pub const STARTER: &str = include_str!("../../../examples/starter/veto.yaml");

pub struct RunArgs {
    /// `None`: `./veto.yaml` if it exists, else the starter policy.
    pub policy: Option<PathBuf>,
    pub listen: SocketAddr,
    /// `None`: no admin listener (an agent's, or `veto exec`'s).
    pub admin: Option<SocketAddr>,
    pub data: PathBuf,
    /// `--upstream-ca`: roots for the upstreams of opened tunnels.
    pub upstream_ca: Option<PathBuf>,
    /// `--listen-tls`: a TLS listener for the proxy, with client certificates.
    pub listen_tls: Option<SocketAddr>,
    /// `--client-ca`: more CAs whose client certificates are accepted.
    pub client_ca: Vec<PathBuf>,
    /// `--client-id cn`: machine names from common names, not SPIFFE IDs.
    pub client_id_cn: bool,
    /// `--tls-name`: the name in the TLS listener's certificate.
    pub tls_name: Option<String>,
    /// `--transparent`: listeners for connections the kernel redirects.
    pub transparent: Vec<SocketAddr>,
    /// `--dns`: where veto answers DNS (UDP and TCP).
    pub dns: Vec<SocketAddr>,
    /// Listeners made beforehand (`veto exec` makes them inside its
    /// namespace); then `listen` and `transparent` are not bound here.
    pub bound: Option<Bound>,
    /// Told once the proxy accepts connections.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Stops veto (drain, flush) instead of SIGTERM and Ctrl-C.
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Says nothing on stdout (`veto exec`: stdout is the command's).
    pub quiet: bool,
    /// `veto agent`: managed by a server, no admin port.
    pub agent: Option<crate::agent::AgentArgs>,
    pub sync: Sync,
    pub retention: veto_audit::Retention,
    pub config: Config,
}

/// Where the policy comes from.
#[derive(Clone)]
enum Source {
    File(PathBuf),
    Starter,
    /// `veto agent`: the policy comes from the server.
    Agent,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn compile(source: &Source, optouts: &[OwnedOptOut]) -> Result<Active, String> {
    let (text, name) = read_source(source)?;
    Active::compile(&text, &name, optouts, unix_now())
}

/// The policy text of `source`, and its name for messages.
fn read_source(source: &Source) -> Result<(String, String), String> {
    Ok(match source {
        Source::File(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        Source::Starter => (STARTER.to_string(), "starter".into()),
        Source::Agent => return Err("an agent's policy comes from its server".into()),
    })
}

/// The opt-outs of the control store that are in force now.
pub fn optouts_in_force(store: &veto_control::Store) -> Result<Vec<OwnedOptOut>, String> {
    let now = unix_now();
    Ok(store
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|o| o.in_force(now))
        .map(|o| OwnedOptOut {
            rule_id: o.rule_id(),
            kind: o.target.kind().to_string(),
            value: o.target.value().to_string(),
            reason: o.reason,
        })
        .collect())
}

/// Opt-outs that expire leave force without anyone asking: check every
/// few seconds, and recompile only when the set changed.
fn expire_optouts(shared: Arc<Shared>, control: Arc<veto_control::Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let store = control.clone();
            let read = Box::new(move || optouts_in_force(&store));
            if let Err(e) = shared.change(Change::OptOuts(read), "expiry").await {
                tracing::error!(error = %e, "cannot apply opt-outs");
            }
        }
    });
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the policy; an invalid file leaves the last valid one in force.
/// Every attempt that changes something, or fails, is an event in the audit
/// chain (old hash, new hash, result), written by the policy's owner.
async fn reload(shared: &Shared, source: &Source, why: &str) {
    let source = source.clone();
    let read = Box::new(move || read_source(&source));
    match shared.change(Change::Text(read), why).await {
        Ok(a) if a.changed => eprintln!("veto: policy reloaded ({why}): {} -> {}", a.old, a.new),
        Ok(_) => {}
        Err(errors) => eprintln!(
            "veto: new policy refused ({why}); still enforcing {}:\n{errors}",
            shared.policy.load().policy.hash()
        ),
    }
}

/// Applies the retention once a minute (and once at start), in the audit
/// writer's own thread, between group commits.
fn prune_periodically(shared: Arc<Shared>, retention: veto_audit::Retention) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            match shared.writer.prune(retention).await {
                Ok(Some(p)) => eprintln!(
                    "veto: pruned {} audit records ({} entries) through entry {}, behind a checkpoint",
                    p.records, p.entries, p.through_seq
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "audit pruning failed"),
            }
        }
    });
}

/// The admin API and dashboard of `veto run`.
async fn start_admin(
    args: &RunArgs,
    admin: SocketAddr,
    shared: Arc<Shared>,
    control: Arc<veto_control::Store>,
) -> Result<
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let token = veto_admin::load_or_create(&args.data).map_err(|e| e.to_string())?;
    let viewer = veto_admin::load_or_create_viewer(&args.data).map_err(|e| e.to_string())?;
    let admin_listener = tokio::net::TcpListener::bind(admin)
        .await
        .map_err(|e| format!("cannot listen on {admin} (admin): {e}"))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    announce!(
        args,
        "veto: admin API on http://{admin_addr} (bearer token in {}; `veto tail` finds it)",
        veto_admin::token_path(&args.data).display()
    );
    announce!(
        args,
        "veto: dashboard on http://{admin_addr}/ (log in with that token as operator, or with {} to view only)",
        veto_admin::viewer_token_path(&args.data).display()
    );
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = veto_admin::Admin::new(shared, control, args.data.clone(), &token, &viewer);
    let admin_task = tokio::spawn(async move {
        let stop = async {
            let _ = admin_stopped.await;
        };
        if let Err(e) = veto_admin::serve(admin_listener, admin, stop).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });

    Ok((stop_admin, admin_task))
}

pub async fn run(mut args: RunArgs) -> Result<(), String> {
    let control = Arc::new(veto_control::Store::open(&args.data).map_err(|e| e.to_string())?);
    let (source, active, agent_line) = match &args.agent {
        Some(a) => {
            let (active, line) = crate::agent::initial(&args.data)?;
            (
                Source::Agent,
                active,
                format!("agent of {}: {line}", a.server),
            )
        }
        None => {
            let source = match args.policy.clone() {
                Some(p) => Source::File(p),
                None if Path::new("veto.yaml").exists() => Source::File(PathBuf::from("veto.yaml")),
                None => Source::Starter,
            };
            let optouts = optouts_in_force(&control)?;
            let active = compile(&source, &optouts)?;
            (source, active, String::new())
        }
    };
    let hash = active.policy.hash().to_string();
    let db = veto_audit::db_path(&args.data);
    let key = veto_audit::signing::load_or_create(&args.data).map_err(|e| e.to_string())?;
    let node = crate::listen::node_id(&key.verifying_key());
    let writer = Writer::start_signed(&db, args.sync, Some(key)).map_err(|e| e.to_string())?;
    let (listener, transparent, dns) = crate::listen::bind(&mut args).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = crate::listen::tls_listener(&args).await?;
    let mut config = args.config.clone();
    config.listen = local;
    // This veto's id in CDN-Loop: stable across restarts (its signing
    // key's), distinct between vetos.
    config.node_id = node;
    let (intercept, tls_line) =
        crate::listen::interceptor(&args.data, args.upstream_ca.as_deref())?;
    let shared = Shared::new(config, active, writer, local, intercept);
    if args.agent.is_none() {
        // An agent's opt-outs come from its server, never from local state.
        expire_optouts(shared.clone(), control.clone());
    }

    match &source {
        Source::File(p) => announce!(args, "veto: policy {} {hash}", p.display()),
        Source::Starter => announce!(
            args,
            "veto: no policy given and no ./veto.yaml: enforcing the built-in starter policy {hash} (private networks and cloud metadata refused, everything else recorded in report mode)"
        ),
        Source::Agent => announce!(args, "veto: {agent_line}"),
    }
    announce!(args, "veto: audit trail {}", db.display());
    if cfg!(feature = "unaudited-bench") {
        announce!(
            args,
            "veto: WARNING: this build (feature unaudited-bench) records NO decisions; it exists only to measure what the audit costs"
        );
    }
    announce!(args, "veto: {tls_line}");
    announce!(
        args,
        "veto: proxy listening on http://{local} (set http_proxy, https_proxy, HTTP_PROXY and HTTPS_PROXY to it; curl reads only the lowercase http_proxy)"
    );
    let mut agent = None;
    let (stop_admin, admin_task) = match &args.agent {
        Some(a) => {
            // Outbound only: no port for management.
            announce!(
                args,
                "veto: agent mode: no admin port; managed by {} (status, audit and config over outbound connections)",
                a.server
            );
            agent = Some(crate::agent::start(
                shared.clone(),
                args.data.clone(),
                a.clone(),
            ));
            (None, None)
        }
        None => match args.admin {
            Some(addr) => {
                let (stop, task) =
                    start_admin(&args, addr, shared.clone(), control.clone()).await?;
                (Some(stop), Some(task))
            }
            None => (None, None),
        },
    };

    // An agent's machines and grants are its server's: it keeps no
    // identity store of its own.
    let identities = match &args.agent {
        Some(_) => None,
        None => Some(crate::identity_sync::start(
            shared.clone(),
            args.data.clone(),
            control.clone(),
        )?),
    };
    if args.retention != veto_audit::Retention::default() {
        if args.agent.is_some() {
            // An agent's trail is its spool: pruning could remove entries
            // its server has not stored yet. The server keeps the trail.
            eprintln!("veto: --retain is ignored by an agent: its server keeps the audit trail");
        } else {
            prune_periodically(shared.clone(), args.retention);
        }
    }

    // Reload on SIGHUP and when the file changes.
    if let Source::File(path) = &source {
        let shared = shared.clone();
        let path = path.clone();
        let source = Source::File(path.clone());
        tokio::spawn(async move {
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch SIGHUP");
                        return;
                    }
                };
            let mut seen = mtime(&path);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = hup.recv() => reload(&shared, &source, "SIGHUP").await,
                    _ = tick.tick() => {
                        let now = mtime(&path);
                        if now != seen {
                            seen = now;
                            reload(&shared, &source, "file changed").await;
                        }
                    }
                }
            }
        });
    }

    let (quiet, stop) = (args.quiet, args.stop.take());
    let shutdown = async {
        if let Some(stop) = stop {
            // Whoever made this veto stops it (`veto exec`, when its
            // command ends); signals are theirs to handle.
            let _ = stop.await;
            return;
        }
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!("veto: shutting down: draining requests in flight");
    };
    let listeners = veto_proxy::Listeners {
        plain: listener,
        tls,
        transparent,
    };
    let dns_tasks = crate::listen::serve_dns(dns, &shared);
    if let Some(ready) = args.ready.take() {
        let _ = ready.send(());
    }
    veto_proxy::serve(listeners, shared, shutdown).await;
    for t in dns_tasks {
        t.abort();
    }
    // Uses seen since the last batch: written before veto exits.
    if let Some(identities) = &identities {
        identities.flush().await;
    }
    if let Some(agent) = &agent {
        agent.stop().await;
    }
    if let (Some(stop), Some(task)) = (stop_admin, admin_task) {
        let _ = stop.send(());
        // Live streams never end by themselves; do not wait long for them.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    if !quiet {
        eprintln!("veto: stopped");
    }
    Ok(())
}
