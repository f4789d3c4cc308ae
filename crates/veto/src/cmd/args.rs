//! Arguments several commands share: the data directory, a remote server, audit filters, `veto ca`.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum CaCommand {
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
pub(crate) struct DataArg {
    /// Where veto keeps its state (the audit store is DATA/audit.db, machines DATA/identity.db).
    #[arg(long, default_value = ".veto")]
    pub(crate) data: PathBuf,
}

/// Where a running veto's admin API is, and its token.
#[derive(clap::Args)]
pub(crate) struct Remote {
    /// veto's admin API (`veto run`), or the control plane (`veto server`).
    #[arg(
        long,
        alias = "server",
        env = "VETO_SERVER",
        default_value = "http://127.0.0.1:9180"
    )]
    pub(crate) admin: String,
    #[command(flatten)]
    pub(crate) data: DataArg,
    /// The admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
    #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl Remote {
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        admin_call(
            &self.admin,
            self.token.clone(),
            &self.data.data,
            method,
            path,
            body,
        )
    }
}

/// One call to an admin API (`veto run`'s or `veto server`'s): the token
/// given, else VETO_ADMIN_TOKEN, else DATA/admin.token.
pub(crate) fn admin_call(
    url: &str,
    token: Option<String>,
    data: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let token = veto::admin_client::token(token, data).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(veto::admin_client::call(url, &token, method, path, body))
        .map_err(anyhow::Error::msg)
}

#[derive(clap::Args)]
pub(crate) struct FilterArgs {
    /// Only this decision: allow, deny or redact.
    #[arg(long)]
    pub(crate) decision: Option<String>,
    #[arg(long)]
    pub(crate) machine: Option<String>,
    #[arg(long)]
    pub(crate) host: Option<String>,
    #[arg(long)]
    pub(crate) rule: Option<String>,
    /// Only records this recent: 90s, 15m, 12h, 7d.
    #[arg(long)]
    pub(crate) since: Option<String>,
}

impl FilterArgs {
    pub(crate) fn filter(self) -> Result<veto_audit::Filter> {
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

/// How veto resolves names: `--resolve` answers, then DNS (`--dns-upstream`
/// or the system's). Shared by `veto run`, `veto agent` and `veto exec`.
#[derive(clap::Args)]
pub(crate) struct ResolverArgs {
    /// Answer HOST with ADDR instead of asking DNS (repeatable), as curl's --resolve.
    #[arg(long = "resolve", value_name = "HOST=ADDR")]
    pub(crate) resolve: Vec<String>,
    /// Ask these name servers (IP:PORT, repeatable) instead of the
    /// system's resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    pub(crate) dns_upstream: Vec<std::net::SocketAddr>,
}

impl ResolverArgs {
    /// The proxy's settings with these answers and name servers.
    pub(crate) fn config(&self) -> anyhow::Result<veto_proxy::Config> {
        let mut config = veto_proxy::Config::default();
        for r in &self.resolve {
            let (host, ip) = veto_proxy::parse_resolve(r).map_err(anyhow::Error::msg)?;
            config.resolve.entry(host).or_default().push(ip);
        }
        config.dns_upstream.clone_from(&self.dns_upstream);
        Ok(config)
    }
}
