//! The one way veto connects to an upstream: to the addresses the policy
//! checked, in order, each within `--connect-timeout`. A dead address
//! (refused or silent) does not end the attempt while another remains;
//! the error says why the last one failed, and is a timeout when any did
//! time out.

use crate::answer::Fault;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

pub(crate) async fn dial(
    host: &impl std::fmt::Display,
    ips: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, IpAddr), (Fault, String)> {
    let mut last = (
        Fault::UpstreamUnreachable,
        String::from("no address to connect to"),
    );
    let mut timed_out = false;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *ip));
            }
            Ok(Err(e)) => {
                last.1 = format!("cannot reach {host}:{port} ({ip}): {e}");
            }
            Err(_) => {
                timed_out = true;
                last.1 = format!(
                    "{host}:{port} ({ip}) did not accept within {}s",
                    timeout.as_secs()
                );
            }
        }
    }
    if timed_out {
        last.0 = Fault::UpstreamTimeout;
    }
    Err(last)
}
