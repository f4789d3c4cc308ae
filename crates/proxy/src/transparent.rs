//! The transparent listener (`veto run --transparent ADDR`): connections
//! the kernel redirected to veto (nftables `redirect`), from programs that
//! never chose a proxy. Each is decided exactly as a CONNECT to where the
//! client meant to go:
//!
//! - the original destination comes from the redirect itself
//!   (`SO_ORIGINAL_DST`, IPv4 and IPv6); a connection that was not
//!   redirected has none and is refused;
//! - the name comes from what the client sends first: the TLS server name,
//!   or the `Host` of an HTTP request; with neither, the name veto's DNS
//!   listener last answered that address for; else the destination is its
//!   address;
//! - a claimed name must resolve to the address the client connected to:
//!   otherwise any allowed name could front for any address (refused as
//!   `address-mismatch`);
//! - then the same phases as a tunnel (`connect.rs`): TLS and `tcp`
//!   decided and recorded before anything is dialled; plain HTTP served
//!   request by request (`inside.rs`), each decided, recorded and refused
//!   with the usual 403 JSON answer.

use crate::connect::Tunnel;
use crate::head::{Facts, Start};
use crate::phase::{self, Ctx, Verdict};
use crate::sni::{self, Hello};
use crate::state::Shared;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use veto_policy::{Host, Protocol, normalize_host};

/// `SO_ORIGINAL_DST` (linux/netfilter_ipv4.h) and `IP6T_SO_ORIGINAL_DST`
/// (linux/netfilter_ipv6/ip6_tables.h): both 80.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// Where the client meant to connect before the kernel redirected it to
/// veto: the destination conntrack keeps for the connection. An error when
/// the connection was not redirected (connected to veto directly).
pub fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddr> {
    let fd = s.as_raw_fd();
    let v6 = matches!(s.local_addr()?, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none());
    if v6 {
        // SAFETY: a zeroed sockaddr_in6 is a valid value; getsockopt writes
        // at most `len` bytes into it.
        let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: fd is an open socket owned by `s`; the pointers are to
        // live locals of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&raw mut a).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
        Ok(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
    } else {
        // SAFETY: as above, for sockaddr_in.
        let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&raw mut a).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
    }
}

/// A name a transparent client claimed (TLS server name, `Host`), held to
/// the address it connected to. Checked once per connection, lazily: a
/// name the policy refuses anyway is never looked up.
pub(crate) struct Claim {
    pub dst: IpAddr,
    checked: tokio::sync::OnceCell<Result<bool, String>>,
}

impl Claim {
    pub fn new(dst: IpAddr) -> Claim {
        Claim {
            dst,
            checked: tokio::sync::OnceCell::new(),
        }
    }

    /// `Ok(dns_lookup)` when `host` is the connection's address or resolves
    /// to it; `Err` says why not.
    pub async fn verify(&self, shared: &Shared, host: &Host) -> Result<bool, String> {
        self.checked
            .get_or_init(|| check(shared, host, self.dst))
            .await
            .clone()
    }
}

async fn check(shared: &Shared, host: &Host, dst: IpAddr) -> Result<bool, String> {
    let dst = dst.to_canonical();
    match host {
        Host::Ip(ip) if ip.to_canonical() == dst => Ok(false),
        Host::Ip(ip) => Err(format!(
            "the client names {ip} but connected to {dst} (fronting through the transparent listener)"
        )),
        Host::Name(name) => {
            let ips = phase::resolve(shared, host)
                .await
                .map_err(|(_, why)| format!("cannot check that `{name}` is {dst}: {why}"))?;
            if ips.iter().any(|ip| ip.to_canonical() == dst) {
                return Ok(!shared.resolver.overrides(name));
            }
            let listed: Vec<String> = ips.iter().map(ToString::to_string).collect();
            Err(format!(
                "the client names `{name}`, which resolves to {}, but connected to {dst} (fronting through the transparent listener)",
                listed.join(", ")
            ))
        }
    }
}

/// Serves one redirected connection, start to end.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    shared.metrics.transparent_connection();
    let mut ctx = Ctx::new();
    ctx.machine.clone_from(&shared.config.transparent_machine);
    let own = stream.local_addr().ok();
    let dst = match original_dst(&stream) {
        Ok(d) if Some(d) != own => d,
        _ => {
            let why = format!(
                "a connection from {peer} came to the transparent listener without being redirected to it, so where it was meant to go is unknown"
            );
            close_refused(&shared, &ctx, own, "not-redirected", &why).await;
            return;
        }
    };
    if let Err(why) = phase::check_named(&shared, &ctx.machine, ctx.now_secs()) {
        close_refused(&shared, &ctx, Some(dst), "proxy-auth", &why).await;
        return;
    }
    let first = first_bytes(&shared, &mut stream).await;
    let (ms, time) = veto_audit::now();
    ctx.unix_ms = ms;
    ctx.time = time;
    let hello = sni::parse(&first);
    let port = dst.port();
    let named = match (&hello, crate::head::http_start(&first)) {
        (_, Start::Yes) => {
            let host = host_of_head(&first)
                .or_else(|| {
                    let n = shared.remembered.name_of(dst.ip())?;
                    normalize_host(&n).ok()
                })
                .unwrap_or(Host::Ip(dst.ip()));
            let o = crate::intercept::Opened {
                shared: shared.clone(),
                host,
                port,
                ips: vec![dst.ip()],
                machine: ctx.machine.clone(),
                proven: false,
                claim: Some(Arc::new(Claim::new(dst.ip()))),
            };
            // Each request is decided, recorded and answered on its own.
            crate::inside::serve(o, stream, first).await;
            return;
        }
        (Hello::Tls(Some(name)), _) => normalize_host(name).ok(),
        _ => None,
    };
    // No name of its own: the one veto's DNS answered this address for, if
    // it did (bound to the address by veto itself: nothing to check).
    let recalled = match named {
        None => shared
            .remembered
            .name_of(dst.ip())
            .and_then(|n| normalize_host(&n).ok()),
        Some(_) => None,
    };
    let active = shared.policy.load_full();
    let hash = active.policy.hash().to_string();
    let host = named.clone().or(recalled).unwrap_or(Host::Ip(dst.ip()));
    let mut t = Tunnel::new(&shared, active, host, port, &ctx.machine);
    t.ips = vec![dst.ip()];
    let protocol = match hello {
        Hello::Tls(_) => Protocol::Tls,
        _ => Protocol::Tcp,
    };
    if let Some(host) = named
        && t.refused_by_name(protocol, ctx.now_secs()).is_none()
    {
        match Claim::new(dst.ip()).verify(&shared, &host).await {
            Ok(dns) => t.dns_lookup = dns,
            Err(why) => {
                let verdict = Verdict::refuse("address-mismatch", why);
                let _ =
                    phase::audit(&shared, &ctx, &hash, t.seen("tls"), &verdict, Some(403)).await;
                return;
            }
        }
    }
    t.opens = (protocol == Protocol::Tls)
        .then(|| t.opens_for(ctx.now_secs()))
        .flatten();
    // A plain socket: once decided, the kernel splices the bytes.
    let client = crate::splice::ClientIo::Plain {
        tcp: stream,
        pending: bytes::Bytes::new(),
    };
    crate::connect::decide_first(t, ctx, client, first, hash).await;
}

/// The client's first bytes: a whole ClientHello, a whole HTTP head, or
/// whatever else came, waiting at most `--peek-timeout` (a client that
/// waits for the server to speak first sends nothing, and is decided by
/// its destination address alone).
async fn first_bytes(shared: &Shared, s: &mut TcpStream) -> Vec<u8> {
    let limit = shared.config.max_header_bytes;
    let deadline = tokio::time::Instant::now() + shared.config.peek_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return buf,
        };
        buf.extend_from_slice(&chunk[..n]);
        let http = crate::head::http_start(&buf) == Start::Yes;
        let whole_head = memchr_end(&buf);
        if crate::first_bytes::settled(&buf) && (!http || whole_head || buf.len() >= limit) {
            return buf;
        }
    }
}

fn memchr_end(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The host an HTTP head's `Host` names (its port aside); `None` when
/// there is none or it is not a host. The guard still reads the head whole
/// and refuses what is malformed.
fn host_of_head(first: &[u8]) -> Option<Host> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    let _ = req.parse(first);
    let value = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))?
        .value;
    let authority: http::uri::Authority = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    normalize_host(authority.host()).ok()
}

/// Records a connection refused before anything was decided, and closes
/// it (dropping the stream).
async fn close_refused(
    shared: &Shared,
    ctx: &Ctx,
    to: Option<SocketAddr>,
    rule: &'static str,
    why: &str,
) {
    let facts = Facts {
        protocol: "tcp",
        method: None,
        host: to.map(|a| a.ip().to_string()).unwrap_or_default(),
        port: to.map_or(0, |a| a.port()),
        path: None,
    };
    let _ = phase::record_closed(shared, ctx, &facts, rule, why).await;
}
