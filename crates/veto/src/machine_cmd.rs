//! `veto machine add|revoke|list`: machine identities under `--data`
//! (`DATA/identity.db`), which a running proxy picks up by itself.

use std::io::Write;
use std::path::Path;
use std::time::Duration;
use veto_identity::{IdentityError, MachineInfo, Store, db_path, format_time};

#[derive(Debug, thiserror::Error)]
pub enum MachineCmdError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The machine exists but nobody saw its token: say how to recover,
    /// since the token cannot be shown again.
    #[error(
        "machine `{name}` was registered but its token could not be printed ({source}); \
         run `veto machine revoke {name}` and add it again"
    )]
    TokenLost {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// What `veto machine add` takes.
pub struct AddArgs<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
    pub env: Option<&'a str>,
    pub ttl: Option<Duration>,
    pub idle_ttl: Option<Duration>,
}

/// Registers the machine and prints its token alone on `out`, so that
/// `TOKEN=$(veto machine add web)` works; the usage hint goes to `note`
/// (stderr) and names the token instead of repeating it, so a log that
/// keeps stderr does not keep the token.
pub fn add_cmd(
    data: &Path,
    a: &AddArgs<'_>,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), MachineCmdError> {
    let store = Store::open(data)?;
    let token = store.add(a.name, a.roles, a.env, a.ttl, a.idle_ttl)?;
    writeln!(out, "{token}")
        .and_then(|()| out.flush())
        .map_err(|source| MachineCmdError::TokenLost {
            name: a.name.to_string(),
            source,
        })?;
    // A hint that cannot be written loses nothing: ignore it.
    let _ = writeln!(
        note,
        "veto: machine `{}` added; the token above is shown only this once. \
         Use it as: curl -x http://{}:TOKEN@127.0.0.1:3128 https://example.com/",
        a.name, a.name
    );
    Ok(())
}

/// Revokes the machine's token. The store is not created for this: a
/// revoke in an empty `--data` (a typo, often) just says the machine is
/// unknown.
pub fn revoke_cmd(data: &Path, name: &str) -> Result<(), MachineCmdError> {
    if !db_path(data).exists() {
        return Err(IdentityError::Unknown(name.to_string()).into());
    }
    Store::open(data)?.revoke(name)?;
    Ok(())
}

/// Every registration as a table, or as JSON lines with `json`. Never a
/// token or its hash. A closed pipe ends quietly.
pub fn list_cmd(data: &Path, json: bool, out: &mut dyn Write) -> Result<(), MachineCmdError> {
    // Listing creates nothing: an empty or mistyped --data lists nothing.
    let machines = if db_path(data).exists() {
        Store::open(data)?.list()?
    } else {
        Vec::new()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match write_list(&machines, json, now, out) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_list(
    machines: &[MachineInfo],
    json: bool,
    now: i64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let time = |t: Option<i64>| t.map(format_time);
    if json {
        for m in machines {
            let line = serde_json::json!({
                "name": m.name,
                "roles": m.roles,
                "env": m.env,
                "state": m.state(now),
                "created": format_time(m.created),
                "expires": time(m.expires),
                "idle_ttl_secs": m.idle_ttl,
                "last_used": time(m.last_used),
                "revoked": time(m.revoked_at),
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    if machines.is_empty() {
        return writeln!(out, "(no machines registered)");
    }
    let header = [
        "NAME",
        "ROLES",
        "ENV",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "REVOKED",
    ];
    let mut table: Vec<Vec<String>> = Vec::new();
    for m in machines {
        let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        let expires = match m.expires {
            Some(e) if m.revoked_at.is_none() && now >= e => {
                format!("{} (expired)", format_time(e))
            }
            e => or(time(e), "never"),
        };
        table.push(vec![
            m.name.clone(),
            if m.roles.is_empty() {
                "-".into()
            } else {
                m.roles.join(",")
            },
            or(m.env.clone(), "-"),
            format_time(m.created),
            expires,
            or(time(m.last_used), "never"),
            or(time(m.revoked_at), "-"),
        ]);
    }
    crate::table::write(out, &header, &table)?;
    Ok(())
}
