//! The semantic cache's judgement: whether a new request may be answered with a cached answer to a
//! similar one. Similar embeddings are not enough: "Cancel my subscription" and "Don't cancel my
//! subscription" are close in embedding space and want opposite answers. Cheap lexical guards veto hits
//! whose texts differ in numbers, negation, named entities, quantifiers or opposite words, and the whole
//! conversation is compared, not only its last turn.

mod bound;
mod guards;
mod index;

pub use bound::{CONFIDENCE, Estimate, Verified, calibrate, evidence_needed};
pub use guards::{Veto, veto, veto_context};
pub use index::{Neighbour, Partition, dot};

/// A request as the semantic cache compares it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Everything before the last user turn (system prompt and earlier turns), joined.
    pub context: &'a str,
    /// The last user turn.
    pub last: &'a str,
}

/// How close two requests must be, and in what, for a cached answer to be served.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Cosine similarity of the last user turns.
    pub threshold: f32,
    /// Cosine similarity of the contexts, when there is one.
    pub context_threshold: f32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: 0.85,
            context_threshold: 0.75,
        }
    }
}

/// The decision for one candidate, with the reason when it is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hit,
    TooFar { similarity: f32 },
    ContextDiffers { similarity: f32 },
    Vetoed(Veto),
}

/// Decides whether `new` may be served the answer cached for `cached`, given the cosine similarities of
/// their last turns and of their contexts (`None` when neither has context).
pub fn decide(policy: &Policy, new: Query, cached: Query, last_sim: f32, context_sim: Option<f32>) -> Decision {
    if last_sim < policy.threshold {
        return Decision::TooFar { similarity: last_sim };
    }
    match context_sim {
        Some(s) if s < policy.context_threshold => return Decision::ContextDiffers { similarity: s },
        None if new.context.trim().is_empty() != cached.context.trim().is_empty() => {
            return Decision::ContextDiffers { similarity: 0.0 };
        }
        _ => {}
    }
    if let Some(v) = veto(new.last, cached.last) {
        return Decision::Vetoed(v);
    }
    if let Some(v) = veto_context(new.context, cached.context) {
        return Decision::Vetoed(v);
    }
    Decision::Hit
}
