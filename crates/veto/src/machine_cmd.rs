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
    #[error(transparent)]
    Ca(#[from] veto_ca::CaError),
    #[error("there is no CA under {0}: run `veto ca init` first")]
    NoCa(String),
    #[error("machine `{name}` is {state}: a certificate is issued only to an active machine")]
    NotActive { name: String, state: &'static str },
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What `veto machine cert` wrote.
pub struct Issued {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub spiffe_id: String,
    pub not_after: String,
}

/// Issues a client certificate for a registered, active machine.
pub fn cert_cmd(
    data: &Path,
    name: &str,
    ttl: Duration,
    out: &Path,
) -> Result<Issued, MachineCmdError> {
    let ca = veto_ca::Ca::load(data)?
        .ok_or_else(|| MachineCmdError::NoCa(data.display().to_string()))?;
    if !db_path(data).exists() {
        return Err(IdentityError::Unknown(name.to_string()).into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let live = Store::open(data)?
        .list()?
        .into_iter()
        .rfind(|m| m.name == name)
        .ok_or_else(|| IdentityError::Unknown(name.to_string()))?;
    match live.state(now) {
        "active" => {}
        state => {
            return Err(MachineCmdError::NotActive {
                name: name.to_string(),
                state,
            });
        }
    }
    let (chain, key) = ca.client_cert(ca.trust_domain(), name, ttl)?;
    let cert_pem: String = chain
        .iter()
        .map(|c| veto_ca::to_pem("CERTIFICATE", c))
        .collect();
    let key_pem = veto_ca::to_pem("PRIVATE KEY", key.secret_der());
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}.key"));
    replace_file(&key_path, key_pem.as_bytes(), 0o600)?;
    replace_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
        spiffe_id: format!("spiffe://{}/machine/{name}", ca.trust_domain()),
        not_after: format_time(now.saturating_add(ttl.as_secs() as i64)),
    })
}

/// Writes a file whole (a temporary file renamed over it), with `mode`
/// from the start: a key is never readable by others, even briefly.
fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), MachineCmdError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| MachineCmdError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
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
