//! veto's local certificate authority (contract: `veto ca init`).
//!
//! One ECDSA P-256 CA under the data directory signs two kinds of
//! certificate: the short-lived leaves the proxy shows a client when it
//! opens a CONNECT tunnel's TLS (policy-v1, "What veto cannot see"), and
//! the client certificates machines present to the proxy's TLS listener.
//! The key file is written with mode 0600 and never leaves this crate.

mod leaves;

pub use leaves::Leaves;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// The CA's files under the data directory.
pub const KEY_FILE: &str = "ca.key";
pub const CERT_FILE: &str = "ca.pem";
/// The SPIFFE trust domain of machine certificates, one line.
pub const TRUST_DOMAIN_FILE: &str = "trust-domain";
/// The trust domain when `veto ca init` is given none.
pub const DEFAULT_TRUST_DOMAIN: &str = "veto.local";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0} already exists; veto will not overwrite a CA (remove it first to start over)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Broken { path: PathBuf, why: String },
    #[error("only one of {present} and {missing} exists; the CA is incomplete")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("cannot sign a certificate for `{name}`: {why}")]
    Sign { name: String, why: String },
}

/// A loaded CA: its certificate and the issuer that signs with its key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    trust_domain: String,
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
pub fn check_trust_domain(td: &str) -> Result<(), String> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{td}` is not a SPIFFE trust domain (lowercase letters, digits, `.`, `-`, `_`)"
        ))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a new file (never replacing one), then syncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CaError::Exists(path.to_path_buf()),
            _ => CaError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// 16 random bytes with the top bit clear: a positive serial (RFC 5280).
/// Without OS randomness no certificate is made: an error, not a panic.
fn serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| CaError::Sign {
            name: "a certificate".into(),
            why: "the operating system's random number generator failed".into(),
        })?;
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

fn sign_err(name: &str) -> impl FnOnce(rcgen::Error) -> CaError + '_ {
    move |e| CaError::Sign {
        name: name.to_string(),
        why: e.to_string(),
    }
}

impl Ca {
    /// Creates a CA under `dir` for the default trust domain.
    pub fn init(dir: &Path) -> Result<Ca, CaError> {
        Ca::init_for(dir, DEFAULT_TRUST_DOMAIN)
    }

    /// Creates a CA under `dir` whose machine certificates carry SPIFFE IDs
    /// of `trust_domain`. Refuses to replace an existing one: every client
    /// that trusts it would silently stop working.
    pub fn init_for(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain).map_err(|why| CaError::Broken {
            path: dir.join(TRUST_DOMAIN_FILE),
            why,
        })?;
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        for p in [&key_path, &cert_path] {
            if p.exists() {
                return Err(CaError::Exists(p.clone()));
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate().map_err(sign_err("the CA"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A name of its own, so that two veto CAs (two machines, a rebuilt
        // one) are told apart by people and by certificate path building.
        let id = serial()?;
        let tag: String = id.to_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("veto local CA {tag}"));
        dn.push(DnType::OrganizationName, "veto");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key).map_err(sign_err("the CA"))?;
        write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
        let td_path = dir.join(TRUST_DOMAIN_FILE);
        let _ = std::fs::remove_file(&td_path);
        write_new(&td_path, format!("{trust_domain}\n").as_bytes(), 0o644)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// Loads the CA under `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Ca>, CaError> {
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        match (key_path.exists(), cert_path.exists()) {
            (false, false) => return Ok(None),
            (true, false) => {
                return Err(CaError::Incomplete {
                    present: key_path,
                    missing: cert_path,
                });
            }
            (false, true) => {
                return Err(CaError::Incomplete {
                    present: cert_path,
                    missing: key_path,
                });
            }
            (true, true) => {}
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Broken {
            path: key_path.clone(),
            why: format!("not a usable private key ({e})"),
        })?;
        let broken_cert = |why: String| CaError::Broken {
            path: cert_path.clone(),
            why,
        };
        let der = pem_der(&cert_pem).ok_or_else(|| broken_cert("no PEM certificate".into()))?;
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| broken_cert(format!("not a CA certificate ({e})")))?;
        if !same_key(&der, issuer.key()) {
            return Err(broken_cert(format!(
                "the certificate does not belong to the key in {}",
                key_path.display()
            )));
        }
        let td_path = dir.join(TRUST_DOMAIN_FILE);
        let trust_domain = match std::fs::read_to_string(&td_path) {
            Ok(s) => {
                let td = s.trim().to_string();
                check_trust_domain(&td).map_err(|why| CaError::Broken {
                    path: td_path.clone(),
                    why,
                })?;
                td
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_TRUST_DOMAIN.into(),
            Err(e) => return Err(io(&td_path)(e)),
        };
        Ok(Some(Ca {
            issuer,
            cert_pem,
            cert_der: der,
            trust_domain,
        }))
    }

    /// The SPIFFE trust domain of this CA's machine certificates.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A server certificate for `name` (a DNS name or an IP literal), valid
    /// from an hour ago (clock skew) for `ttl`, with its own fresh key.
    pub fn server_leaf(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let san = match name.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into().map_err(sign_err(name))?),
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(name, params, ttl)
    }

    /// A client certificate whose identity is the SPIFFE ID
    /// `spiffe://<trust_domain>/machine/<machine>` (URI SAN), with the
    /// machine's name as common name. Normally the CA's own trust domain
    /// ([`Ca::trust_domain`]).
    pub fn client_cert(
        &self,
        trust_domain: &str,
        machine: &str,
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let uri = format!("spiffe://{trust_domain}/machine/{machine}");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            uri.as_str().try_into().map_err(sign_err(machine))?,
        )];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, machine);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(machine, params, ttl)
    }

    fn sign(
        &self,
        name: &str,
        mut params: CertificateParams,
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + ttl;
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(sign_err(name))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(sign_err(name))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }
}

/// The first PEM certificate in `pem`, as DER.
pub fn pem_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// Every PEM certificate in `pem`, as DER; an error names what is wrong.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// Whether the certificate's public key is the key pair's.
fn same_key(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    use rcgen::PublicKeyData;
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.public_key().subject_public_key.data.as_ref() == key.der_bytes())
        .unwrap_or(false)
}

/// Formats a PEM block ("CERTIFICATE", "PRIVATE KEY") for the CLI.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests;
