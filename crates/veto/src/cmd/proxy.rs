//! `veto run`: the proxy, the audit store and the admin listener (and the same for `veto agent`).

use crate::*;

#[derive(clap::Args)]
pub(crate) struct RunCli {
    /// The policy file (default: ./veto.yaml, else the built-in starter policy).
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:3128")]
    pub(crate) listen: std::net::SocketAddr,
    /// Where the admin API and dashboard listen.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub(crate) admin: std::net::SocketAddr,
    #[command(flatten)]
    pub(crate) data: DataArg,
    #[command(flatten)]
    pub(crate) resolver: ResolverArgs,
    /// How hard an audit commit waits for the disk: normal survives a killed
    /// process; full also survives power loss, at a cost.
    #[arg(long = "audit-sync", default_value = "normal", value_parser = ["normal", "full"])]
    pub(crate) audit_sync: String,
    /// Time a client has to send a request's head (bounds slowloris).
    #[arg(long = "header-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) header_timeout: std::time::Duration,
    /// Time a client has to send a body veto reads for inspection (then 408).
    #[arg(long = "body-timeout", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) body_timeout: std::time::Duration,
    /// Time a tunnel's client has to send its first bytes (a whole TLS
    /// ClientHello, once it has begun one) when they decide the tunnel.
    #[arg(long = "peek-timeout", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) peek_timeout: std::time::Duration,
    /// Time to connect upstream before answering 504.
    #[arg(long = "connect-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: std::time::Duration,
    /// Time for an upstream to start answering before 504.
    #[arg(long = "response-timeout", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) response_timeout: std::time::Duration,
    /// A tunnel silent both ways for this long is closed.
    #[arg(long = "idle-timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: std::time::Duration,
    /// No tunnel lives longer than this.
    #[arg(long = "tunnel-timeout", default_value = "24h", value_parser = humantime::parse_duration)]
    pub(crate) tunnel_timeout: std::time::Duration,
    /// Most client connections at once.
    #[arg(long = "max-connections", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Most connections from one client address.
    #[arg(long = "max-per-client", default_value_t = 512)]
    pub(crate) max_per_client: usize,
    /// Keep audit entries this long (e.g. 90d); older ones are pruned behind
    /// a checkpoint entry, and the chain still verifies.
    #[arg(long = "retain", value_parser = humantime::parse_duration)]
    pub(crate) retain: Option<std::time::Duration>,
    /// Keep the audit store under this size (e.g. 10GiB): the oldest quarter
    /// is pruned when it is over.
    #[arg(long = "retain-size", value_parser = parse_size)]
    pub(crate) retain_size: Option<usize>,
    /// Request bodies larger than this cannot be inspected for data classes.
    #[arg(long = "inspect-limit", default_value = "16MiB", value_parser = parse_size)]
    pub(crate) inspect_limit: usize,
    /// Trust these PEM certificates, instead of the system's roots, for
    /// upstreams of tunnels veto opens (`tls.intercept: auto`).
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Also listen here for clients that speak TLS to the proxy (curl -x
    /// https://…), optionally with a client certificate (needs `veto ca init`).
    #[arg(long = "listen-tls", value_name = "ADDR")]
    pub(crate) listen_tls: Option<std::net::SocketAddr>,
    /// Also accept client certificates from this CA (PEM; repeatable), e.g.
    /// SPIRE's or your PKI's; their machine names must be registered.
    #[arg(long = "client-ca", value_name = "FILE")]
    pub(crate) client_ca: Vec<PathBuf>,
    /// Where a client certificate's machine name comes from: its SPIFFE ID
    /// (spiffe://<trust domain>/machine/NAME) or its subject's common name.
    #[arg(long = "client-id", default_value = "spiffe", value_parser = ["spiffe", "cn"])]
    pub(crate) client_id: String,
    /// The name in the TLS listener's own certificate (default: its address).
    #[arg(long = "tls-name")]
    pub(crate) tls_name: Option<String>,
    /// Also accept connections the kernel redirected here (nftables
    /// `redirect`), from programs that ignore proxy variables (repeatable).
    #[arg(long = "transparent", value_name = "ADDR")]
    pub(crate) transparent: Vec<std::net::SocketAddr>,
    /// Also answer DNS here (UDP and TCP), every lookup decided by the
    /// policy: refused names are never asked upstream (repeatable).
    #[arg(long = "dns", value_name = "ADDR")]
    pub(crate) dns: Vec<std::net::SocketAddr>,
    /// The machine connections on the transparent listener, and lookups on
    /// the DNS listener, are decided and recorded as (they send no
    /// credentials).
    #[arg(
        long = "transparent-machine",
        value_name = "NAME",
        default_value = "anonymous"
    )]
    pub(crate) transparent_machine: String,
}

pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = [
        ("KiB", 1usize << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size like 16MiB"))
}

pub(crate) fn run_proxy(a: RunCli, agent: Option<veto::agent::AgentArgs>) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut config = a.resolver.config()?;
    config.inspect_limit = a.inspect_limit;
    config.header_timeout = a.header_timeout;
    config.body_timeout = a.body_timeout;
    config.peek_timeout = a.peek_timeout;
    config.connect_timeout = a.connect_timeout;
    config.response_timeout = a.response_timeout;
    config.idle_timeout = a.idle_timeout;
    config.tunnel_timeout = a.tunnel_timeout;
    config.max_connections = a.max_connections.max(1);
    config.max_per_client = a.max_per_client.max(1);
    config.transparent_machine = a.transparent_machine;
    let args = veto::run::RunArgs {
        policy: a.policy,
        listen: a.listen,
        admin: Some(a.admin),
        data: a.data.data,
        upstream_ca: a.upstream_ca,
        listen_tls: a.listen_tls,
        client_ca: a.client_ca,
        client_id_cn: a.client_id == "cn",
        tls_name: a.tls_name,
        transparent: a.transparent,
        dns: a.dns,
        bound: None,
        ready: None,
        stop: None,
        quiet: false,
        agent,
        sync: if a.audit_sync == "full" {
            veto_audit::Sync::Full
        } else {
            veto_audit::Sync::Normal
        },
        retention: veto_audit::Retention {
            max_age: a.retain,
            max_bytes: a.retain_size.map(|b| b as u64),
        },
        config,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(veto::run::run(args)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("veto: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
