//! `veto exec`: one command whose only way out is veto.

use crate::*;

#[derive(clap::Args)]
pub(crate) struct ExecCli {
    /// The policy file (default: ./veto.yaml, else the built-in starter policy).
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// The machine the command's requests are decided and recorded as
    /// (default: the program's name).
    #[arg(long)]
    pub(crate) machine: Option<String>,
    #[command(flatten)]
    pub(crate) data: DataArg,
    #[command(flatten)]
    pub(crate) resolver: ResolverArgs,
    /// How hard an audit commit waits for the disk.
    #[arg(long = "audit-sync", default_value = "normal", value_parser = ["normal", "full"])]
    pub(crate) audit_sync: String,
    /// Time a connection's client has to send its first bytes when they
    /// decide it (a whole TLS ClientHello or HTTP head).
    #[arg(long = "peek-timeout", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) peek_timeout: std::time::Duration,
    /// Time to connect upstream.
    #[arg(long = "connect-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: std::time::Duration,
    /// Trust these PEM certificates, instead of the system's roots, for
    /// upstreams of tunnels veto opens.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Run the command as root, even under sudo (by default it runs as the
    /// user who ran sudo: root is needed for the namespace, not the command).
    #[arg(long = "as-root")]
    pub(crate) as_root: bool,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

pub(crate) fn exec(a: ExecCli) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut config = a.resolver.config()?;
    config.peek_timeout = a.peek_timeout;
    config.connect_timeout = a.connect_timeout;
    let machine = a
        .machine
        .unwrap_or_else(|| veto::exec::default_machine(&a.command));
    let run = veto::run::RunArgs {
        policy: a.policy,
        listen: config.listen,
        admin: None,
        data: a.data.data,
        upstream_ca: a.upstream_ca,
        listen_tls: None,
        client_ca: Vec::new(),
        client_id_cn: false,
        tls_name: None,
        transparent: Vec::new(),
        dns: Vec::new(),
        bound: None,
        ready: None,
        stop: None,
        quiet: true,
        agent: None,
        sync: if a.audit_sync == "full" {
            veto_audit::Sync::Full
        } else {
            veto_audit::Sync::Normal
        },
        retention: veto_audit::Retention::default(),
        config,
    };
    let args = veto::exec::ExecArgs {
        user: if a.as_root {
            None
        } else {
            veto::exec::sudo_caller()
        },
        command: a.command,
        run,
        machine,
    };
    match veto::exec::exec(args) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Err(e) => {
            eprintln!("veto exec: {e}");
            Ok(ExitCode::from(125))
        }
    }
}
