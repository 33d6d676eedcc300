//! Wire formats spoken by LeanLM: the OpenAI Chat Completions and Anthropic Messages APIs on the client
//! side, and OpenAI, Anthropic and Gemini on the upstream side.
//!
//! Everything here is pure data and translation, with no I/O, so that the gateway's request path can be
//! tested exhaustively without a network. The OpenAI chat format is the hub: every translation goes
//! through it, so N formats need 2N translations rather than N².

pub mod anthropic;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod stream;
mod usage;

pub use error::{ErrorKind, WireError};
pub use usage::Usage;

use serde::{Deserialize, Serialize};

/// The wire format a client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientFormat {
    OpenAi,
    Anthropic,
}

impl ClientFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFormat::OpenAi => "openai",
            ClientFormat::Anthropic => "anthropic",
        }
    }
}

/// The wire format an upstream provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Together, DeepSeek, ...).
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// Seconds since the Unix epoch, for the `created` fields of synthesised responses.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The answer's text in a response of either client format (an OpenAI `chat.completion` or an Anthropic
/// message): message text, then tool calls as `name(arguments)`.
pub fn output_text(resp: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = String::new();
    if let Some(choice) = resp.pointer("/choices/0/message") {
        if let Some(t) = choice.get("content").and_then(Value::as_str) {
            out.push_str(t);
        }
        for tc in choice.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let name = tc.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
            let args = tc.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
            out.push_str(&format!("{name}({args})"));
        }
    } else if let Some(blocks) = resp.get("content").and_then(Value::as_array) {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                out.push_str(t);
            } else if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                out.push_str(&format!(
                    "{name}({})",
                    b.get("input").map(Value::to_string).unwrap_or_default()
                ));
            }
        }
    }
    out.trim().to_owned()
}

/// The answer's token log-probabilities in an OpenAI `chat.completion` (`choices[0].logprobs.content`),
/// when the request asked for them and the provider returned them.
pub fn output_logprobs(resp: &serde_json::Value) -> Option<Vec<f64>> {
    let tokens = resp.pointer("/choices/0/logprobs/content")?.as_array()?;
    let out: Vec<f64> = tokens
        .iter()
        .filter_map(|t| t.get("logprob")?.as_f64())
        .filter(|l| l.is_finite())
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Parses a JSON body into `T`, reporting the path of the first bad field (`messages[2].role: ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            WireError::invalid(format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            WireError::invalid(format!("invalid request body: {inner}"))
        } else {
            WireError::invalid(format!("invalid field `{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn log_probabilities_are_read_where_present() {
        let v = json!({"choices": [{"message": {"content": "hi there"}, "logprobs": {"content": [
            {"token": "hi", "logprob": -0.01, "bytes": null, "top_logprobs": []},
            {"token": " there", "logprob": -1.5, "bytes": null, "top_logprobs": []}
        ]}}]});
        assert_eq!(super::output_logprobs(&v), Some(vec![-0.01, -1.5]));
        let none = json!({"choices": [{"message": {"content": "hi"}, "logprobs": null}]});
        assert_eq!(super::output_logprobs(&none), None);
        assert_eq!(super::output_logprobs(&json!({"content": []})), None);
    }
}
