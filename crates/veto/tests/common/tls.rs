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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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
