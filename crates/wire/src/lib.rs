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
