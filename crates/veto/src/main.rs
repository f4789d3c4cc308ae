//! The `veto` binary: a thin command line over the library crates.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use veto::sample::{Payload, Sample};
use veto_policy::{Policy, Protocol};
use veto_proxy::inspect::Detectors;

/// Prints a line on stdout. A closed pipe (`veto … | head`) ends the
/// program quietly, as Unix tools do, instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("veto: cannot write output: {e}");
            std::process::exit(1);
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "veto",
    version,
    about = "veto lets machines say no: every outbound request checked against a declared opt-out policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on one machine: the edge proxy and the audit store.
    Run(Box<RunCli>),
    /// The control plane: policy versions, runtime opt-outs, agents, their
    /// audit and the change log (SQLite, or PostgreSQL for replicas).
    Server(Box<veto::fleet_cmd::ServerCli>),
    /// The edge proxy managed by a `veto server`: it dials out for its
    /// policy and opt-outs, ships its audit, and opens no admin port.
    Agent(Box<AgentCli>),
    /// Agents of a `veto server`: enroll one (its token is printed once), list them.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Work with policy files: check, explain, test, bench.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The local certificate authority, for TLS interception and machine
    /// client certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Review access by last use, renew grants, revoke what nobody uses.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Read the audit trail: verify the chain, query and export records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Follow decisions live from a running veto, one line each, refusals highlighted.
    Tail {
        /// The admin listener of the running veto.
        #[arg(long, default_value = "http://127.0.0.1:9180")]
        admin: String,
        /// Where the admin token is (DATA/admin.token), unless --token or VETO_ADMIN_TOKEN is given.
        #[command(flatten)]
        data: DataArg,
        /// The admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
        #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// JSON lines (the audit record) instead of one readable line.
        #[arg(long)]
        json: bool,
    },
    /// Runtime opt-outs: turn off connections to a host or service, or from
    /// a machine, everywhere at once, with a reason.
    #[command(subcommand)]
    Optout(OptoutCommand),
    /// The change log: who changed what, when and why.
    Changes {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Every destination seen, per machine: first and last seen, decisions, bytes.
    Inventory {
        #[command(flatten)]
        data: DataArg,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Machine identities: register, revoke and list who may use the proxy.
    #[command(subcommand)]
    Machine(MachineCommand),
}

#[derive(Subcommand)]
enum MachineCommand {
    /// Register a machine and print its token, shown only this once (stored hashed).
    Add {
        /// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 characters; not `anonymous`.
        name: String,
        /// A role the policy can name in `from: {roles: [...]}` (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// The machine's env, as the policy names it in `from: {env: [...]}`.
        #[arg(long)]
        env: Option<String>,
        /// Refuse the token after this long: 24h, 30d (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Refuse the machine's credentials after this long unused: 30d.
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_ttl: Option<std::time::Duration>,
        /// Why (kept in the change log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        via: ServerOpt,
    },
    /// Issue a new token (printed once); the old one keeps working for
    /// --overlap, then is refused with a 407 saying it was rotated.
    Rotate {
        name: String,
        /// How long the old token keeps working: 1h, 10m (default: not at all).
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Option<std::time::Duration>,
        /// Why (kept in the change log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        via: ServerOpt,
    },
    /// Issue a short-lived client certificate for a registered machine,
    /// signed by veto's CA, with the SPIFFE ID
    /// spiffe://<trust domain>/machine/NAME. Writes NAME.pem (the chain)
    /// and NAME.key (mode 0600) into --out.
    Cert {
        name: String,
        /// How long the certificate is valid: 24h (default), 1h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Where to write NAME.pem and NAME.key.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
    /// Revoke a machine's token and certificates; the proxy refuses them
    /// from the next request on.
    Revoke {
        name: String,
        /// Why (kept in the change log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        via: ServerOpt,
    },
    /// List machines: name, roles, env, created, expires, last used, revoked.
    List {
        #[command(flatten)]
        data: DataArg,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: ServerOpt,
    },
}

/// Machines kept by a `veto server` instead of this machine's --data.
#[derive(clap::Args)]
struct ServerOpt {
    /// Manage the machines of this control plane (`veto server`).
    #[arg(long, env = "VETO_SERVER")]
    server: Option<String>,
    /// Its admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
    #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerOpt {
    fn call(
        &self,
        data: &std::path::Path,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<serde_json::Value>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let token =
            veto::admin_client::token(self.token.clone(), data).map_err(anyhow::Error::msg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(veto::admin_client::call(server, &token, method, path, body))
            .map(Some)
            .map_err(anyhow::Error::msg)
    }
}

#[derive(clap::Args)]
struct AgentCli {
    /// The server to dial out to (http://HOST:PORT).
    #[arg(long, env = "VETO_SERVER")]
    server: String,
    /// This agent's token (from `veto agents add`).
    #[arg(long, env = "VETO_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Verify an https:// server against this CA (PEM) instead of the
    /// system's roots.
    #[arg(long)]
    server_ca: Option<PathBuf>,
    /// The proxy's flags, as for `veto run` (--policy and --admin do not
    /// apply: the policy comes from the server, and there is no admin port).
    #[command(flatten)]
    run: RunCli,
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Enroll an agent; prints its token, once.
    Add {
        name: String,
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Agents, what they enforce and their spool; per env, whether they agree.
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
}

fn fleet(cmd: AgentsCommand) -> Result<ExitCode> {
    match cmd {
        AgentsCommand::Add { name, env, remote } => {
            let r = remote.call(
                "POST",
                "/v1/agents",
                Some(serde_json::json!({"name": name, "env": env})),
            )?;
            say!("{}", r["token"].as_str().unwrap_or(""));
            eprintln!(
                "veto: agent `{name}` enrolled; the token above is shown only this once. Run: veto agent --server {} --token TOKEN",
                remote.admin
            );
        }
        AgentsCommand::List { remote, json } => {
            let r = remote.call("GET", "/v1/agents", None)?;
            if json {
                say!("{r}");
            } else {
                let rows: Vec<Vec<String>> = r["agents"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
                        vec![
                            s("name"),
                            s("env"),
                            s("version"),
                            s("policy_hash"),
                            a["spool"].to_string(),
                            a["last_seen"]
                                .as_i64()
                                .map_or("never".into(), veto_policy::format_time),
                        ]
                    })
                    .collect();
                veto::table::write(
                    &mut std::io::stdout().lock(),
                    &["NAME", "ENV", "VERSION", "POLICY", "SPOOL", "LAST SEEN"],
                    &rows,
                )?;
                if let Some(envs) = r["envs"].as_object() {
                    for (env, e) in envs {
                        if e["consistent"] == false {
                            eprintln!(
                                "veto: env {env}: agents enforce different policies: {}",
                                e["hashes"]
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct RunCli {
    /// The policy file (default: ./veto.yaml, else the built-in starter policy).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:3128")]
    listen: std::net::SocketAddr,
    /// Where the admin API and dashboard listen.
    #[arg(long, default_value = "127.0.0.1:9180")]
    admin: std::net::SocketAddr,
    #[command(flatten)]
    data: DataArg,
    /// Answer HOST with ADDR instead of asking DNS (repeatable), as curl's --resolve.
    #[arg(long = "resolve", value_name = "HOST=ADDR")]
    resolve: Vec<String>,
    /// How hard an audit commit waits for the disk: normal survives a killed
    /// process; full also survives power loss, at a cost.
    #[arg(long = "audit-sync", default_value = "normal", value_parser = ["normal", "full"])]
    audit_sync: String,
    /// Time a client has to send a request's head (bounds slowloris).
    #[arg(long = "header-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: std::time::Duration,
    /// Time to connect upstream before answering 504.
    #[arg(long = "connect-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: std::time::Duration,
    /// Time for an upstream to start answering before 504.
    #[arg(long = "response-timeout", default_value = "60s", value_parser = humantime::parse_duration)]
    response_timeout: std::time::Duration,
    /// A tunnel silent both ways for this long is closed.
    #[arg(long = "idle-timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: std::time::Duration,
    /// No tunnel lives longer than this.
    #[arg(long = "tunnel-timeout", default_value = "24h", value_parser = humantime::parse_duration)]
    tunnel_timeout: std::time::Duration,
    /// Most client connections at once.
    #[arg(long = "max-connections", default_value_t = 10_000)]
    max_connections: usize,
    /// Most connections from one client address.
    #[arg(long = "max-per-client", default_value_t = 512)]
    max_per_client: usize,
    /// Keep audit entries this long (e.g. 90d); older ones are pruned behind
    /// a checkpoint entry, and the chain still verifies.
    #[arg(long = "retain", value_parser = humantime::parse_duration)]
    retain: Option<std::time::Duration>,
    /// Keep the audit store under this size (e.g. 10GiB): the oldest quarter
    /// is pruned when it is over.
    #[arg(long = "retain-size", value_parser = parse_size)]
    retain_size: Option<usize>,
    /// Request bodies larger than this cannot be inspected for data classes.
    #[arg(long = "inspect-limit", default_value = "16MiB", value_parser = parse_size)]
    inspect_limit: usize,
    /// Trust these PEM certificates, instead of the system's roots, for
    /// upstreams of tunnels veto opens (`tls.intercept: auto`).
    #[arg(long = "upstream-ca", value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Also listen here for clients that speak TLS to the proxy (curl -x
    /// https://…), optionally with a client certificate (needs `veto ca init`).
    #[arg(long = "listen-tls", value_name = "ADDR")]
    listen_tls: Option<std::net::SocketAddr>,
    /// Also accept client certificates from this CA (PEM; repeatable), e.g.
    /// SPIRE's or your PKI's; their machine names must be registered.
    #[arg(long = "client-ca", value_name = "FILE")]
    client_ca: Vec<PathBuf>,
    /// Where a client certificate's machine name comes from: its SPIFFE ID
    /// (spiffe://<trust domain>/machine/NAME) or its subject's common name.
    #[arg(long = "client-id", default_value = "spiffe", value_parser = ["spiffe", "cn"])]
    client_id: String,
    /// The name in the TLS listener's own certificate (default: its address).
    #[arg(long = "tls-name")]
    tls_name: Option<String>,
}

fn parse_size(s: &str) -> Result<usize, String> {
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

fn run_proxy(a: RunCli, agent: Option<veto::agent::AgentArgs>) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut config = veto_proxy::Config::default();
    for r in &a.resolve {
        let (host, ip) = veto_proxy::parse_resolve(r).map_err(anyhow::Error::msg)?;
        config.resolve.entry(host).or_default().push(ip);
    }
    config.inspect_limit = a.inspect_limit;
    config.header_timeout = a.header_timeout;
    config.connect_timeout = a.connect_timeout;
    config.response_timeout = a.response_timeout;
    config.idle_timeout = a.idle_timeout;
    config.tunnel_timeout = a.tunnel_timeout;
    config.max_connections = a.max_connections.max(1);
    config.max_per_client = a.max_per_client.max(1);
    let args = veto::run::RunArgs {
        policy: a.policy,
        listen: a.listen,
        admin: a.admin,
        data: a.data.data,
        upstream_ca: a.upstream_ca,
        listen_tls: a.listen_tls,
        client_ca: a.client_ca,
        client_id_cn: a.client_id == "cn",
        tls_name: a.tls_name,
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

#[derive(Subcommand)]
enum AccessCommand {
    /// Every credential and grant with its last use, what expires within
    /// --within, and what already expired.
    Review {
        #[command(flatten)]
        data: DataArg,
        /// The policy whose `expire_if_unused` grants to list (default:
        /// ./veto.yaml, else the built-in starter policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// What counts as expiring soon.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        within: std::time::Duration,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: ServerOpt,
    },
    /// Renew a grant for a machine: it counts as used now.
    Renew {
        /// The rule id of the grant (an `expire_if_unused` rule).
        rule: String,
        #[arg(long)]
        machine: String,
        /// Why (kept in the change log and the audit trail).
        #[arg(long)]
        reason: String,
        /// Check the rule against this policy (default: ./veto.yaml if present).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        via: ServerOpt,
    },
    /// Revoke machine credentials unused for --unused (never used: since
    /// they were created).
    Prune {
        #[arg(long, value_parser = humantime::parse_duration)]
        unused: std::time::Duration,
        /// Only say what would be revoked.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

/// The policy a command reads: --policy, else ./veto.yaml, else (when
/// `starter`) the built-in starter policy.
fn policy_for(path: Option<PathBuf>, starter: bool) -> Result<Option<veto_policy::Policy>> {
    let path = path.or_else(|| {
        let p = PathBuf::from("veto.yaml");
        p.exists().then_some(p)
    });
    let text = match &path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        None if starter => veto::run::STARTER.to_string(),
        None => return Ok(None),
    };
    let name = path.map_or_else(|| "starter".into(), |p| p.display().to_string());
    veto_policy::Policy::compile(&text).map(Some).map_err(|d| {
        anyhow::anyhow!(
            "{name} is not a valid policy:\n{}",
            d.iter()
                .map(|d| format!("{name}:{d}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn access(cmd: AccessCommand) -> Result<ExitCode> {
    match cmd {
        AccessCommand::Review {
            data,
            policy,
            within,
            json,
            via,
        } => {
            let path = format!("/v1/access?within={}", within.as_secs());
            let rows: Vec<serde_json::Value> = match via.call(&data.data, "GET", &path, None)? {
                // The fleet's: credentials and grants as the server keeps them.
                Some(v) => serde_json::from_value(v)?,
                None => {
                    let policy = policy_for(policy, true)?.expect("the starter policy");
                    veto::access_cmd::review(&data.data, &policy, within.as_secs() as i64)
                        .map_err(anyhow::Error::msg)?
                        .iter()
                        .map(veto_server::grants::row_json)
                        .collect()
                }
            };
            match veto::access_cmd::write_review(&rows, json, &mut std::io::stdout().lock()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
        AccessCommand::Renew {
            rule,
            machine,
            reason,
            policy,
            data,
            via,
        } => {
            let body = serde_json::json!({"rule": rule, "machine": machine, "reason": reason});
            if let Some(r) = via.call(&data.data, "POST", "/v1/grants/renew", Some(body))? {
                say!(
                    "grant `{rule}` renewed for `{machine}` on every agent: counts as used at {}",
                    r["last_used"].as_str().unwrap_or("?")
                );
                return Ok(ExitCode::SUCCESS);
            }
            let policy = policy_for(policy, false)?;
            let at = veto::access_cmd::renew(&data.data, policy.as_ref(), &rule, &machine, &reason)
                .map_err(anyhow::Error::msg)?;
            say!("grant `{rule}` renewed for `{machine}`: counts as used at {at}");
        }
        AccessCommand::Prune {
            unused,
            dry_run,
            data,
        } => {
            let n = veto::access_cmd::prune(
                &data.data,
                unused.as_secs() as i64,
                dry_run,
                &mut std::io::stdout().lock(),
            )
            .map_err(anyhow::Error::msg)?;
            eprintln!(
                "veto: {n} credential(s) unused for {} {}",
                humantime::format_duration(unused),
                if dry_run {
                    "would be revoked"
                } else {
                    "revoked"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the local CA (an ECDSA P-256 key, stored with mode 0600, and
    /// its certificate) under --data. Refuses to replace an existing one.
    Init {
        #[command(flatten)]
        data: DataArg,
        /// The SPIFFE trust domain of machine certificates.
        #[arg(long, default_value = veto_ca::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
}

#[derive(clap::Args, Clone)]
struct DataArg {
    /// Where veto keeps its state (the audit store is DATA/audit.db, machines DATA/identity.db).
    #[arg(long, default_value = ".veto")]
    data: PathBuf,
}

/// Where a running veto's admin API is, and its token.
#[derive(clap::Args)]
struct Remote {
    /// veto's admin API (`veto run`), or the control plane (`veto server`).
    #[arg(
        long,
        alias = "server",
        env = "VETO_SERVER",
        default_value = "http://127.0.0.1:9180"
    )]
    admin: String,
    #[command(flatten)]
    data: DataArg,
    /// The admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
    #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let token = veto::admin_client::token(self.token.clone(), &self.data.data)
            .map_err(anyhow::Error::msg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(veto::admin_client::call(
            &self.admin,
            &token,
            method,
            path,
            body,
        ))
        .map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand)]
enum OptoutCommand {
    /// Refuse every request to a host (pattern) or service, or from a machine.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["host", "service", "machine"])))]
    Add {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        machine: Option<String>,
        /// Why: shown in every refusal and kept in the change log.
        #[arg(long)]
        reason: String,
        /// The opt-out lapses after this long (e.g. 2h).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The opt-outs in force.
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Lift an opt-out.
    Remove {
        id: u32,
        /// Why it is lifted (kept in the change log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn optout(cmd: OptoutCommand) -> Result<ExitCode> {
    match cmd {
        OptoutCommand::Add {
            host,
            service,
            machine,
            reason,
            expires,
            remote,
        } => {
            let body = serde_json::json!({
                "host": host, "service": service, "machine": machine, "reason": reason,
                "expires": expires.map(|d| d.as_secs()),
            });
            let o = remote.call("POST", "/v1/optouts", Some(body))?;
            say!(
                "opt-out {} in force as rule optout-{}: {}",
                o["id"],
                o["id"],
                o["reason"].as_str().unwrap_or("")
            );
        }
        OptoutCommand::List { remote, json } => {
            let list = remote.call("GET", "/v1/optouts", None)?;
            let items = list.as_array().cloned().unwrap_or_default();
            if json {
                for o in &items {
                    say!("{o}");
                }
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|o| {
                        let target = o["target"]
                            .as_object()
                            .and_then(|t| t.iter().next())
                            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("")))
                            .unwrap_or_default();
                        let expires = o["expires"]
                            .as_i64()
                            .map(veto_policy::format_time)
                            .unwrap_or_else(|| "never".into());
                        vec![
                            format!("optout-{}", o["id"]),
                            target,
                            expires,
                            o["reason"].as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect();
                veto::table::write(
                    &mut std::io::stdout().lock(),
                    &["RULE", "TARGET", "EXPIRES", "REASON"],
                    &rows,
                )?;
            }
        }
        OptoutCommand::Remove { id, reason, remote } => {
            let q: String = url::form_urlencoded::byte_serialize(reason.as_bytes()).collect();
            remote.call("DELETE", &format!("/v1/optouts/{id}?reason={q}"), None)?;
            say!("opt-out {id} lifted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct FilterArgs {
    /// Only this decision: allow, deny or redact.
    #[arg(long)]
    decision: Option<String>,
    #[arg(long)]
    machine: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    rule: Option<String>,
    /// Only records this recent: 90s, 15m, 12h, 7d.
    #[arg(long)]
    since: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> Result<veto_audit::Filter> {
        if self
            .decision
            .as_deref()
            .is_some_and(|d| !matches!(d, "allow" | "deny" | "redact"))
        {
            bail!("--decision must be allow, deny or redact");
        }
        let now = veto_audit::now().0 as i64;
        let since_ms = match &self.since {
            Some(s) => Some(veto::audit_cmd::since_ms(s, now).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(veto_audit::Filter {
            decision: self.decision,
            machine: self.machine,
            host: self.host,
            rule: self.rule,
            since_ms,
        })
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain: exit 0 when intact, 1 naming the first broken record.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// Hold prune checkpoints to this Ed25519 public key (hex), e.g. a
        /// copy of DATA/audit-signing.pub kept elsewhere.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print audit records as JSON lines, oldest first.
    Query {
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Events of veto itself in the chain (policy reloads), as JSON lines.
    Events {
        #[command(flatten)]
        data: DataArg,
    },
    /// Export every record.
    Export {
        #[command(flatten)]
        data: DataArg,
        /// Output format; jsonl is one JSON record per line.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy: exit 0 (warnings on stderr) or 1 with `file:line:column: message` lines.
    Check { file: PathBuf },
    /// Push a policy file to a `veto server` as a new version; its agents
    /// enforce it at once.
    Push {
        file: PathBuf,
        /// Why (kept in the change log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an earlier version current again (as a new version).
    Rollback {
        version: i64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The versions a `veto server` holds, newest first.
    Versions {
        #[command(flatten)]
        remote: Remote,
    },
    /// Decide one request and print the decision, its reason and the trace of rules as JSON.
    Explain(ExplainArgs),
    /// Run policy test files (a file, or every *.test.yaml below a directory).
    Test { path: PathBuf },
    /// Measure decisions per second and latency for a policy.
    Bench {
        file: PathBuf,
        /// Requests to decide: a test file (its cases' requests) or a YAML list of requests.
        /// Without it, requests are generated from the policy's machines and services.
        #[arg(long)]
        requests: Option<PathBuf>,
        /// How many decisions to time.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: usize,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["url", "connect"])))]
struct ExplainArgs {
    file: PathBuf,
    /// The machine making the request (default: anonymous).
    #[arg(long, default_value = "anonymous")]
    machine: String,
    /// An http:// or https:// URL: a request veto can see.
    #[arg(long)]
    url: Option<String>,
    /// HOST:PORT: a CONNECT tunnel veto does not open.
    #[arg(long)]
    connect: Option<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// A file whose contents are the request body.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// What DNS would answer for the host (repeatable).
    #[arg(long = "resolves-to", value_name = "IP")]
    resolves_to: Vec<std::net::IpAddr>,
    /// Protocol of a --connect tunnel: tls (default) or tcp.
    #[arg(long, default_value = "tls")]
    protocol: String,
}

fn read_policy(file: &Path) -> Result<Policy, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("veto: cannot read {}: {e}", file.display());
        ExitCode::from(1)
    })?;
    Policy::compile(&text).map_err(|errs| {
        for d in errs {
            eprintln!("{}:{d}", file.display());
        }
        ExitCode::from(1)
    })
}

fn explain(a: ExplainArgs) -> Result<ExitCode> {
    let policy = match read_policy(&a.file) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let detectors = Detectors::new(&policy).map_err(anyhow::Error::msg)?;
    let mut sample = if let Some(url) = &a.url {
        let mut headers = Vec::new();
        for h in &a.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header `{h}` must be `Name: value`"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let body = match &a.body_file {
            Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            None => Vec::new(),
        };
        Sample::from_url(
            &a.machine,
            &a.method,
            url,
            Payload {
                target: String::new(),
                headers,
                body,
            },
        )?
    } else {
        let target = a.connect.as_deref().unwrap_or_default();
        let protocol = match Protocol::parse(&a.protocol) {
            Some(p @ (Protocol::Tls | Protocol::Tcp)) => p,
            _ => bail!("--protocol must be tls or tcp for --connect"),
        };
        Sample::from_connect(&a.machine, target, protocol)?
    };
    sample.ips = a.resolves_to;
    sample.now = veto::testfile::now();
    sample.detect(&detectors);
    let out = veto::explain::explain(&policy, &sample, &veto_policy::NoGrants);
    say!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cmd {
        AuditCommand::Verify { data, key } => {
            match veto::audit_cmd::verify_cmd(&data.data, key.as_deref())? {
                Ok(msg) => {
                    say!("{msg}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(msg) => {
                    eprintln!("veto: {msg}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Query { data, filter } => {
            veto::audit_cmd::query_cmd(&data.data, &filter.filter()?, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Events { data } => {
            let conn = veto_audit::open_ro(&veto_audit::db_path(&data.data))?;
            veto_audit::events(&conn, |e| {
                say!("{}", serde_json::to_string(&e).unwrap_or_default());
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { data, format: _ } => {
            veto::audit_cmd::query_cmd(&data.data, &veto_audit::Filter::default(), &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs a machine change. The change itself is done: a change log that
/// cannot be written is said loudly, not turned into a failed command.
fn changed(data: &std::path::Path, action: &str, reason: &str, after: serde_json::Value) {
    let reason = if reason.trim().is_empty() {
        "no reason given"
    } else {
        reason.trim()
    };
    if let Err(e) =
        veto::access_cmd::log_change(data, action, reason, serde_json::Value::Null, after)
    {
        eprintln!("veto: warning: the change log could not record {action}: {e}");
    }
}

fn machine(cmd: MachineCommand) -> Result<ExitCode> {
    use veto::machine_cmd::{AddArgs, add_cmd, list_cmd, revoke_cmd};
    match cmd {
        MachineCommand::Add {
            name,
            roles,
            env,
            ttl,
            idle_ttl,
            reason,
            data,
            via,
        } => {
            let body = serde_json::json!({
                "name": name, "roles": roles, "env": env, "reason": reason,
                "ttl": ttl.map(|d| d.as_secs()), "idle_ttl": idle_ttl.map(|d| d.as_secs()),
            });
            if let Some(r) = via.call(&data.data, "POST", "/v1/machines", Some(body))? {
                say!("{}", r["token"].as_str().unwrap_or(""));
                eprintln!(
                    "veto: machine `{name}` added on the server; the token above is shown only this once; every agent accepts it within a second"
                );
                return Ok(ExitCode::SUCCESS);
            }
            let args = AddArgs {
                name: &name,
                roles: &roles,
                env: env.as_deref(),
                ttl,
                idle_ttl,
            };
            add_cmd(
                &data.data,
                &args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            )?;
            changed(
                &data.data,
                "machine.add",
                &reason,
                serde_json::json!({
                    "machine": name, "roles": roles, "env": env,
                    "ttl": ttl.map(|d| humantime::format_duration(d).to_string()),
                    "idle_ttl": idle_ttl.map(|d| humantime::format_duration(d).to_string()),
                }),
            );
        }
        MachineCommand::Rotate {
            name,
            overlap,
            reason,
            data,
            via,
        } => {
            let body = serde_json::json!({"overlap": overlap.map_or(0, |d| d.as_secs()), "reason": reason});
            if let Some(r) = via.call(
                &data.data,
                "POST",
                &format!("/v1/machines/{name}/rotate"),
                Some(body),
            )? {
                say!("{}", r["token"].as_str().unwrap_or(""));
                eprintln!("veto: machine `{name}` has a new token (shown only this once)");
                return Ok(ExitCode::SUCCESS);
            }
            if !veto_identity::db_path(&data.data).exists() {
                return Err(veto_identity::IdentityError::Unknown(name).into());
            }
            let token = veto_identity::Store::open(&data.data)?.rotate(&name, overlap)?;
            say!("{token}");
            let until = match overlap {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => "no longer".to_string(),
            };
            eprintln!(
                "veto: machine `{name}` has a new token (shown only this once); the old one works {until}"
            );
            changed(
                &data.data,
                "machine.rotate",
                &reason,
                serde_json::json!({ "machine": name, "old_token_works": until }),
            );
        }
        MachineCommand::Cert {
            name,
            ttl,
            out,
            data,
        } => {
            let issued = veto::machine_cmd::cert_cmd(&data.data, &name, ttl, &out)?;
            changed(
                &data.data,
                "machine.cert",
                "",
                serde_json::json!({
                    "machine": name, "spiffe_id": issued.spiffe_id, "not_after": issued.not_after,
                }),
            );
            say!("{}", issued.cert.display());
            eprintln!(
                "veto: client certificate for `{name}` ({}), valid until {}: {} and key {} (mode 0600). \
                 Use it as: curl -x https://127.0.0.1:PORT --proxy-cacert {} --proxy-cert {} --proxy-key {} URL",
                issued.spiffe_id,
                issued.not_after,
                issued.cert.display(),
                issued.key.display(),
                data.data.join(veto_ca::CERT_FILE).display(),
                issued.cert.display(),
                issued.key.display(),
            );
        }
        MachineCommand::Revoke {
            name,
            reason,
            data,
            via,
        } => {
            let body = serde_json::json!({"reason": reason});
            if via
                .call(
                    &data.data,
                    "POST",
                    &format!("/v1/machines/{name}/revoke"),
                    Some(body),
                )?
                .is_some()
            {
                say!("machine `{name}` revoked on the server");
                return Ok(ExitCode::SUCCESS);
            }
            revoke_cmd(&data.data, &name)?;
            changed(
                &data.data,
                "machine.revoke",
                &reason,
                serde_json::json!({ "machine": name, "revoked": true }),
            );
            say!("machine `{name}` revoked");
        }
        MachineCommand::List { data, json, via } => {
            if let Some(list) = via.call(&data.data, "GET", "/v1/machines", None)? {
                for m in list.as_array().cloned().unwrap_or_default() {
                    if json {
                        say!("{m}");
                    } else {
                        let t = |k: &str| {
                            m[k].as_i64()
                                .map_or("-".to_string(), veto_policy::format_time)
                        };
                        say!(
                            "{}  roles={}  env={}  created={}  expires={}  last_used={}  revoked={}",
                            m["name"].as_str().unwrap_or(""),
                            m["roles"],
                            m["env"].as_str().unwrap_or("-"),
                            t("created"),
                            t("expires"),
                            t("last_used"),
                            t("revoked_at")
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            list_cmd(&data.data, json, &mut std::io::stdout().lock())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Machine(cmd) => machine(cmd),
        Command::Access(cmd) => access(cmd),
        Command::Run(a) => run_proxy(*a, None),
        Command::Agent(a) => {
            let a = *a;
            let agent = veto::agent::AgentArgs {
                server: a.server,
                token: a.token,
                name_hint: None,
                server_ca: a.server_ca,
            };
            run_proxy(a.run, Some(agent))
        }
        Command::Server(a) => veto::fleet_cmd::server(*a),
        Command::Agents(cmd) => fleet(cmd),
        Command::Ca(CaCommand::Init { data, trust_domain }) => {
            match veto_ca::Ca::init_for(&data.data, &trust_domain) {
                Ok(_) => {
                    let cert = data.data.join(veto_ca::CERT_FILE);
                    println!(
                        "veto: created the local CA: certificate {} (give it to clients as their trust anchor, e.g. curl --cacert), key {} (mode 0600); machine certificates carry spiffe://{trust_domain}/machine/NAME",
                        cert.display(),
                        data.data.join(veto_ca::KEY_FILE).display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("veto: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Optout(cmd) => optout(cmd),
        Command::Changes { remote, json } => {
            let list = remote.call("GET", "/v1/changes", None)?;
            for c in list.as_array().cloned().unwrap_or_default() {
                if json {
                    say!("{c}");
                } else {
                    let what = |v: &serde_json::Value| {
                        if v.is_null() {
                            "-".to_string()
                        } else {
                            v.to_string()
                        }
                    };
                    say!(
                        "{} {} {} reason: {} | before: {} | after: {}",
                        c["time"].as_str().unwrap_or(""),
                        c["actor"].as_str().unwrap_or(""),
                        c["action"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        what(&c["before"]),
                        what(&c["after"])
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            admin,
            data,
            token,
            filter,
            json,
        } => {
            let token = match token {
                Some(t) => t,
                None => std::fs::read_to_string(veto_admin::token_path(&data.data))
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no admin token: give --token, set VETO_ADMIN_TOKEN, or point --data at veto's data ({})",
                            veto_admin::token_path(&data.data).display()
                        )
                    })?,
            };
            let since = filter.since.clone();
            let f = filter.filter()?;
            let mut query = Vec::new();
            for (k, v) in [
                ("decision", &f.decision),
                ("machine", &f.machine),
                ("host", &f.host),
                ("rule", &f.rule),
            ] {
                if let Some(v) = v {
                    query.push(format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    ));
                }
            }
            if let Some(s) = since {
                let secs = humantime::parse_duration(&s)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                query.push(format!("since={secs}"));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(veto::tail::tail(veto::tail::TailArgs {
                admin,
                token,
                query: query.join("&"),
                json,
            })) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("veto: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Audit(cmd) => audit(cmd),
        Command::Inventory { data, json } => {
            veto::audit_cmd::inventory_cmd(&data.data, json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            let policy = match read_policy(&file) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            for w in policy.warnings() {
                eprintln!("{}:{w} (warning)", file.display());
            }
            let doc = policy.document();
            say!(
                "{}: ok, {} rules, {} services, {} machines; {}",
                file.display(),
                doc.rules.len(),
                doc.services.len(),
                doc.machines.len(),
                policy.hash()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Explain(a)) => explain(a),
        Command::Policy(PolicyCommand::Push {
            file,
            reason,
            remote,
        }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let v = remote.call(
                "POST",
                "/v1/policy",
                Some(serde_json::json!({"text": text, "reason": reason})),
            )?;
            say!(
                "policy version {} {} pushed",
                v["version"],
                v["hash"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Rollback {
            version,
            reason,
            remote,
        }) => {
            let v = remote.call(
                "POST",
                "/v1/policy/rollback",
                Some(serde_json::json!({"version": version, "reason": reason})),
            )?;
            say!(
                "version {version} is current again as version {} {}",
                v["version"],
                v["hash"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Versions { remote }) => {
            let list = remote.call("GET", "/v1/policy/versions", None)?;
            let rows: Vec<Vec<String>> = list
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    vec![
                        v["version"].to_string(),
                        v["hash"].as_str().unwrap_or("").to_string(),
                        v["time"]
                            .as_i64()
                            .map_or(String::new(), veto_policy::format_time),
                        v["actor"].as_str().unwrap_or("").to_string(),
                        v["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            veto::table::write(
                &mut std::io::stdout().lock(),
                &["VERSION", "HASH", "TIME", "ACTOR", "REASON"],
                &rows,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Test { path }) => {
            if !path.exists() {
                eprintln!("veto: {}: no such file or directory", path.display());
                return Ok(ExitCode::from(1));
            }
            let report = veto::testfile::run(&path)?;
            for f in &report.failures {
                say!("{f}");
            }
            say!("{} passed, {} failed", report.passed, report.failures.len());
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Policy(PolicyCommand::Bench {
            file,
            requests,
            iterations,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let t = std::time::Instant::now();
            let policy = match Policy::compile(&text) {
                Ok(p) => p,
                Err(errs) => {
                    for d in errs {
                        eprintln!("{}:{d}", file.display());
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let compile = t.elapsed();
            let samples = match requests {
                Some(r) => {
                    veto::testfile::load_requests(&policy, &r).map_err(anyhow::Error::msg)?
                }
                None => veto::bench::generate(&policy),
            };
            let f = veto::bench::run(&policy, &samples, iterations.max(1));
            say!(
                "policy          {} ({} rules)",
                policy.hash(),
                policy.document().rules.len()
            );
            say!("compile         {:.2} ms", compile.as_secs_f64() * 1e3);
            say!("samples         {}", f.samples);
            say!("iterations      {}", f.iterations);
            say!("decisions/s     {:.0}", f.per_second);
            say!("mean ns/op      {:.0}", f.mean_ns);
            say!("p50 ns/op       {}", f.p50_ns);
            say!("p99 ns/op       {}", f.p99_ns);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// mimalloc: the request path allocates per request (hyper's buffers,
/// the audit record), and glibc's malloc spent ~7% of veto's CPU under
/// load in arenas and consolidation (perf, BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages on its arenas, so every thread
/// that touches a fresh arena region can fault in 2 MiB at once: an idle
/// `veto run` held 29 MiB instead of 16. The requests' working set is small
/// enough that huge pages buy nothing measurable, so the process opts out
/// before its threads start (the flag is checked at each page fault).
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and
    // changes nothing but this process's huge-page policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("veto: {e:#}");
            ExitCode::from(1)
        }
    }
}
