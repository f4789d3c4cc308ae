//! A network namespace whose only way out is veto (`veto exec`).
//!
//! The namespace has loopback and one veth pair whose both ends stay inside
//! it: a default route, so a program's `connect` to any address reaches the
//! netfilter hooks instead of failing with "network unreachable", but no
//! link to anywhere. nftables in the namespace then:
//!
//! - redirects every TCP connection (IPv4 and IPv6) to veto's transparent
//!   listener, and DNS (UDP and TCP port 53) to veto's DNS port;
//! - drops everything else that would leave loopback (UDP 443/QUIC, DoT,
//!   ICMP, any other UDP): the filter chain's policy is `drop`. What it
//!   accepts is what goes to a local address, which after the redirect
//!   includes the connections to veto (the filter hook sees the address
//!   the redirect wrote).
//!
//! veto's listeners are sockets made *inside* the namespace (by a thread
//! that enters it, makes them and ends), while every upstream connection
//! veto makes is a socket of veto's own namespace. So the only bridge from
//! the namespace to the world is veto's process, and the redirect's
//! conntrack entry (which `SO_ORIGINAL_DST` reads) lives beside the
//! listener that accepts it.

use std::os::fd::AsRawFd;
use std::process::Command;

/// Where veto listens inside the namespace.
pub const PROXY_PORT: u16 = 3128;
pub const TRANSPARENT_PORT: u16 = 3129;
pub const DNS_PORT: u16 = 53;

/// A namespace made here; removed (with its resolv.conf) when dropped.
pub struct Netns {
    pub name: String,
}

/// Runs a command, or says which one failed and why.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| format!("`{program}`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{program}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// What `veto exec` needs of the machine, checked before anything is made:
/// root, `ip` and `nft`. The errors say what to do.
pub fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("veto exec makes a network namespace and nftables rules, which needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run it with sudo. Without root, point HTTP_PROXY and HTTPS_PROXY at a `veto run`, or have root install `veto firewall --apply` once.".into());
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(program)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!(
                "veto exec needs `{program}`: install Debian's `{package}` package (apt-get install {package})"
            ));
        }
    }
    Ok(())
}

/// The namespace's nftables rules: redirect TCP and DNS to veto, drop the
/// rest. Loopback inside the namespace stays the command's own.
pub fn ruleset() -> String {
    format!(
        "table inet veto {{
  chain to_veto {{
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    udp dport 53 redirect to :{DNS_PORT}
    tcp dport 53 redirect to :{DNS_PORT}
    meta l4proto tcp redirect to :{TRANSPARENT_PORT}
  }}
  chain egress {{
    type filter hook output priority 0; policy drop;
    oifname \"lo\" accept
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
    fib daddr type local accept
  }}
  chain ingress {{
    type filter hook input priority 0; policy drop;
    iifname \"lo\" accept
  }}
}}
"
    )
}

impl Netns {
    /// Makes the namespace, its links, routes and rules.
    pub fn create(name: String) -> Result<Netns, String> {
        // A namespace of this name left by a veto that was killed.
        let _ = run("ip", &["netns", "del", &name], None);
        run("ip", &["netns", "add", &name], None)?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        let ip = |args: &[&str]| {
            let mut all = vec!["-n", n];
            all.extend_from_slice(args);
            run("ip", &all, None)
        };
        ip(&["link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", "veto0", "type", "veth", "peer", "name", "veto1",
        ])?;
        ip(&["link", "set", "veto0", "up"])?;
        ip(&["link", "set", "veto1", "up"])?;
        ip(&["addr", "add", "10.255.255.1/32", "dev", "veto0"])?;
        ip(&["route", "add", "default", "dev", "veto0"])?;
        // IPv6 may be off in this kernel; then there is no IPv6 way out
        // to close either.
        if ip(&[
            "-6",
            "addr",
            "add",
            "fd76:6574:6f00::1/128",
            "dev",
            "veto0",
            "nodad",
        ])
        .is_ok()
        {
            ip(&["-6", "route", "add", "default", "dev", "veto0"])?;
        }
        run(
            "ip",
            &["netns", "exec", n, "nft", "-f", "-"],
            Some(&ruleset()),
        )?;
        // `ip netns exec` mounts this over /etc/resolv.conf: the command's
        // resolver asks veto.
        let etc = format!("/etc/netns/{n}");
        std::fs::create_dir_all(&etc).map_err(|e| format!("{etc}: {e}"))?;
        std::fs::write(format!("{etc}/resolv.conf"), "nameserver 127.0.0.1\n")
            .map_err(|e| format!("{etc}/resolv.conf: {e}"))?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered the namespace: the sockets it
    /// makes belong to the namespace, whatever thread uses them later.
    pub fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns changes only this thread's network namespace
            // (the thread ends after `f`); the fd is open for the call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(format!(
                    "cannot enter the namespace: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "the thread entering the namespace panicked".to_string())?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name], None);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}
