//! Admin tokens with roles. Three tokens are made on first start under the
//! server's data directory (mode 0600): `admin.token`, `operator.token`,
//! `viewer.token`. Only their SHA-256 is kept in memory; a presented token
//! is compared in constant time against each.

use crate::api::error;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::Digest;
use std::path::Path;
use subtle::ConstantTimeEq;

/// What a token may do; each role may do what the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Also pushes and rolls back policy, adds and removes opt-outs.
    Operator,
    /// Also enrolls agents.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking: recorded as the change log's actor.
pub struct Who(Role);

impl Who {
    pub fn actor(&self) -> String {
        self.0.name().to_string()
    }
}

pub struct Tokens {
    hashes: Vec<(Role, [u8; 32])>,
}

pub fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn hash(t: &str) -> [u8; 32] {
    sha2::Sha256::digest(t.as_bytes()).into()
}

/// The token file of a role under `dir`.
pub fn token_path(dir: &Path, role: Role) -> std::path::PathBuf {
    dir.join(format!("{}.token", role.name()))
}

fn load_or_create(path: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
        return Err(format!("{}: too short to be a token", path.display()));
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    let token = format!(
        "vadm_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{token}").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(token)
}

impl Tokens {
    pub fn load_or_create(dir: &Path) -> Result<Tokens, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut hashes = Vec::new();
        for role in [Role::Admin, Role::Operator, Role::Viewer] {
            hashes.push((role, hash(&load_or_create(&token_path(dir, role))?)));
        }
        Ok(Tokens { hashes })
    }

    /// The role of the presented token, if it is at least `need`.
    pub fn check(&self, h: &HeaderMap, need: Role) -> Result<Who, Response> {
        let Some(t) = bearer(h) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "an admin token is needed (Authorization: Bearer)",
            ));
        };
        let presented = hash(t);
        // Every hash is compared: no early exit on the first match.
        let mut role = None;
        for (r, h) in &self.hashes {
            if bool::from(presented.ct_eq(h)) {
                role = Some(*r);
            }
        }
        match role {
            None => Err(error(StatusCode::UNAUTHORIZED, "unknown admin token")),
            Some(r) if r < need => Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "a {} token cannot do this; it needs {}",
                    r.name(),
                    need.name()
                ),
            )),
            Some(r) => Ok(Who(r)),
        }
    }
}
