//! veto's machine identities.
//!
//! A machine is a name with a bearer token. `veto machine add` registers one
//! and shows its token once; the proxy reads every machine into an
//! in-memory [`Credentials`] snapshot and checks each request's
//! `Proxy-Authorization: Basic base64(machine:token)` against it, without
//! I/O on the request path. [`Store::version`] tells the proxy when the
//! snapshot is stale.
//!
//! Only a SHA-256 of each token is stored (see [`token`] for why a fast hash
//! is enough here).

mod creds;
mod grants;
pub mod review;
mod store;
pub mod token;
mod uses;

pub use creds::{Credential, Credentials, Refusal, format_time};
pub use grants::{GrantUse, Renewal};
pub use store::{MachineInfo, Store, db_path};
pub use uses::Uses;

use std::path::PathBuf;

/// The name of requests that present no credentials. No registered machine
/// may take it, or a token would be needed to be "nobody".
pub const ANONYMOUS: &str = "anonymous";

/// Longest machine, role or env name (the policy language's limit too).
pub const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid {what} `{name}`: {why}")]
    InvalidName {
        /// "machine name", "role" or "env".
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("machine name `{0}` is reserved for clients that present no credentials")]
    Reserved(String),
    #[error("machine `{0}` already exists; revoke it first to register it again")]
    Exists(String),
    #[error("no machine named `{0}`")]
    Unknown(String),
    #[error("machine `{name}` is already revoked (at {})", creds::format_time(*at))]
    AlreadyRevoked { name: String, at: i64 },
    #[error("invalid {what}: {why}")]
    InvalidDuration { what: &'static str, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("identity store is damaged: {0}")]
    Corrupt(String),
    #[error("cannot get random bytes for a token: {0}")]
    Random(getrandom::Error),
}

/// Checks a machine name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes,
/// and not `anonymous`.
///
/// The character set keeps `:` out (Basic auth splits `machine:token` on the
/// first one) and keeps names usable unquoted in a proxy URL's userinfo
/// (`http://NAME:TOKEN@host:port`). `anonymous` is refused in any case
/// (`Anonymous` too): a registered machine that reads like "no credentials"
/// in a log or a policy would only mislead.
pub fn validate_machine_name(name: &str) -> Result<(), IdentityError> {
    validate_name("machine name", name)?;
    if name.eq_ignore_ascii_case(ANONYMOUS) {
        return Err(IdentityError::Reserved(name.to_string()));
    }
    Ok(())
}

/// Role and env names follow the policy language's rule for names, so that
/// what `veto machine add --role` stores can be named in a policy's `from`.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), IdentityError> {
    let bad = |why| {
        Err(IdentityError::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    let Some(&first) = name.as_bytes().first() else {
        return bad("it is empty");
    };
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}
