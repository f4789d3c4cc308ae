//! `veto policy`: check, explain, test and bench policy files.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy: exit 0 (warnings on stderr) or 1 with `file:line:column: message` lines.
    Check { file: PathBuf },
    /// Push a policy file to a `veto server` as a new version; its agents
    /// enforce it at once.
    Push {
        file: PathBuf,
        /// Why (kept in the change log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an earlier version current again (as a new version).
    Rollback {
        version: i64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The versions a `veto server` holds, newest first.
    Versions {
        #[command(flatten)]
        remote: Remote,
    },
    /// Decide one request and print the decision, its reason and the trace of rules as JSON.
    Explain(ExplainArgs),
    /// Run policy test files (a file, or every *.test.yaml below a directory).
    Test { path: PathBuf },
    /// Measure decisions per second and latency for a policy.
    Bench {
        file: PathBuf,
        /// Requests to decide: a test file (its cases' requests) or a YAML list of requests.
        /// Without it, requests are generated from the policy's machines and services.
        #[arg(long)]
        requests: Option<PathBuf>,
        /// How many decisions to time.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: usize,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["url", "connect", "lookup"])))]
pub(crate) struct ExplainArgs {
    pub(crate) file: PathBuf,
    /// The machine making the request (default: anonymous).
    #[arg(long, default_value = "anonymous")]
    pub(crate) machine: String,
    /// An http:// or https:// URL: a request veto can see.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// HOST:PORT: a CONNECT tunnel veto does not open.
    #[arg(long)]
    pub(crate) connect: Option<String>,
    /// NAME: a DNS lookup, as veto's DNS listener decides it.
    #[arg(long)]
    pub(crate) lookup: Option<String>,
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,
    /// A file whose contents are the request body.
    #[arg(long)]
    pub(crate) body_file: Option<PathBuf>,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
    /// What DNS would answer for the host (repeatable).
    #[arg(long = "resolves-to", value_name = "IP")]
    pub(crate) resolves_to: Vec<std::net::IpAddr>,
    /// Protocol of a --connect tunnel: tls (default) or tcp.
    #[arg(long, default_value = "tls")]
    pub(crate) protocol: String,
}

pub(crate) fn read_policy(file: &Path) -> Result<Policy, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("veto: cannot read {}: {e}", file.display());
        ExitCode::from(1)
    })?;
    Policy::compile(&text).map_err(|errs| {
        for d in errs {
            eprintln!("{}:{d}", file.display());
        }
        ExitCode::from(1)
    })
}

pub(crate) fn explain(a: ExplainArgs) -> Result<ExitCode> {
    let policy = match read_policy(&a.file) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let detectors = Detectors::new(&policy).map_err(anyhow::Error::msg)?;
    let mut sample = if let Some(url) = &a.url {
        let mut headers = Vec::new();
        for h in &a.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header `{h}` must be `Name: value`"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let body = match &a.body_file {
            Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            None => Vec::new(),
        };
        Sample::from_url(
            &a.machine,
            &a.method,
            url,
            Payload {
                target: String::new(),
                headers,
                body,
            },
        )?
    } else if let Some(name) = &a.lookup {
        Sample::from_lookup(&a.machine, name)?
    } else {
        let target = a.connect.as_deref().unwrap_or_default();
        let protocol = match Protocol::parse(&a.protocol) {
            Some(p @ (Protocol::Tls | Protocol::Tcp)) => p,
            _ => bail!("--protocol must be tls or tcp for --connect"),
        };
        Sample::from_connect(&a.machine, target, protocol)?
    };
    sample.ips = a.resolves_to;
    sample.now = veto::testfile::now();
    sample.detect(&detectors);
    let out = veto::explain::explain(&policy, &sample, &veto_policy::NoGrants);
    say!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
