//! `veto optout`: runtime opt-outs, locally or through a server.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum OptoutCommand {
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

pub(crate) fn optout(cmd: OptoutCommand) -> Result<ExitCode> {
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
