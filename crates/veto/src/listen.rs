//! Where `veto run` listens: the proxy, TLS, transparent and DNS listeners
//! (bound here, or made beforehand by `veto exec` inside its namespace),
//! TLS interception, and this veto's id.

use crate::run::RunArgs;
use std::path::Path;
use std::sync::Arc;
use veto_proxy::Shared;

/// `veto-` and the first 6 bytes of the node's public signing key, in hex.
pub(crate) fn node_id(key: &veto_audit::signing::PublicKey) -> String {
    let hex: String = key.as_bytes()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("veto-{hex}")
}

/// Listeners made before `run`, as std sockets.
pub struct Bound {
    pub plain: std::net::TcpListener,
    pub transparent: Vec<std::net::TcpListener>,
    /// DNS over UDP and TCP, in pairs.
    pub dns: Vec<(std::net::UdpSocket, std::net::TcpListener)>,
}

/// Serves DNS on each pair until the tasks are aborted.
pub(crate) fn serve_dns(
    pairs: Vec<(tokio::net::UdpSocket, tokio::net::TcpListener)>,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (udp, tcp) in pairs {
        tasks.push(tokio::spawn(veto_proxy::dns::serve_udp(
            udp,
            shared.clone(),
        )));
        tasks.push(tokio::spawn(veto_proxy::dns::serve_tcp(
            tcp,
            shared.clone(),
        )));
    }
    tasks
}

/// Binds `--dns` addresses, UDP and TCP on each.
async fn bind_dns(
    args: &RunArgs,
) -> Result<Vec<(tokio::net::UdpSocket, tokio::net::TcpListener)>, String> {
    let mut pairs = Vec::new();
    for addr in &args.dns {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (DNS over UDP): {e}"))?;
        // The same port for TCP (a port 0 asks for one, then uses it).
        let at = udp.local_addr().map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| format!("cannot listen on {at} (DNS over TCP): {e}"))?;
        announce!(
            args,
            "veto: DNS listener on {at} (UDP and TCP), as machine `{}`",
            args.config.transparent_machine
        );
        pairs.push((udp, tcp));
    }
    Ok(pairs)
}

/// The listeners of `args`: the proxy, the transparent ones and DNS.
pub(crate) async fn bind(args: &mut RunArgs) -> Result<Bound3, String> {
    let bound = args.bound.take();
    let mut dns = Vec::new();
    let (listener, mut transparent) = match bound {
        Some(b) => {
            for (udp, tcp) in b.dns {
                let udp = udp
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UdpSocket::from_std(udp))
                    .map_err(|e| format!("cannot use a DNS socket made beforehand: {e}"))?;
                let tcp = tcp
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(tcp))
                    .map_err(|e| format!("cannot use a DNS socket made beforehand: {e}"))?;
                dns.push((udp, tcp));
            }
            let tokio_listener = |l: std::net::TcpListener| {
                l.set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(l))
                    .map_err(|e| format!("cannot use a listener made beforehand: {e}"))
            };
            let mut transparent = Vec::new();
            for l in b.transparent {
                transparent.push(tokio_listener(l)?);
            }
            (tokio_listener(b.plain)?, transparent)
        }
        None => (
            tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?,
            Vec::new(),
        ),
    };
    dns.extend(bind_dns(args).await?);
    for addr in &args.transparent {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (transparent): {e}"))?;
        let at = l.local_addr().map_err(|e| e.to_string())?;
        announce!(
            args,
            "veto: transparent listener on {at}, as machine `{}` (send it connections with nftables `redirect`; `veto firewall` prints the rules)",
            args.config.transparent_machine
        );
        transparent.push(l);
    }
    Ok((listener, transparent, dns))
}

/// The proxy listener, the transparent ones, and DNS (UDP, TCP) pairs.
pub(crate) type Bound3 = (
    tokio::net::TcpListener,
    Vec<tokio::net::TcpListener>,
    Vec<(tokio::net::UdpSocket, tokio::net::TcpListener)>,
);

/// TLS interception: on when the data directory holds a CA. A broken CA
/// stops the start: veto would otherwise refuse every tunnel it should open.
pub(crate) fn interceptor(
    data: &Path,
    upstream_ca: Option<&Path>,
) -> Result<(Option<veto_proxy::Interceptor>, String), String> {
    let Some(ca) = veto_ca::Ca::load(data).map_err(|e| format!("the local CA: {e}"))? else {
        if let Some(p) = upstream_ca {
            return Err(format!(
                "--upstream-ca {} is given but there is no CA under {} to open tunnels with (run `veto ca init --data {}`)",
                p.display(),
                data.display(),
                data.display()
            ));
        }
        return Ok((
            None,
            format!(
                "TLS interception off: no CA under {} (`veto ca init` creates one); tunnels a rule would need to see inside are decided without it",
                data.display()
            ),
        ));
    };
    let roots = match upstream_ca {
        Some(p) => {
            let pem =
                std::fs::read(p).map_err(|e| format!("--upstream-ca {}: {e}", p.display()))?;
            Some(
                veto_ca::pem_certs(&pem)
                    .map_err(|e| format!("--upstream-ca {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let i = veto_proxy::Interceptor::new(ca, roots)?;
    Ok((
        Some(i),
        format!(
            "TLS interception on where a rule needs to see inside (clients trust {})",
            data.join(veto_ca::CERT_FILE).display()
        ),
    ))
}

/// The proxy's TLS listener (`--listen-tls`), its certificate from veto's
/// CA, accepting client certificates from it and from `--client-ca`.
pub(crate) async fn tls_listener(
    args: &RunArgs,
) -> Result<Option<(tokio::net::TcpListener, Arc<veto_proxy::mtls::ClientTls>)>, String> {
    let Some(addr) = args.listen_tls else {
        return Ok(None);
    };
    let ca = veto_ca::Ca::load(&args.data)
        .map_err(|e| format!("the local CA: {e}"))?
        .ok_or_else(|| {
            format!(
                "--listen-tls needs a CA for its certificate: run `veto ca init --data {}`",
                args.data.display()
            )
        })?;
    let mut roots = vec![ca.cert_der().clone()];
    for p in &args.client_ca {
        let pem = std::fs::read(p).map_err(|e| format!("--client-ca {}: {e}", p.display()))?;
        roots.extend(
            veto_ca::pem_certs(&pem).map_err(|e| format!("--client-ca {}: {e}", p.display()))?,
        );
    }
    let trust_domain = ca.trust_domain().to_string();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (TLS): {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let name = args
        .tls_name
        .clone()
        .unwrap_or_else(|| local.ip().to_string());
    let id_from = if args.client_id_cn {
        veto_proxy::mtls::IdFrom::CommonName
    } else {
        veto_proxy::mtls::IdFrom::Spiffe
    };
    let tls = veto_proxy::mtls::ClientTls::new(
        veto_ca::Leaves::new(ca, 4),
        &name,
        roots,
        &trust_domain,
        id_from,
    )?;
    announce!(
        args,
        "veto: proxy TLS listener on https://{local} (clients trust {}; client certificates name spiffe://{trust_domain}/machine/NAME)",
        args.data.join(veto_ca::CERT_FILE).display()
    );
    Ok(Some((listener, Arc::new(tls))))
}
