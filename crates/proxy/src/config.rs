//! Proxy settings: where it listens, how long it waits, how much it takes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `--resolve HOST=ADDR`: answers that replace DNS for these hosts
    /// (normalised host name → addresses). The guard still applies.
    pub resolve: HashMap<String, Vec<IpAddr>>,
    /// Time to read a request's head (slowloris bound).
    pub header_timeout: Duration,
    /// Time for a request body veto reads for inspection to arrive
    /// (then 408): the slowloris bound for bodies.
    pub body_timeout: Duration,
    /// Time to open a connection upstream (then 504).
    pub connect_timeout: Duration,
    /// Time for an upstream to start answering (then 504).
    pub response_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// No tunnel lives longer than this.
    pub tunnel_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// Most client connections at once, and per client address.
    pub max_connections: usize,
    pub max_per_client: usize,
    /// Bodies larger than this cannot be inspected for data classes.
    pub inspect_limit: usize,
    /// How long to wait for a tunnel's first client bytes when the decision
    /// depends on whether it is TLS.
    pub peek_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
    /// The machine connections on the transparent listener are decided
    /// and recorded as (`--transparent-machine`; `anonymous` by default):
    /// a redirected client sends no credentials.
    pub transparent_machine: String,
    /// The machine clients of the proxy listener are when they send no
    /// credentials (`None`: `anonymous`). `veto exec` sets it: its
    /// listener serves only the command it runs.
    pub listener_machine: Option<String>,
    /// The name servers veto's resolver asks (`--dns-upstream`); empty:
    /// the system's (`/etc/resolv.conf`).
    pub dns_upstream: Vec<SocketAddr>,
    /// This veto's id in `CDN-Loop` (`veto-` and part of its signing key's
    /// public half): how it knows a request it forwarded before.
    pub node_id: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            resolve: HashMap::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            tunnel_timeout: Duration::from_secs(24 * 3600),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            max_per_client: 512,
            inspect_limit: 16 * 1024 * 1024,
            peek_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            transparent_machine: "anonymous".into(),
            listener_machine: None,
            dns_upstream: Vec::new(),
            node_id: "veto".into(),
        }
    }
}

/// Parses `HOST=ADDR` (ADDR an IP, IPv6 with or without brackets).
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (host, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("--resolve `{s}`: expected HOST=ADDR"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("--resolve `{s}`: `{addr}` is not an IP address"))?;
    let host = match veto_policy::normalize_host(host) {
        Ok(veto_policy::Host::Name(n)) => n.to_string(),
        _ => return Err(format!("--resolve `{s}`: `{host}` is not a host name")),
    };
    Ok((host, ip))
}
