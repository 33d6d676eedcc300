//! Masking the variable spans of a prompt, so that calls from one template share one skeleton.
//!
//! Deterministic: the same text always gives the same skeleton, so task ids need no shared state to be
//! stable across restarts and gateway instances.

use std::sync::LazyLock;

use regex::Regex;

/// Placeholders. Short and distinctive, so skeletons stay readable in task names and reasons.
pub const TEXT: &str = "⟨text⟩";
pub const VALUE: &str = "⟨v⟩";
pub const NUM: &str = "⟨n⟩";

/// Paragraphs longer than this many words are data, not instructions.
const LONG_PARAGRAPH_WORDS: usize = 40;

static URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"https?://\S+").expect("valid regex"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\w.+-]+@[\w-]+(\.[\w-]+)+").expect("valid regex"));
static ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*(?-u:\b)|[A-Za-z]+[-_]?\d[\w-]*)(?-u:\b)")
        .expect("valid regex")
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[-+$€£]?\d[\d,.:/-]*%?").expect("valid regex"));
// Lengths are checked after matching, not with bounded repetitions: `[^"\n]{1,2000}` compiles to an
// automaton with thousands of copies of a Unicode class (with the label pattern's `{0,40}`, ~20 MB of
// memory on the gateway's first call).
static QUOTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""[^"\n]+"|“[^”\n]+”|«[^»\n]+»|(?:^|\s)'[^'\n]+'(?:$|[\s.,;:!?])"#).expect("valid regex")
});
/// The longest quoted span masked as a value, in characters.
const MAX_QUOTED: usize = 2000;
static CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)```.*?(```|$)").expect("valid regex"));
/// `Label: value` on one line, the label short.
static LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s*[\p{L}][\p{L}\p{N} ()/_-]*:)\s*\S.*$").expect("valid regex"));
/// The longest label, colon included, in characters.
const MAX_LABEL: usize = 42;

/// `Label: value` on one line, the label short: the label with its colon.
fn label(line: &str) -> Option<regex::Captures<'_>> {
    LABEL
        .captures(line)
        .filter(|c| c[1].trim_start().chars().count() <= MAX_LABEL)
}
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t]+").expect("valid regex"));

/// Replaces `<tag>…</tag>` contents and balanced `{…}` / `[…]` spans (inserted JSON, lists) with a value
/// placeholder. The regex crate has no back-references, so this is a small scanner.
fn mask_blocks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['<', '{', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let consumed = match tail.as_bytes()[0] {
            b'<' => tag_block(tail).map(|(open, len)| {
                out.push_str(open);
                out.push_str(VALUE);
                out.push_str(&format!("</{}>", &open[1..open.len() - 1]));
                len
            }),
            b'{' => balanced(tail, b'{', b'}').inspect(|_| out.push_str(VALUE)),
            _ => balanced(tail, b'[', b']')
                .filter(|len| *len > 2)
                .inspect(|_| out.push_str(VALUE)),
        };
        match consumed {
            Some(n) => rest = &tail[n..],
            None => {
                let c = tail.chars().next().map(char::len_utf8).unwrap_or(1);
                out.push_str(&tail[..c]);
                rest = &tail[c..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `<name>…</name>` at the start of `s`: the opening tag and the whole length.
fn tag_block(s: &str) -> Option<(&str, usize)> {
    let end = s.find('>')?;
    let name = &s[1..end];
    if name.is_empty() || name.len() > 40 || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let close = format!("</{name}>");
    let body = s[end + 1..].find(&close)?;
    Some((&s[..=end], end + 1 + body + close.len()))
}

/// The length of a balanced bracket span at the start of `s`, if it closes.
fn balanced(s: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate() {
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        }
        if i > 20_000 {
            return None;
        }
    }
    None
}

/// Masks a user turn: the spans that vary between calls of one template (code, tagged and bracketed
/// inserts, quotes, URLs, e-mails, ids, numbers, `Label: value` lines), the text after a line ending in `:`,
/// long paragraphs, and, once an insert has begun, every line that is not itself a `Label: value` line (it
/// belongs to the inserted data).
pub fn skeleton(text: &str) -> String {
    structure(&mask_spans(text), true)
}

/// Masks a system prompt. System prompts are instructions, long or not: only the variable spans and
/// `Label: value` lines are masked.
pub fn instructions_skeleton(text: &str) -> String {
    structure(&mask_spans(text), false)
}

/// Both skeletons of a user turn, [`skeleton`] and [`instructions_skeleton`], masking its spans once.
pub fn skeletons(text: &str) -> (String, String) {
    let spans = mask_spans(text);
    (structure(&spans, true), structure(&spans, false))
}

fn mask_spans(text: &str) -> String {
    use std::borrow::Cow;
    // Each pass runs only where its pattern can match: most prompts have no URL, e-mail, quote or code.
    let t: Cow<str> = if text.contains("```") {
        CODE.replace_all(text, VALUE)
    } else {
        text.into()
    };
    let t: Cow<str> = if t.contains(['<', '{', '[']) {
        mask_blocks(&t).into()
    } else {
        t
    };
    let t: Cow<str> = if t.contains("http") {
        URL.replace_all(&t, VALUE).into_owned().into()
    } else {
        t
    };
    let t: Cow<str> = if t.contains('@') {
        EMAIL.replace_all(&t, VALUE).into_owned().into()
    } else {
        t
    };
    let t: Cow<str> = if t.contains(['"', '\'', '“', '«']) {
        QUOTED
            .replace_all(&t, |c: &regex::Captures| {
                let m = &c[0];
                // The span, its two quotes, and for `'…'` a leading space and a trailing mark.
                if m.chars().count() > MAX_QUOTED + 4 {
                    return m.to_owned();
                }
                let lead = if m.starts_with(char::is_whitespace) { " " } else { "" };
                let trail = m
                    .chars()
                    .last()
                    .filter(|c| !matches!(c, '\'' | '"' | '”' | '»'))
                    .map(String::from)
                    .unwrap_or_default();
                format!("{lead}{VALUE}{trail}")
            })
            .into_owned()
            .into()
    } else {
        t
    };
    if !t.bytes().any(|b| b.is_ascii_digit()) {
        return t.into_owned();
    }
    let t = ID.replace_all(&t, VALUE);
    NUMBER.replace_all(&t, NUM).into_owned()
}

fn structure(t: &str, data_rules: bool) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    // After a line that ends in `:`, the rest of the prompt is what the template inserts.
    let mut inserting = false;
    let mut seen_insert = false;
    for para in t.split("\n\n") {
        if data_rules && (inserting || para.split_whitespace().count() > LONG_PARAGRAPH_WORDS) {
            // A long paragraph opened by a label keeps its label: `Context: <a page of text>`.
            let label = para
                .lines()
                .next()
                .and_then(|l| label(l.trim_end()))
                .filter(|_| !inserting);
            match label {
                Some(c) => paragraphs.push(format!("{} {VALUE}", &c[1])),
                None if !ends_with_insert(&paragraphs) => paragraphs.push(TEXT.to_owned()),
                None => {}
            }
            seen_insert = true;
            continue;
        }
        let mut lines: Vec<String> = Vec::new();
        // Whether inserted text has run since the paragraph's last label.
        let mut in_data = false;
        for line in para.lines() {
            if inserting {
                push_once(&mut lines, TEXT);
                continue;
            }
            let trimmed = line.trim_end();
            // A template's labels open a paragraph or follow one another; a label-like line after inserted
            // text is part of that text.
            let label_position = !in_data;
            if let Some(c) = label(trimmed).filter(|_| !data_rules || !seen_insert || label_position) {
                lines.push(format!("{} {VALUE}", &c[1]));
                seen_insert = true;
            } else if data_rules && trimmed.ends_with(':') {
                lines.push(trimmed.to_owned());
                inserting = true;
                seen_insert = true;
            } else if data_rules && seen_insert && has_fixed_text(trimmed) {
                // Free text after an insert has begun is part of the inserted data: it continues the insert
                // before it, or marks one.
                let continues = ends_with_insert(&lines) || (lines.is_empty() && ends_with_insert(&paragraphs));
                if !continues {
                    lines.push(TEXT.to_owned());
                }
                in_data = true;
            } else {
                if trimmed.contains(VALUE) {
                    seen_insert = true;
                }
                lines.push(trimmed.to_owned());
            }
        }
        if !lines.is_empty() {
            paragraphs.push(lines.join("\n"));
        }
    }
    let joined = paragraphs.join("\n\n");
    SPACES.replace_all(joined.trim(), " ").into_owned()
}

/// Whether the last element emitted ends in a placeholder, so more data continues that insert.
fn ends_with_insert(v: &[String]) -> bool {
    v.last().is_some_and(|l| l.ends_with(TEXT) || l.ends_with(VALUE))
}

fn push_once(v: &mut Vec<String>, s: &'static str) {
    if v.last().map(String::as_str) != Some(s) {
        v.push(s.into());
    }
}

/// Whether masking found template structure: an insert was masked and fixed words remain around it.
pub fn is_template(skeleton: &str) -> bool {
    (skeleton.contains(TEXT) || skeleton.contains(VALUE)) && has_fixed_text(skeleton)
}

/// Whether a masked text still holds anything fixed: a skeleton that is only placeholders and punctuation
/// came from free text, not from a template.
pub fn has_fixed_text(skeleton: &str) -> bool {
    let stripped = skeleton.replace(TEXT, " ").replace(VALUE, " ").replace(NUM, " ");
    stripped
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count()
        >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_spans_and_labels_have_length_limits() {
        let short = mask_spans(r#"Say "hello there" now"#);
        assert_eq!(short, format!("Say {VALUE} now"));
        // Past the limit the quotes are not a value (the words inside may still be masked by other rules).
        let long = format!(r#"Say "{}" now"#, "go ".repeat(MAX_QUOTED / 3 + 10));
        assert!(mask_spans(&long).starts_with("Say \"go go"), "{}", mask_spans(&long));
        assert!(label("Customer name: Jane").is_some());
        let long_label = format!("{}: value", "word ".repeat(10));
        assert!(label(&long_label).is_none(), "a sentence with a colon is not a label");
    }

    #[test]
    fn inserts_of_one_template_share_a_skeleton() {
        let a = skeleton("Translate the following text to French:\nHello, how are you today?");
        let b = skeleton("Translate the following text to French:\nThe meeting is moved to Friday at 3pm.");
        assert_eq!(a, b);
        assert_eq!(a, format!("Translate the following text to French:\n{TEXT}"));

        let a = skeleton("Customer: Jane Doe\nOrder: A-1234\nIssue: card declined twice");
        let b = skeleton("Customer: Bob\nOrder: 99\nIssue: never arrived");
        assert_eq!(a, b);

        let a = skeleton("Summarize this review: \"Great phone, battery lasts 2 days\" in one line.");
        let b = skeleton("Summarize this review: \"Terrible\" in one line.");
        assert_eq!(a, b);

        let a = skeleton("Extract the fields from <email>Hi, I am Ann, call me at 555-1234</email> as JSON.");
        let b = skeleton("Extract the fields from <email>Meeting on 2024-01-02 with Bo</email> as JSON.");
        assert_eq!(a, b);
        assert!(a.contains("<email>"));
    }

    #[test]
    fn long_paragraphs_urls_and_numbers_are_masked() {
        let long = "word ".repeat(60);
        let a = skeleton(&format!("Summarize the article in 3 bullet points.\n\n{long}"));
        assert_eq!(a, format!("Summarize the article in {NUM} bullet points.\n\n{TEXT}"));
        assert_eq!(
            skeleton("see https://x.io/a?b=1 or mail a.b@c.com, id 9f8e7d6c5b4a"),
            skeleton("see http://y.org or mail z@q.net, id 1234abcd99")
        );
    }

    #[test]
    fn text_after_an_insert_is_data_but_labels_are_kept() {
        let a = skeleton(
            "Answer using the context.\n\nContext: Paris is big.\nIt has a river.\nNote: old city\n\nQuestion: how big?",
        );
        let b = skeleton("Answer using the context.\n\nContext: Rome.\n\nQuestion: why?");
        assert_eq!(a, b);
        let long = "Paris is a big city with a river. ".repeat(10);
        assert_eq!(
            skeleton(&format!(
                "Answer using the context.\n\nContext: {long}\n\nMore of it.\n\nQuestion: how big?"
            )),
            b
        );
        assert!(a.starts_with("Answer using the context.\n\nContext: ⟨v⟩"), "{a}");
    }

    #[test]
    fn system_prompts_keep_long_instructions() {
        let long = "Follow the house style in every answer and keep it short. ".repeat(8);
        assert!(instructions_skeleton(&long).contains("house style"));
        assert_ne!(
            instructions_skeleton(&format!("{long} A")),
            instructions_skeleton(&format!("{long} B"))
        );
    }

    #[test]
    fn different_templates_stay_apart() {
        assert_ne!(
            skeleton("Translate to French:\nhello"),
            skeleton("Translate to German:\nhello")
        );
        assert_ne!(
            skeleton("Classify the sentiment:\nok"),
            skeleton("Classify the intent:\nok")
        );
    }

    #[test]
    fn free_text_is_not_a_template() {
        assert!(!has_fixed_text(&skeleton(
            &"I lost my card yesterday and need a new one ".repeat(8)
        )));
        assert!(!is_template(&skeleton("I lost my card 2 days ago")));
        assert!(is_template(&skeleton("Translate the following text to French:\nhello")));
    }
}
