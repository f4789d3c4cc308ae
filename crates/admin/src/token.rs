//! The admin and viewer tokens: random, kept in `DATA/admin.token` and
//! `DATA/viewer.token` with mode 0600 for local tools and people, and held
//! by the listener only as SHA-256 digests compared in constant time.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or create the token {0}: {1}")]
    Io(String, std::io::Error),
    #[error("the token {0} is readable by other users (mode {1:o}); run `chmod 600 {0}`")]
    TooOpen(String, u32),
    #[error("cannot get random bytes for a token: {0}")]
    Random(String),
}

/// `DATA/admin.token`: full access (the operator).
pub fn token_path(data: &Path) -> PathBuf {
    data.join("admin.token")
}

/// `DATA/viewer.token`: reads everything, changes nothing.
pub fn viewer_token_path(data: &Path) -> PathBuf {
    data.join("viewer.token")
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn matches(expected: &[u8; 32], presented: &str) -> bool {
    hash(presented).ct_eq(expected).into()
}

/// 32 random bytes as hex: session ids and tokens.
pub(crate) fn random_hex() -> Result<String, TokenError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// The admin token in `DATA/admin.token`, made (0600) if there is none.
pub fn load_or_create(data: &Path) -> Result<String, TokenError> {
    load_or_create_at(data, &token_path(data), "vetoadm_")
}

/// The viewer token in `DATA/viewer.token`, made (0600) if there is none.
pub fn load_or_create_viewer(data: &Path) -> Result<String, TokenError> {
    load_or_create_at(data, &viewer_token_path(data), "vetoview_")
}

/// A token file others can read is refused rather than used.
fn load_or_create_at(data: &Path, path: &Path, prefix: &str) -> Result<String, TokenError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| TokenError::Io(shown.clone(), e))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::TooOpen(shown, mode));
            }
            Ok(t.trim().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data).map_err(|e| TokenError::Io(shown.clone(), e))?;
            let token = format!("{prefix}{}", random_hex()?);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| TokenError::Io(shown.clone(), e))?;
            writeln!(f, "{token}").map_err(|e| TokenError::Io(shown.clone(), e))?;
            Ok(token)
        }
        Err(e) => Err(TokenError::Io(shown, e)),
    }
}
