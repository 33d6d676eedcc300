//! One call through the gateway and everything that happened to it: what the call log stores, what
//! profiling, validation and deployment read back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Usage;

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
