//! Talking to a running veto's admin API (`veto optout`, `veto changes`):
//! one authenticated JSON request, one JSON answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::Path;

/// The admin token: given, from the environment, or from the data dir.
pub fn token(given: Option<String>, data: &Path) -> Result<String, String> {
    if let Some(t) = given {
        return Ok(t);
    }
    let path = veto_admin::token_path(data);
    std::fs::read_to_string(&path).map(|t| t.trim().to_string()).map_err(|_| {
        format!(
            "no admin token: give --token, set VETO_ADMIN_TOKEN, or point --data at veto's data ({})",
            path.display()
        )
    })
}

/// Sends one request; returns the status and the JSON body. An answer that
/// is not 2xx becomes an error carrying its reason.
pub async fn call(
    admin: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let uri: hyper::Uri = format!("{}{path}", admin.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("invalid --admin URL `{admin}`: {e}"))?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("the --admin URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| {
            format!("cannot reach veto's admin API at {admin}: {e} (is `veto run` running?)")
        })?;
    let mut send = if tls {
        // An https:// control plane is verified against VETO_SERVER_CA (a
        // PEM file) if set, else the system's roots.
        let mut roots = rustls::RootCertStore::empty();
        let certs = match std::env::var_os("VETO_SERVER_CA") {
            Some(p) => {
                let pem = std::fs::read(&p)
                    .map_err(|e| format!("VETO_SERVER_CA {}: {e}", Path::new(&p).display()))?;
                veto_ca::pem_certs(&pem).map_err(|e| format!("VETO_SERVER_CA: {e}"))?
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        roots.add_parsable_certificates(certs);
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("invalid host in `{admin}`: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, stream)
            .await
            .map_err(|e| format!("the TLS of {admin} cannot be trusted: {e}"))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send
    };
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", format!("{host}:{port}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let reason = value["reason"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(format!("the admin API answered {status}: {reason}"));
    }
    Ok(value)
}
