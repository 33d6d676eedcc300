//! LeanLM's domain types, shared by every other crate: the call record and the task it belongs to, the
//! token usage it was billed for, the replacements and scorers the loop reasons about, and the statistics
//! verdicts rest on. A leaf crate: it depends on no other LeanLM crate and does no I/O, so the pure crates
//! (profiling, routing, the semantic cache's judgement, deployment rules) need nothing heavier.

mod call;
mod format;
pub mod money;
pub mod replacement;
pub mod scorer;
pub mod stats;
mod task;
pub mod transcript;
mod usage;
pub mod value;

pub use call::{
    Action, CacheOutcome, CallRecord, CallStats, CallStatus, CheckKind, MinedTemplate, Origin, PolicyTag, Role,
    StageOutcome, StageRecord, TaskRef,
};
pub use format::{ClientFormat, ProviderKind};
pub use replacement::Replacement;
pub use scorer::ScorerSpec;
pub use task::TaskType;
pub use usage::Usage;
