//! A real HTTPS upstream on loopback: its own CA (made with veto's CA code
//! in a directory of its own, so veto does not trust it unless told), one
//! certificate per name chosen by SNI, and the same JSON echo as the plain
//! upstream.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Https {
    pub addr: SocketAddr,
    /// The upstream CA's certificate (for --upstream-ca or curl --cacert).
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn https_upstream(names: &[&str]) -> Https {
    https_upstream_on(names, "127.0.0.1:0")
}

/// [`https_upstream`] on another address.
pub fn https_upstream_on(names: &[&str], bind: &str) -> Https {
    let (dir, cfg) = server_config(names, b"http/1.1");
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let tls = rustls::StreamOwned::new(conn, stream);
                super::serve_http(tls, Duration::ZERO);
            });
        }
    });
    Https {
        addr,
        ca: dir.path().join(veto_ca::CERT_FILE),
        _dir: dir,
    }
}

/// The same, speaking HTTP/2 only (ALPN `h2`), with hyper: it answers with
/// the HTTP version, method, target and headers it saw, as JSON.
pub fn h2_upstream(names: &[&str]) -> Https {
    let (dir, cfg) = server_config(names, b"h2");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let headers: serde_json::Map<String, serde_json::Value> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            let seen = serde_json::json!({
                                "version": format!("{:?}", req.version()),
                                "method": req.method().as_str(),
                                "target": req.uri().path_and_query().map_or("/", |p| p.as_str()),
                                "authority": req.uri().authority().map(|a| a.to_string()),
                                "headers": headers,
                            });
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(seen.to_string())),
                            ))
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
    });
    Https {
        addr,
        ca: dir.path().join(veto_ca::CERT_FILE),
        _dir: dir,
    }
}

fn server_config(names: &[&str], alpn: &[u8]) -> (tempfile::TempDir, Arc<rustls::ServerConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = veto_ca::Ca::init(dir.path()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut by_name = rustls::server::ResolvesServerCertUsingSni::new();
    for name in names {
        let (chain, key) = ca.server_leaf(name, Duration::from_secs(3600)).unwrap();
        let key = provider.key_provider.load_private_key(key).unwrap();
        by_name
            .add(name, rustls::sign::CertifiedKey::new(chain, key))
            .unwrap();
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(by_name));
    cfg.alpn_protocols = vec![alpn.to_vec()];
    (dir, Arc::new(cfg))
}

/// A client that trusts only the CA in `ca_pem` (veto's own, say) and
/// offers `alpn`.
pub fn client_config(ca_pem: &std::path::Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}
