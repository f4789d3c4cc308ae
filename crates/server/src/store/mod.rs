//! The control plane's store: one set of operations over two backends,
//! SQLite (embedded, the default) and PostgreSQL (several `veto server`
//! replicas sharing one database). Both pass the same conformance suite
//! (`tests/store.rs`).
//!
//! Every change is written together with its change-log entry, in one
//! transaction, and then announced: in-process for SQLite, with
//! `NOTIFY veto_changes` for PostgreSQL, so that every replica's agents
//! hear it (`Store::subscribe`).

mod chain;
mod grants;
mod pg;
mod pg_conn;
mod sqlite;

pub use chain::ChainCheck;
pub use grants::{GrantState, GrantUse};
use veto_audit::head::SignedHead;

use serde::Serialize;
use tokio::sync::broadcast;
pub use veto_control::{Change, OptOut, Target};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Shown with its causes: "error performing TLS handshake" alone
    /// would not say that the certificate was the trouble.
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    /// What was sent disagrees with what is stored.
    #[error("{0}")]
    Conflict(String),
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    #[error("the store's worker failed: {0}")]
    Join(String),
}

fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// One version of the policy. Versions are never edited or deleted; a
/// rollback pushes an old text again as a new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub version: i64,
    pub hash: String,
    pub text: String,
    pub actor: String,
    pub reason: String,
    /// Unix seconds.
    pub time: i64,
}

/// An agent as it last reported itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub name: String,
    pub env: Option<String>,
    pub version: Option<String>,
    pub policy_hash: Option<String>,
    /// Audit entries waiting in its spool.
    pub spool: i64,
    /// Unix seconds; `None` until it first reports.
    pub last_seen: Option<i64>,
}

/// A machine as the control plane keeps it; never its token, only hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub name: String,
    pub roles: Vec<String>,
    pub env: Option<String>,
    pub created: i64,
    pub expires: Option<i64>,
    pub idle_ttl: Option<i64>,
    pub last_used: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    pub hash: Vec<u8>,
    #[serde(skip)]
    pub old: Option<(Vec<u8>, i64)>,
}

/// One entry of an agent's audit chain, as it holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub kind: i64,
    pub body: String,
    pub prev: String,
    pub hash: String,
}

/// Where the store lives: `sqlite:PATH` or `postgres://…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl std::str::FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> Result<Location, String> {
        if let Some(p) = s.strip_prefix("sqlite:") {
            if p.is_empty() {
                return Err("sqlite: needs a path (sqlite:/var/lib/veto/control.db)".into());
            }
            return Ok(Location::Sqlite(p.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Location::Postgres(s.to_string()));
        }
        Err(format!(
            "`{s}`: a store is sqlite:PATH or postgres://USER@HOST/DB"
        ))
    }
}

#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(pg::Pg),
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token for an agent: shown once, stored as SHA-256.
pub(crate) fn new_token(prefix: &str) -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(format!(
        "{prefix}{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Dispatches to the backend: SQLite on a blocking thread, PostgreSQL
/// natively async.
macro_rules! dispatch {
    ($self:ident, $s:ident => $sqlite:expr, $p:ident => $pg:expr) => {
        match $self {
            Store::Sqlite($s) => {
                let $s = $s.clone();
                tokio::task::spawn_blocking(move || $sqlite)
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))?
            }
            Store::Postgres($p) => $pg,
        }
    };
}

impl Store {
    /// Opens the store and brings its schema up to date (versioned
    /// migrations, applied once even when replicas start together).
    pub async fn open(loc: &Location) -> Result<Store, StoreError> {
        Ok(match loc {
            Location::Sqlite(p) => {
                let p = p.clone();
                Store::Sqlite(
                    tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&p))
                        .await
                        .map_err(|e| StoreError::Join(e.to_string()))??,
                )
            }
            Location::Postgres(url) => Store::Postgres(pg::Pg::open(url).await?),
        })
    }

    /// Hears every change, from this process or (PostgreSQL) any replica.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        match self {
            Store::Sqlite(s) => s.changed.subscribe(),
            Store::Postgres(p) => p.changed.subscribe(),
        }
    }

    pub async fn policy_current(&self) -> Result<Option<PolicyVersion>, StoreError> {
        dispatch!(self, s => s.policy(None), p => p.policy(None).await)
    }

    pub async fn policy_version(&self, v: i64) -> Result<Option<PolicyVersion>, StoreError> {
        dispatch!(self, s => s.policy(Some(v)), p => p.policy(Some(v)).await)
    }

    /// Every version, newest first, without their texts.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        dispatch!(self, s => s.policy_versions(), p => p.policy_versions().await)
    }

    /// Stores a new version (the caller validated it) and logs the push.
    pub async fn policy_push(
        &self,
        text: String,
        hash: String,
        actor: String,
        reason: String,
        action: &'static str,
    ) -> Result<PolicyVersion, StoreError> {
        dispatch!(self,
            s => s.policy_push(&text, &hash, &actor, &reason, action),
            p => p.policy_push(&text, &hash, &actor, &reason, action).await)
    }

    /// Opt-outs not removed (expired ones too: see `OptOut::in_force`).
    pub async fn optouts(&self) -> Result<Vec<OptOut>, StoreError> {
        dispatch!(self, s => s.optouts(), p => p.optouts().await)
    }

    pub async fn optout_add(
        &self,
        target: Target,
        reason: String,
        expires: Option<i64>,
        actor: String,
    ) -> Result<OptOut, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::Invalid("an opt-out needs a reason".into()));
        }
        dispatch!(self,
            s => s.optout_add(&target, reason.trim(), expires, &actor),
            p => p.optout_add(&target, reason.trim(), expires, &actor).await)
    }

    pub async fn optout_remove(
        &self,
        id: u32,
        reason: String,
        actor: String,
    ) -> Result<OptOut, StoreError> {
        dispatch!(self,
            s => s.optout_remove(id, &reason, &actor),
            p => p.optout_remove(id, &reason, &actor).await)
    }

    /// Records a change made elsewhere (an agent enrolled, a machine).
    pub async fn record(
        &self,
        actor: String,
        action: String,
        reason: String,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self,
            s => s.record(&actor, &action, &reason, &before, &after),
            p => p.record(&actor, &action, &reason, &before, &after).await)
    }

    /// The change log, oldest first.
    pub async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        dispatch!(self, s => s.changes(), p => p.changes().await)
    }

    /// Enrolls an agent and returns its token (shown once).
    pub async fn agent_add(
        &self,
        name: String,
        env: Option<String>,
        actor: String,
    ) -> Result<String, StoreError> {
        let token = new_token("vagent_")?;
        let hash = token_hash(&token);
        dispatch!(self,
            s => s.agent_add(&name, env.as_deref(), &hash, &actor),
            p => p.agent_add(&name, env.as_deref(), &hash, &actor).await)?;
        Ok(token)
    }

    /// The agent a token belongs to.
    pub async fn agent_by_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        let hash = token_hash(token);
        dispatch!(self, s => s.agent_by_token(&hash), p => p.agent_by_token(&hash).await)
    }

    pub async fn agent_report(
        &self,
        name: String,
        version: String,
        policy_hash: Option<String>,
        spool: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self,
            s => s.agent_report(&name, &version, policy_hash.as_deref(), spool),
            p => p.agent_report(&name, &version, policy_hash.as_deref(), spool).await)
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        dispatch!(self, s => s.agents(), p => p.agents().await)
    }

    /// Registers a machine (a revoked one of that name is replaced) and
    /// returns its token, shown once.
    #[allow(clippy::too_many_arguments)]
    pub async fn machine_add(
        &self,
        name: String,
        roles: Vec<String>,
        env: Option<String>,
        ttl: Option<i64>,
        idle_ttl: Option<i64>,
        actor: String,
        reason: String,
    ) -> Result<String, StoreError> {
        veto_identity::validate_machine_name(&name)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let token =
            veto_identity::token::generate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let hash = veto_identity::token::hash(&token).to_vec();
        let now = unix_now();
        let m = Machine {
            name,
            roles,
            env,
            created: now,
            expires: ttl.map(|t| now.saturating_add(t)),
            idle_ttl,
            last_used: None,
            revoked_at: None,
            hash,
            old: None,
        };
        dispatch!(self, s => s.machine_add(&m, &actor, &reason), p => p.machine_add(&m, &actor, &reason).await)?;
        Ok(token)
    }

    /// A new token; the old one works for `overlap` seconds more.
    pub async fn machine_rotate(
        &self,
        name: String,
        overlap: i64,
        actor: String,
        reason: String,
    ) -> Result<String, StoreError> {
        let token =
            veto_identity::token::generate().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let hash = veto_identity::token::hash(&token).to_vec();
        let until = unix_now().saturating_add(overlap);
        dispatch!(self,
            s => s.machine_rotate(&name, &hash, until, &actor, &reason),
            p => p.machine_rotate(&name, &hash, until, &actor, &reason).await)?;
        Ok(token)
    }

    pub async fn machine_revoke(
        &self,
        name: String,
        actor: String,
        reason: String,
    ) -> Result<(), StoreError> {
        dispatch!(self,
            s => s.machine_revoke(&name, &actor, &reason),
            p => p.machine_revoke(&name, &actor, &reason).await)
    }

    /// Every machine (the live or latest registration of each name).
    pub async fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        dispatch!(self, s => s.machines(), p => p.machines().await)
    }

    /// Uses agents saw; never moves a last use back, announces nothing.
    pub async fn machine_uses(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        dispatch!(self, s => s.machine_uses(&uses), p => p.machine_uses(&uses).await)
    }

    /// Stores audit entries an agent shipped; entries it already has are
    /// ignored (a retried batch arrives once), but an entry that differs
    /// from the stored one of the same seq, or a batch that would leave a
    /// gap, is refused (`Conflict`): an agent whose trail was reset must be
    /// enrolled anew. Returns the agent's highest stored seq.
    ///
    /// The batch's chain is checked (`chain::links`), and the agent's
    /// signed head, when sent, against the one stored (`chain::head_ok`).
    pub async fn audit_ingest(
        &self,
        agent: String,
        entries: Vec<Entry>,
        head: Option<SignedHead>,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.audit_ingest(&agent, &entries, head.as_ref()), p => p.audit_ingest(&agent, &entries, head.as_ref()).await)
    }

    /// The agent's latest signed head.
    pub async fn audit_head(&self, agent: String) -> Result<Option<SignedHead>, StoreError> {
        dispatch!(self, s => s.audit_head(&agent), p => p.audit_head(&agent).await)
    }

    /// Walks the agent's stored chain and holds it to its signed head.
    pub async fn audit_verify(&self, agent: String) -> Result<ChainCheck, StoreError> {
        let head = self.audit_head(agent.clone()).await?;
        chain::walk(agent.clone(), head, |after| {
            self.audit_entries(agent.clone(), after, 5_000)
        })
        .await
    }

    /// An agent's entries after `after`, in order, at most `limit`.
    pub async fn audit_entries(
        &self,
        agent: String,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        dispatch!(self, s => s.audit_entries(&agent, after, limit), p => p.audit_entries(&agent, after, limit).await)
    }
}

/// A batch must start at most one past what is stored.
impl Store {
    /// Grant uses agents reported (merged: the latest use counts).
    pub async fn grant_uses(&self, uses: Vec<GrantUse>) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.grant_uses(&uses), p => p.grant_uses(&uses).await)
    }

    /// Every grant use and when each expiring rule was first pushed.
    pub async fn grants(&self) -> Result<GrantState, StoreError> {
        dispatch!(self, s => s.grants(), p => p.grants().await)
    }

    /// Notes expiring rules of a policy just pushed: a rule id seen for
    /// the first time starts its idle clock at `at`.
    pub async fn grant_rules_loaded(&self, rules: Vec<String>, at: i64) -> Result<(), StoreError> {
        if rules.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.grant_rules_loaded(&rules, at), p => p.grant_rules_loaded(&rules, at).await)
    }

    /// Renews a grant: it counts as used now. Logged with who and why, and
    /// announced, so agents hear it at once. Returns the new last use.
    pub async fn grant_renew(
        &self,
        rule: String,
        machine: String,
        actor: String,
        reason: String,
    ) -> Result<i64, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::Invalid("a renewal needs a reason".into()));
        }
        dispatch!(self,
            s => s.grant_renew(&rule, &machine, &actor, reason.trim()),
            p => p.grant_renew(&rule, &machine, &actor, reason.trim()).await)
    }

    /// Logs a lapsed grant in the change log, once across every replica:
    /// true if this call logged it.
    pub async fn grant_expired(
        &self,
        lapse: &veto_identity::review::Lapse,
    ) -> Result<bool, StoreError> {
        let fmt = veto_identity::format_time;
        let reason = lapse.reason();
        let detail = serde_json::json!({
            "rule": lapse.rule,
            "machine": lapse.machine,
            "last_used": lapse.last_used.map(fmt),
            "expired_at": fmt(lapse.expired_at()),
        });
        let (rule, machine, since) = (lapse.rule.clone(), lapse.machine.clone(), lapse.since);
        dispatch!(self,
            s => s.grant_expired(&rule, &machine, since, &reason, &detail),
            p => p.grant_expired(&rule, &machine, since, &reason, &detail).await)
    }
}

pub(crate) fn no_gap(stored_max: Option<i64>, entries: &[Entry]) -> Result<(), StoreError> {
    let next = stored_max.unwrap_or(0) + 1;
    match entries.iter().map(|e| e.seq).min() {
        Some(first) if first > next => Err(StoreError::Conflict(format!(
            "entries {next} to {} are missing before this batch",
            first - 1
        ))),
        _ => Ok(()),
    }
}

/// An entry sent again must be the one stored.
pub(crate) fn same(e: &Entry, stored_hash: &str) -> Result<(), StoreError> {
    if e.hash == stored_hash {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "entry {} differs from the one stored for this agent (was its audit trail reset? enroll it anew)",
            e.seq
        )))
    }
}

/// The migrations, in order; each runs once, recorded in
/// `schema_migrations`. The SQL is written for both backends (types each
/// accepts: INTEGER/BIGINT, TEXT, BLOB/BYTEA via `{blob}`).
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE policies (
        version {serial},
        hash    TEXT NOT NULL,
        text    TEXT NOT NULL,
        actor   TEXT NOT NULL,
        reason  TEXT NOT NULL,
        time    BIGINT NOT NULL
    );
    CREATE TABLE optouts (
        id      {serial},
        kind    TEXT NOT NULL,
        value   TEXT NOT NULL,
        reason  TEXT NOT NULL,
        created BIGINT NOT NULL,
        expires BIGINT,
        actor   TEXT NOT NULL,
        removed BIGINT
    );
    CREATE TABLE changes (
        seq    {serial},
        time   BIGINT NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        before TEXT NOT NULL,
        after  TEXT NOT NULL
    );
    CREATE TABLE agents (
        name        TEXT PRIMARY KEY,
        token_hash  {blob} NOT NULL,
        env         TEXT,
        version     TEXT,
        policy_hash TEXT,
        spool       BIGINT NOT NULL DEFAULT 0,
        last_seen   BIGINT
    );
    CREATE UNIQUE INDEX agents_token ON agents(token_hash);
    CREATE TABLE audit (
        agent TEXT NOT NULL,
        seq   BIGINT NOT NULL,
        kind  BIGINT NOT NULL,
        body  TEXT NOT NULL,
        prev  TEXT NOT NULL,
        hash  TEXT NOT NULL,
        PRIMARY KEY (agent, seq)
    );",
    ),
    (
        2,
        "CREATE TABLE machines (
        name       TEXT PRIMARY KEY,
        token_hash {blob} NOT NULL,
        roles      TEXT NOT NULL,
        env        TEXT,
        created    BIGINT NOT NULL,
        expires    BIGINT,
        idle_ttl   BIGINT,
        last_used  BIGINT,
        revoked_at BIGINT,
        old_hash   {blob},
        old_until  BIGINT
    );",
    ),
    (3, grants::MIGRATION),
    (4, chain::MIGRATION),
];
