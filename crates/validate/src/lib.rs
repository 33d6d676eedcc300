//! Validation on a task's own traffic: replay a sample of its logged calls through a replacement, score
//! each answer against the logged one with the task's scorer, measure how consistent the reference is with
//! itself, and decide pass or fail from a confidence interval, looking at the evidence as it arrives.

pub mod candidates;
pub mod report;
pub mod run;
pub mod sample;
pub mod score;

pub use candidates::{Candidate, CatalogModel, Needs, TaskUsage, candidates};
pub use leanlm_core::{Replacement, replacement, stats};
pub use report::{Report, Rule, Verdict};
pub use run::{Bound, Estimate, Logged, NoProgress, Options, Progress, Replay, Reply, ValidateError, Validation};
pub use score::ScorerSpec;
