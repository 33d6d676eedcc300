//! What kind of work a task is, decided from what its calls ask for and what they get back. The reasons
//! are kept: the type decides which replacements and scorers apply later, so a user must be able to see
//! why a task got its label.

use leanlm_core::value::{VALUE_SHARE, comes_to_value};
use serde::Serialize;

#[cfg(test)]
use leanlm_core::ScorerSpec;
pub use leanlm_core::TaskType;

/// What one call asked and answered, as far as typing needs it.
#[derive(Debug, Clone, Default)]
pub struct CallSignals {
    pub embeddings: bool,
    /// User turns in the request.
    pub turns: u32,
    pub json_requested: bool,
    /// Structured output against a schema (`response_format: json_schema`), not just JSON mode.
    pub schema_requested: bool,
    pub tools_offered: bool,
    /// The request sends an image.
    pub images: bool,
    pub tool_called: bool,
    pub input_tokens: u64,
    /// Characters in the last user turn (0: not known).
    pub user_chars: u64,
    pub output_tokens: u64,
    /// The answer's text (trimmed), for distinct-output counts and JSON/code detection.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeVerdict {
    #[serde(rename = "type")]
    pub kind: TaskType,
    pub reasons: Vec<String>,
    /// The answers come to a value (a number, a date, yes/no, or a final answer after reasoning): such a
    /// task is scored on that value, whatever its type (see [`leanlm_core::ScorerSpec::for_task`]).
    pub values: bool,
}

fn any_word(text: &str, words: &[&str]) -> Option<String> {
    words.iter().find(|w| text.contains(*w)).map(|w| w.trim().to_string())
}

/// Types a task from its instructions (the masked template: system prompt and first user turn) and a
/// sample of its calls.
pub fn classify(instructions: &str, chat_origin: bool, calls: &[CallSignals]) -> TypeVerdict {
    let mut v = classify_kind(instructions, chat_origin, calls);
    let answered: Vec<&CallSignals> = calls.iter().filter(|c| !c.embeddings && !c.tool_called).collect();
    let valued = answered.iter().filter(|c| comes_to_value(&c.output)).count();
    let share = valued as f64 / answered.len().max(1) as f64;
    if !matches!(v.kind, TaskType::Extract | TaskType::Code | TaskType::Embed)
        && answered.len() >= 3
        && share >= VALUE_SHARE
    {
        v.values = true;
        v.reasons.push(format!(
            "{:.0}% of answers come to a value (a number, a date, yes/no, or a final answer after reasoning)",
            share * 100.0
        ));
    }
    v
}

fn classify_kind(instructions: &str, chat_origin: bool, calls: &[CallSignals]) -> TypeVerdict {
    let verdict = |kind, reasons: Vec<String>| TypeVerdict {
        kind,
        reasons,
        values: false,
    };
    let n = calls.len().max(1) as f64;
    let share = |f: &dyn Fn(&CallSignals) -> bool| calls.iter().filter(|c| f(c)).count() as f64 / n;
    let text = instructions.to_lowercase();

    if calls.iter().any(|c| c.embeddings) {
        return verdict(TaskType::Embed, vec!["calls go to the embeddings endpoint".into()]);
    }
    let mean_turns = calls.iter().map(|c| c.turns as f64).sum::<f64>() / n;
    if chat_origin {
        return verdict(
            TaskType::Chat,
            vec!["free-form user turns with no fixed instructions".into()],
        );
    }
    if mean_turns >= 2.5 {
        return verdict(
            TaskType::Chat,
            vec![format!("conversations average {mean_turns:.1} user turns")],
        );
    }

    let mean_out = calls.iter().map(|c| c.output_tokens as f64).sum::<f64>() / n;
    let mean_in = calls.iter().map(|c| c.input_tokens as f64).sum::<f64>() / n;
    let mut outputs: Vec<&str> = calls.iter().map(|c| c.output.as_str()).collect();
    outputs.sort_unstable();
    outputs.dedup();
    let distinct = outputs.len();
    let json_share = share(&|c| {
        let o = c.output.trim();
        (o.starts_with('{') || o.starts_with('[')) && serde_json::from_str::<serde_json::Value>(o).is_ok()
    });
    let tool_share = share(&|c| c.tool_called);
    let code_share = share(&|c| c.output.contains("```") || c.output.contains("def ") || c.output.contains("SELECT "));

    let label_words = [
        "classify",
        "classif",
        "categor",
        "label",
        "intent",
        "sentiment",
        "which of the following",
        "one of the",
    ];
    let few_outputs = calls.len() >= 5 && (distinct as f64) <= (n * 0.5).max(3.0);
    let short = mean_out <= 12.0;
    if let Some(w) = any_word(&text, &label_words)
        && short
    {
        return verdict(
            TaskType::Classify,
            vec![
                format!("instructions mention `{w}`"),
                format!("answers average {mean_out:.1} tokens"),
            ],
        );
    }
    let few_short_answers = few_outputs && short;

    let code_words = [
        "code",
        "function",
        "python",
        "sql",
        "javascript",
        "typescript",
        "program",
        "regex",
        "refactor",
        "debug",
        "compile",
    ];
    if let Some(w) = any_word(&text, &code_words) {
        return verdict(
            TaskType::Code,
            vec![
                format!("instructions mention `{w}`"),
                format!("{:.0}% of answers contain code", code_share * 100.0),
            ],
        );
    }
    if code_share >= 0.5 {
        return verdict(
            TaskType::Code,
            vec![format!("{:.0}% of answers contain code", code_share * 100.0)],
        );
    }

    let extract_words = ["extract", "parse", "fields", "entities", "json"];
    let requested = calls.iter().any(|c| c.json_requested);
    if requested || json_share >= 0.6 || tool_share >= 0.5 {
        let mut reasons = Vec::new();
        if requested {
            reasons.push("requests ask for JSON output (response_format)".to_owned());
        }
        if json_share >= 0.6 {
            reasons.push(format!("{:.0}% of answers are JSON", json_share * 100.0));
        }
        if tool_share >= 0.5 {
            reasons.push(format!("{:.0}% of answers are tool calls", tool_share * 100.0));
        }
        return verdict(TaskType::Extract, reasons);
    }
    if few_short_answers {
        return verdict(
            TaskType::Classify,
            vec![
                format!("{distinct} distinct answers over {} calls", calls.len()),
                format!("answers average {mean_out:.1} tokens"),
            ],
        );
    }
    if let Some(w) = any_word(&text, &extract_words) {
        return verdict(TaskType::Extract, vec![format!("instructions mention `{w}`")]);
    }

    let summary_words = ["summar", "tl;dr", "tldr", "condense", "key points", "gist"];
    if let Some(w) = any_word(&text, &summary_words) {
        return verdict(TaskType::Summarize, vec![format!("instructions mention `{w}`")]);
    }
    let question_words = ["question", "answer the", "answer using", "faq"];
    if let Some(w) = any_word(&text, &question_words) {
        return verdict(
            TaskType::Generate,
            vec![format!("instructions ask to answer questions (`{w}`)")],
        );
    }
    // What a summary condenses is the user's material: a long system prompt or history in front of a short
    // question is an assistant's input, not a document (about four characters a token).
    let mean_user = calls.iter().map(|c| c.user_chars as f64 / 4.0).sum::<f64>() / n;
    let material = if calls.iter().all(|c| c.user_chars > 0) {
        mean_user
    } else {
        mean_in
    };
    if mean_out >= 15.0 && mean_in >= 5.0 * mean_out && material >= 5.0 * mean_out {
        return verdict(
            TaskType::Summarize,
            vec![format!(
                "inputs average {mean_in:.0} tokens and answers {mean_out:.0}: {:.1}x shorter",
                mean_in / mean_out
            )],
        );
    }
    verdict(
        TaskType::Generate,
        vec![format!(
            "open-ended answers averaging {mean_out:.0} tokens; no narrower type fits"
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(input: u64, output: &str) -> CallSignals {
        CallSignals {
            turns: 1,
            input_tokens: input,
            output_tokens: output.split_whitespace().count() as u64 * 2,
            output: output.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_long_system_prompt_before_a_short_question_is_not_a_document() {
        let long = "a sentence with several words in it ".repeat(4);
        // 2,000 tokens in, of which the user's question is 20 characters: an assistant, not a summary.
        let assistant: Vec<_> = (0..10)
            .map(|i| CallSignals {
                user_chars: 20,
                ..call(2000, &format!("{long} {i}"))
            })
            .collect();
        assert_eq!(
            classify("You are Juniper, a warm assistant", false, &assistant).kind,
            TaskType::Generate
        );
        let summary: Vec<_> = (0..10)
            .map(|i| CallSignals {
                user_chars: 7000,
                ..call(2000, &format!("{long} {i}"))
            })
            .collect();
        assert_eq!(
            classify("You are Juniper, a warm assistant", false, &summary).kind,
            TaskType::Summarize
        );
    }

    #[test]
    fn types_follow_their_signals() {
        let labels: Vec<_> = (0..20)
            .map(|i| call(80, ["card_arrival", "lost_card", "top_up"][i % 3]))
            .collect();
        let v = classify("Classify the customer's message into one intent", false, &labels);
        assert_eq!(v.kind, TaskType::Classify);
        assert!(v.reasons[0].contains("classif"));
        // Few distinct short answers are enough without the word.
        assert_eq!(
            classify("Answer for the message", false, &labels).kind,
            TaskType::Classify
        );

        let json: Vec<_> = (0..10)
            .map(|i| call(200, &format!("{{\"name\": \"n{i}\", \"total\": {i}}}")))
            .collect();
        assert_eq!(classify("Read the invoice", false, &json).kind, TaskType::Extract);

        let long = "a sentence with several words in it ".repeat(4);
        let sums: Vec<_> = (0..10).map(|i| call(2000, &format!("{long} {i}"))).collect();
        let v = classify("Condense the article for the newsletter", false, &sums);
        assert_eq!(v.kind, TaskType::Summarize);
        assert_eq!(
            classify("Rewrite the article", false, &sums).kind,
            TaskType::Summarize,
            "input/output ratio"
        );

        let open_ended: Vec<_> = (0..10).map(|i| call(30, &format!("{long} {i}"))).collect();
        assert_eq!(
            classify("Translate to French", false, &open_ended).kind,
            TaskType::Generate
        );
        assert_eq!(classify("", true, &open_ended).kind, TaskType::Chat);
        let code: Vec<_> = (0..10).map(|_| call(30, "```python\ndef f(): pass\n```")).collect();
        assert_eq!(classify("Write a python function", false, &code).kind, TaskType::Code);
        let emb = vec![CallSignals {
            embeddings: true,
            ..Default::default()
        }];
        assert_eq!(classify("", false, &emb).kind, TaskType::Embed);
        assert!(!classify("Translate to French", false, &open_ended).values);
    }

    #[test]
    fn answers_that_come_to_a_value_are_scored_on_it() {
        // Worked answers: long, all different, typed `generate` by their shape, but each ends in a value.
        let worked: Vec<_> = (0..20)
            .map(|i| {
                call(
                    60,
                    &format!(
                        "First she buys {i} packs, then {} more, so she has {} in all.\n#### {}",
                        i + 2,
                        2 * i + 2,
                        2 * i + 2
                    ),
                )
            })
            .collect();
        let v = classify("Solve the word problem. Show your reasoning.", false, &worked);
        assert!(v.values, "{v:?}");
        assert!(v.reasons.last().unwrap().contains("come to a value"), "{v:?}");
        assert_eq!(ScorerSpec::for_task(Some(v.kind), v.values), ScorerSpec::Value);
        // Prices as bare answers, and yes/no.
        let prices: Vec<_> = (0..20).map(|i| call(40, &format!("${i}.50"))).collect();
        assert!(classify("What does it cost?", false, &prices).values);
        let yes_no: Vec<_> = (0..20).map(|i| call(40, ["Yes.", "No"][i % 2])).collect();
        assert!(classify("Is the review positive?", false, &yes_no).values);
        // Labels are not values; nor is JSON, which has its own scorer.
        let labels: Vec<_> = (0..20)
            .map(|i| call(40, ["card_arrival", "lost_card"][i % 2]))
            .collect();
        assert!(!classify("Classify the message", false, &labels).values);
        let json: Vec<_> = (0..20).map(|i| call(40, &format!("{{\"total\": {i}}}"))).collect();
        assert!(!classify("Read the invoice", false, &json).values);
    }
}
