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
    if calls.iter().any(|c| c.embeddings) {
        return verdict(TaskType::Embed, vec!["calls go to the embeddings endpoint".into()]);
    }
    if chat_origin {
        return verdict(
            TaskType::Chat,
            vec!["free-form user turns with no fixed instructions".into()],
        );
    }
    let a = Answers::read(calls);
    if a.mean_turns >= 2.5 {
        return verdict(
            TaskType::Chat,
            vec![format!("conversations average {:.1} user turns", a.mean_turns)],
        );
    }

    // Structure the answers carry decides first: it is what a scorer will compare.
    let requested = calls.iter().any(|c| c.json_requested);
    if requested || a.json_share >= 0.6 || a.tool_share >= 0.5 {
        let mut reasons = Vec::new();
        if requested {
            reasons.push("requests ask for JSON output (response_format)".to_owned());
        }
        if a.json_share >= 0.6 {
            reasons.push(format!("{:.0}% of answers are JSON", a.json_share * 100.0));
        }
        if a.tool_share >= 0.5 {
            reasons.push(format!("{:.0}% of answers are tool calls", a.tool_share * 100.0));
        }
        return verdict(TaskType::Extract, reasons);
    }
    if a.code_share >= 0.5 {
        return verdict(
            TaskType::Code,
            vec![format!("{:.0}% of answers contain code", a.code_share * 100.0)],
        );
    }

    // Then their shape. The instructions' words only choose between types the answers allow, and decide
    // alone only while a task has too few answers to show a shape.
    let text = instructions.to_lowercase();
    let hint = |words: &[&str]| any_word(&text, words);
    let length = format!("answers average {:.1} tokens", a.mean_out);
    if a.enough() && a.short() {
        if a.few_distinct() {
            return verdict(
                TaskType::Classify,
                vec![format!("{} distinct answers over {} calls", a.distinct, a.n), length],
            );
        }
        if a.label_share >= 0.8
            && let Some(w) = hint(LABEL_WORDS)
        {
            return verdict(
                TaskType::Classify,
                vec![
                    format!("{:.0}% of answers are short labels", a.label_share * 100.0),
                    length,
                    format!("instructions mention `{w}`"),
                ],
            );
        }
    }
    if a.compression() >= 5.0 {
        // A short answer from long material is a summary, or an answer to a question about the material.
        if let Some(w) = hint(QUESTION_WORDS) {
            return verdict(
                TaskType::Generate,
                vec![
                    format!("answers are {:.1}x shorter than the material", a.compression()),
                    format!("instructions ask to answer questions (`{w}`)"),
                ],
            );
        }
        return verdict(
            TaskType::Summarize,
            vec![format!(
                "inputs average {:.0} tokens and answers {:.0}: {:.1}x shorter",
                a.mean_in,
                a.mean_out,
                a.compression()
            )],
        );
    }
    if a.enough() {
        if a.compression() >= 2.0
            && let Some(w) = hint(SUMMARY_WORDS)
        {
            return verdict(
                TaskType::Summarize,
                vec![
                    format!("answers are {:.1}x shorter than the material", a.compression()),
                    format!("instructions mention `{w}`"),
                ],
            );
        }
        if a.code_share >= 0.2
            && let Some(w) = hint(CODE_WORDS)
        {
            return verdict(
                TaskType::Code,
                vec![
                    format!("{:.0}% of answers contain code", a.code_share * 100.0),
                    format!("instructions mention `{w}`"),
                ],
            );
        }
        return verdict(
            TaskType::Generate,
            vec![format!(
                "{} distinct open-ended answers over {} calls, averaging {:.0} tokens; no narrower type fits",
                a.distinct, a.n, a.mean_out
            )],
        );
    }

    let early = format!("only {} answers so far", a.n);
    if a.short()
        && let Some(w) = hint(LABEL_WORDS)
    {
        return verdict(
            TaskType::Classify,
            vec![early, format!("instructions mention `{w}`"), length],
        );
    }
    for (words, kind) in [
        (CODE_WORDS, TaskType::Code),
        (EXTRACT_WORDS, TaskType::Extract),
        (SUMMARY_WORDS, TaskType::Summarize),
    ] {
        if let Some(w) = hint(words) {
            return verdict(kind, vec![early, format!("instructions mention `{w}`")]);
        }
    }
    verdict(TaskType::Generate, vec![early, length])
}

const LABEL_WORDS: &[&str] = &[
    "classify",
    "classif",
    "categor",
    "label",
    "intent",
    "sentiment",
    "which of the following",
    "one of the",
];
const CODE_WORDS: &[&str] = &[
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
const EXTRACT_WORDS: &[&str] = &["extract", "parse", "fields", "entities", "json"];
const QUESTION_WORDS: &[&str] = &["question", "answer the", "answer using", "faq"];
const SUMMARY_WORDS: &[&str] = &["summar", "tl;dr", "tldr", "condense", "key points", "gist"];

/// Answers a task needs before their shape decides its type.
const ENOUGH_ANSWERS: usize = 5;

/// What a sample of a task's answers looks like.
struct Answers {
    n: usize,
    mean_turns: f64,
    mean_in: f64,
    mean_out: f64,
    /// The user's own material in tokens (the last user turn, about four characters a token), or the whole
    /// input where turns were not measured.
    material: f64,
    distinct: usize,
    json_share: f64,
    tool_share: f64,
    code_share: f64,
    /// Answers shaped like a label: a few words on one line, not a sentence.
    label_share: f64,
}

impl Answers {
    fn read(calls: &[CallSignals]) -> Answers {
        let n = calls.len();
        let div = n.max(1) as f64;
        let mean = |f: &dyn Fn(&CallSignals) -> f64| calls.iter().map(f).sum::<f64>() / div;
        let share = |f: &dyn Fn(&CallSignals) -> bool| calls.iter().filter(|c| f(c)).count() as f64 / div;
        let mut outputs: Vec<&str> = calls.iter().map(|c| c.output.as_str()).collect();
        outputs.sort_unstable();
        outputs.dedup();
        let mean_in = mean(&|c| c.input_tokens as f64);
        // What a summary condenses is the user's material: a long system prompt or history in front of a
        // short question is an assistant's input, not a document.
        let material = if calls.iter().all(|c| c.user_chars > 0) {
            mean(&|c| c.user_chars as f64 / 4.0)
        } else {
            mean_in
        };
        Answers {
            n,
            mean_turns: mean(&|c| c.turns as f64),
            mean_in,
            mean_out: mean(&|c| c.output_tokens as f64),
            material,
            distinct: outputs.len(),
            json_share: share(&|c| is_json(&c.output)),
            tool_share: share(&|c| c.tool_called),
            code_share: share(&|c| looks_like_code(&c.output)),
            label_share: share(&|c| is_label(&c.output)),
        }
    }

    fn enough(&self) -> bool {
        self.n >= ENOUGH_ANSWERS
    }

    fn short(&self) -> bool {
        self.mean_out <= 12.0
    }

    /// Answers repeat: the mark of a closed set of labels.
    fn few_distinct(&self) -> bool {
        self.enough() && (self.distinct as f64) <= (self.n as f64 * 0.5).max(3.0)
    }

    /// How many times shorter the answers are than both the input and the user's material (0 for answers
    /// too short to be a summary).
    fn compression(&self) -> f64 {
        if self.mean_out < 15.0 {
            return 0.0;
        }
        self.mean_in.min(self.material) / self.mean_out
    }
}

fn is_json(output: &str) -> bool {
    let o = output.trim();
    (o.starts_with('{') || o.starts_with('[')) && serde_json::from_str::<serde_json::Value>(o).is_ok()
}

/// A few words on one line, without a sentence's punctuation: `card_arrival`, `Fraud`, `very positive`.
fn is_label(output: &str) -> bool {
    let o = output.trim().trim_end_matches('.');
    !o.is_empty()
        && o.len() <= 40
        && o.split_whitespace().count() <= 4
        && !o.contains(['\n', ',', ';', '?', '!', ':'])
        && !o.contains(". ")
}

/// A fenced block, or lines shaped like source code in any of the common languages.
fn looks_like_code(output: &str) -> bool {
    if output.contains("```") {
        return true;
    }
    let coded = output
        .lines()
        .map(str::trim)
        .filter(|l| {
            [
                "def ",
                "import ",
                "return ",
                "function ",
                "const ",
                "#include",
                "public ",
                "fn ",
                "SELECT ",
                "for (",
                "if (",
                "while (",
            ]
            .iter()
            .any(|p| l.starts_with(p))
                || (l.starts_with("from ") && l.contains(" import "))
                || l.ends_with(';')
                || l.ends_with('{')
                || l == &"}"
                || (l.ends_with("):") && l.contains('('))
        })
        .count();
    coded >= 2
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
        assert_eq!(v.reasons[0], "3 distinct answers over 20 calls");
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
    fn answers_decide_and_words_only_choose_among_what_they_allow() {
        let sentences: Vec<_> = (0..12)
            .map(|i| {
                call(
                    60,
                    &format!("The customer asks about card number {i}, which arrived late, and wants a refund."),
                )
            })
            .collect();
        // Asked to classify, answered in sentences: what the answers are decides.
        let v = classify("Classify the customer's message", false, &sentences);
        assert_eq!(v.kind, TaskType::Generate, "{v:?}");
        // Labels from a large set, seldom repeated in a sample: the words confirm what the shape allows.
        let labels: Vec<_> = (0..12).map(|i| call(60, &format!("intent_{i}"))).collect();
        let v = classify("Pick the customer's intent", false, &labels);
        assert_eq!(v.kind, TaskType::Classify, "{v:?}");
        assert!(v.reasons[0].contains("short labels"), "{v:?}");
        assert_eq!(
            classify("Reply to the customer", false, &labels).kind,
            TaskType::Generate
        );
        // No word of any list, but the answers repeat from a closed set.
        let teams: Vec<_> = (0..12)
            .map(|i| call(60, ["cards", "fraud", "payments"][i % 3]))
            .collect();
        assert_eq!(
            classify("Which team should handle it?", false, &teams).kind,
            TaskType::Classify
        );
        // Asked for code, answered in prose: not code. Code without a fence or a word is still code.
        let prose: Vec<_> = (0..12)
            .map(|i| {
                call(
                    60,
                    &format!("The loop runs {i} times because the counter starts at zero."),
                )
            })
            .collect();
        assert_eq!(
            classify("Explain this python code", false, &prose).kind,
            TaskType::Generate
        );
        let unfenced: Vec<_> = (0..12)
            .map(|i| call(60, &format!("def f(x):\n    return x + {i}")))
            .collect();
        assert_eq!(classify("Do what the user asks", false, &unfenced).kind, TaskType::Code);
        // Asked for a summary: answers shorter than the material (but not 5x) are one.
        let long = "a sentence with several words in it ".repeat(4);
        let shorter: Vec<_> = (0..12).map(|i| call(200, &format!("{long} {i}"))).collect();
        assert_eq!(
            classify("Summarise the ticket", false, &shorter).kind,
            TaskType::Summarize
        );
        assert_eq!(
            classify("Reply to the ticket", false, &shorter).kind,
            TaskType::Generate
        );
        // Much shorter than the material: a summary, unless the instructions ask a question about it.
        let much: Vec<_> = (0..12).map(|i| call(2000, &format!("{long} {i}"))).collect();
        assert_eq!(classify("Reply to the ticket", false, &much).kind, TaskType::Summarize);
        assert_eq!(
            classify("Answer the question using the context", false, &much).kind,
            TaskType::Generate
        );
        // Asked to extract, answered in plain words: not `extract`, whose scorer wants JSON.
        let spans: Vec<_> = (0..12)
            .map(|i| call(60, &format!("Merchant number {i} in Leeds on Monday")))
            .collect();
        assert_ne!(classify("Extract the merchant", false, &spans).kind, TaskType::Extract);
    }

    #[test]
    fn with_few_answers_the_words_decide_and_say_so() {
        let two: Vec<_> = (0..2).map(|i| call(60, ["cards", "fraud"][i])).collect();
        let v = classify("Classify the message", false, &two);
        assert_eq!(v.kind, TaskType::Classify);
        assert_eq!(v.reasons[0], "only 2 answers so far");
        assert_eq!(classify("Extract the fields", false, &two).kind, TaskType::Extract);
        assert_eq!(classify("Reply kindly", false, &two).kind, TaskType::Generate);
    }

    #[test]
    fn labels_and_code_are_told_from_prose() {
        assert!(is_label("card_arrival") && is_label("Very positive.") && is_label("Fraud"));
        assert!(!is_label("Yes, it arrived. Thanks") && !is_label("one two three four five"));
        assert!(looks_like_code("SELECT a\nFROM t WHERE x = 1;\nSELECT b FROM u;"));
        assert!(looks_like_code("fn main() {\n    println!(\"hi\");\n}"));
        assert!(!looks_like_code("Let me know.\nFrom there, take the bus; it is quick."));
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
