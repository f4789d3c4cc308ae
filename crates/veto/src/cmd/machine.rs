//! `veto machine`: register, rotate, revoke and list machine identities.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum MachineCommand {
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

/// Logs a machine change. The change itself is done: a change log that
/// cannot be written is said loudly, not turned into a failed command.
pub(crate) fn changed(
    data: &std::path::Path,
    action: &str,
    reason: &str,
    after: serde_json::Value,
) {
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

pub(crate) fn machine(cmd: MachineCommand) -> Result<ExitCode> {
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
