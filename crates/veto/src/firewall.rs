//! `veto firewall`: the nftables rules that make veto the only way out for
//! one target (a network namespace's interface, a cgroup or a uid):
//!
//! - TCP is redirected to veto's transparent listener, DNS (UDP and TCP
//!   port 53, to any resolver) to veto's DNS listener;
//! - everything else the target sends is dropped: UDP 443 (QUIC), DoT on
//!   853, any other UDP, ICMP, IPv6 as well as IPv4 (one `inet` table);
//! - loopback is kept for local processes, and veto's own traffic is
//!   never the target's (a uid or cgroup other than veto's).
//!
//! Each target's rules are one table, named after it (`veto_uid_1000`,
//! `veto_if_veth0`, `veto_cg_…`), so they can be listed (`nft list table
//! inet NAME`), and re-applied or removed without touching anything else.

use std::process::Command;

/// Whose traffic the rules hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Traffic arriving on this interface: a network namespace or container
    /// reached through a veth whose host side this is.
    Interface(String),
    /// Processes in this cgroup (v2 path, relative to the cgroup root).
    Cgroup(String),
    /// Processes running as this user id.
    Uid(u32),
}

pub struct Rules {
    pub target: Target,
    /// veto's transparent listener port (`veto run --transparent`).
    pub transparent_port: u16,
    /// veto's DNS listener port (`veto run --dns`).
    pub dns_port: u16,
}

/// Interface names and cgroup paths go inside nft's quotes; anything that
/// could end the quote or the statement is refused.
fn checked(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 255
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@:".contains(&b))
    {
        return Err(format!(
            "`{s}` is not a {what} veto writes into rules (letters, digits and -_./@: only)"
        ));
    }
    Ok(())
}

impl Rules {
    pub fn check(&self) -> Result<(), String> {
        match &self.target {
            Target::Interface(i) if i.len() > 15 => {
                Err(format!("`{i}` is longer than an interface name can be"))
            }
            Target::Interface(i) => checked(i, "interface name"),
            Target::Cgroup(c) => checked(c, "cgroup path"),
            Target::Uid(_) => Ok(()),
        }
    }

    /// The table's name: `veto_` and the target, in characters nft takes
    /// in a name.
    pub fn table(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        };
        match &self.target {
            Target::Interface(i) => format!("veto_if_{}", clean(i)),
            Target::Cgroup(c) => format!("veto_cg_{}", clean(c.trim_matches('/'))),
            Target::Uid(u) => format!("veto_uid_{u}"),
        }
    }

    /// The nftables script: idempotent (the table is made, emptied by
    /// deleting it, and made again in one transaction).
    pub fn script(&self) -> String {
        let table = self.table();
        let (tp, dp) = (self.transparent_port, self.dns_port);
        let body = match &self.target {
            Target::Interface(i) => format!(
                "  # Traffic from the namespace behind {i}: TCP and DNS to veto, nothing routed past it.
  chain to_veto {{
    type nat hook prerouting priority -100; policy accept;
    iifname \"{i}\" udp dport 53 redirect to :{dp}
    iifname \"{i}\" tcp dport 53 redirect to :{dp}
    iifname \"{i}\" meta l4proto tcp redirect to :{tp}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{i}\" counter drop comment \"nothing leaves past veto\"
  }}
  chain ingress {{
    type filter hook input priority filter; policy accept;
    iifname \"{i}\" tcp dport {tp} accept
    iifname \"{i}\" meta l4proto {{ tcp, udp }} th dport {dp} accept
    iifname \"{i}\" ct state established,related accept
    iifname \"{i}\" counter drop comment \"UDP 443 (QUIC), DoT, other ports: dropped\"
  }}
"
            ),
            local => {
                let who = match local {
                    Target::Cgroup(c) => {
                        let c = c.trim_matches('/');
                        let level = c.split('/').count();
                        format!("socket cgroupv2 level {level} \"{c}\"")
                    }
                    Target::Uid(u) => format!("meta skuid {u}"),
                    Target::Interface(_) => unreachable!("handled above"),
                };
                format!(
                    "  # Processes matching `{who}`: TCP and DNS to veto, loopback kept, the rest dropped.
  chain to_veto {{
    type nat hook output priority -100; policy accept;
    {who} ip daddr 127.0.0.0/8 return
    {who} ip6 daddr ::1 return
    {who} udp dport 53 redirect to :{dp}
    {who} tcp dport 53 redirect to :{dp}
    {who} meta l4proto tcp redirect to :{tp}
  }}
  chain egress {{
    type filter hook output priority filter; policy accept;
    {who} oifname \"lo\" accept
    {who} fib daddr type local accept
    {who} counter drop comment \"UDP 443 (QUIC), DoT, other ports: dropped\"
  }}
"
                )
            }
        };
        format!(
            "# veto firewall: veto is the only way out for {target:?}.
table inet {table} {{}}
delete table inet {table}
table inet {table} {{
{body}}}
",
            target = self.target
        )
    }

    /// Installs the rules (`nft -f -`).
    pub fn apply(&self) -> Result<(), String> {
        self.check()?;
        nft(&["-f", "-"], Some(&self.script()))
    }

    /// Takes the rules out; `Ok(false)` when there were none.
    pub fn remove(&self) -> Result<bool, String> {
        self.check()?;
        let table = self.table();
        if nft(&["list", "table", "inet", &table], None).is_err() {
            return Ok(false);
        }
        nft(&["delete", "table", "inet", &table], None).map(|()| true)
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run `nft` ({e}): install Debian's `nftables` package (apt-get install nftables)")
        })?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let hint = if err.contains("Operation not permitted") {
        " (nftables rules need root: run it with sudo)"
    } else {
        ""
    };
    Err(format!("nft {}: {}{hint}", args.join(" "), err.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_break_out_of_a_rule_are_refused() {
        for bad in ["eth0\" accept", "a;b", "", "x y"] {
            let r = Rules {
                target: Target::Cgroup(bad.into()),
                transparent_port: 3129,
                dns_port: 53,
            };
            assert!(r.check().is_err(), "{bad}");
        }
        let long = Rules {
            target: Target::Interface("a".repeat(16)),
            transparent_port: 3129,
            dns_port: 53,
        };
        assert!(long.check().is_err());
    }
}
