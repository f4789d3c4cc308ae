//! `veto agent`: the edge proxy, managed by a `veto server` it dials out to.
//! It opens no port for management. It holds the server's config stream
//! open (SSE) and applies each policy and opt-out set the moment it
//! arrives; it keeps the last one on disk, so a restart while the server is
//! unreachable keeps enforcing it, and an agent that never had one refuses
//! everything (fails closed). Its audit trail is the local one (the spool);
//! entries are shipped in batches and marked shipped only once the server
//! has stored them, so nothing is lost or sent twice across outages.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use veto_proxy::owner::Change;
use veto_proxy::{Active, OwnedOptOut, Shared};

/// What an agent enforces before its server has ever answered: nothing
/// leaves, and every refusal says why.
pub const NO_POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-policy-yet
    effect: deny
    to: { hosts: [\"*\"], cidrs: [0.0.0.0/0, \"::/0\"] }
    reason: This agent has not received a policy from its server yet, so it refuses everything.
";

#[derive(Clone, Debug)]
pub struct AgentArgs {
    pub server: String,
    pub token: String,
    pub name_hint: Option<String>,
    /// `--server-ca`: roots for an https:// server (else the system's).
    pub server_ca: Option<PathBuf>,
}

fn cache_path(data: &Path) -> PathBuf {
    data.join("agent-config.json")
}

fn shipped_path(data: &Path) -> PathBuf {
    data.join("agent-shipped")
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A config event: the policy text (if the server has one) and opt-outs.
fn parse(cfg: &str) -> Result<(Option<String>, Vec<OwnedOptOut>), String> {
    let v: serde_json::Value =
        serde_json::from_str(cfg).map_err(|e| format!("the server sent a bad config: {e}"))?;
    let text = v["policy"]["text"].as_str().map(str::to_string);
    let now = unix_now();
    let optouts = v["optouts"]
        .as_array()
        .map(|a| {
            a.iter()
                // Expired opt-outs leave force here too, connected or not.
                .filter(|o| o["expires"].as_i64().is_none_or(|e| now < e))
                .map(|o| OwnedOptOut {
                    rule_id: o["rule_id"].as_str().unwrap_or_default().to_string(),
                    kind: o["kind"].as_str().unwrap_or_default().to_string(),
                    value: o["value"].as_str().unwrap_or_default().to_string(),
                    reason: o["reason"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((text, optouts))
}

fn compile(cfg: &str) -> Result<(Active, Vec<OwnedOptOut>), String> {
    let (text, optouts) = parse(cfg)?;
    let text = text.unwrap_or_else(|| NO_POLICY.to_string());
    let active = Active::compile(&text, "server policy", &optouts, unix_now())?;
    Ok((active, optouts))
}

/// What to enforce at start: the last config the server sent, else the
/// fail-closed policy. Says which.
pub fn initial(data: &Path) -> Result<(Active, String), String> {
    match std::fs::read_to_string(cache_path(data)) {
        Ok(cfg) => {
            let (active, _) = compile(&cfg)?;
            let hash = active.policy.hash().to_string();
            Ok((
                active,
                format!(
                    "enforcing the last policy its server sent, {hash}, until it hears from it"
                ),
            ))
        }
        Err(_) => {
            let active = Active::compile(NO_POLICY, "no policy yet", &[], unix_now())?;
            Ok((
                active,
                "no policy received yet: refusing everything until its server sends one".into(),
            ))
        }
    }
}

/// Writes a file whole: a temporary file renamed over it.
pub(crate) fn replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Uses of the server's machine credentials (hashes only, checked in
/// memory by proxy_creds.rs), noted per request and reported with the
/// agent's status.
type Uses = veto_identity::Uses<String>;

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    b.try_into().ok()
}

/// The machines of a config, if the server sent them.
fn machines(cfg: &str) -> Option<veto_identity::Credentials> {
    let v: serde_json::Value = serde_json::from_str(cfg).ok()?;
    let list = v["machines"].as_array()?;
    let creds = list
        .iter()
        .filter_map(|m| {
            let hash = unhex(m["hash"].as_str()?)?;
            let old = m["old_hash"]
                .as_str()
                .and_then(unhex)
                .zip(m["old_until"].as_i64());
            Some(veto_identity::Credential::from_stored(
                m["name"].as_str()?.to_string(),
                m["roles"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                m["env"].as_str().map(str::to_string),
                m["created"].as_i64().unwrap_or(0),
                m["expires"].as_i64(),
                m["idle_ttl"].as_i64(),
                m["last_used"].as_i64(),
                m["revoked_at"].as_i64(),
                hash,
                old,
            ))
        })
        .collect();
    Some(veto_identity::Credentials::from_machines(creds, 0))
}

fn set_credentials(shared: &Shared, cfg: &str, uses: &Arc<Uses>) {
    if let Some(creds) = machines(cfg) {
        crate::proxy_creds::install(shared, creds, uses);
    }
}

/// A running agent: what its last status report needs.
pub struct Agent {
    shared: Arc<Shared>,
    data: PathBuf,
    args: Arc<AgentArgs>,
    uses: Arc<Uses>,
}

impl Agent {
    /// At a clean stop: one last status report, so the uses seen since the
    /// previous one reach the server (given two seconds at most).
    pub async fn stop(&self) {
        let last = report(&self.shared, &self.data, &self.args, &self.uses);
        match tokio::time::timeout(Duration::from_secs(2), last).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("veto: agent: the last status report failed: {e}"),
            Err(_) => eprintln!("veto: agent: the last status report timed out"),
        }
    }
}

/// Starts the agent's loops: config stream, audit shipping, opt-out
/// expiry, status.
pub fn start(shared: Arc<Shared>, data: PathBuf, args: AgentArgs) -> Agent {
    let a = Arc::new(args);
    let uses: Arc<Uses> = Arc::default();
    if let Ok(cfg) = std::fs::read_to_string(cache_path(&data)) {
        set_credentials(&shared, &cfg, &uses);
    }
    crate::agent_grants::load_cached(&shared, &data);
    {
        let (shared, data, a) = (shared.clone(), data.clone(), a.clone());
        let uses = uses.clone();
        tokio::spawn(async move { config_loop(shared, data, a, uses).await });
    }
    {
        let (shared, data, a) = (shared.clone(), data.clone(), a.clone());
        tokio::spawn(async move { ship_loop(shared, data, a).await });
    }
    {
        let (shared, data) = (shared.clone(), data.clone());
        tokio::spawn(async move { expiry_loop(shared, data).await });
    }
    let agent = Agent {
        shared: shared.clone(),
        data: data.clone(),
        args: a.clone(),
        uses: uses.clone(),
    };
    tokio::spawn(async move { status_loop(shared, data, a, uses).await });
    agent
}

/// Opt-outs that expire leave force on time even when the server cannot
/// be reached: the last config is re-read once a second.
async fn expiry_loop(shared: Arc<Shared>, data: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let path = cache_path(&data);
        // Read in the owner's turn: a config the stream applies meanwhile
        // is never overwritten by the one read before it.
        let read = Box::new(move || {
            let cfg = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            parse(&cfg).map(|(_, optouts)| optouts)
        });
        if let Err(e) = shared.change(Change::OptOuts(read), "expiry").await {
            tracing::error!(error = %e, "cannot apply opt-outs");
        }
    }
}

/// Applies one config: compiled first (a config that does not compile is
/// refused and the last one stays), then cached, then swapped in.
/// Caches a config that compiled, off the async threads (it syncs to disk).
async fn cache(data: &Path, cfg: &str) {
    let (path, text) = (cache_path(data), cfg.to_string());
    let cached = tokio::task::spawn_blocking(move || replace(&path, text.as_bytes())).await;
    if let Ok(Err(e)) = cached {
        tracing::error!(error = %e, "cannot cache the server's config");
    }
}

async fn apply(shared: &Shared, data: &Path, cfg: &str, uses: &Arc<Uses>) {
    // Only machines changed: nothing to compile.
    if let Ok((text, optouts)) = parse(cfg) {
        let current = shared.policy.load();
        let same_text = text.as_deref().unwrap_or(NO_POLICY) == &*current.source;
        if same_text && *current.optouts == optouts {
            set_credentials(shared, cfg, uses);
            cache(data, cfg).await;
            return;
        }
    }
    // Compiled first: a config that does not compile is refused, and
    // nothing of it is used or cached.
    let (text, optouts) = match compile(cfg) {
        Ok((active, optouts)) => (active.source.to_string(), optouts),
        Err(e) => {
            eprintln!(
                "veto: agent: the server's config was refused; still enforcing the last one: {e}"
            );
            return;
        }
    };
    set_credentials(shared, cfg, uses);
    cache(data, cfg).await;
    let change = Change::Config {
        text,
        name: "server policy".into(),
        optouts,
    };
    match shared.change(change, "server").await {
        Ok(a) if a.old != a.new => {
            eprintln!("veto: agent: policy {} -> {} from the server", a.old, a.new)
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "veto: agent: the server's config was refused; still enforcing the last one: {e}"
        ),
    }
}

/// The TLS settings for an https:// server, made once per process.
fn client_tls(a: &AgentArgs) -> Result<Arc<rustls::ClientConfig>, String> {
    static TLS: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let certs = match &a.server_ca {
            Some(p) => {
                let pem =
                    std::fs::read(p).map_err(|e| format!("--server-ca {}: {e}", p.display()))?;
                veto_ca::pem_certs(&pem).map_err(|e| format!("--server-ca {}: {e}", p.display()))?
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        roots.add_parsable_certificates(certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    })
    .clone()
}

/// One connection to the server: plain for http://, verified TLS for
/// https:// (the token and the config travel encrypted).
async fn connect(
    a: &AgentArgs,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), String> {
    let server = a.server.as_str();
    let uri: hyper::Uri = server
        .parse()
        .map_err(|e| format!("invalid --server `{server}`: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("--server `{server}`: expected http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or("the --server URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach the server {server}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let authority = format!("{host}:{port}");
    if !tls {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        return Ok((send, authority));
    }
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("--server `{server}`: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(client_tls(a)?)
        .connect(name, stream)
        .await
        .map_err(|e| format!("the TLS of the server {server} cannot be trusted: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((send, authority))
}

fn request(
    method: &str,
    authority: &str,
    path: &str,
    token: &str,
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())
}

/// Holds the config stream open; reconnects (1 s, then up to 5 s apart)
/// whenever it drops.
async fn config_loop(shared: Arc<Shared>, data: PathBuf, a: Arc<AgentArgs>, uses: Arc<Uses>) {
    let mut wait = Duration::from_millis(200);
    loop {
        match stream_config(&shared, &data, &a, &uses).await {
            Ok(()) => wait = Duration::from_millis(200),
            Err(e) => tracing::warn!(error = %e, "config stream from the server lost"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn stream_config(
    shared: &Shared,
    data: &Path,
    a: &AgentArgs,
    uses: &Arc<Uses>,
) -> Result<(), String> {
    let (mut send, authority) = connect(a).await?;
    let req = request(
        "GET",
        &authority,
        "/v1/agent/config",
        &a.token,
        Bytes::new(),
    )?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let mut body = resp.into_body();
    // Raw bytes until an event is whole (a character may be split across
    // chunks); the search resumes where it stopped.
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0;
    loop {
        // The server sends a keep-alive every 15 s: silence for 45 s is a
        // dead connection (half-open), so reconnect rather than wait forever.
        let frame = match tokio::time::timeout(Duration::from_secs(45), body.frame()).await {
            Err(_) => return Err("nothing from the server for 45 s; reconnecting".into()),
            Ok(None) => break,
            Ok(Some(f)) => f.map_err(|e| e.to_string())?,
        };
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(chunk);
        // SSE: events end with a blank line; `data:` lines carry the JSON.
        while let Some(pos) = buf[scanned..].windows(2).position(|w| w == b"\n\n") {
            let end = scanned + pos + 2;
            let event = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            scanned = 0;
            let mut name = "message";
            let mut payload = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = match v.trim() {
                        "config" => "config",
                        "grants" => "grants",
                        _ => "other",
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !payload.is_empty() {
                        payload.push('\n');
                    }
                    payload.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match name {
                _ if payload.is_empty() => {}
                "config" => apply(shared, data, &payload, uses).await,
                "grants" => crate::agent_grants::apply(shared, data, &payload).await,
                _ => {}
            }
        }
        scanned = buf.len().saturating_sub(1);
    }
    Ok(())
}

/// Ships audit entries in batches of up to 500, once a second; an entry
/// counts as shipped only when the server acknowledged storing it.
async fn ship_loop(shared: Arc<Shared>, data: PathBuf, a: Arc<AgentArgs>) {
    let _ = &shared;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        loop {
            match ship_once(&data, &a).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ship audit entries; they stay spooled");
                    break;
                }
            }
        }
    }
}

pub fn shipped(data: &Path) -> i64 {
    std::fs::read_to_string(shipped_path(data))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// One batch; `Ok(true)` when there may be more.
async fn ship_once(data: &Path, a: &AgentArgs) -> Result<bool, String> {
    let after = shipped(data);
    let db = veto_audit::db_path(data);
    // The signed head goes with every batch, read before the entries (it
    // follows them): the server holds the shipped chain to it, so a trail
    // cut here before it shipped is refused there, not taken as complete.
    let (head, batch) = tokio::task::spawn_blocking(move || {
        let head =
            veto_audit::head::read(&veto_audit::head::head_path(&db)).map_err(|e| e.to_string())?;
        let conn = veto_audit::open_ro(&db).map_err(|e| e.to_string())?;
        let batch = veto_audit::entries_after(&conn, after, 500).map_err(|e| e.to_string())?;
        Ok::<_, String>((head, batch))
    })
    .await
    .map_err(|e| e.to_string())??;
    if batch.is_empty() {
        return Ok(false);
    }
    // At most 1 MiB of entries per batch (and at least one).
    let mut size = 0;
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for e in &batch {
        size += e.body.len() + e.prev.len() + e.hash.len() + 64;
        if !entries.is_empty() && size > 1024 * 1024 {
            break;
        }
        entries.push(serde_json::json!({"seq": e.seq, "kind": e.kind, "body": e.body, "prev": e.prev, "hash": e.hash}));
    }
    let full = entries.len() < batch.len() || batch.len() == 500;
    let last = batch.get(entries.len() - 1).map(|e| e.seq).unwrap_or(after);
    let body = serde_json::json!({ "entries": entries, "head": head }).to_string();
    let (mut send, authority) = connect(a).await?;
    let req = request(
        "POST",
        &authority,
        "/v1/agent/audit",
        &a.token,
        Bytes::from(body),
    )?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let acked = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["acked"].as_i64())
        .unwrap_or(0);
    if acked < last {
        return Err(format!("the server stored up to entry {acked}, not {last}"));
    }
    replace(&shipped_path(data), last.to_string().as_bytes()).map_err(|e| e.to_string())?;
    Ok(full)
}

/// Reports version, policy hash and spool depth every 2 seconds.
async fn status_loop(shared: Arc<Shared>, data: PathBuf, a: Arc<AgentArgs>, uses: Arc<Uses>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if let Err(e) = report(&shared, &data, &a, &uses).await {
            tracing::debug!(error = %e, "cannot report status to the server");
        }
    }
}

/// One status report, with the credential and grant uses seen since the
/// last; a failed report gives them back for the next.
async fn report(shared: &Shared, data: &Path, a: &AgentArgs, uses: &Uses) -> Result<(), String> {
    let db = veto_audit::db_path(data);
    let head = tokio::task::spawn_blocking(move || {
        veto_audit::open_ro(&db)
            .and_then(|c| veto_audit::head(&c))
            .map(|(seq, _)| seq)
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    let spool = (head - shipped(data)).max(0);
    let batch = uses.take_unwritten();
    let reported: Vec<serde_json::Value> = batch
        .iter()
        .map(|(m, t)| serde_json::json!({"machine": m, "at": t}))
        .collect();
    let (grant_uses, grant_batch) = crate::agent_grants::take(shared);
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "policy_hash": shared.policy.load().policy.hash(),
        "spool": spool,
        "uses": reported,
        "grant_uses": grant_uses,
    })
    .to_string();
    let sent = async {
        let (mut send, authority) = connect(a).await?;
        let req = request(
            "POST",
            &authority,
            "/v1/agent/status",
            &a.token,
            Bytes::from(body),
        )?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the server answered {}", resp.status()))
        }
    };
    let result = sent.await;
    if result.is_err() {
        uses.unwritten(batch);
        crate::agent_grants::unreported(shared, grant_batch);
    }
    result
}
