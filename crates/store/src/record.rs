use std::fmt;
use std::str::FromStr;

use leanlm_wire::Usage;
use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ok,
    /// The request was refused before reaching an upstream (bad JSON, unknown model, too large, ...).
    ClientError,
    /// The upstream answered with an error, an unusable body, or not at all.
    UpstreamError,
    /// The client went away before the answer was complete; the upstream request was cancelled.
    ClientClosed,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ok => "ok",
            CallStatus::ClientError => "client_error",
            CallStatus::UpstreamError => "upstream_error",
            CallStatus::ClientClosed => "client_closed",
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ok" => CallStatus::Ok,
            "client_error" => CallStatus::ClientError,
            "upstream_error" => CallStatus::UpstreamError,
            "client_closed" => CallStatus::ClientClosed,
            other => {
                return Err(format!(
                    "unknown status `{other}`; expected ok, client_error, upstream_error or client_closed"
                ));
            }
        })
    }
}

/// Everything recorded about one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub started_at_ms: i64,
    /// `chat.completions`, `messages` or `embeddings`.
    pub endpoint: String,
    /// `openai` or `anthropic`: the format the client spoke.
    pub client_format: String,
    /// A short hash of the client's API key, never the key.
    pub client_key_id: Option<String>,
    /// The task the call belongs to: named by the client or discovered from its template.
    pub task: Option<TaskRef>,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub status: CallStatus,
    pub http_status: u16,
    pub error: Option<String>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// True when the token counts were computed locally because the upstream reported none.
    pub cost_estimated: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// Time spent in the gateway itself, excluding the wait for the upstream.
    pub overhead_us: Option<f64>,
    /// Upstream attempts made, retries and fallbacks included.
    pub attempts: u32,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// The exact cache's part: `hit`, `miss` (looked up, then stored), or `bypass` (not eligible or off).
    pub cache: Option<String>,
    /// What a cache hit would have cost upstream: the cached call's own cost.
    pub cost_avoided_usd: Option<f64>,
    /// The deployment policy the call was served under, if its task had an active one.
    pub policy: Option<PolicyTag>,
    /// A cascade's first stage, when one answered before the served answer was chosen. `cost_usd` is the
    /// call's total, this stage's cost included.
    #[serde(default)]
    pub stages: Vec<StageRecord>,
}

/// A cascade stage: the cheap model's answer and what the cascade did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub model: String,
    /// Every sample the stage drew.
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
    /// `accepted` (served), `escalated` (the score was under the threshold), `unusable` (failed a hard
    /// check) or `failed` (no answer).
    pub outcome: String,
    /// The acceptance score, where one was computed.
    pub score: Option<f64>,
    /// What failed, for `unusable` and `failed`.
    pub note: Option<String>,
}

/// Which policy version served a call, and in which role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTag {
    pub version: u64,
    /// `reference` or `replacement`.
    pub role: String,
}

/// Which task a call belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub id: String,
    /// The automatic name, used when the task is first seen; `leanlm task rename` changes the stored one.
    pub name: String,
    /// `explicit`, `template` or `chat`.
    pub origin: String,
}

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
    pub origin: String,
    pub renamed: bool,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub calls: u64,
    pub cost_usd: f64,
}

/// The numbers of one call, for profiling a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallStats {
    pub started_at_ms: i64,
    pub served_model: Option<String>,
    pub status: CallStatus,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
    /// Short hashes: equal requests (exact duplicates) and equal answers share them.
    pub request_hash: Option<String>,
    pub output_hash: Option<String>,
}

/// One row of `leanlm calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    pub id: String,
    pub task: Option<String>,
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
    pub cache: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub limit: usize,
    pub task: Option<String>,
    /// Matches the requested or the served model.
    pub model: Option<String>,
    pub status: Option<CallStatus>,
    pub since_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendBy {
    Model,
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
    /// `deploy`, `promote`, `rollback`.
    pub action: String,
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
    /// `shadow` (the replacement answered a reference-served call), `audit` (the reference re-answered a
    /// replacement-served call), or `served` (the replacement served; only its failure counts).
    pub kind: String,
    /// Whether the two answers agreed; `None` when there was nothing to compare.
    pub agreed: Option<bool>,
    /// The replacement failed (an error, or a fallback to the reference).
    pub error: bool,
    pub cost_usd: Option<f64>,
    pub call_id: Option<String>,
    pub note: Option<String>,
    /// The model that answered for the replacement (shadow, audit): what a router learns from.
    pub model: Option<String>,
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
