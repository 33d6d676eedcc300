//! One call through the gateway and everything that happened to it: what the call log stores, what
//! profiling, validation and deployment read back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ClientFormat, Usage};

/// Generates `as_str`, `Display` and `FromStr` for an enum of names, in one place per enum: the names are
/// what the store, the JSON APIs and the metrics carry.
macro_rules! names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}`; expected {}"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

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

names!(CallStatus, "status", {
    Ok => "ok",
    ClientError => "client_error",
    UpstreamError => "upstream_error",
    ClientClosed => "client_closed",
});

/// Everything recorded about one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub started_at_ms: i64,
    /// `chat.completions`, `messages` or `embeddings`.
    pub endpoint: String,
    /// The format the client spoke.
    pub client_format: ClientFormat,
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
    /// What the caches did.
    pub cache: Option<CacheOutcome>,
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
    pub outcome: StageOutcome,
    /// The acceptance score, where one was computed.
    pub score: Option<f64>,
    /// What failed, for `unusable` and `failed`.
    pub note: Option<String>,
}

/// Which policy version served a call, and in which role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTag {
    pub version: u64,
    pub role: Role,
}

/// Which task a call belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub id: String,
    /// The automatic name, used when the task is first seen; `leanlm task rename` changes the stored one.
    pub name: String,
    pub origin: Origin,
    /// Tasks this one absorbed when discovery found they share its template: the store folds their calls
    /// into it. Not part of the wire or of stored rows.
    #[serde(skip)]
    pub absorbs: std::sync::Arc<[String]>,
}

/// A template discovery mined from the calls of one group (endpoint, part, tools, response format), its
/// variables as `⟨*⟩`. Kept in the store, so that after a restart, and on every other instance sharing the
/// store, the calls it covers go to its task from the first one instead of being relearnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinedTemplate {
    pub group: u64,
    pub text: String,
    /// Ids of the tasks its calls had before it was mined.
    pub absorbs: Vec<String>,
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

/// How a call's task was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Named by the client.
    Explicit,
    /// Discovered from the prompt template.
    Template,
    /// Free-form conversation: no fixed instructions to tell code paths apart.
    Chat,
}
names!(Origin, "task origin", { Explicit => "explicit", Template => "template", Chat => "chat" });

/// Which side of a task's policy served a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The model the client asked for.
    Reference,
    /// The policy's replacement.
    Replacement,
}
names!(Role, "policy role", { Reference => "reference", Replacement => "replacement" });

/// What the caches did for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// Answered by the exact cache.
    Hit,
    /// Answered by the semantic cache.
    SemanticHit,
    /// Looked up, not found; the answer is stored.
    Miss,
    /// Not eligible, or caching is off.
    Bypass,
}
names!(CacheOutcome, "cache outcome", { Hit => "hit", SemanticHit => "semantic-hit", Miss => "miss", Bypass => "bypass" });

impl CacheOutcome {
    /// A cache answered the call.
    pub fn is_hit(self) -> bool {
        matches!(self, CacheOutcome::Hit | CacheOutcome::SemanticHit)
    }
}

/// What a cascade did with a cheap stage's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageOutcome {
    /// Served.
    Accepted,
    /// The acceptance score was under the threshold: the next model answers.
    Escalated,
    /// Failed a hard check (a refusal, invalid JSON, an unknown label).
    Unusable,
    /// No answer.
    Failed,
}
names!(StageOutcome, "stage outcome", { Accepted => "accepted", Escalated => "escalated", Unusable => "unusable", Failed => "failed" });

/// What an online check of a policy saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The replacement answered a call the reference served.
    Shadow,
    /// The reference re-answered a call the replacement served.
    Audit,
    /// The replacement served; only its failure counts.
    Served,
}
names!(CheckKind, "check kind", { Shadow => "shadow", Audit => "audit", Served => "served" });

/// A change to a task's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deploy,
    Promote,
    Rollback,
}
names!(Action, "policy action", { Deploy => "deploy", Promote => "promote", Rollback => "rollback" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_text_and_json() {
        for o in [
            CacheOutcome::Hit,
            CacheOutcome::SemanticHit,
            CacheOutcome::Miss,
            CacheOutcome::Bypass,
        ] {
            assert_eq!(o.as_str().parse::<CacheOutcome>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for o in [Origin::Explicit, Origin::Template, Origin::Chat] {
            assert_eq!(o.to_string().parse::<Origin>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(serde_json::to_value(StageOutcome::Unusable).unwrap(), "unusable");
        assert_eq!(serde_json::to_value(Role::Replacement).unwrap(), "replacement");
        assert!(
            "nope"
                .parse::<Role>()
                .unwrap_err()
                .contains("expected reference, replacement")
        );
    }
}
