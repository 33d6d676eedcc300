use serde::Serialize;

use leanlm_core::{Action, CacheOutcome, CheckKind, Origin, Role};
pub use leanlm_core::{CallRecord, CallStats, CallStatus, PolicyTag, StageRecord, TaskRef};

/// A task looked up by what a user typed: its id, or a name.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskLookup {
    Found(TaskRow),
    Missing,
    /// Several tasks have that name (and none that id): how many.
    Ambiguous(usize),
}

/// A task as stored, with its activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub id: String,
    pub name: String,
    pub origin: Origin,
    pub renamed: bool,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub calls: u64,
    pub cost_usd: f64,
}

/// One row of `leanlm calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    pub id: String,
    pub task: Option<String>,
    pub task_name: Option<String>,
    /// Which side of a policy served the call, if one was deployed on its task.
    pub policy_role: Option<Role>,
    pub started_at_ms: i64,
    pub endpoint: String,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub stream: bool,
    pub status: CallStatus,
    pub http_status: u16,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub cost_estimated: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
    pub cache: Option<CacheOutcome>,
}

/// A window of time: calls at or after `since_ms` and before `until_ms`; either end open when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Span {
    /// Everything logged.
    pub const ALL: Span = Span {
        since_ms: None,
        until_ms: None,
    };
}

/// A window open at its end: what every "since" parameter meant before windows had two ends.
impl From<Option<i64>> for Span {
    fn from(since_ms: Option<i64>) -> Span {
        Span {
            since_ms,
            until_ms: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub limit: usize,
    pub task: Option<String>,
    /// Matches the requested or the served model.
    pub model: Option<String>,
    pub status: Option<CallStatus>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Calls whose id starts with this (ids are long; the first characters find one).
    pub id_prefix: Option<String>,
    pub policy: Option<PolicyMatch>,
    pub cache: Option<CacheOutcome>,
}

/// Which calls a policy had a hand in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMatch {
    /// No policy was deployed on the call's task.
    None,
    /// Served under a policy, by either side.
    Any,
    /// Served by this side of a policy.
    Role(Role),
}

impl std::str::FromStr for PolicyMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(PolicyMatch::None),
            "any" => Ok(PolicyMatch::Any),
            other => other
                .parse::<Role>()
                .map(PolicyMatch::Role)
                .map_err(|_| format!("policy is none, any, reference or replacement, not `{other}`")),
        }
    }
}

/// A call a replacement or a cache served instead of the model the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedInstead {
    pub at_ms: i64,
    pub task: Option<String>,
    /// The model the client asked for: what would have served the call.
    pub reference_model: String,
    pub served_model: String,
    /// A cache hit; `None` for a replacement-served call.
    pub cache: Option<CacheOutcome>,
    pub input_tokens: u64,
    pub output_tokens: Option<u64>,
    pub cost_usd: f64,
    /// What a cache hit saved, as the cache recorded it.
    pub cost_avoided_usd: Option<f64>,
    /// What the reference cost when an audit re-asked it for this call.
    pub audited_reference_usd: Option<f64>,
}

/// What a time series counts per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesBy {
    Model,
    Task,
    /// What the caches did (`hit`, `semantic-hit`, `miss`, `bypass`, or `-` for no lookup).
    Cache,
}

/// One bucket of one key of a time series over the application's calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket, ms since the epoch (UTC).
    pub at_ms: i64,
    pub key: String,
    pub calls: u64,
    pub cost_usd: f64,
    pub cost_avoided_usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendBy {
    Model,
    /// Why the money was spent: `traffic` (the application's own calls), `shadow` and `audit` (online checks
    /// of a deployment), `validation`, `control` and `judge` (validations run from the CLI or the API).
    Purpose,
    Day,
    Task,
    /// By task, policy version and role (`reference` / `replacement`): spend per deployment stage.
    Policy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendRow {
    /// The served model, the UTC day `YYYY-MM-DD`, or the task id.
    pub key: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Calls whose cost is estimated from local token counts.
    pub estimated_calls: u64,
    /// What cache hits saved: the cost of the calls they answered.
    pub cost_avoided_usd: f64,
}

/// A stored validation: the columns to list it by, and its whole report as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationRow {
    pub id: String,
    pub task_id: String,
    /// The replacement's SPEC.
    pub candidate: String,
    pub passed: bool,
    pub created_at_ms: i64,
    pub report: String,
}

/// A task's current policy, stored as JSON (its type lives with the deployment logic).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRow {
    pub task_id: String,
    pub version: u64,
    pub policy: String,
    pub updated_at_ms: i64,
}

/// One change to a policy: who, when, what, why, on what evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub task_id: String,
    pub version: u64,
    pub at_ms: i64,
    /// `cli:<user>`, `api`, or `auto` for the gateway's own decisions.
    pub actor: String,
    pub action: Action,
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub reason: Option<String>,
    /// JSON: the online counts or validation the change rested on.
    pub evidence: Option<String>,
}

/// One verified would-be hit of the semantic cache: the request went upstream and its fresh answer was
/// compared with the cached answer it would have been served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SemanticEvidence {
    pub task_id: String,
    pub at_ms: i64,
    pub similarity: f32,
    pub agreed: bool,
    pub call_id: Option<String>,
    pub note: Option<String>,
    /// What the learned verifier measured about the pair (`leanlm_semantic::Features`), if it was kept.
    pub features: Option<Vec<f32>>,
}

/// One semantic-cache entry as kept across restarts: the request it answered (its partition, last user turn
/// and context, with their embeddings) and the answer, until it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticEntry {
    /// The hash of everything but the conversation that must match for a hit (task, format, model, fields).
    pub partition: [u8; 32],
    pub task_id: String,
    /// Which embedding model made the vectors: entries of another are not loaded.
    pub embedding: String,
    pub stored_at_ms: i64,
    pub expires_at_ms: i64,
    pub last: String,
    pub context: String,
    pub last_vector: Vec<f32>,
    pub context_vector: Option<Vec<f32>>,
    pub body: Vec<u8>,
    pub cost_usd: Option<f64>,
    pub model: String,
    pub provider: String,
    /// The part of `context` that is not the conversation (system prompt, prefill); `None` for entries stored
    /// before it was kept.
    pub preamble: Option<String>,
}

/// One piece of online evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineScore {
    pub task_id: String,
    pub version: u64,
    pub at_ms: i64,
    pub kind: CheckKind,
    /// Whether the two answers agreed; `None` when there was nothing to compare.
    pub agreed: Option<bool>,
    /// The replacement failed (an error, or a fallback to the reference).
    pub error: bool,
    pub cost_usd: Option<f64>,
    pub call_id: Option<String>,
    pub note: Option<String>,
    /// The model that answered for the replacement (shadow, audit): what a router learns from.
    pub model: Option<String>,
    /// The scorer that compared the answers (a SPEC, e.g. `label`), so that training reads one scorer's
    /// outcomes, never a mix.
    pub scorer: Option<String>,
    /// The model whose answer `cost_usd` paid for (an audit pays for the reference's), for spend by model.
    pub billed_model: Option<String>,
}

/// Online evidence summed for one policy version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OnlineCounts {
    pub scored: u64,
    pub agreed: u64,
    pub attempts: u64,
    pub errors: u64,
    pub cost_usd: f64,
}
