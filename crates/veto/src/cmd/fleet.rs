//! `veto agent` and `veto agents`: the edge proxy managed by a server, and enrolling agents with it.

use crate::*;

/// Machines kept by a `veto server` instead of this machine's --data.
#[derive(clap::Args)]
pub(crate) struct ServerOpt {
    /// Manage the machines of this control plane (`veto server`).
    #[arg(long, env = "VETO_SERVER")]
    pub(crate) server: Option<String>,
    /// Its admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
    #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl ServerOpt {
    pub(crate) fn call(
        &self,
        data: &std::path::Path,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<serde_json::Value>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        admin_call(server, self.token.clone(), data, method, path, body).map(Some)
    }
}

#[derive(clap::Args)]
pub(crate) struct AgentCli {
    /// The server to dial out to (http://HOST:PORT).
    #[arg(long, env = "VETO_SERVER")]
    pub(crate) server: String,
    /// This agent's token (from `veto agents add`).
    #[arg(long, env = "VETO_AGENT_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// Verify an https:// server against this CA (PEM) instead of the
    /// system's roots.
    #[arg(long)]
    pub(crate) server_ca: Option<PathBuf>,
    /// The proxy's flags, as for `veto run` (--policy and --admin do not
    /// apply: the policy comes from the server, and there is no admin port).
    #[command(flatten)]
    pub(crate) run: RunCli,
}

#[derive(Subcommand)]
pub(crate) enum AgentsCommand {
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

pub(crate) fn fleet(cmd: AgentsCommand) -> Result<ExitCode> {
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
