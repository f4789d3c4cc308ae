//! The proxy's TLS listener (`--listen-tls`): clients speak TLS to veto
//! itself and may prove who they are with a client certificate.
//!
//! The handshake accepts any certificate whose key the client proves it
//! holds; whether the certificate is good is decided right after, so that a
//! refused client hears *why* in a `407` body (expired, not from veto's
//! CA, another trust domain) instead of a bare TLS alert. A refused
//! certificate never counts as anonymous. The identity is the machine the
//! certificate names: the SPIFFE ID `spiffe://<trust domain>/machine/<name>`
//! (or, with `--client-id cn`, the subject's common name). The machine must
//! be registered: revocation, expiry and idle limits are checked against the
//! credential snapshot on every request, so a revoked machine is refused on
//! its next request even on a connection kept alive.

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// What a client's TLS connection proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A plain connection, or TLS without a client certificate.
    None,
    /// A good certificate naming this machine, and its `notBefore` (Unix
    /// seconds): a certificate issued before the machine's current
    /// registration (revoked, then added again) is refused.
    Machine(Arc<str>, i64),
    /// A certificate that was presented and refused, and why.
    Refused(Arc<str>),
}

/// Where the machine name of a certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdFrom {
    /// `spiffe://<trust domain>/machine/<name>` in a URI SAN.
    Spiffe,
    /// The subject's common name (PKIs without SPIFFE IDs).
    CommonName,
}

/// The listener's TLS settings.
pub struct ClientTls {
    acceptor: tokio_rustls::TlsAcceptor,
    strict: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    id_from: IdFrom,
}

impl ClientTls {
    /// `leaves` and `name`: the proxy's own certificate (minted by veto's
    /// CA for `name`, renewed as it ages); `roots`: the CAs whose client
    /// certificates are accepted (veto's CA, and `--client-ca`).
    pub fn new(
        leaves: veto_ca::Leaves,
        name: &str,
        roots: Vec<CertificateDer<'static>>,
        trust_domain: &str,
        id_from: IdFrom,
    ) -> Result<ClientTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store
                .add(r)
                .map_err(|e| format!("a client CA certificate is not usable: {e}"))?;
        }
        let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(Arc::new(Lenient(strict.clone())))
            .with_cert_resolver(Arc::new(Own {
                leaves,
                name: name.to_string(),
            }));
        // A client that offers h2 gets it (`server.rs` serves either).
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ClientTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            strict,
            trust_domain: trust_domain.to_string(),
            id_from,
        })
    }

    /// Completes the handshake and says who the client is.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(TlsStream<TcpStream>, Peer)> {
        let tls = self.acceptor.accept(tcp).await?;
        let peer = match tls.get_ref().1.peer_certificates() {
            None | Some([]) => Peer::None,
            Some([end, rest @ ..]) => match self.identify(end, rest) {
                Ok((machine, not_before)) => Peer::Machine(machine.into(), not_before),
                Err(why) => Peer::Refused(why.into()),
            },
        };
        Ok((tls, peer))
    }

    fn identify(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(String, i64), String> {
        if let Err(e) = self
            .strict
            .verify_client_cert(end, intermediates, UnixTime::now())
        {
            return Err(refusal(&e));
        }
        machine_of(end, &self.trust_domain, self.id_from)
    }
}

/// A sentence for the 407.
fn refusal(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "The client certificate has expired.".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "The client certificate is not valid yet.".into()
            }
            // Another CA with the same name as veto's shows as a bad
            // signature rather than an unknown issuer.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "The client certificate is not signed by veto's CA (or a --client-ca).".into()
            }
            other => format!("The client certificate is not valid: {other:?}."),
        },
        other => format!("The client certificate is not valid: {other}."),
    }
}

/// The machine a good certificate names, and the certificate's
/// `notBefore` (Unix seconds).
pub fn machine_of(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
    id_from: IdFrom,
) -> Result<(String, i64), String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("The client certificate cannot be read: {e}."))?;
    let not_before = x.validity().not_before.timestamp();
    name_of(&x, trust_domain, id_from).map(|n| (n, not_before))
}

fn name_of(
    x: &x509_parser::certificate::X509Certificate<'_>,
    trust_domain: &str,
    id_from: IdFrom,
) -> Result<String, String> {
    match id_from {
        IdFrom::CommonName => x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .ok_or_else(|| "The client certificate has no common name.".to_string()),
        IdFrom::Spiffe => {
            let ids: Vec<&str> = x
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                            _ => None,
                        })
                        .filter(|u| u.starts_with("spiffe://"))
                        .collect()
                })
                .unwrap_or_default();
            let [id] = ids.as_slice() else {
                return Err(format!(
                    "The client certificate must carry exactly one SPIFFE ID; it has {}.",
                    ids.len()
                ));
            };
            let rest = &id["spiffe://".len()..];
            let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
            if domain != trust_domain {
                return Err(format!(
                    "The client certificate's SPIFFE ID `{id}` is from trust domain `{domain}`, not veto's `{trust_domain}`."
                ));
            }
            match path.strip_prefix("machine/") {
                Some(name) if !name.is_empty() && !name.contains('/') => Ok(name.to_string()),
                _ => Err(format!(
                    "The client certificate's SPIFFE ID `{id}` names no machine (expected spiffe://{trust_domain}/machine/NAME)."
                )),
            }
        }
    }
}

/// Accepts any certificate at the handshake (the client must still prove
/// it holds the key); [`ClientTls::identify`] judges it right after.
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn client_auth_mandatory(&self) -> bool {
        // Clients may also come with Basic credentials, or none.
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The proxy's own certificate, for its listening name whatever name the
/// client asks for; re-minted as it ages.
struct Own {
    leaves: veto_ca::Leaves,
    name: String,
}

impl std::fmt::Debug for Own {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Own({})", self.name)
    }
}

impl ResolvesServerCert for Own {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.leaves.get(&self.name) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::error!(error = %e, "cannot mint the proxy's own TLS certificate");
                None
            }
        }
    }
}
