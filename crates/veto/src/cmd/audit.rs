//! `veto audit`: verify, query and export the trail.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain: exit 0 when intact, 1 naming the first broken record.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// Hold prune checkpoints to this Ed25519 public key (hex), e.g. a
        /// copy of DATA/audit-signing.pub kept elsewhere.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Hold the chain's end to this signed head (a copy of
        /// DATA/audit.head kept elsewhere) instead of the one beside it.
        #[arg(long)]
        head: Option<PathBuf>,
        /// Verify this agent's chain as the control plane (--server) holds
        /// it, against the signed head the agent last sent.
        #[arg(long, requires = "server")]
        agent: Option<String>,
        /// The control plane, with --agent.
        #[arg(long, env = "VETO_SERVER")]
        server: Option<String>,
        /// The server's token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
        #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
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

pub(crate) fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cmd {
        AuditCommand::Verify {
            data,
            key,
            head,
            agent,
            server,
            token,
        } => {
            let verdict = match (agent, server) {
                (Some(agent), Some(server)) => {
                    let path = format!(
                        "/v1/audit/verify?agent={}",
                        veto::audit_cmd::query_value(&agent)
                    );
                    let check = admin_call(&server, token, &data.data, "GET", &path, None)?;
                    veto::audit_cmd::agent_verdict(&check)
                }
                _ => veto::audit_cmd::verify_cmd(&data.data, key.as_deref(), head.as_deref())?,
            };
            match verdict {
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
