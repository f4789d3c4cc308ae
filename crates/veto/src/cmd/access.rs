//! `veto access`: review access by last use, renew grants.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum AccessCommand {
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
pub(crate) fn policy_for(
    path: Option<PathBuf>,
    starter: bool,
) -> Result<Option<veto_policy::Policy>> {
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

pub(crate) fn access(cmd: AccessCommand) -> Result<ExitCode> {
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
