//! The `veto` binary: a thin command line over the library crates.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use veto::sample::{Payload, Sample};
use veto_policy::{Policy, Protocol};
use veto_proxy::inspect::Detectors;

/// Prints a line on stdout. A closed pipe (`veto … | head`) ends the
/// program quietly, as Unix tools do, instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("veto: cannot write output: {e}");
            std::process::exit(1);
        }
    }};
}

// The commands' arguments and handlers, one module per command group;
// after `say!`, which they use.
mod cmd;
use cmd::{
    access::*, args::*, audit::*, exec::*, firewall::*, fleet::*, machine::*, optout::*, policy::*,
    proxy::*,
};

#[derive(Parser)]
#[command(
    name = "veto",
    version,
    about = "veto lets machines say no: every outbound request checked against a declared opt-out policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on one machine: the edge proxy and the audit store.
    Run(Box<RunCli>),
    /// The control plane: policy versions, runtime opt-outs, agents, their
    /// audit and the change log (SQLite, or PostgreSQL for replicas).
    Server(Box<veto::fleet_cmd::ServerCli>),
    /// The edge proxy managed by a `veto server`: it dials out for its
    /// policy and opt-outs, ships its audit, and opens no admin port.
    Agent(Box<AgentCli>),
    /// Agents of a `veto server`: enroll one (its token is printed once), list them.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Work with policy files: check, explain, test, bench.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The local certificate authority, for TLS interception and machine
    /// client certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Review access by last use, renew grants, revoke what nobody uses.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Read the audit trail: verify the chain, query and export records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Follow decisions live from a running veto, one line each, refusals highlighted.
    Tail {
        /// The admin listener of the running veto.
        #[arg(long, default_value = "http://127.0.0.1:9180")]
        admin: String,
        /// Where the admin token is (DATA/admin.token), unless --token or VETO_ADMIN_TOKEN is given.
        #[command(flatten)]
        data: DataArg,
        /// The admin token (default: VETO_ADMIN_TOKEN, else DATA/admin.token).
        #[arg(long, env = "VETO_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// JSON lines (the audit record) instead of one readable line.
        #[arg(long)]
        json: bool,
    },
    /// Runtime opt-outs: turn off connections to a host or service, or from
    /// a machine, everywhere at once, with a reason.
    #[command(subcommand)]
    Optout(OptoutCommand),
    /// The change log: who changed what, when and why.
    Changes {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Every destination seen, per machine: first and last seen, decisions, bytes.
    Inventory {
        #[command(flatten)]
        data: DataArg,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Machine identities: register, revoke and list who may use the proxy.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Run one command whose only way out is veto: a network namespace of
    /// its own, proxy variables set, every other connection redirected to
    /// veto, DNS through veto, the rest dropped (needs root).
    Exec(Box<ExecCli>),
    /// The nftables rules that make veto the only way out for a network
    /// namespace's interface, a cgroup or a uid: print them, --apply or
    /// --remove.
    Firewall(Box<FirewallCli>),
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Machine(cmd) => machine(cmd),
        Command::Access(cmd) => access(cmd),
        Command::Run(a) => run_proxy(*a, None),
        Command::Exec(a) => exec(*a),
        Command::Firewall(a) => firewall(*a),
        Command::Agent(a) => {
            let a = *a;
            let agent = veto::agent::AgentArgs {
                server: a.server,
                token: a.token,
                name_hint: None,
                server_ca: a.server_ca,
            };
            run_proxy(a.run, Some(agent))
        }
        Command::Server(a) => veto::fleet_cmd::server(*a),
        Command::Agents(cmd) => fleet(cmd),
        Command::Ca(CaCommand::Init { data, trust_domain }) => {
            match veto_ca::Ca::init_for(&data.data, &trust_domain) {
                Ok(_) => {
                    let cert = data.data.join(veto_ca::CERT_FILE);
                    println!(
                        "veto: created the local CA: certificate {} (give it to clients as their trust anchor, e.g. curl --cacert), key {} (mode 0600); machine certificates carry spiffe://{trust_domain}/machine/NAME",
                        cert.display(),
                        data.data.join(veto_ca::KEY_FILE).display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("veto: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Optout(cmd) => optout(cmd),
        Command::Changes { remote, json } => {
            let list = remote.call("GET", "/v1/changes", None)?;
            for c in list.as_array().cloned().unwrap_or_default() {
                if json {
                    say!("{c}");
                } else {
                    let what = |v: &serde_json::Value| {
                        if v.is_null() {
                            "-".to_string()
                        } else {
                            v.to_string()
                        }
                    };
                    say!(
                        "{} {} {} reason: {} | before: {} | after: {}",
                        c["time"].as_str().unwrap_or(""),
                        c["actor"].as_str().unwrap_or(""),
                        c["action"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        what(&c["before"]),
                        what(&c["after"])
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            admin,
            data,
            token,
            filter,
            json,
        } => {
            let token = match token {
                Some(t) => t,
                None => std::fs::read_to_string(veto_admin::token_path(&data.data))
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no admin token: give --token, set VETO_ADMIN_TOKEN, or point --data at veto's data ({})",
                            veto_admin::token_path(&data.data).display()
                        )
                    })?,
            };
            let since = filter.since.clone();
            let f = filter.filter()?;
            let mut query = Vec::new();
            for (k, v) in [
                ("decision", &f.decision),
                ("machine", &f.machine),
                ("host", &f.host),
                ("rule", &f.rule),
            ] {
                if let Some(v) = v {
                    query.push(format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    ));
                }
            }
            if let Some(s) = since {
                let secs = humantime::parse_duration(&s)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                query.push(format!("since={secs}"));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(veto::tail::tail(veto::tail::TailArgs {
                admin,
                token,
                query: query.join("&"),
                json,
            })) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("veto: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Audit(cmd) => audit(cmd),
        Command::Inventory { data, json } => {
            veto::audit_cmd::inventory_cmd(&data.data, json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            let policy = match read_policy(&file) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            for w in policy.warnings() {
                eprintln!("{}:{w} (warning)", file.display());
            }
            let doc = policy.document();
            say!(
                "{}: ok, {} rules, {} services, {} machines; {}",
                file.display(),
                doc.rules.len(),
                doc.services.len(),
                doc.machines.len(),
                policy.hash()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Explain(a)) => explain(a),
        Command::Policy(PolicyCommand::Push {
            file,
            reason,
            remote,
        }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let v = remote.call(
                "POST",
                "/v1/policy",
                Some(serde_json::json!({"text": text, "reason": reason})),
            )?;
            say!(
                "policy version {} {} pushed",
                v["version"],
                v["hash"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Rollback {
            version,
            reason,
            remote,
        }) => {
            let v = remote.call(
                "POST",
                "/v1/policy/rollback",
                Some(serde_json::json!({"version": version, "reason": reason})),
            )?;
            say!(
                "version {version} is current again as version {} {}",
                v["version"],
                v["hash"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Versions { remote }) => {
            let list = remote.call("GET", "/v1/policy/versions", None)?;
            let rows: Vec<Vec<String>> = list
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    vec![
                        v["version"].to_string(),
                        v["hash"].as_str().unwrap_or("").to_string(),
                        v["time"]
                            .as_i64()
                            .map_or(String::new(), veto_policy::format_time),
                        v["actor"].as_str().unwrap_or("").to_string(),
                        v["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            veto::table::write(
                &mut std::io::stdout().lock(),
                &["VERSION", "HASH", "TIME", "ACTOR", "REASON"],
                &rows,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Test { path }) => {
            if !path.exists() {
                eprintln!("veto: {}: no such file or directory", path.display());
                return Ok(ExitCode::from(1));
            }
            let report = veto::testfile::run(&path)?;
            for f in &report.failures {
                say!("{f}");
            }
            say!("{} passed, {} failed", report.passed, report.failures.len());
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Policy(PolicyCommand::Bench {
            file,
            requests,
            iterations,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let t = std::time::Instant::now();
            let policy = match Policy::compile(&text) {
                Ok(p) => p,
                Err(errs) => {
                    for d in errs {
                        eprintln!("{}:{d}", file.display());
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let compile = t.elapsed();
            let samples = match requests {
                Some(r) => {
                    veto::testfile::load_requests(&policy, &r).map_err(anyhow::Error::msg)?
                }
                None => veto::bench::generate(&policy),
            };
            let f = veto::bench::run(&policy, &samples, iterations.max(1));
            say!(
                "policy          {} ({} rules)",
                policy.hash(),
                policy.document().rules.len()
            );
            say!("compile         {:.2} ms", compile.as_secs_f64() * 1e3);
            say!("samples         {}", f.samples);
            say!("iterations      {}", f.iterations);
            say!("decisions/s     {:.0}", f.per_second);
            say!("mean ns/op      {:.0}", f.mean_ns);
            say!("p50 ns/op       {}", f.p50_ns);
            say!("p99 ns/op       {}", f.p99_ns);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// mimalloc: the request path allocates per request (hyper's buffers,
/// the audit record), and glibc's malloc spent ~7% of veto's CPU under
/// load in arenas and consolidation (perf, BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages on its arenas, so every thread
/// that touches a fresh arena region can fault in 2 MiB at once: an idle
/// `veto run` held 29 MiB instead of 16. The requests' working set is small
/// enough that huge pages buy nothing measurable, so the process opts out
/// before its threads start (the flag is checked at each page fault).
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and
    // changes nothing but this process's huge-page policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("veto: {e:#}");
            ExitCode::from(1)
        }
    }
}
