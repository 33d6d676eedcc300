//! Profiling: which task a call belongs to, and what kind of work a task is.
//!
//! A task is the same job sent from the same code path. Clients may name it (`X-LeanLM-Task`, or
//! `metadata.leanlm_task`); otherwise it is discovered from the call's template: the system prompt and the
//! first user turn with their variable spans masked, the tool and `response_format` schemas, and the
//! endpoint. The id is a hash of that skeleton, so it is the same across restarts and gateway instances.

mod identify;
mod kind;
pub mod mask;
mod miner;
mod report;

pub use identify::{Discoverer, Identity, MAX_NAME_CHARS, MAX_NAMED, NameError, Origin, Shape};
pub use kind::{CallSignals, TaskType, TypeVerdict, classify};
pub use report::{Offer, Percentiles, Savings, TaskProfile, profile};
