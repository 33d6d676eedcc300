use std::path::Path;

use leanlm_core::{CacheOutcome, CheckKind, Origin, Usage};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{CallFilter, CallRecord, CallStatus, CallSummary, SpendBy, SpendRow, StoreError};

/// Versioned migrations; `PRAGMA user_version` holds how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    started_at_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    client_format TEXT NOT NULL,
    client_key_id TEXT,
    task TEXT,
    requested_model TEXT NOT NULL,
    served_model TEXT,
    provider TEXT,
    upstream_model TEXT,
    stream INTEGER NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error TEXT,
    input_tokens INTEGER,
    cached_input_tokens INTEGER,
    cache_write_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_usd REAL,
    cost_estimated INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    overhead_us REAL,
    attempts INTEGER NOT NULL,
    request_body TEXT,
    response_body TEXT
);
CREATE INDEX calls_started ON calls(started_at_ms);
CREATE INDEX calls_model ON calls(served_model, started_at_ms);
CREATE INDEX calls_task ON calls(task, started_at_ms);
"#,
    r#"
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    origin TEXT NOT NULL,
    renamed INTEGER NOT NULL DEFAULT 0,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
ALTER TABLE calls ADD COLUMN request_hash TEXT;
ALTER TABLE calls ADD COLUMN output_hash TEXT;
"#,
    r#"
ALTER TABLE calls ADD COLUMN cache TEXT;
ALTER TABLE calls ADD COLUMN cost_avoided_usd REAL;
"#,
    r#"
CREATE TABLE validations (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    candidate TEXT NOT NULL,
    passed INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX validations_task ON validations(task, created_at_ms);
-- Calls a learned replacement was trained on: never used to validate it.
CREATE TABLE training_calls (
    replacement TEXT NOT NULL,
    call_id TEXT NOT NULL,
    PRIMARY KEY (replacement, call_id)
);
"#,
    r#"
-- One policy per task, its latest version as JSON; every change is in policy_audit.
CREATE TABLE policies (
    task TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    policy TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE policy_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    version INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    reason TEXT,
    evidence TEXT
);
CREATE INDEX policy_audit_task ON policy_audit(task, at_ms);
-- Online evidence: shadow and audit answers scored against each other, and replacement failures.
CREATE TABLE online_scores (
    task TEXT NOT NULL,
    version INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    agreed INTEGER,
    error INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    call_id TEXT,
    note TEXT
);
CREATE INDEX online_scores_policy ON online_scores(task, version);
-- Running totals per policy version, added to by every instance: reading evidence costs one row.
CREATE TABLE online_totals (
    task TEXT NOT NULL,
    version INTEGER NOT NULL,
    scored INTEGER NOT NULL DEFAULT 0,
    agreed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (task, version)
);
ALTER TABLE calls ADD COLUMN policy_version INTEGER;
ALTER TABLE calls ADD COLUMN policy_role TEXT;
"#,
    r#"
-- Each scored call of a validation: the training data of learned routers.
CREATE TABLE validation_outcomes (
    validation TEXT NOT NULL,
    call_id TEXT NOT NULL,
    agreed INTEGER NOT NULL,
    hard TEXT,
    PRIMARY KEY (validation, call_id)
);
-- Learned routers, one per task and replacement SPEC, as JSON.
CREATE TABLE routers (
    task TEXT NOT NULL,
    replacement TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (task, replacement)
);
"#,
    r#"
-- The semantic cache's verified would-be hits: the evidence its per-task thresholds are read from.
CREATE TABLE semantic_evidence (
    task TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    similarity REAL NOT NULL,
    agreed INTEGER NOT NULL,
    call_id TEXT,
    note TEXT
);
CREATE INDEX semantic_evidence_task ON semantic_evidence (task, at_ms);
"#,
    r#"
-- The model that answered for the replacement in a shadow or audit check: routers learn from these.
ALTER TABLE online_scores ADD COLUMN model TEXT;
"#,
    r#"
-- A cascade's stages before the served answer, as JSON: model, cost, outcome, score.
ALTER TABLE calls ADD COLUMN stages TEXT;
"#,
    r#"
-- The semantic cache's entries, so a restarted gateway keeps its cache (vectors as little-endian f32).
CREATE TABLE semantic_entries (
    partition BLOB NOT NULL,
    task TEXT NOT NULL,
    embedding TEXT NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    last TEXT NOT NULL,
    context TEXT NOT NULL,
    last_vector BLOB NOT NULL,
    context_vector BLOB,
    body BLOB NOT NULL,
    cost_usd REAL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL
);
CREATE INDEX semantic_entries_partition ON semantic_entries (partition, stored_at_ms);
CREATE INDEX semantic_entries_expiry ON semantic_entries (expires_at_ms);
"#,
    r#"
-- Requests to drop the semantic cache's entries of a task (NULL: of all): every gateway on the store applies
-- the ones after those it has seen.
CREATE TABLE cache_clears (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT,
    at_ms INTEGER NOT NULL
);
"#,
    r#"
-- Entries get ids that never repeat, so gateways sharing the store pick up each other's new entries by id (a
-- plain rowid is reused once the newest rows are deleted).
CREATE TABLE semantic_entries_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    partition BLOB NOT NULL,
    task TEXT NOT NULL,
    embedding TEXT NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    last TEXT NOT NULL,
    context TEXT NOT NULL,
    last_vector BLOB NOT NULL,
    context_vector BLOB,
    body BLOB NOT NULL,
    cost_usd REAL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL
);
INSERT INTO semantic_entries_v2 (partition, task, embedding, stored_at_ms, expires_at_ms, last, context, last_vector,
    context_vector, body, cost_usd, model, provider)
    SELECT partition, task, embedding, stored_at_ms, expires_at_ms, last, context, last_vector, context_vector, body,
        cost_usd, model, provider FROM semantic_entries ORDER BY rowid;
DROP TABLE semantic_entries;
ALTER TABLE semantic_entries_v2 RENAME TO semantic_entries;
CREATE INDEX semantic_entries_partition ON semantic_entries (partition, stored_at_ms);
CREATE INDEX semantic_entries_expiry ON semantic_entries (expires_at_ms);
"#,
    r#"
-- The part of an entry's context that is not the conversation (system prompt, prefill): a last turn that
-- stands on its own matches under the same preamble whatever the conversation before it. NULL: not known.
ALTER TABLE semantic_entries ADD COLUMN preamble TEXT;
"#,
    r#"
-- The scorer of each online check, so a router trains on one scorer's outcomes; the model its cost paid for.
ALTER TABLE online_scores ADD COLUMN scorer TEXT;
ALTER TABLE online_scores ADD COLUMN billed_model TEXT;
"#,
    r#"
-- What the semantic cache's learned verifier measured about each verified would-be hit (a JSON array of
-- numbers), so a task's verifier is fitted on its own evidence. NULL: measured before it was kept.
ALTER TABLE semantic_evidence ADD COLUMN features TEXT;
"#,
    r#"
-- Templates discovery mined (variables as ⟨*⟩), so a restart or another instance knows them from the first
-- call. `grp` is the template group's 64-bit hash, stored as its signed twin; `absorbs` a JSON array of ids.
CREATE TABLE mined_templates (
    grp INTEGER NOT NULL,
    text TEXT NOT NULL,
    absorbs TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, text)
);
"#,
    r#"
-- Secrets the gateways sharing this store agree on, made by the first that needs one (the key of the HMAC
-- that turns client API keys into the ids calls are logged under).
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#,
    r#"
-- Prices imported from a price list (`leanlm prices --import`), over the bundled table: one entry per model
-- (JSON in the price table's own fields), with the list's date and where it came from.
CREATE TABLE prices (
    model TEXT PRIMARY KEY,
    entry TEXT NOT NULL,
    as_of TEXT NOT NULL,
    source TEXT NOT NULL,
    imported_at_ms INTEGER NOT NULL
);
"#,
];

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// A short, stable content hash (for equality only).
fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The hash of a logged answer's text, so equal answers compare equal whatever their ids and timestamps.
fn output_hash(response_body: &str) -> Option<String> {
    let text = leanlm_wire::output_text_of(response_body)?;
    Some(short_hash(text.as_bytes()))
}

/// The embedded SQLite store.
pub struct Store {
    conn: Connection,
    /// (template, absorbed task) pairs this handle has folded, so later calls carrying them cost nothing.
    folded: std::collections::HashSet<(String, String)>,
}

/// Folded pairs remembered per handle; past this the memory is reset (a pair folded again changes nothing).
const FOLDED_MEMORY: usize = 10_000;

impl Store {
    /// Opens (creating if needed) the store named by a URL: `sqlite://PATH`, `sqlite::memory:` or a bare path.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let path = sqlite_path(url)?;
        let conn = if path == ":memory:" {
            Connection::open_in_memory()
        } else {
            Connection::open(Path::new(path))
        }
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut store = Store {
            conn,
            folded: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// A write transaction that takes the write lock at its start. SQLite's default (deferred) one starts as a
    /// reader and upgrades at its first write; if another connection (a gateway's call-log writer, a CLI
    /// command) committed in between, the upgrade fails at once with "database is locked", whatever the busy
    /// timeout. Taken up front, the lock is waited for (up to the busy timeout) instead.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: current,
                supported: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| StoreError::Migrate { version, source })?;
            tx.execute_batch(sql)
                .map_err(|source| StoreError::Migrate { version, source })?;
            tx.pragma_update(None, "user_version", version as i64)
                .map_err(|source| StoreError::Migrate { version, source })?;
            tx.commit().map_err(|source| StoreError::Migrate { version, source })?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize)
    }

    /// Inserts records in one transaction, and records the tasks they belong to.
    pub fn insert_batch(&mut self, records: &[CallRecord]) -> Result<(), StoreError> {
        // Taken out while the transaction borrows the store; a failed batch only forgets what was folded.
        let mut done = std::mem::take(&mut self.folded);
        let tx = self.write()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO tasks (id, name, origin, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET
                    first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                    last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?;
            // One upsert per task per batch, spanning the batch's first and last call of it.
            let mut seen: std::collections::HashMap<&str, (&crate::TaskRef, i64, i64)> = Default::default();
            for r in records {
                if let Some(t) = &r.task {
                    let e = seen
                        .entry(t.id.as_str())
                        .or_insert((t, r.started_at_ms, r.started_at_ms));
                    e.1 = e.1.min(r.started_at_ms);
                    e.2 = e.2.max(r.started_at_ms);
                }
            }
            for (t, first, last) in seen.values() {
                upsert.execute(params![t.id, t.name, t.origin.as_str(), first, last])?;
            }
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO calls (id, started_at_ms, endpoint, client_format, client_key_id, task,
                    requested_model, served_model, provider, upstream_model, stream, status, http_status, error,
                    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                    cost_usd, cost_estimated, latency_ms, ttft_ms, overhead_us, attempts, request_body, response_body,
                    request_hash, output_hash, cache, cost_avoided_usd, policy_version, policy_role, stages)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                    ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)",
            )?;
            for r in records {
                let u = r.usage;
                stmt.execute(params![
                    r.id,
                    r.started_at_ms,
                    r.endpoint,
                    r.client_format.as_str(),
                    r.client_key_id,
                    r.task.as_ref().map(|t| &t.id),
                    r.requested_model,
                    r.served_model,
                    r.provider,
                    r.upstream_model,
                    r.stream,
                    r.status.as_str(),
                    r.http_status,
                    r.error,
                    u.map(|u| u.input_tokens as i64),
                    u.map(|u| u.cached_input_tokens as i64),
                    u.map(|u| u.cache_write_tokens as i64),
                    u.map(|u| u.output_tokens as i64),
                    u.map(|u| u.reasoning_tokens as i64),
                    r.cost_usd,
                    r.cost_estimated,
                    r.latency_ms,
                    r.ttft_ms,
                    r.overhead_us,
                    r.attempts,
                    r.request_body,
                    r.response_body,
                    r.request_body.as_deref().map(|b| short_hash(b.as_bytes())),
                    r.response_body.as_deref().and_then(output_hash),
                    r.cache.map(CacheOutcome::as_str),
                    r.cost_avoided_usd,
                    r.policy.as_ref().map(|p| p.version as i64),
                    r.policy.as_ref().map(|p| p.role.as_str()),
                    (!r.stages.is_empty())
                        .then(|| serde_json::to_string(&r.stages).ok())
                        .flatten(),
                ])?;
            }
        }
        let folded = fold_absorbed(&tx, records, &done)?;
        tx.commit()?;
        if done.len() + folded.len() > FOLDED_MEMORY {
            done.clear();
        }
        done.extend(folded);
        self.folded = done;
        Ok(())
    }

    /// Recent calls, newest first.
    pub fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.started_at_ms, c.endpoint, c.requested_model, c.served_model, c.provider, c.stream,
                    c.status, c.http_status, c.input_tokens, c.cached_input_tokens, c.cache_write_tokens,
                    c.output_tokens, c.cost_usd, c.cost_estimated, c.latency_ms, c.error, c.task, c.cache, t.name,
                    c.policy_role
             FROM calls c LEFT JOIN tasks t ON t.id = c.task
             WHERE (?1 IS NULL OR c.requested_model = ?1 OR c.served_model = ?1)
               AND (?2 IS NULL OR c.status = ?2)
               AND (?3 IS NULL OR c.started_at_ms >= ?3)
               AND (?5 IS NULL OR c.task = ?5)
               AND (?6 IS NULL OR c.started_at_ms < ?6)
               AND (?7 IS NULL OR substr(c.id, 1, length(?7)) = ?7)
               AND (?8 IS NULL OR (?8 = 'none' AND c.policy_version IS NULL)
                    OR (?8 = 'any' AND c.policy_version IS NOT NULL) OR c.policy_role = ?8)
               AND (?9 IS NULL OR c.cache = ?9)
             ORDER BY c.started_at_ms DESC, c.id DESC
             LIMIT ?4",
        )?;
        let policy = filter.policy.map(|p| match p {
            crate::PolicyMatch::None => "none",
            crate::PolicyMatch::Any => "any",
            crate::PolicyMatch::Role(r) => r.as_str(),
        });
        let limit = if filter.limit == 0 { 50 } else { filter.limit } as i64;
        let rows = stmt.query_map(
            params![
                filter.model,
                filter.status.map(CallStatus::as_str),
                filter.since_ms,
                limit,
                filter.task,
                filter.until_ms,
                filter.id_prefix,
                policy,
                filter.cache.map(leanlm_core::CacheOutcome::as_str),
            ],
            |r| {
                let input: Option<i64> = r.get(9)?;
                let cached: Option<i64> = r.get(10)?;
                let write: Option<i64> = r.get(11)?;
                let status: String = r.get(7)?;
                Ok(CallSummary {
                    id: r.get(0)?,
                    task: r.get(17)?,
                    task_name: r.get(19)?,
                    policy_role: named_opt(r, 20)?,
                    cache: named_opt(r, 18)?,
                    started_at_ms: r.get(1)?,
                    endpoint: r.get(2)?,
                    requested_model: r.get(3)?,
                    served_model: r.get(4)?,
                    provider: r.get(5)?,
                    stream: r.get(6)?,
                    status: status.parse().unwrap_or(CallStatus::UpstreamError),
                    http_status: r.get(8)?,
                    input_tokens: input.map(|i| (i + cached.unwrap_or(0) + write.unwrap_or(0)) as u64),
                    output_tokens: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
                    cost_usd: r.get(13)?,
                    cost_estimated: r.get(14)?,
                    latency_ms: r.get(15)?,
                    error: r.get(16)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One call with everything recorded about it.
    pub fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, started_at_ms, endpoint, client_format, client_key_id, task, requested_model, served_model,
                    provider, upstream_model, stream, status, http_status, error, input_tokens, cached_input_tokens,
                    cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, cost_estimated, latency_ms,
                    ttft_ms, overhead_us, attempts, request_body, response_body, t.name, t.origin, cache,
                    cost_avoided_usd, policy_version, policy_role, stages
             FROM calls c LEFT JOIN tasks t ON t.id = c.task WHERE c.id = ?1",
        )?;
        let rec = stmt
            .query_row([id], |r| {
                let status: String = r.get(11)?;
                let input: Option<i64> = r.get(14)?;
                let usage = match input {
                    None => None,
                    Some(input) => Some(Usage {
                        input_tokens: input as u64,
                        cached_input_tokens: r.get::<_, Option<i64>>(15)?.unwrap_or(0) as u64,
                        cache_write_tokens: r.get::<_, Option<i64>>(16)?.unwrap_or(0) as u64,
                        output_tokens: r.get::<_, Option<i64>>(17)?.unwrap_or(0) as u64,
                        reasoning_tokens: r.get::<_, Option<i64>>(18)?.unwrap_or(0) as u64,
                    }),
                };
                Ok(CallRecord {
                    id: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    endpoint: r.get(2)?,
                    client_format: named(r, 3)?,
                    client_key_id: r.get(4)?,
                    task: match (r.get::<_, Option<String>>(5)?, r.get::<_, Option<String>>(27)?) {
                        (Some(id), name) => Some(crate::TaskRef {
                            name: name.unwrap_or_else(|| id.clone()),
                            id,
                            origin: named_opt(r, 28)?.unwrap_or(Origin::Template),
                            absorbs: Default::default(),
                        }),
                        (None, _) => None,
                    },
                    requested_model: r.get(6)?,
                    served_model: r.get(7)?,
                    provider: r.get(8)?,
                    upstream_model: r.get(9)?,
                    stream: r.get(10)?,
                    status: status.parse().unwrap_or(CallStatus::UpstreamError),
                    http_status: r.get(12)?,
                    error: r.get(13)?,
                    usage,
                    cost_usd: r.get(19)?,
                    cost_estimated: r.get(20)?,
                    latency_ms: r.get(21)?,
                    ttft_ms: r.get(22)?,
                    overhead_us: r.get(23)?,
                    attempts: r.get(24)?,
                    request_body: r.get(25)?,
                    response_body: r.get(26)?,
                    cache: named_opt(r, 29)?,
                    cost_avoided_usd: r.get(30)?,
                    policy: match (r.get::<_, Option<i64>>(31)?, named_opt(r, 32)?) {
                        (Some(version), Some(role)) => Some(crate::PolicyTag {
                            version: version as u64,
                            role,
                        }),
                        _ => None,
                    },
                    stages: r
                        .get::<_, Option<String>>(33)?
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or_default(),
                })
            })
            .optional()?;
        Ok(rec)
    }

    /// Spend grouped by served model or by UTC day, since a point in time.
    pub fn spend(&self, by: SpendBy, span: impl Into<crate::Span>) -> Result<Vec<SpendRow>, StoreError> {
        let span = span.into();
        let (key, order) = match by {
            SpendBy::Model => ("model", "cost DESC, key"),
            SpendBy::Purpose => ("purpose", "cost DESC, key"),
            SpendBy::Day => ("strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')", "key"),
            SpendBy::Task => ("COALESCE(task, '-')", "cost DESC, key"),
            // Calls under a policy: task, version and role, e.g. `t_1a2b v2 replacement`.
            SpendBy::Policy => ("policy", "key"),
        };
        // Every dollar LeanLM spends: the application's calls, the online checks of deployments (shadow
        // answers, audits: the cost of the answer each paid for), and validations (by purpose and model, from
        // their reports).
        let sql = format!(
            "WITH spend AS (
                SELECT started_at_ms AS at_ms, COALESCE(served_model, requested_model) AS model, task,
                    CASE WHEN policy_version IS NULL THEN '-'
                        ELSE task || ' v' || policy_version || ' ' || policy_role END AS policy,
                    'traffic' AS purpose, 1 AS calls, input_tokens + cache_write_tokens AS input,
                    cached_input_tokens AS cached, output_tokens AS output, cost_usd AS cost,
                    cost_estimated AS estimated, cost_avoided_usd AS avoided
                FROM calls
                UNION ALL
                SELECT at_ms, COALESCE(billed_model, model, '-'), task, task || ' v' || version || ' ' || kind,
                    kind, 1, NULL, NULL, NULL, cost_usd, 0, NULL
                FROM online_scores WHERE kind IN ('shadow', 'audit') AND cost_usd IS NOT NULL
                UNION ALL
                SELECT v.created_at_ms, json_extract(e.value, '$.model'), v.task, '-',
                    json_extract(e.value, '$.purpose'), json_extract(e.value, '$.calls'), NULL, NULL, NULL,
                    json_extract(e.value, '$.usd'), 0, NULL
                FROM validations v, json_each(v.report, '$.spend') e
            )
            SELECT {key} AS key, COALESCE(SUM(calls), 0), COALESCE(SUM(input), 0), COALESCE(SUM(cached), 0),
                COALESCE(SUM(output), 0), COALESCE(SUM(cost), 0.0) AS cost, COALESCE(SUM(estimated), 0),
                COALESCE(SUM(avoided), 0.0)
            FROM spend WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR at_ms < ?2)
            GROUP BY key ORDER BY {order}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([span.since_ms, span.until_ms], |r| {
            Ok(SpendRow {
                key: r.get(0)?,
                calls: r.get::<_, i64>(1)? as u64,
                input_tokens: r.get::<_, i64>(2)? as u64,
                cached_input_tokens: r.get::<_, i64>(3)? as u64,
                output_tokens: r.get::<_, i64>(4)? as u64,
                cost_usd: r.get(5)?,
                estimated_calls: r.get::<_, i64>(6)? as u64,
                cost_avoided_usd: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The calls a replacement or a cache served in a window, with what they cost and what the reference
    /// would have: `would_have_usd` where an audit re-asked the reference for that very call (exact), and
    /// the cache's own `cost_avoided_usd` for hits. Oldest first.
    pub fn served_instead(&self, span: crate::Span) -> Result<Vec<crate::ServedInstead>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.started_at_ms, c.task, c.requested_model, COALESCE(c.served_model, c.requested_model), c.cache,
                    COALESCE(c.input_tokens, 0) + COALESCE(c.cached_input_tokens, 0) + COALESCE(c.cache_write_tokens, 0),
                    c.output_tokens, COALESCE(c.cost_usd, 0.0), c.cost_avoided_usd, a.audited
             FROM calls c
             LEFT JOIN (SELECT call_id, MAX(cost_usd) AS audited FROM online_scores
                        WHERE kind = 'audit' AND call_id IS NOT NULL GROUP BY call_id) a ON a.call_id = c.id
             WHERE c.status = 'ok' AND (c.policy_role = 'replacement' OR c.cache IN ('hit', 'semantic-hit'))
               AND (?1 IS NULL OR c.started_at_ms >= ?1) AND (?2 IS NULL OR c.started_at_ms < ?2)
             ORDER BY c.started_at_ms",
        )?;
        let rows = stmt.query_map([span.since_ms, span.until_ms], |r| {
            Ok(crate::ServedInstead {
                at_ms: r.get(0)?,
                task: r.get(1)?,
                reference_model: r.get(2)?,
                served_model: r.get(3)?,
                cache: named_opt(r, 4)?,
                input_tokens: r.get::<_, i64>(5)?.max(0) as u64,
                output_tokens: r.get::<_, Option<i64>>(6)?.map(|t| t.max(0) as u64),
                cost_usd: r.get(7)?,
                cost_avoided_usd: r.get(8)?,
                audited_reference_usd: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each task's mean answer length from its reference (no policy's replacement, no cache hit) since a
    /// point in time: what a replacement-served call's reference answer is estimated at when no audit asked.
    pub fn reference_output_tokens(&self, since_ms: i64) -> Result<std::collections::HashMap<String, f64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task, AVG(output_tokens) FROM calls
             WHERE task IS NOT NULL AND status = 'ok' AND output_tokens IS NOT NULL AND started_at_ms >= ?1
               AND (policy_role IS NULL OR policy_role = 'reference') AND (cache IS NULL OR cache IN ('miss', 'bypass'))
             GROUP BY task",
        )?;
        let rows = stmt.query_map([since_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every task's name by its id.
    pub fn task_names(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT id, name FROM tasks")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the first call was logged, if any.
    pub fn first_call_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT MIN(started_at_ms) FROM calls", [], |r| r.get(0))?)
    }

    /// The application's calls in a window, counted and priced per bucket of `bucket_ms` (UTC-aligned) and
    /// per key, oldest first. Only buckets with calls appear.
    pub fn series(
        &self,
        by: crate::SeriesBy,
        span: crate::Span,
        bucket_ms: i64,
    ) -> Result<Vec<crate::SeriesPoint>, StoreError> {
        let key = match by {
            crate::SeriesBy::Model => "COALESCE(served_model, requested_model)",
            crate::SeriesBy::Task => "COALESCE(task, '-')",
            crate::SeriesBy::Cache => "COALESCE(cache, '-')",
        };
        let sql = format!(
            "SELECT (started_at_ms / ?3) * ?3 AS at, {key} AS key, COUNT(*), COALESCE(SUM(cost_usd), 0.0),
                    COALESCE(SUM(cost_avoided_usd), 0.0)
             FROM calls WHERE (?1 IS NULL OR started_at_ms >= ?1) AND (?2 IS NULL OR started_at_ms < ?2)
             GROUP BY at, key ORDER BY at, key"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![span.since_ms, span.until_ms, bucket_ms.max(1)], |r| {
            Ok(crate::SeriesPoint {
                at_ms: r.get(0)?,
                key: r.get(1)?,
                calls: r.get::<_, i64>(2)? as u64,
                cost_usd: r.get(3)?,
                cost_avoided_usd: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest `limit` policy changes before `until_ms`, oldest first: what a chart of stages over time
    /// replays (changes before its window set the stages it starts from).
    pub fn policy_changes(&self, until_ms: Option<i64>, limit: usize) -> Result<Vec<crate::AuditRow>, StoreError> {
        let span = crate::Span {
            since_ms: None,
            until_ms,
        };
        let mut rows = self.policy_log(None, span, limit)?;
        rows.reverse();
        Ok(rows)
    }
}

/// A semantic-cache entry from a row whose first 13 columns are the table's, in order; `None` when it does not
/// decode (a vector of a broken length).
fn semantic_entry(r: &rusqlite::Row) -> rusqlite::Result<Option<crate::SemanticEntry>> {
    let partition: Vec<u8> = r.get(0)?;
    let last_vector: Vec<u8> = r.get(7)?;
    let context_vector: Option<Vec<u8>> = r.get(8)?;
    let decoded = (
        <[u8; 32]>::try_from(partition.as_slice()).ok(),
        vector_of(&last_vector),
        context_vector.as_deref().map(vector_of),
    );
    let (Some(partition), Some(last_vector), context_vector) = decoded else {
        return Ok(None);
    };
    let context_vector = match context_vector {
        None => None,
        Some(Some(v)) => Some(v),
        Some(None) => return Ok(None),
    };
    Ok(Some(crate::SemanticEntry {
        partition,
        task_id: r.get(1)?,
        embedding: r.get(2)?,
        stored_at_ms: r.get(3)?,
        expires_at_ms: r.get(4)?,
        last: r.get(5)?,
        context: r.get(6)?,
        last_vector,
        context_vector,
        body: r.get(9)?,
        cost_usd: r.get(10)?,
        model: r.get(11)?,
        provider: r.get(12)?,
        preamble: r.get(13)?,
    }))
}

/// Deletes the semantic-cache entries of a task (?1; NULL: of every task) stored at or before ?2.
const DELETE_SEMANTIC_ENTRIES: &str =
    "DELETE FROM semantic_entries WHERE (?1 IS NULL OR task = ?1) AND stored_at_ms <= ?2";

impl Store {
    /// A task by id, or by name when exactly one task has it.
    pub fn find_task(&self, key: &str) -> Result<crate::TaskLookup, StoreError> {
        let tasks = self.tasks(None)?;
        if let Some(t) = tasks.iter().find(|t| t.id == key) {
            return Ok(crate::TaskLookup::Found(t.clone()));
        }
        let mut named = tasks.into_iter().filter(|t| t.name == key);
        Ok(match (named.next(), named.count()) {
            (None, _) => crate::TaskLookup::Missing,
            (Some(t), 0) => crate::TaskLookup::Found(t),
            (Some(_), more) => crate::TaskLookup::Ambiguous(more + 1),
        })
    }

    /// Every task with its activity in a window (a task with no calls in it too), most expensive first.
    pub fn tasks(&self, span: impl Into<crate::Span>) -> Result<Vec<crate::TaskRow>, StoreError> {
        let span = span.into();
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.id, t.name, t.origin, t.renamed, t.first_seen_ms, t.last_seen_ms,
                    COUNT(c.id), COALESCE(SUM(c.cost_usd), 0.0) AS cost
             FROM tasks t LEFT JOIN calls c ON c.task = t.id AND (?1 IS NULL OR c.started_at_ms >= ?1)
                 AND (?2 IS NULL OR c.started_at_ms < ?2)
             GROUP BY t.id ORDER BY cost DESC, t.id",
        )?;
        let rows = stmt.query_map([span.since_ms, span.until_ms], |r| {
            Ok(crate::TaskRow {
                id: r.get(0)?,
                name: r.get(1)?,
                origin: named(r, 2)?,
                renamed: r.get(3)?,
                first_seen_ms: r.get(4)?,
                last_seen_ms: r.get(5)?,
                calls: r.get::<_, i64>(6)? as u64,
                cost_usd: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Gives a task a name of the user's choosing; `false` if there is no such task.
    pub fn rename_task(&self, id: &str, name: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE tasks SET name = ?2, renamed = 1 WHERE id = ?1",
            params![id, name],
        )?;
        Ok(n > 0)
    }

    /// The numbers of every call of a task since a point in time, oldest first.
    pub fn task_stats(&self, id: &str, span: impl Into<crate::Span>) -> Result<Vec<crate::CallStats>, StoreError> {
        let span = span.into();
        let mut stmt = self.conn.prepare_cached(
            "SELECT started_at_ms, served_model, status, input_tokens, cached_input_tokens, cache_write_tokens,
                    output_tokens, cost_usd, latency_ms, request_hash, output_hash
             FROM calls WHERE task = ?1 AND (?2 IS NULL OR started_at_ms >= ?2)
               AND (?3 IS NULL OR started_at_ms < ?3) ORDER BY started_at_ms",
        )?;
        let rows = stmt.query_map(params![id, span.since_ms, span.until_ms], |r| {
            let input: Option<i64> = r.get(3)?;
            let status: String = r.get(2)?;
            Ok(crate::CallStats {
                started_at_ms: r.get(0)?,
                served_model: r.get(1)?,
                status: status.parse().unwrap_or(CallStatus::UpstreamError),
                input_tokens: input.map(|i| {
                    (i + r.get::<_, Option<i64>>(4).ok().flatten().unwrap_or(0)
                        + r.get::<_, Option<i64>>(5).ok().flatten().unwrap_or(0)) as u64
                }),
                output_tokens: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                cost_usd: r.get(7)?,
                latency_ms: r.get(8)?,
                request_hash: r.get(9)?,
                output_hash: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ids of a task's most recent successful calls, for samples and typing.
    pub fn task_sample_ids(&self, id: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM calls WHERE task = ?1 AND status = 'ok' ORDER BY started_at_ms DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![id, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// A task's calls that a validation can replay, as (start time, id), oldest first: successful chat calls
    /// with both bodies logged, not used to train `replacement`, and answered by the reference itself. Their
    /// answers are what a candidate is judged against, so a call a policy's replacement served (in a canary,
    /// live, or a stage later rolled back), a cache hit, or a fallback model's answer is never one: judged
    /// against a former replacement, a candidate inherits its errors, or its agreement with them.
    pub fn replayable_calls(&self, task: &str, replacement: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT started_at_ms, id FROM calls c
             WHERE task = ?1 AND status = 'ok' AND endpoint != 'embeddings'
               AND request_body IS NOT NULL AND response_body IS NOT NULL
               AND (policy_role IS NULL OR policy_role = 'reference')
               AND (cache IS NULL OR cache IN ('miss', 'bypass'))
               AND (served_model = requested_model OR provider = 'import')
               AND NOT EXISTS (SELECT 1 FROM training_calls t WHERE t.replacement = ?2 AND t.call_id = c.id)
             ORDER BY started_at_ms",
        )?;
        let rows = stmt.query_map(params![task, replacement], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records which calls a learned replacement was trained on, so validation leaves them out.
    pub fn mark_training_calls(&mut self, replacement: &str, ids: &[String]) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO training_calls (replacement, call_id) VALUES (?1, ?2)")?;
            for id in ids {
                stmt.execute(params![replacement, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn insert_validation(&self, v: &crate::ValidationRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO validations (id, task, candidate, passed, created_at_ms, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![v.id, v.task_id, v.candidate, v.passed, v.created_at_ms, v.report],
        )?;
        Ok(())
    }

    /// Validations, newest first, optionally of one task.
    pub fn validations(&self, task: Option<&str>, limit: usize) -> Result<Vec<crate::ValidationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, task, candidate, passed, created_at_ms, report FROM validations
             WHERE ?1 IS NULL OR task = ?1 ORDER BY created_at_ms DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![task, limit as i64], validation_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One validation by id, or by a unique prefix of its id.
    pub fn validation(&self, id: &str) -> Result<Option<crate::ValidationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, task, candidate, passed, created_at_ms, report FROM validations WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2",
        )?;
        let rows: Vec<crate::ValidationRow> = stmt.query_map([id], validation_row)?.collect::<Result<_, _>>()?;
        Ok(if rows.len() == 1 {
            rows.into_iter().next()
        } else {
            rows.into_iter().find(|r| r.id == id)
        })
    }
}

impl Store {
    /// Every task's current policy.
    pub fn policies(&self) -> Result<Vec<crate::PolicyRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT task, version, policy, updated_at_ms FROM policies ORDER BY task")?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::PolicyRow {
                task_id: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                policy: r.get(2)?,
                updated_at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a task's new policy version and its audit entry in one transaction, if the stored version is
    /// still `expected` (`None`: whatever it is). `false` when another change got there first.
    pub fn write_policy(
        &mut self,
        row: &crate::PolicyRow,
        expected: Option<u64>,
        audit: &crate::AuditRow,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let current: Option<i64> = tx
            .query_row("SELECT version FROM policies WHERE task = ?1", [&row.task_id], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(e) = expected
            && current.map(|c| c as u64) != Some(e)
        {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO policies (task, version, policy, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(task) DO UPDATE SET version = excluded.version, policy = excluded.policy,
                updated_at_ms = excluded.updated_at_ms",
            params![row.task_id, row.version as i64, row.policy, row.updated_at_ms],
        )?;
        tx.execute(
            "INSERT INTO policy_audit (task, version, at_ms, actor, action, from_stage, to_stage, reason, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                audit.task_id,
                audit.version as i64,
                audit.at_ms,
                audit.actor,
                audit.action.as_str(),
                audit.from_stage,
                audit.to_stage,
                audit.reason,
                audit.evidence
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Policy changes, newest first, optionally of one task.
    pub fn policy_audit(&self, task: Option<&str>, limit: usize) -> Result<Vec<crate::AuditRow>, StoreError> {
        self.policy_log(task, crate::Span::ALL, limit)
    }

    /// The latest `limit` policy changes in a window (of one task, or of all), newest first.
    pub fn policy_log(
        &self,
        task: Option<&str>,
        span: crate::Span,
        limit: usize,
    ) -> Result<Vec<crate::AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task, version, at_ms, actor, action, from_stage, to_stage, reason, evidence FROM policy_audit
             WHERE (?1 IS NULL OR task = ?1) AND (?3 IS NULL OR at_ms >= ?3) AND (?4 IS NULL OR at_ms < ?4)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![task, limit as i64, span.since_ms, span.until_ms], |r| {
            Ok(crate::AuditRow {
                task_id: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                at_ms: r.get(2)?,
                actor: r.get(3)?,
                action: named(r, 4)?,
                from_stage: r.get(5)?,
                to_stage: r.get(6)?,
                reason: r.get(7)?,
                evidence: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores verified would-be hits of the semantic cache and returns their ids, in order. Evidence is never
    /// deleted, so ids never repeat.
    pub fn insert_semantic_evidence(&mut self, rows: &[crate::SemanticEvidence]) -> Result<Vec<i64>, StoreError> {
        let tx = self.write()?;
        let mut ids = Vec::with_capacity(rows.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO semantic_evidence (task, at_ms, similarity, agreed, call_id, note, features)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in rows {
                let features = r.features.as_ref().and_then(|f| serde_json::to_string(f).ok());
                ins.execute(params![
                    r.task_id,
                    r.at_ms,
                    r.similarity,
                    r.agreed,
                    r.call_id,
                    r.note,
                    features
                ])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The id of the latest verified would-be hit stored (0 when none).
    pub fn last_semantic_evidence(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM semantic_evidence", [], |r| {
                r.get(0)
            })?)
    }

    /// Up to `limit` verified would-be hits stored after the one with id `after`, with their ids, oldest first:
    /// what other gateways on the store learned since a gateway last looked.
    pub fn semantic_evidence_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, crate::SemanticEvidence)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, task, at_ms, similarity, agreed, call_id, note, features FROM semantic_evidence
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get(0)?,
                crate::SemanticEvidence {
                    task_id: r.get(1)?,
                    at_ms: r.get(2)?,
                    similarity: r.get::<_, f64>(3)? as f32,
                    agreed: r.get(4)?,
                    call_id: r.get(5)?,
                    note: r.get(6)?,
                    features: features(r.get(7)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest `per_task` verified would-be hits of one task, or of every task, oldest first.
    pub fn semantic_evidence(
        &self,
        task: Option<&str>,
        per_task: usize,
    ) -> Result<Vec<crate::SemanticEvidence>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task, at_ms, similarity, agreed, call_id, note, features FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY task ORDER BY at_ms DESC, rowid DESC) AS k
                FROM semantic_evidence WHERE ?1 IS NULL OR task = ?1)
             WHERE k <= ?2 ORDER BY task, at_ms, k DESC",
        )?;
        let rows = stmt.query_map(params![task, per_task as i64], |r| {
            Ok(crate::SemanticEvidence {
                task_id: r.get(0)?,
                at_ms: r.get(1)?,
                similarity: r.get::<_, f64>(2)? as f32,
                agreed: r.get(3)?,
                call_id: r.get(4)?,
                note: r.get(5)?,
                features: features(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The secret named `name`: the one kept in the store, or `candidate`, kept, where there is none yet, so
    /// every gateway on the store reads the same.
    pub fn secret_or(&mut self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
            params![name, candidate.as_slice()],
        )?;
        let value: Vec<u8> = self
            .conn
            .query_row("SELECT value FROM secrets WHERE name = ?1", params![name], |r| r.get(0))?;
        Ok(<[u8; 32]>::try_from(value.as_slice()).unwrap_or(candidate))
    }

    /// Keeps imported prices (model, entry as JSON), replacing earlier imports of the same models, in one
    /// transaction: a failed import leaves the previous prices whole.
    pub fn save_prices(&mut self, rows: &[(String, String)], as_of: &str, source: &str) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let tx = self.write()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO prices (model, entry, as_of, source, imported_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (model, entry) in rows {
                stmt.execute(params![model, entry, as_of, source, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Imported prices: (model, entry as JSON, date), by model.
    pub fn prices(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT model, entry, as_of FROM prices ORDER BY model")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps templates discovery mined; one already kept is left as it is.
    pub fn save_mined_templates(&mut self, templates: &[leanlm_core::MinedTemplate]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO mined_templates (grp, text, absorbs, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for t in templates {
                // A list of strings always serialises.
                let absorbs = serde_json::to_string(&t.absorbs).unwrap_or_else(|_| "[]".into());
                stmt.execute(params![t.group as i64, t.text, absorbs, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Mined templates kept after `after` (a rowid; 0 for all), oldest first, with their rowids.
    pub fn mined_templates_after(&self, after: i64) -> Result<Vec<(i64, leanlm_core::MinedTemplate)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rowid, grp, text, absorbs FROM mined_templates WHERE rowid > ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rowid, group, text, absorbs) = row?;
            out.push((
                rowid,
                leanlm_core::MinedTemplate {
                    group: group as u64,
                    text,
                    // A row another version wrote unreadably still names its template; it absorbs nothing.
                    absorbs: serde_json::from_str(&absorbs).unwrap_or_default(),
                },
            ));
        }
        Ok(out)
    }

    /// Stores semantic-cache entries and returns their ids, in order.
    pub fn insert_semantic_entries(&mut self, rows: &[crate::SemanticEntry]) -> Result<Vec<i64>, StoreError> {
        let tx = self.write()?;
        let mut ids = Vec::with_capacity(rows.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO semantic_entries (partition, task, embedding, stored_at_ms, expires_at_ms, last, context,
                    last_vector, context_vector, body, cost_usd, model, provider, preamble)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for r in rows {
                ins.execute(params![
                    r.partition.as_slice(),
                    r.task_id,
                    r.embedding,
                    r.stored_at_ms,
                    r.expires_at_ms,
                    r.last,
                    r.context,
                    vector_bytes(&r.last_vector),
                    r.context_vector.as_deref().map(vector_bytes),
                    r.body,
                    r.cost_usd,
                    r.model,
                    r.provider,
                    r.preamble,
                ])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The id of the latest stored semantic-cache entry (0 when none): where a gateway starts looking for the
    /// entries other gateways store after it loaded the cache.
    pub fn last_semantic_entry(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM semantic_entries", [], |r| r.get(0))?)
    }

    /// Up to `limit` semantic-cache entries of one embedding model stored after the one with id `after` and
    /// still live at `now_ms`, with their ids, oldest first. Rows that do not decode are left out.
    pub fn semantic_entries_after(
        &self,
        after: i64,
        embedding: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, crate::SemanticEntry)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT partition, task, embedding, stored_at_ms, expires_at_ms, last, context, last_vector, context_vector,
                body, cost_usd, model, provider, preamble, id FROM semantic_entries
             WHERE id > ?1 AND embedding = ?2 AND expires_at_ms > ?3 ORDER BY id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![after, embedding, now_ms, limit as i64],
            |r| match semantic_entry(r)? {
                Some(e) => Ok(Some((r.get(14)?, e))),
                None => Ok(None),
            },
        )?;
        Ok(rows.filter_map(Result::transpose).collect::<Result<_, _>>()?)
    }

    /// The semantic-cache entries of one embedding model still live at `now_ms`: the newest `per_partition`
    /// of each partition and the newest `total` in all, oldest first (the order to refill a cache in).
    /// Rows that do not decode (a vector of a broken length) are left out.
    pub fn semantic_entries(
        &self,
        embedding: &str,
        now_ms: i64,
        per_partition: usize,
        total: usize,
    ) -> Result<Vec<crate::SemanticEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT partition, task, embedding, stored_at_ms, expires_at_ms, last, context, last_vector, context_vector,
                body, cost_usd, model, provider, preamble FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY partition ORDER BY stored_at_ms DESC, rowid DESC) AS k
                FROM semantic_entries WHERE embedding = ?1 AND expires_at_ms > ?2)
             WHERE k <= ?3 ORDER BY stored_at_ms DESC, k LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![embedding, now_ms, per_partition as i64, total as i64],
            semantic_entry,
        )?;
        let mut out: Vec<_> = rows.filter_map(Result::transpose).collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Drops the stored semantic-cache entries of a task (or of all) and records the clear for every gateway on
    /// the store to apply to what it holds in memory. Returns the clear's id and how many rows were deleted.
    pub fn clear_semantic_cache(&mut self, task: Option<&str>, at_ms: i64) -> Result<(i64, usize), StoreError> {
        let tx = self.write()?;
        let deleted = tx.execute(DELETE_SEMANTIC_ENTRIES, params![task, at_ms])?;
        tx.execute(
            "INSERT INTO cache_clears (task, at_ms) VALUES (?1, ?2)",
            params![task, at_ms],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((id, deleted))
    }

    /// Clears recorded after the one with id `after`, oldest first: their ids, tasks (`None`: every task) and
    /// times.
    #[allow(clippy::type_complexity)]
    pub fn cache_clears_after(&self, after: i64) -> Result<Vec<(i64, Option<String>, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, task, at_ms FROM cache_clears WHERE id > ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of the latest recorded clear (0 when none).
    pub fn last_cache_clear(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM cache_clears", [], |r| r.get(0))?)
    }

    /// Deletes the semantic-cache entries of a task, or of every task, stored at or before `up_to_ms` (a
    /// clear's time: what was cached after it stays). Returns how many.
    pub fn delete_semantic_entries(&mut self, task: Option<&str>, up_to_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(DELETE_SEMANTIC_ENTRIES, params![task, up_to_ms])?)
    }

    /// Deletes semantic-cache entries that have expired at `now_ms` or that a cache could no longer hold:
    /// beyond the newest `per_partition` of their partition or the newest `total` in all. Returns how many.
    pub fn prune_semantic_entries(
        &mut self,
        now_ms: i64,
        per_partition: usize,
        total: usize,
    ) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let mut n = tx.execute(
            "DELETE FROM semantic_entries WHERE expires_at_ms <= ?1",
            params![now_ms],
        )?;
        n += tx.execute(
            "DELETE FROM semantic_entries WHERE rowid IN (SELECT rowid FROM (
                SELECT rowid, ROW_NUMBER() OVER (PARTITION BY partition ORDER BY stored_at_ms DESC, rowid DESC) AS k
                FROM semantic_entries) WHERE k > ?1)",
            params![per_partition as i64],
        )?;
        n += tx.execute(
            "DELETE FROM semantic_entries WHERE rowid IN (
                SELECT rowid FROM semantic_entries ORDER BY stored_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
            params![total as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Per task and kind (`hit`, `semantic-hit`): calls served from a cache and the cost they avoided.
    pub fn cache_hits(&self, span: crate::Span) -> Result<Vec<(String, String, u64, f64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT task, cache, COUNT(*), COALESCE(SUM(cost_avoided_usd), 0.0) FROM calls
             WHERE cache IN ('hit', 'semantic-hit') AND task IS NOT NULL
               AND (?1 IS NULL OR started_at_ms >= ?1) AND (?2 IS NULL OR started_at_ms < ?2)
             GROUP BY task, cache ORDER BY task, cache",
        )?;
        let rows = stmt.query_map([span.since_ms, span.until_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds online evidence: shadow and audit answers are kept one by one (the recent window reads them);
    /// every piece, `served` ones included, is added to the version's running totals.
    pub fn insert_online(&mut self, scores: &[crate::OnlineScore]) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut row = tx.prepare_cached(
                "INSERT INTO online_scores (task, version, at_ms, kind, agreed, error, cost_usd, call_id, note, model,
                    scorer, billed_model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut totals: std::collections::HashMap<(&str, u64), crate::OnlineCounts> = Default::default();
            for s in scores {
                let t = totals.entry((s.task_id.as_str(), s.version)).or_default();
                if let Some(a) = s.agreed {
                    t.scored += 1;
                    t.agreed += u64::from(a);
                }
                if s.kind != CheckKind::Audit {
                    t.attempts += 1;
                    t.errors += u64::from(s.error);
                }
                t.cost_usd += s.cost_usd.unwrap_or(0.0);
                if s.kind == CheckKind::Served {
                    continue;
                }
                row.execute(params![
                    s.task_id,
                    s.version as i64,
                    s.at_ms,
                    s.kind.as_str(),
                    s.agreed,
                    s.error,
                    s.cost_usd,
                    s.call_id,
                    s.note,
                    s.model,
                    s.scorer,
                    s.billed_model
                ])?;
            }
            let mut add = tx.prepare_cached(
                "INSERT INTO online_totals (task, version, scored, agreed, attempts, errors, cost_usd)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(task, version) DO UPDATE SET scored = scored + excluded.scored,
                    agreed = agreed + excluded.agreed, attempts = attempts + excluded.attempts,
                    errors = errors + excluded.errors, cost_usd = cost_usd + excluded.cost_usd",
            )?;
            for ((task, version), t) in totals {
                add.execute(params![
                    task,
                    version as i64,
                    t.scored as i64,
                    t.agreed as i64,
                    t.attempts as i64,
                    t.errors as i64,
                    t.cost_usd
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The online evidence for one policy version, summed over every gateway instance.
    pub fn online_counts(&self, task: &str, version: u64) -> Result<crate::OnlineCounts, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT scored, agreed, attempts, errors, cost_usd FROM online_totals WHERE task = ?1 AND version = ?2",
        )?;
        Ok(stmt
            .query_row(params![task, version as i64], |r| {
                Ok(crate::OnlineCounts {
                    scored: r.get::<_, i64>(0)? as u64,
                    agreed: r.get::<_, i64>(1)? as u64,
                    attempts: r.get::<_, i64>(2)? as u64,
                    errors: r.get::<_, i64>(3)? as u64,
                    cost_usd: r.get(4)?,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    /// The latest `window` shadow and audit answers of a policy version: their agreement, and the shadow
    /// requests the replacement failed.
    pub fn online_counts_recent(
        &self,
        task: &str,
        version: u64,
        window: usize,
    ) -> Result<crate::OnlineCounts, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(agreed), COALESCE(SUM(agreed), 0),
                    COALESCE(SUM(kind != 'audit'), 0), COALESCE(SUM(CASE WHEN kind != 'audit' THEN error END), 0),
                    COALESCE(SUM(cost_usd), 0.0)
             FROM (SELECT * FROM online_scores WHERE task = ?1 AND version = ?2 ORDER BY rowid DESC LIMIT ?3)",
        )?;
        Ok(stmt.query_row(
            params![task, version as i64, window.min(i64::MAX as usize) as i64],
            |r| {
                Ok(crate::OnlineCounts {
                    scored: r.get::<_, i64>(0)? as u64,
                    agreed: r.get::<_, i64>(1)? as u64,
                    attempts: r.get::<_, i64>(2)? as u64,
                    errors: r.get::<_, i64>(3)? as u64,
                    cost_usd: r.get(4)?,
                })
            },
        )?)
    }

    /// Calls served under each policy version of a task, by role, with their cost.
    pub fn policy_spend(&self, task: &str) -> Result<Vec<(u64, String, u64, f64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT policy_version, policy_role, COUNT(*), COALESCE(SUM(cost_usd), 0.0) FROM calls
             WHERE task = ?1 AND policy_version IS NOT NULL GROUP BY policy_version, policy_role
             ORDER BY policy_version, policy_role",
        )?;
        let rows = stmt.query_map([task], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Records how each call of a validation scored.
    pub fn insert_validation_outcomes(
        &mut self,
        validation: &str,
        outcomes: &[(String, bool, Option<String>)],
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO validation_outcomes (validation, call_id, agreed, hard) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (call, agreed, hard) in outcomes {
                stmt.execute(params![validation, call, agreed, hard])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every scored call of a task's validations of one candidate under one scorer (a SPEC), latest outcome
    /// per call: outcomes of different scorers mean different things and are never mixed.
    pub fn candidate_outcomes(
        &self,
        task: &str,
        candidate: &str,
        scorer: &str,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.call_id, o.agreed FROM validation_outcomes o JOIN validations v ON v.id = o.validation
             WHERE v.task = ?1 AND v.candidate = ?2 AND json_extract(v.report, '$.scorer') = ?3
             ORDER BY v.created_at_ms",
        )?;
        latest_per_call(stmt.query_map(params![task, candidate, scorer], outcome_row)?)
    }

    /// The scorers a task's validations of a candidate used, with how many outcomes each scored.
    pub fn outcome_scorers(&self, task: &str, candidate: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json_extract(v.report, '$.scorer') AS s, count(*) FROM validation_outcomes o
             JOIN validations v ON v.id = o.validation WHERE v.task = ?1 AND v.candidate = ?2
             GROUP BY s ORDER BY s",
        )?;
        let rows = stmt.query_map(params![task, candidate], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The online checks of `model` on a task (shadow and audit answers scored against the reference), by
    /// call id, the latest per call: more training data for the task's router.
    pub fn online_outcomes(&self, task: &str, model: &str, scorer: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT call_id, agreed FROM online_scores
             WHERE task = ?1 AND model = ?2 AND scorer = ?3 AND kind IN ('shadow', 'audit') AND agreed IS NOT NULL
                AND call_id IS NOT NULL
             ORDER BY at_ms",
        )?;
        latest_per_call(stmt.query_map(params![task, model, scorer], outcome_row)?)
    }

    /// Stores (or replaces) a task's learned router for a replacement SPEC.
    pub fn put_router(&self, task: &str, replacement: &str, at_ms: i64, model: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO routers (task, replacement, created_at_ms, model) VALUES (?1, ?2, ?3, ?4)",
            params![task, replacement, at_ms, model],
        )?;
        Ok(())
    }

    /// A task's learned router for a replacement SPEC, as JSON.
    pub fn router(&self, task: &str, replacement: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT model FROM routers WHERE task = ?1 AND replacement = ?2",
                params![task, replacement],
                |r| r.get(0),
            )
            .optional()?)
    }
}

fn outcome_row(r: &rusqlite::Row) -> rusqlite::Result<(String, bool)> {
    Ok((r.get(0)?, r.get(1)?))
}

/// (call id, agreed) rows in time order, reduced to the latest outcome of each call.
fn latest_per_call(
    rows: impl Iterator<Item = rusqlite::Result<(String, bool)>>,
) -> Result<Vec<(String, bool)>, StoreError> {
    let mut latest = std::collections::BTreeMap::new();
    for row in rows {
        let (id, agreed) = row?;
        latest.insert(id, agreed);
    }
    Ok(latest.into_iter().collect())
}

fn validation_row(r: &rusqlite::Row) -> rusqlite::Result<crate::ValidationRow> {
    Ok(crate::ValidationRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        candidate: r.get(2)?,
        passed: r.get(3)?,
        created_at_ms: r.get(4)?,
        report: r.get(5)?,
    })
}

fn sqlite_path(url: &str) -> Result<&str, StoreError> {
    if url == "sqlite::memory:" {
        return Ok(":memory:");
    }
    if let Some(p) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        return if p.is_empty() {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        } else {
            Ok(p)
        };
    }
    if url.contains("://") {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok(url)
}

/// A column that holds one of a type's names (a format, an origin, a cache outcome, a role), as that type.
/// This code writes only names it can read; anything else is a damaged store, reported as such.
fn named<T: std::str::FromStr<Err = String>>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into()))
}

/// [`named`] for a column that may be NULL.
fn named_opt<T: std::str::FromStr<Err = String>>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())),
    }
}

/// A stored feature vector; unreadable reads as none (the verifier then leaves that sample out).
fn features(text: Option<String>) -> Option<Vec<f32>> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// Folds tasks that discovery found to share a template into the task that absorbed them: their calls move
/// to it and their rows go. A task someone named or deployed a policy on stays as it is: its calls keep
/// their history, and new calls go to the absorbing task, which the reference serves until it is validated.
///
/// Every call of a mined template carries the ids it absorbed; `done` holds the pairs already settled
/// through this handle, and the pairs settled now are returned, so each is settled once.
fn fold_absorbed(
    tx: &rusqlite::Transaction,
    records: &[CallRecord],
    done: &std::collections::HashSet<(String, String)>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut now: Vec<(String, String)> = Vec::new();
    for t in records.iter().filter_map(|r| r.task.as_ref()) {
        for old in t.absorbs.iter().filter(|o| **o != t.id) {
            let pair = (t.id.clone(), old.clone());
            if done.contains(&pair) || now.contains(&pair) {
                continue;
            }
            now.push(pair);
            let kept: bool = tx
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM policies WHERE task = ?1)
                         OR EXISTS(SELECT 1 FROM tasks WHERE id = ?1 AND renamed = 1)",
                )?
                .query_row(params![old], |r| r.get(0))?;
            if kept {
                continue;
            }
            tx.prepare_cached("UPDATE calls SET task = ?1 WHERE task = ?2")?
                .execute(params![t.id, old])?;
            tx.prepare_cached(
                "UPDATE tasks SET first_seen_ms = min(first_seen_ms,
                     coalesce((SELECT first_seen_ms FROM tasks WHERE id = ?2), first_seen_ms))
                 WHERE id = ?1",
            )?
            .execute(params![t.id, old])?;
            tx.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
                .execute(params![old])?;
        }
    }
    Ok(now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str, model: &str, at: i64, cost: f64) -> CallRecord {
        CallRecord {
            id: id.into(),
            started_at_ms: at,
            endpoint: "chat.completions".into(),
            client_format: leanlm_core::ClientFormat::OpenAi,
            client_key_id: None,
            task: Some(crate::TaskRef {
                id: format!("t_{model}"),
                name: format!("{model}-task"),
                origin: Origin::Template,
                absorbs: Default::default(),
            }),
            requested_model: model.into(),
            served_model: Some(model.into()),
            provider: Some("openai".into()),
            upstream_model: Some(model.into()),
            stream: false,
            status: CallStatus::Ok,
            http_status: 200,
            error: None,
            usage: Some(Usage {
                input_tokens: 10,
                cached_input_tokens: 5,
                output_tokens: 3,
                ..Default::default()
            }),
            cost_usd: Some(cost),
            cost_estimated: false,
            latency_ms: 12.5,
            ttft_ms: None,
            overhead_us: Some(80.0),
            attempts: 1,
            request_body: Some("{}".into()),
            response_body: None,
            cache: None,
            cost_avoided_usd: None,
            policy: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn calls_filter_by_window_id_policy_and_cache_and_series_bucket_them() {
        use crate::{PolicyMatch, SeriesBy, SeriesPoint, Span};
        use leanlm_core::{CacheOutcome, PolicyTag, Role};
        let mut s = Store::open("sqlite::memory:").unwrap();
        let hour = 3_600_000;
        let mut hit = record("c-hit", "m1", hour, 0.0);
        hit.cache = Some(CacheOutcome::Hit);
        hit.cost_avoided_usd = Some(0.5);
        let mut replaced = record("c-rep", "m2", 2 * hour, 0.25);
        replaced.policy = Some(PolicyTag {
            version: 1,
            role: Role::Replacement,
        });
        let mut audited = record("c-ref", "m1", 2 * hour + 1, 1.0);
        audited.policy = Some(PolicyTag {
            version: 1,
            role: Role::Reference,
        });
        s.insert_batch(&[hit, replaced, audited, record("d-plain", "m1", 3 * hour, 2.0)])
            .unwrap();
        let ids = |f: CallFilter| {
            let mut v: Vec<String> = s
                .calls(&CallFilter { limit: 10, ..f })
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(CallFilter {
                cache: Some(CacheOutcome::Hit),
                ..Default::default()
            }),
            ["c-hit"]
        );
        assert_eq!(
            ids(CallFilter {
                policy: Some(PolicyMatch::Any),
                ..Default::default()
            }),
            ["c-ref", "c-rep"]
        );
        assert_eq!(
            ids(CallFilter {
                policy: Some(PolicyMatch::Role(Role::Replacement)),
                ..Default::default()
            }),
            ["c-rep"]
        );
        assert_eq!(
            ids(CallFilter {
                policy: Some(PolicyMatch::None),
                ..Default::default()
            }),
            ["c-hit", "d-plain"]
        );
        assert_eq!(
            ids(CallFilter {
                id_prefix: Some("c-".into()),
                ..Default::default()
            }),
            ["c-hit", "c-ref", "c-rep"]
        );
        // A prefix is matched as text, not as a LIKE pattern.
        assert!(
            ids(CallFilter {
                id_prefix: Some("%".into()),
                ..Default::default()
            })
            .is_empty()
        );
        assert_eq!(
            ids(CallFilter {
                since_ms: Some(2 * hour),
                until_ms: Some(3 * hour),
                ..Default::default()
            }),
            ["c-ref", "c-rep"],
            "the window includes its start and excludes its end"
        );
        let listed = s.calls(&CallFilter::default()).unwrap();
        assert_eq!(listed[0].task_name.as_deref(), Some("m1-task"));
        assert_eq!(listed[1].policy_role, Some(Role::Reference));

        let by_model = s.series(SeriesBy::Model, Span::ALL, hour).unwrap();
        let at = |p: &SeriesPoint| (p.at_ms / hour, p.key.clone(), p.calls);
        assert_eq!(
            by_model.iter().map(at).collect::<Vec<_>>(),
            [
                (1, "m1".into(), 1),
                (2, "m1".into(), 1),
                (2, "m2".into(), 1),
                (3, "m1".into(), 1)
            ]
        );
        let by_cache = s
            .series(
                SeriesBy::Cache,
                Span {
                    since_ms: None,
                    until_ms: Some(2 * hour),
                },
                hour,
            )
            .unwrap();
        assert_eq!(by_cache.len(), 1);
        assert_eq!((by_cache[0].key.as_str(), by_cache[0].cost_avoided_usd), ("hit", 0.5));
        assert_eq!(s.first_call_ms().unwrap(), Some(hour));
        let spent = s
            .spend(
                SpendBy::Model,
                Span {
                    since_ms: Some(2 * hour),
                    until_ms: Some(3 * hour),
                },
            )
            .unwrap();
        assert_eq!(spent.iter().map(|r| r.calls).sum::<u64>(), 2);
    }

    #[test]
    fn a_secret_is_made_once_and_shared() {
        let dir = std::env::temp_dir().join(format!("leanlm-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("s.db").display());
        let mut a = Store::open(&url).unwrap();
        let mut b = Store::open(&url).unwrap();
        let first = a.secret_or("k", [1; 32]).unwrap();
        assert_eq!(first, [1; 32]);
        assert_eq!(
            b.secret_or("k", [2; 32]).unwrap(),
            first,
            "another instance reads the same"
        );
        assert_eq!(b.secret_or("other", [3; 32]).unwrap(), [3; 32]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn only_the_reference_answers_are_replayable() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let answered = |id: &str, at: i64| {
            let mut r = record(id, "m1", at, 0.1);
            r.response_body = Some("{}".into());
            r
        };
        let plain = answered("plain", 1);
        let mut reference = answered("reference", 2);
        reference.policy = Some(crate::PolicyTag {
            version: 1,
            role: leanlm_core::Role::Reference,
        });
        let mut replaced = answered("replaced", 3);
        replaced.policy = Some(crate::PolicyTag {
            version: 1,
            role: leanlm_core::Role::Replacement,
        });
        replaced.served_model = Some("cheap".into());
        let mut replacement_as_asked = answered("replacement-as-asked", 4);
        replacement_as_asked.policy = replaced.policy.clone();
        let mut hit = answered("hit", 5);
        hit.cache = Some(CacheOutcome::Hit);
        let mut semantic = answered("semantic", 6);
        semantic.cache = Some(CacheOutcome::SemanticHit);
        let mut miss = answered("miss", 7);
        miss.cache = Some(CacheOutcome::Miss);
        let mut fallback = answered("fallback", 8);
        fallback.served_model = Some("backup".into());
        let mut imported = answered("imported", 9);
        imported.provider = Some("import".into());
        imported.served_model = Some("m1-2024-08-06".into());
        s.insert_batch(&[
            plain,
            reference,
            replaced,
            replacement_as_asked,
            hit,
            semantic,
            miss,
            fallback,
            imported,
        ])
        .unwrap();
        let ids: Vec<String> = s
            .replayable_calls("t_m1", "")
            .unwrap()
            .into_iter()
            .map(|c| c.1)
            .collect();
        assert_eq!(ids, ["plain", "reference", "miss", "imported"]);
    }

    #[test]
    fn replayable_calls_leave_out_failures_missing_bodies_and_training_calls() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let mut ok = record("a", "m1", 3, 0.1);
        ok.response_body = Some("{}".into());
        let mut early = record("b", "m1", 1, 0.1);
        early.response_body = Some("{}".into());
        let no_answer = record("c", "m1", 2, 0.1);
        let mut failed = record("d", "m1", 4, 0.1);
        failed.response_body = Some("{}".into());
        failed.status = CallStatus::UpstreamError;
        s.insert_batch(&[ok, early, no_answer, failed]).unwrap();
        let ids = |s: &Store, r: &str| {
            s.replayable_calls("t_m1", r)
                .unwrap()
                .into_iter()
                .map(|c| c.1)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&s, "router:x,y"), ["b", "a"]);
        s.mark_training_calls("router:x,y", &["b".into()]).unwrap();
        assert_eq!(ids(&s, "router:x,y"), ["a"]);
        assert_eq!(
            ids(&s, "model:z"),
            ["b", "a"],
            "training for one replacement does not hide calls from another"
        );
    }

    #[test]
    fn a_read_then_write_transaction_waits_for_another_writer_instead_of_failing() {
        // A policy change reads the current version, then writes, while a gateway's call-log writer commits
        // on its own connection. Had the transaction begun as a reader (SQLite's default), a commit landing
        // between its read and its write would fail the write at once with "database is locked".
        let dir = std::env::temp_dir().join(format!("leanlm-locks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("l.db").display());
        let mut cli = Store::open(&url).unwrap();
        let mut gw = Store::open(&url).unwrap();
        let tx = cli.write().unwrap();
        let n: i64 = tx.query_row("SELECT count(*) FROM policies", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        // The other writer commits meanwhile (it waits for the lock this transaction holds).
        let other = std::thread::spawn(move || gw.insert_batch(&[record("c1", "m", 1, 0.0)]));
        std::thread::sleep(std::time::Duration::from_millis(200));
        tx.execute(
            "INSERT INTO policies (task, version, policy, updated_at_ms) VALUES ('t1', 1, '{}', 1)",
            [],
        )
        .expect("the write after the read succeeds");
        tx.commit().unwrap();
        other
            .join()
            .unwrap()
            .expect("the other writer waited for the lock and then wrote");
        drop(cli);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn policies_change_atomically_with_their_audit_and_collect_online_evidence() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let row = |version| crate::PolicyRow {
            task_id: "t1".into(),
            version,
            policy: format!("{{\"v\": {version}}}"),
            updated_at_ms: version as i64,
        };
        let audit = |version, to: &str| crate::AuditRow {
            task_id: "t1".into(),
            version,
            at_ms: version as i64,
            actor: "cli:test".into(),
            action: leanlm_core::Action::Deploy,
            from_stage: None,
            to_stage: to.into(),
            reason: Some("because".into()),
            evidence: None,
        };
        assert!(s.write_policy(&row(1), None, &audit(1, "shadow")).unwrap());
        assert!(s.write_policy(&row(2), Some(1), &audit(2, "canary")).unwrap());
        // A change based on a stale version loses, and leaves no audit entry.
        assert!(!s.write_policy(&row(3), Some(1), &audit(3, "rolled_back")).unwrap());
        assert_eq!(s.policies().unwrap(), [row(2)]);
        let log = s.policy_audit(Some("t1"), 10).unwrap();
        assert_eq!(log.iter().map(|a| a.version).collect::<Vec<_>>(), [2, 1]);

        let score = |agreed: Option<bool>, error| crate::OnlineScore {
            task_id: "t1".into(),
            version: 2,
            at_ms: 5,
            kind: CheckKind::Audit,
            agreed,
            error,
            cost_usd: Some(0.5),
            call_id: Some("c1".into()),
            note: None,
            model: Some("cheap".into()),
            scorer: Some("label".into()),
            billed_model: Some("big".into()),
        };
        let served = |error| crate::OnlineScore {
            kind: CheckKind::Served,
            ..score(None, error)
        };
        s.insert_online(&[
            score(Some(true), false),
            score(Some(false), false),
            served(true),
            served(false),
        ])
        .unwrap();
        // The scored checks are training data for a router of `cheap`: the latest per call.
        assert_eq!(
            s.online_outcomes("t1", "cheap", "label").unwrap(),
            [("c1".to_owned(), false)]
        );
        assert!(
            s.online_outcomes("t1", "cheap", "similarity").unwrap().is_empty(),
            "one scorer's outcomes"
        );
        assert!(s.online_outcomes("t1", "other", "label").unwrap().is_empty());
        let c = s.online_counts("t1", 2).unwrap();
        // Audits are the reference's answers: they score, but are not attempts of the replacement.
        assert_eq!((c.scored, c.agreed, c.attempts, c.errors), (2, 1, 2, 1));
        assert!((c.cost_usd - 2.0).abs() < 1e-12);
        assert_eq!(s.online_counts("t1", 1).unwrap().attempts, 0);
        // Served calls are only counted; the recent window is the answers themselves.
        let recent = s.online_counts_recent("t1", 2, 1).unwrap();
        assert_eq!(
            (recent.scored, recent.agreed, recent.attempts),
            (1, 0, 0),
            "the latest answer disagreed"
        );
    }

    #[test]
    fn validations_are_stored_and_found_by_prefix() {
        let s = Store::open("sqlite::memory:").unwrap();
        let row = |id: &str, task: &str, at| crate::ValidationRow {
            id: id.into(),
            task_id: task.into(),
            candidate: "model:m".into(),
            passed: true,
            created_at_ms: at,
            report: "{}".into(),
        };
        s.insert_validation(&row("val_abc1", "t1", 1)).unwrap();
        s.insert_validation(&row("val_abd2", "t2", 2)).unwrap();
        assert_eq!(s.validations(None, 10).unwrap().len(), 2);
        assert_eq!(s.validations(Some("t1"), 10).unwrap()[0].id, "val_abc1");
        assert_eq!(s.validation("val_abc").unwrap().unwrap().id, "val_abc1");
        assert!(
            s.validation("val_ab").unwrap().is_none(),
            "an ambiguous prefix finds nothing"
        );
        assert!(s.validation("nope").unwrap().is_none());
        assert!(
            s.insert_validation(&row("val_abc1", "t1", 3)).is_err(),
            "ids are unique"
        );
    }

    #[test]
    fn records_round_trip_and_aggregate() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
        let day = 86_400_000;
        s.insert_batch(&[
            record("a", "m1", day, 0.5),
            record("b", "m2", day + 1, 0.25),
            record("c", "m1", 2 * day, 1.0),
        ])
        .unwrap();
        assert_eq!(s.call("a").unwrap().unwrap(), record("a", "m1", day, 0.5));
        assert!(s.call("zz").unwrap().is_none());

        let recent = s
            .calls(&CallFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            recent.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        assert_eq!(recent[0].input_tokens, Some(15));
        let m1 = s
            .calls(&CallFilter {
                limit: 10,
                model: Some("m1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(m1.len(), 2);

        let by_model = s.spend(SpendBy::Model, None).unwrap();
        assert_eq!(by_model[0].key, "m1");
        assert_eq!(by_model[0].calls, 2);
        assert!((by_model[0].cost_usd - 1.5).abs() < 1e-12);
        let by_day = s.spend(SpendBy::Day, None).unwrap();
        assert_eq!(
            by_day.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["1970-01-02", "1970-01-03"]
        );
        let since = s.spend(SpendBy::Model, Some(2 * day)).unwrap();
        assert_eq!(since.len(), 1);
    }

    #[test]
    fn absorbed_tasks_fold_into_the_template_unless_someone_named_them() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        s.insert_batch(&[
            record("a", "m1", 1, 0.1),
            record("b", "m2", 2, 0.1),
            record("c", "m2", 3, 0.1),
        ])
        .unwrap();
        assert!(s.rename_task("t_m1", "alice's assistant").unwrap());
        let mut merged = record("d", "mx", 10, 0.1);
        if let Some(t) = merged.task.as_mut() {
            t.absorbs = vec!["t_m1".to_owned(), "t_m2".to_owned(), "t_gone".to_owned()].into();
        }
        // Absorbs repeat on later calls of the template: folding twice changes nothing.
        let again = merged.clone();
        s.insert_batch(&[merged]).unwrap();
        let mut again = again;
        again.id = "e".into();
        s.insert_batch(&[again]).unwrap();
        let tasks = s.tasks(None).unwrap();
        let ids: Vec<(&str, u64, i64)> = tasks
            .iter()
            .map(|t| (t.id.as_str(), t.calls, t.first_seen_ms))
            .collect();
        assert!(ids.contains(&("t_mx", 4, 2)), "{ids:?}");
        assert!(ids.contains(&("t_m1", 1, 1)), "a named task stays: {ids:?}");
        assert!(!ids.iter().any(|t| t.0 == "t_m2"), "{ids:?}");
        assert_eq!(s.call("b").unwrap().unwrap().task.unwrap().id, "t_mx");
    }

    #[test]
    fn tasks_are_recorded_renamed_and_profiled() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let mut dup = record("d", "m1", 5, 0.25);
        dup.request_body = Some("{}".into());
        dup.response_body = Some(r#"{"choices":[{"message":{"content":"yes"}}]}"#.into());
        let mut other = record("e", "m1", 9, 0.25);
        other.response_body = Some(r#"{"id":"different","choices":[{"message":{"content":"yes"}}]}"#.into());
        s.insert_batch(&[record("a", "m1", 1, 0.5), record("b", "m2", 2, 0.25), dup, other])
            .unwrap();
        let tasks = s.tasks(None).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            (
                tasks[0].id.as_str(),
                tasks[0].calls,
                tasks[0].first_seen_ms,
                tasks[0].last_seen_ms
            ),
            ("t_m1", 3, 1, 9)
        );
        assert!(s.rename_task("t_m1", "intent classifier").unwrap());
        assert!(!s.rename_task("t_nope", "x").unwrap());
        // A later call keeps the user's name.
        s.insert_batch(&[record("f", "m1", 20, 0.1)]).unwrap();
        let t = s.tasks(None).unwrap().into_iter().find(|t| t.id == "t_m1").unwrap();
        assert_eq!(
            (t.name.as_str(), t.renamed, t.last_seen_ms),
            ("intent classifier", true, 20)
        );
        assert_eq!(s.call("a").unwrap().unwrap().task.unwrap().name, "intent classifier");

        let stats = s.task_stats("t_m1", None).unwrap();
        assert_eq!(stats.len(), 4);
        // Same answer text under different ids and envelopes: one output hash.
        assert_eq!(stats[1].output_hash, stats[2].output_hash);
        assert!(stats[1].output_hash.is_some());
        assert_eq!(stats[0].request_hash, stats[1].request_hash, "identical request bodies");
        let by_task = s.spend(SpendBy::Task, None).unwrap();
        assert_eq!(by_task[0].key, "t_m1");
        let only = s
            .calls(&CallFilter {
                limit: 10,
                task: Some("t_m2".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(s.task_sample_ids("t_m1", 2).unwrap(), ["f", "e"]);
    }

    #[test]
    fn reopening_keeps_data_and_refuses_newer_schemas() {
        let dir = std::env::temp_dir().join(format!("leanlm-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let url = format!("sqlite://{}", path.display());
        Store::open(&url)
            .unwrap()
            .insert_batch(&[record("a", "m", 1, 0.1)])
            .unwrap();
        let s = Store::open(&url).unwrap();
        assert!(s.call("a").unwrap().is_some());
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(Store::open(&url), Err(StoreError::TooNew { found: 99, .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn entry(partition: u8, stored_at_ms: i64, expires_at_ms: i64, embedding: &str) -> crate::SemanticEntry {
        crate::SemanticEntry {
            partition: [partition; 32],
            task_id: "t".into(),
            embedding: embedding.into(),
            stored_at_ms,
            expires_at_ms,
            last: format!("question {stored_at_ms}"),
            context: String::new(),
            last_vector: vec![0.6, -0.8, stored_at_ms as f32],
            context_vector: partition.is_multiple_of(2).then(|| vec![1.0, 0.0, 0.0]),
            body: format!("{{\"answer\": {stored_at_ms}}}").into_bytes(),
            cost_usd: Some(0.001),
            model: "gpt-4o".into(),
            provider: "openai".into(),
            preamble: partition.is_multiple_of(2).then(|| "system: be brief".to_owned()),
        }
    }

    #[test]
    fn semantic_entries_come_back_live_newest_per_partition_oldest_first() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let mut rows = Vec::new();
        for t in 0..6 {
            rows.push(entry(1, 100 + t, 1_000, "local"));
            rows.push(entry(2, 200 + t, 1_000, "local"));
        }
        rows.push(entry(3, 300, 400, "local")); // expired at 500
        rows.push(entry(4, 301, 1_000, "remote:text-embedding-3-small")); // another model
        s.insert_semantic_entries(&rows).unwrap();

        let got = s.semantic_entries("local", 500, 4, 100).unwrap();
        let stored: Vec<i64> = got.iter().map(|e| e.stored_at_ms).collect();
        assert_eq!(stored, vec![102, 103, 104, 105, 202, 203, 204, 205]);
        assert_eq!(
            got[0],
            entry(1, 102, 1_000, "local"),
            "every field and both vectors survive"
        );
        assert_eq!(got[4], entry(2, 202, 1_000, "local"));
        let newest: Vec<i64> = s
            .semantic_entries("local", 500, 4, 3)
            .unwrap()
            .iter()
            .map(|e| e.stored_at_ms)
            .collect();
        assert_eq!(newest, vec![203, 204, 205], "the total keeps the newest");
        assert_eq!(
            s.semantic_entries("remote:text-embedding-3-small", 500, 4, 100)
                .unwrap()
                .len(),
            1
        );

        // A row that does not decode is skipped, not fatal.
        s.conn
            .execute(
                "UPDATE semantic_entries SET last_vector = x'0102' WHERE stored_at_ms = 205",
                [],
            )
            .unwrap();
        assert_eq!(s.semantic_entries("local", 500, 4, 100).unwrap().len(), 7);

        // Pruning drops the expired, what no partition can hold, then the oldest beyond the total.
        assert_eq!(s.prune_semantic_entries(500, 4, 100).unwrap(), 1 + 2 + 2);
        assert_eq!(s.prune_semantic_entries(500, 4, 5).unwrap(), 4);
        let left: Vec<i64> = s
            .semantic_entries("local", 500, 10, 100)
            .unwrap()
            .iter()
            .map(|e| e.stored_at_ms)
            .collect();
        assert_eq!(
            left,
            vec![202, 203, 204],
            "205 is kept but does not decode; 301 is another model's"
        );

        // Clearing one task's entries leaves the others; clearing all leaves none.
        let mut other = entry(5, 400, 1_000, "local");
        other.task_id = "u".into();
        s.insert_semantic_entries(&[other]).unwrap();
        assert_eq!(
            s.delete_semantic_entries(Some("t"), 300).unwrap(),
            4,
            "301 was stored later"
        );
        assert_eq!(s.delete_semantic_entries(Some("t"), 500).unwrap(), 1);
        assert_eq!(s.semantic_entries("local", 500, 10, 100).unwrap()[0].task_id, "u");
        assert_eq!(s.delete_semantic_entries(None, 500).unwrap(), 1);

        // A recorded clear deletes too, and every gateway finds it after the last one it saw.
        s.insert_semantic_entries(&[entry(6, 450, 1_000, "local")]).unwrap();
        assert_eq!(s.last_cache_clear().unwrap(), 0);
        assert_eq!(s.clear_semantic_cache(Some("t"), 460).unwrap(), (1, 1));
        assert_eq!(s.clear_semantic_cache(None, 470).unwrap(), (2, 0));
        assert_eq!(s.last_cache_clear().unwrap(), 2);
        assert_eq!(
            s.cache_clears_after(0).unwrap(),
            vec![(1, Some("t".to_owned()), 460), (2, None, 470)]
        );
        assert_eq!(s.cache_clears_after(2).unwrap(), vec![]);
    }

    #[test]
    fn evidence_stored_after_an_id_is_found() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        assert_eq!(s.last_semantic_evidence().unwrap(), 0);
        let row = |task: &str, at_ms: i64, agreed: bool| crate::SemanticEvidence {
            task_id: task.into(),
            at_ms,
            similarity: 0.5,
            agreed,
            call_id: Some(format!("c{at_ms}")),
            note: (!agreed).then(|| "differs".into()),
            features: agreed.then(|| vec![0.5, 1.0, 0.25]),
        };
        let ids = s
            .insert_semantic_evidence(&[row("a", 1, true), row("b", 2, false), row("a", 3, true)])
            .unwrap();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(s.last_semantic_evidence().unwrap(), 3);
        let after = s.semantic_evidence_after(1, 10).unwrap();
        assert_eq!(after, vec![(2, row("b", 2, false)), (3, row("a", 3, true))]);
        assert_eq!(s.semantic_evidence_after(1, 1).unwrap().len(), 1);
        assert!(s.semantic_evidence_after(3, 10).unwrap().is_empty());
    }

    #[test]
    fn entries_stored_before_ids_existed_keep_every_field() {
        // A store at the schema before entry ids (and preambles), with an entry in it.
        let path = std::env::temp_dir().join(format!("leanlm-store-ids-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let conn = Connection::open(&path).unwrap();
        let before = MIGRATIONS.len() - 3;
        for m in &MIGRATIONS[..before] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64).unwrap();
        let e = entry(2, 100, 1_000, "local");
        conn.execute(
            "INSERT INTO semantic_entries (partition, task, embedding, stored_at_ms, expires_at_ms, last, context,
                last_vector, context_vector, body, cost_usd, model, provider)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                e.partition.as_slice(),
                e.task_id,
                e.embedding,
                e.stored_at_ms,
                e.expires_at_ms,
                e.last,
                e.context,
                vector_bytes(&e.last_vector),
                e.context_vector.as_deref().map(vector_bytes),
                e.body,
                e.cost_usd,
                e.model,
                e.provider,
            ],
        )
        .unwrap();
        drop(conn);
        let s = Store::open(&format!("sqlite://{}", path.display())).unwrap();
        // Its preamble was not kept: not known, rather than empty.
        let e = crate::SemanticEntry { preamble: None, ..e };
        assert_eq!(s.semantic_entries_after(0, "local", 500, 10).unwrap(), vec![(1, e)]);
        drop(s);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn entries_stored_after_an_id_are_found_and_ids_never_repeat() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        assert_eq!(s.last_semantic_entry().unwrap(), 0);
        let ids = s
            .insert_semantic_entries(&[
                entry(1, 100, 1_000, "local"),
                entry(1, 101, 400, "local"), // expired at 500
                entry(2, 102, 1_000, "remote:m"),
                entry(2, 103, 1_000, "local"),
            ])
            .unwrap();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert_eq!(s.last_semantic_entry().unwrap(), 4);
        let after = |s: &Store, id: i64, limit: usize| -> Vec<(i64, i64)> {
            s.semantic_entries_after(id, "local", 500, limit)
                .unwrap()
                .into_iter()
                .map(|(id, e)| (id, e.stored_at_ms))
                .collect()
        };
        assert_eq!(after(&s, 0, 10), vec![(1, 100), (4, 103)], "live, this model's, by id");
        assert_eq!(after(&s, 0, 1), vec![(1, 100)]);
        assert_eq!(after(&s, 1, 10), vec![(4, 103)]);
        assert_eq!(after(&s, 4, 10), vec![]);
        let full = s.semantic_entries_after(0, "local", 500, 10).unwrap();
        assert_eq!(full[1].1, entry(2, 103, 1_000, "local"), "every field survives");

        // Deleting the newest rows does not hand their ids to the next entries: a gateway that saw id 4 still
        // finds what comes after.
        s.delete_semantic_entries(None, 1_000).unwrap();
        assert_eq!(
            s.insert_semantic_entries(&[entry(3, 600, 2_000, "local")]).unwrap(),
            vec![5]
        );
        assert_eq!(after(&s, 4, 10), vec![(5, 600)]);
    }

    #[test]
    fn a_task_is_found_by_id_or_by_a_name_only_it_has() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let mut twin = record("c", "m2", 3, 0.0);
        twin.task.as_mut().unwrap().name = "m1-task".into();
        s.insert_batch(&[record("a", "m1", 1, 0.0), record("b", "m3", 2, 0.0), twin])
            .unwrap();
        let found = |key: &str| match s.find_task(key).unwrap() {
            crate::TaskLookup::Found(t) => Some(t.id),
            _ => None,
        };
        assert_eq!(found("t_m1").as_deref(), Some("t_m1"));
        assert_eq!(found("m3-task").as_deref(), Some("t_m3"));
        assert_eq!(s.find_task("nothing").unwrap(), crate::TaskLookup::Missing);
        assert_eq!(s.find_task("m1-task").unwrap(), crate::TaskLookup::Ambiguous(2));
    }

    #[test]
    fn mined_templates_are_kept_once_and_read_back_in_order() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let t = |group: u64, text: &str| leanlm_core::MinedTemplate {
            group,
            text: text.into(),
            absorbs: vec!["t_a".into(), "t_b".into()],
        };
        // A group hash above i64::MAX survives the round trip.
        s.save_mined_templates(&[t(u64::MAX - 1, "Hello ⟨*⟩ ."), t(7, "Route ⟨*⟩ ?")])
            .unwrap();
        s.save_mined_templates(&[t(7, "Route ⟨*⟩ ?"), t(7, "Sort ⟨*⟩ .")])
            .unwrap();
        let all = s.mined_templates_after(0).unwrap();
        assert_eq!(
            all.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
            vec![t(u64::MAX - 1, "Hello ⟨*⟩ ."), t(7, "Route ⟨*⟩ ?"), t(7, "Sort ⟨*⟩ .")]
        );
        let newer = s.mined_templates_after(all[1].0).unwrap();
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].1.text, "Sort ⟨*⟩ .");
    }

    #[test]
    fn urls_are_checked() {
        assert!(matches!(
            Store::open("postgres://x/y"),
            Err(StoreError::UnsupportedUrl(_))
        ));
        assert!(matches!(Store::open("sqlite://"), Err(StoreError::UnsupportedUrl(_))));
        assert_eq!(sqlite_path("sqlite://leanlm.db").unwrap(), "leanlm.db");
        assert_eq!(sqlite_path("leanlm.db").unwrap(), "leanlm.db");
    }
}
