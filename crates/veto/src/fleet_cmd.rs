//! `veto server`: the control plane, on SQLite or PostgreSQL.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServerCli {
    /// Where the API listens (agents dial in here; people and the CLI too).
    #[arg(long, default_value = "127.0.0.1:9190")]
    pub listen: std::net::SocketAddr,
    /// `sqlite:PATH` (default) or `postgres://USER@HOST/DB` (replicas share
    /// one; add `?sslmode=verify-full&sslrootcert=CA.pem` for verified TLS,
    /// `&pool_max_size=N` for the pool's size).
    #[arg(long, default_value = "sqlite:.veto-server/control.db")]
    pub store: String,
    /// Where the admin, operator and viewer tokens are kept (made on first start).
    #[arg(long, default_value = ".veto-server")]
    pub data: PathBuf,
    /// Push this policy file at start when it differs from the current version.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Serve the API over TLS with this certificate chain (PEM); agents then
    /// dial https:// and verify it (`veto agent --server-ca`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

pub fn server(a: ServerCli) -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(run(a)) {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("veto: {e}");
            Ok(std::process::ExitCode::from(1))
        }
    }
}

async fn run(a: ServerCli) -> Result<(), String> {
    let loc: veto_server::Location = a.store.parse()?;
    let store = veto_server::Store::open(&loc)
        .await
        .map_err(|e| format!("the store {}: {e}", a.store))?;
    if let Some(p) = &a.policy {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let policy = veto_policy::Policy::compile(&text).map_err(|d| {
            let lines: Vec<String> = d.iter().map(|d| format!("{}:{d}", p.display())).collect();
            format!(
                "{} is not a valid policy:\n{}",
                p.display(),
                lines.join("\n")
            )
        })?;
        let hash = policy.hash().to_string();
        let current = store.policy_current().await.map_err(|e| e.to_string())?;
        if current.as_ref().map(|c| &c.hash) != Some(&hash) {
            let v = store
                .policy_push(
                    text,
                    hash.clone(),
                    "server --policy".into(),
                    format!("loaded from {} at start", p.display()),
                    "policy.push",
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("veto: policy {} pushed as version {}", hash, v.version);
        }
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            Some(veto_server::tls_config(&read(c)?, &read(k)?)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The tokens exist before the address is announced.
    veto_server::auth::Tokens::load_or_create(&a.data)?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let backend = match loc {
        veto_server::Location::Sqlite(p) => format!("SQLite {}", p.display()),
        // Never the URL itself: it may carry a password.
        veto_server::Location::Postgres(url) => format!(
            "PostgreSQL {}",
            url.rsplit('@')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("")
        ),
    };
    println!("veto: control plane store: {backend}");
    println!(
        "veto: control plane on {scheme}://{local} (tokens in {}: admin.token, operator.token, viewer.token)",
        a.data.display()
    );
    println!("veto: dashboard on {scheme}://{local}/ (log in with one of those tokens)");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // Agents hold their config streams open: stop accepting, then give the
    // rest two seconds.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(veto_server::serve(
        listener,
        store,
        a.data.clone(),
        tls,
        async {
            let _ = rx.await;
        },
    ));
    shutdown.await;
    let _ = tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    eprintln!("veto: control plane stopped");
    Ok(())
}
