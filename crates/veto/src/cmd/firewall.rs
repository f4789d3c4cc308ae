//! `veto firewall`: print, install or remove the nftables rules that make
//! veto the only way out.

use crate::*;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["interface", "cgroup", "uid"])))]
pub(crate) struct FirewallCli {
    /// Traffic arriving on this interface: the host side of a network
    /// namespace's or container's veth.
    #[arg(long)]
    pub(crate) interface: Option<String>,
    /// Processes in this cgroup (v2, the path below the cgroup root, e.g.
    /// system.slice/build.service).
    #[arg(long)]
    pub(crate) cgroup: Option<String>,
    /// Processes running as this user id (veto itself must run as another).
    #[arg(long)]
    pub(crate) uid: Option<u32>,
    /// The port of veto's transparent listener (`veto run --transparent`).
    #[arg(long = "transparent-port", default_value_t = 3129)]
    pub(crate) transparent_port: u16,
    /// The port of veto's DNS listener (`veto run --dns`).
    #[arg(long = "dns-port", default_value_t = 53)]
    pub(crate) dns_port: u16,
    /// Install the rules (needs root); without it they are printed.
    #[arg(long, conflicts_with = "remove")]
    pub(crate) apply: bool,
    /// Take the rules for this target out.
    #[arg(long)]
    pub(crate) remove: bool,
}

pub(crate) fn firewall(a: FirewallCli) -> Result<ExitCode> {
    use veto::firewall::{Rules, Target};
    let target = match (a.interface, a.cgroup, a.uid) {
        (Some(i), _, _) => Target::Interface(i),
        (_, Some(c), _) => Target::Cgroup(c),
        (_, _, Some(u)) => Target::Uid(u),
        _ => bail!("name a target: --interface, --cgroup or --uid"),
    };
    let rules = Rules {
        target,
        transparent_port: a.transparent_port,
        dns_port: a.dns_port,
    };
    if let Err(e) = rules.check() {
        eprintln!("veto firewall: {e}");
        return Ok(ExitCode::from(2));
    }
    let table = rules.table();
    let outcome = if a.remove {
        rules.remove().map(|removed| match removed {
            true => format!("veto firewall: removed table inet {table}"),
            false => format!("veto firewall: there was no table inet {table}"),
        })
    } else if a.apply {
        rules.apply().map(|()| {
            format!(
                "veto firewall: installed table inet {table} (nft list table inet {table}); veto must listen on port {} (--transparent) and {} (--dns)",
                a.transparent_port, a.dns_port
            )
        })
    } else {
        say!("{}", rules.script());
        return Ok(ExitCode::SUCCESS);
    };
    match outcome {
        Ok(line) => {
            say!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("veto firewall: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
