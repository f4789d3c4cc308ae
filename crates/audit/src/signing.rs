//! Signed-off checkpoints: a prune checkpoint is signed with the node's
//! Ed25519 key, so a checkpoint forged to hide deleted records (appended by
//! someone who can write the file but does not hold the key) is caught by
//! `verify` against the trusted public key.

use crate::AuditError;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn key_path(data: &Path) -> PathBuf {
    data.join("audit-signing.key")
}

/// The public key, beside the data: copy it elsewhere to verify a trail
/// without trusting the machine that wrote it.
pub fn public_path(data: &Path) -> PathBuf {
    data.join("audit-signing.pub")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The node's signing key: made on first use (mode 0600), with its public
/// half written beside it.
pub fn load_or_create(data: &Path) -> Result<SigningKey, AuditError> {
    let path = key_path(data);
    let io = |e| AuditError::io(path.display().to_string(), e);
    match std::fs::read_to_string(&path) {
        Ok(text) => unhex::<32>(&text)
            .map(|b| SigningKey::from_bytes(&b))
            .ok_or_else(|| {
                AuditError::Corrupt(format!("{} is not a hex Ed25519 key", path.display()))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data).map_err(io)?;
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| {
                AuditError::Corrupt(format!("no randomness for the signing key: {e}"))
            })?;
            let key = SigningKey::from_bytes(&secret);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            writeln!(f, "{}", hex(&secret)).map_err(io)?;
            std::fs::write(
                public_path(data),
                format!("{}\n", hex(&key.verifying_key().to_bytes())),
            )
            .map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// A trusted public key from a file (hex).
pub fn read_public(path: &Path) -> Result<VerifyingKey, AuditError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| AuditError::io(path.display().to_string(), e))?;
    unhex::<32>(&text)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            AuditError::Corrupt(format!(
                "{} is not a hex Ed25519 public key",
                path.display()
            ))
        })
}

/// What a checkpoint's signature covers.
pub(crate) fn message(through_seq: i64, through_hash: &str, entries: i64, records: i64) -> String {
    format!("veto prune checkpoint\n{through_seq}\n{through_hash}\n{entries}\n{records}\n")
}

/// (public key, signature), hex.
pub(crate) fn sign(key: &SigningKey, message: &str) -> (String, String) {
    (
        hex(&key.verifying_key().to_bytes()),
        hex(&key.sign(message.as_bytes()).to_bytes()),
    )
}

/// Whether `signature` over `message` verifies under `key` (hex).
pub(crate) fn check(key: &VerifyingKey, message: &str, signature: &str) -> bool {
    unhex::<64>(signature)
        .map(|b| Signature::from_bytes(&b))
        .is_some_and(|sig| key.verify(message.as_bytes(), &sig).is_ok())
}

pub(crate) fn public_from_hex(s: &str) -> Option<VerifyingKey> {
    unhex::<32>(s).and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

pub use ed25519_dalek::{SigningKey as Key, VerifyingKey as PublicKey};
