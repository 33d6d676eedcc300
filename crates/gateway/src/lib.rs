//! The LeanLM gateway: an OpenAI- and Anthropic-compatible proxy that records every call with its exact
//! cost, in front of OpenAI, Anthropic, Gemini and any OpenAI-compatible server.

pub mod admin;
mod cache;
mod cascade;
pub mod config;
pub mod embedder;
pub mod listen;
mod metrics;
pub mod policy;
mod proxy;
mod queue;
mod replay;
pub mod route;
pub mod semantic;
mod server;
mod templates;
mod upstream;

pub use config::{Config, ConfigError, Overrides};
pub use proxy::{
    HEADER_CACHE_SIMILARITY, HEADER_CALL_ID, HEADER_COST, HEADER_COST_ESTIMATED, HEADER_MODEL, HEADER_PROVIDER,
    HEADER_TASK,
};
pub use replay::Replayer;
pub use server::{AppState, Gateway, run};

/// Unix milliseconds now: call times, policy changes, report dates.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
