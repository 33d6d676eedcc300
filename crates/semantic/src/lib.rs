//! The semantic cache's judgement: whether a new request may be answered with a cached answer to a
//! similar one. Similar embeddings are not enough: "Cancel my subscription" and "Don't cancel my
//! subscription" are close in embedding space and want opposite answers. Cheap lexical guards veto hits
//! whose texts differ in numbers, negation, named entities, quantifiers, opposite words, direction, one word
//! swapped for another that is not its synonym, or a qualifier added ("a gift" / "a gift card"); the same
//! words misspelt are the same question, whatever the embedding says. The whole conversation is compared, not
//! only its last turn, except for a question that stands on its own (a change of topic); a bare reply ("yes
//! please") matches only in the same conversation, and texts too long to compare word by word only when they
//! are the same text.

mod bound;
mod guards;
mod index;
mod lexicon;
mod verifier;

pub use bound::{CONFIDENCE, Estimate, Verified, calibrate, evidence_needed};
pub use guards::{Veto, fired, veto, veto_context};
pub use index::{ANN_FROM, ANN_SEARCH_FROM, Neighbour, Partition, dot, dot_i8, quantise};
pub use lexicon::{lexicon_loaded, load_lexicon};
pub use verifier::{
    Evidence, FEATURE_NAMES, FEATURES, Features, Fitted, Judge, MIN_CLASS, MIN_FIT, PRIOR, REFIT, Refit, Sample,
    Verifier,
};

/// A request as the semantic cache compares it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Everything before the last user turn (system prompt and earlier turns), joined.
    pub context: &'a str,
    /// The part of the context that is not the conversation (system prompt, an assistant prefill), or `None`
    /// when not known: a last turn that stands on its own is compared without the conversation before it,
    /// but only under the same preamble.
    pub preamble: Option<&'a str>,
    /// The last user turn.
    pub last: &'a str,
}

/// The judgement on one cached neighbour of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A would-be hit, at this similarity: the lower of the last turns' and the contexts'. Whether it is
    /// served depends on the task's calibrated threshold ([`calibrate`]).
    Candidate {
        similarity: f32,
    },
    /// Not similar enough to be considered at all.
    TooFar {
        similarity: f32,
    },
    /// One request has a context (system prompt, earlier turns) and the other none.
    ContextDiffers,
    Vetoed(Veto),
}

/// Judges whether `cached`'s answer could answer `new`, given the cosine similarities of their last turns
/// and of their contexts (`None` when neither has one), and the lowest similarity worth considering.
///
/// A last turn that stands on its own on both sides ("Is PulseFit open on Christmas Day?") is judged on
/// itself alone, under the same preamble: a conversation before it that has nothing to do with it (a topic
/// change) does not stop the hit, as its answer cannot depend on it.
///
/// Two last turns that are the same words but for misspellings are the same question whatever their
/// embeddings say (MiniLM scores "cancle" far from "cancel"): their similarity is taken as 1.
pub fn judge(new: Query, cached: Query, last_sim: f32, context_sim: Option<f32>, min_similarity: f32) -> Decision {
    judge_with(new, cached, last_sim, context_sim, min_similarity, true)
}

/// [`judge`], with the last turns' word-level guards (`last_guards`) or without them (for [`assess`], which
/// reads them as evidence instead).
fn judge_with(
    new: Query,
    cached: Query,
    last_sim: f32,
    context_sim: Option<f32>,
    min_similarity: f32,
    last_guards: bool,
) -> Decision {
    let last_sim = if last_sim < 1.0 && guards::spelled_alike(new.last, cached.last) {
        1.0
    } else {
        last_sim
    };
    let own_question = match (new.preamble, cached.preamble) {
        (Some(a), Some(b)) => guards::standalone(new.last) && guards::standalone(cached.last) && same_text(a, b),
        _ => false,
    };
    if own_question {
        if last_sim < min_similarity {
            return Decision::TooFar { similarity: last_sim };
        }
        return match last_guards.then(|| veto(new.last, cached.last)).flatten() {
            Some(v) => Decision::Vetoed(v),
            None => Decision::Candidate { similarity: last_sim },
        };
    }
    let similarity = match context_sim {
        Some(c) => last_sim.min(c),
        None if new.context.trim().is_empty() != cached.context.trim().is_empty() => {
            return Decision::ContextDiffers;
        }
        None => last_sim,
    };
    if similarity < min_similarity {
        return Decision::TooFar { similarity };
    }
    let long = |a: &str, b: &str| a.len() > LONG_TEXT || b.len() > LONG_TEXT;
    if long(new.last, cached.last) {
        if !same_text(new.last, cached.last) {
            return Decision::Vetoed(Veto::LongText);
        }
    } else if last_guards && let Some(v) = veto(new.last, cached.last) {
        return Decision::Vetoed(v);
    }
    if long(new.context, cached.context) {
        if !same_text(new.context, cached.context) {
            return Decision::Vetoed(Veto::LongText);
        }
        return Decision::Candidate { similarity };
    }
    if let Some(v) = veto_context(new.context, cached.context) {
        return Decision::Vetoed(v);
    }
    if (guards::bare_reply(new.last) || guards::bare_reply(cached.last))
        && let Some(v) = guards::veto_reply(new.context, cached.context)
    {
        return Decision::Vetoed(v);
    }
    Decision::Candidate { similarity }
}

/// A pair as the learned verifier sees it: what [`judge`] decides on structure alone (too far, a context on
/// one side only, texts too long to compare, a bare reply in another conversation, contexts the guards
/// tell apart), and otherwise the pair's [`Features`], the word-level guards of the last turns among them as
/// evidence rather than vetoes.
#[derive(Debug, Clone, PartialEq)]
pub enum Assessment {
    Candidate { similarity: f32, features: Features },
    Refused(Decision),
}

/// Like [`judge`], for a learned verifier: the last turns' guards become features instead of vetoes.
pub fn assess(new: Query, cached: Query, last_sim: f32, context_sim: Option<f32>, min_similarity: f32) -> Assessment {
    match judge_with(new, cached, last_sim, context_sim, min_similarity, false) {
        Decision::Candidate { similarity } => Assessment::Candidate {
            similarity,
            features: Features::measure(new, cached, last_sim, context_sim),
        },
        refused => Assessment::Refused(refused),
    }
}

/// Verified would-be hits kept per task: recent traffic decides, so the estimate follows drift.
pub const EVIDENCE_WINDOW: usize = 5_000;

/// Texts longer than this (in bytes) are not compared word by word, since the guards' cost grows with the
/// text (about 0.2 s for two 500 KB histories); they must be the same text, up to case and spacing. Past
/// its first 256 word pieces the embedding does not see a text at all, so for long texts the guards are
/// what compares them, and only sameness is cheap and safe.
pub const LONG_TEXT: usize = 32 * 1024;

/// The same text up to case and spacing (compared as it streams: the first difference ends it).
fn same_text(a: &str, b: &str) -> bool {
    fn folded(t: &str) -> impl Iterator<Item = char> + '_ {
        t.split_whitespace()
            .flat_map(|w| w.chars().flat_map(char::to_lowercase).chain([' ']))
    }
    folded(a).eq(folded(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q<'a>(context: &'a str, last: &'a str) -> Query<'a> {
        Query {
            context,
            preamble: None,
            last,
        }
    }

    #[test]
    fn the_weaker_of_turn_and_context_similarity_decides() {
        let a = q("system: be brief", "where is my card");
        let b = q("system: be brief", "where's my card");
        assert_eq!(
            judge(a, b, 0.95, Some(0.9), 0.8),
            Decision::Candidate { similarity: 0.9 }
        );
        assert_eq!(judge(a, b, 0.95, Some(0.7), 0.8), Decision::TooFar { similarity: 0.7 });
        assert_eq!(
            judge(a, q("", "where is my card"), 0.99, None, 0.8),
            Decision::ContextDiffers
        );
        assert_eq!(
            judge(
                q("", "cancel my order"),
                q("", "don't cancel my order"),
                0.97,
                None,
                0.8
            ),
            Decision::Vetoed(Veto::Negation)
        );
    }

    #[test]
    fn misspelt_words_are_the_same_question_whatever_the_embedding_says() {
        let (a, b) = (
            q("", "How do I cancel an order I placed this morning?"),
            q("", "How do I cancle an order I placed this morning?"),
        );
        assert_eq!(judge(a, b, 0.72, None, 0.8), Decision::Candidate { similarity: 1.0 });
        let other = q("", "How do I cancel an order I placed this evening?");
        assert_eq!(judge(a, other, 0.72, None, 0.8), Decision::TooFar { similarity: 0.72 });
    }

    #[test]
    fn long_texts_must_be_the_same_text() {
        let doc = "The contract runs for 12 months. ".repeat(LONG_TEXT / 16);
        let other = doc.replacen("12 months", "24 months", 1);
        let context = format!("system: answer from the document\nuser: {doc}");
        let spaced = format!("system: answer from the document\nuser:  {}", doc.to_uppercase());
        assert_eq!(
            judge(
                q(&context, "how long does it run?"),
                q(&spaced, "how long does it run?"),
                1.0,
                Some(1.0),
                0.8
            ),
            Decision::Candidate { similarity: 1.0 }
        );
        let changed = format!("system: answer from the document\nuser: {other}");
        assert_eq!(
            judge(
                q(&context, "how long does it run?"),
                q(&changed, "how long does it run?"),
                1.0,
                Some(1.0),
                0.8
            ),
            Decision::Vetoed(Veto::LongText)
        );
        assert_eq!(
            judge(q("", &doc), q("", &other), 1.0, None, 0.8),
            Decision::Vetoed(Veto::LongText)
        );
        assert_eq!(
            judge(q("", &doc), q("", &doc), 1.0, None, 0.8),
            Decision::Candidate { similarity: 1.0 }
        );
    }

    #[test]
    fn a_question_of_its_own_is_judged_without_the_conversation_before_it() {
        fn own<'a>(context: &'a str, preamble: Option<&'a str>, last: &'a str) -> Query<'a> {
            Query {
                context,
                preamble,
                last,
            }
        }
        let towels = "user: can I bring my own towel?\nassistant: Yes, or hire one for £3.";
        let lost = "user: is there a lost property at the Leeds club?\nassistant: Yes, for 30 days.";
        let q = "Is PulseFit open on Christmas Day?";
        // Unrelated histories (whose names and numbers differ) do not stop a question that stands on its own.
        assert_eq!(
            judge(own(towels, Some(""), q), own(lost, Some(""), q), 0.99, Some(0.2), 0.8),
            Decision::Candidate { similarity: 0.99 }
        );
        assert_eq!(
            judge(own(towels, Some(""), q), own("", Some(""), q), 0.99, None, 0.8),
            Decision::Candidate { similarity: 0.99 }
        );
        // Its own words are still guarded.
        assert_eq!(
            judge(
                own(towels, Some(""), q),
                own(lost, Some(""), "Is PulseFit open on Boxing Day?"),
                0.95,
                Some(0.2),
                0.8
            ),
            Decision::Vetoed(Veto::Entities)
        );
        // Another system prompt, a preamble not known, or a question that points back: the whole context counts.
        let french = "system: answer in French\nuser: can I bring my own towel?";
        assert_eq!(
            judge(
                own(towels, Some(""), q),
                own(french, Some("system: answer in French"), q),
                0.99,
                Some(0.7),
                0.8
            ),
            Decision::TooFar { similarity: 0.7 }
        );
        assert_eq!(
            judge(own(towels, Some(""), q), own(lost, None, q), 0.99, Some(0.2), 0.8),
            Decision::TooFar { similarity: 0.2 }
        );
        let refund = "how long will the refund take?";
        assert_eq!(
            judge(
                own(towels, Some(""), refund),
                own(lost, Some(""), refund),
                1.0,
                Some(0.2),
                0.8
            ),
            Decision::TooFar { similarity: 0.2 }
        );
    }

    #[test]
    fn a_bare_reply_in_another_conversation_is_vetoed_even_when_the_contexts_are_close() {
        let cancel = "user: my plan renews tomorrow\nassistant: Shall I cancel it before then?";
        let switch = "user: my plan renews tomorrow\nassistant: Shall I switch you to annual billing?";
        assert_eq!(
            judge(q(cancel, "yes please"), q(switch, "Yes please."), 0.98, Some(0.9), 0.8),
            Decision::Vetoed(Veto::Reply)
        );
        assert_eq!(
            judge(q(cancel, "yes please"), q(cancel, "Yes please."), 0.98, Some(1.0), 0.8),
            Decision::Candidate { similarity: 0.98 }
        );
        // A question of its own is judged on its own words, as before.
        assert_eq!(
            judge(
                q(cancel, "how much is it?"),
                q(switch, "how much is it?"),
                1.0,
                Some(0.9),
                0.8
            ),
            Decision::Candidate { similarity: 0.9 }
        );
    }
}
