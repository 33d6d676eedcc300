//! Scorers: does a candidate's answer agree with the logged reference answer?
//!
//! Each scorer also spots hard failures, the answers that are not merely different but unusable (invalid
//! JSON where the task needs JSON, a label outside the task's set, a refusal): the verdict bounds those
//! separately, because a candidate that is 97% right and 3% broken JSON breaks the application 3% of the time.

use std::collections::BTreeSet;

pub use leanlm_core::value;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use leanlm_core::scorer::{DEFAULT_COSINE, DEFAULT_ROUGE, DEFAULT_TOLERANCE, ScorerSpec};

/// An answer that cannot be used at all, bounded separately from disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardFailure {
    InvalidJson,
    /// Valid JSON that breaks the schema the request asked for.
    SchemaViolation,
    /// A label outside the set the task's reference answers use.
    UnknownLabel,
    /// The model declined to answer.
    Refused,
    /// A `regex` / `json-path` rule found nothing in the answer.
    NoMatch,
}

impl HardFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HardFailure::InvalidJson => "invalid_json",
            HardFailure::SchemaViolation => "schema_violation",
            HardFailure::UnknownLabel => "unknown_label",
            HardFailure::Refused => "refused",
            HardFailure::NoMatch => "no_match",
        }
    }
}

/// One answer's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub agree: bool,
    pub hard: Option<HardFailure>,
    /// What the scorer saw, for the report's failing examples.
    pub note: String,
}

impl Scored {
    fn agree(note: impl Into<String>) -> Scored {
        Scored {
            agree: true,
            hard: None,
            note: note.into(),
        }
    }
    fn differ(note: impl Into<String>) -> Scored {
        Scored {
            agree: false,
            hard: None,
            note: note.into(),
        }
    }
    fn hard(kind: HardFailure, note: impl Into<String>) -> Scored {
        Scored {
            agree: false,
            hard: Some(kind),
            note: note.into(),
        }
    }
}

/// Embeds texts for the `similarity` scorer.
pub trait Embed: Send + Sync {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// What a scorer knows about the task beyond the two answers.
#[derive(Default)]
pub struct TaskContext<'a> {
    /// The normalised labels the task's reference answers use (for `label`).
    pub labels: BTreeSet<String>,
    /// The JSON schema the request asked for, if any (for `json`).
    pub schema: Option<Value>,
    pub embedder: Option<&'a dyn Embed>,
}

/// Normalises a label: case, surrounding whitespace, quotes and trailing punctuation, and a leading
/// `label:` / `intent:` that some models add.
pub fn normalise_label(text: &str) -> String {
    let mut t = text.trim().to_lowercase();
    for prefix in ["label:", "intent:", "category:", "class:", "answer:"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest.trim().to_owned();
        }
    }
    t.trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '.' || c == '*' || c.is_whitespace())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when an answer declines the request.
pub fn is_refusal(text: &str) -> bool {
    const OPENINGS: &[&str] = &[
        "i can't help",
        "i cannot help",
        "i can't assist",
        "i cannot assist",
        "i'm sorry, but i can",
        "i am sorry, but i can",
        "i'm unable to",
        "i am unable to",
        "i won't be able to",
        "i can't provide",
        "i cannot provide",
        "sorry, i can't",
        "sorry, i cannot",
    ];
    let head: String = text
        .trim()
        .chars()
        .take(120)
        .collect::<String>()
        .to_lowercase()
        .replace('’', "'");
    OPENINGS
        .iter()
        .any(|o| head.starts_with(o) || head.contains(&format!(". {o}")))
}

/// The JSON in an answer: the whole text, or the body of a fenced ```json block.
pub fn parse_json_answer(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    let start = t.find("```")?;
    let after = &t[start + 3..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let end = body.find("```")?;
    serde_json::from_str(body[..end].trim()).ok()
}

/// Scores every kind but `judge`, which needs a model (see [`crate::run`]).
pub fn score(spec: &ScorerSpec, reference: &str, candidate: &str, ctx: &TaskContext) -> Scored {
    if is_refusal(candidate) && !is_refusal(reference) {
        return Scored::hard(HardFailure::Refused, "the candidate refused");
    }
    match spec {
        ScorerSpec::Label => {
            let (r, c) = (normalise_label(reference), normalise_label(candidate));
            if r == c {
                Scored::agree(format!("label `{c}`"))
            } else if !ctx.labels.is_empty() && !ctx.labels.contains(&c) {
                Scored::hard(
                    HardFailure::UnknownLabel,
                    format!("`{c}` is not one of the task's labels"),
                )
            } else {
                Scored::differ(format!("`{c}` instead of `{r}`"))
            }
        }
        ScorerSpec::Value => score_value(reference, candidate),
        ScorerSpec::Json { tolerance } => score_json(reference, candidate, *tolerance, ctx.schema.as_ref()),
        ScorerSpec::Similarity { threshold } => score_similarity(reference, candidate, *threshold, ctx.embedder),
        ScorerSpec::Regex { pattern } => match regex::Regex::new(pattern) {
            Ok(re) => {
                let extract = |t: &str| {
                    re.captures(t).map(|c| {
                        c.get(1)
                            .or_else(|| c.get(0))
                            .map_or("", |m| m.as_str())
                            .trim()
                            .to_owned()
                    })
                };
                match (extract(reference), extract(candidate)) {
                    (_, None) => Scored::hard(HardFailure::NoMatch, format!("no match for `{pattern}`")),
                    (Some(r), Some(c)) if r == c => Scored::agree(format!("`{c}`")),
                    // Numbers, dates and yes/no compare by value: `$20.00` matches `20`.
                    (Some(r), Some(c)) if same_value(&r, &c) => Scored::agree(format!("`{c}` = `{r}`")),
                    (r, Some(c)) => Scored::differ(format!("`{c}` instead of `{}`", r.unwrap_or_default())),
                }
            }
            Err(e) => Scored::differ(format!("bad pattern: {e}")),
        },
        ScorerSpec::JsonPath { path } => {
            let Ok(jp) = serde_json_path::JsonPath::parse(path) else {
                return Scored::differ(format!("bad JSON path `{path}`"));
            };
            let Some(c) = parse_json_answer(candidate) else {
                return Scored::hard(HardFailure::InvalidJson, "the candidate's answer is not JSON");
            };
            let found = |v: &Value| jp.query(v).all().into_iter().cloned().collect::<Vec<_>>();
            let cv = found(&c);
            if cv.is_empty() {
                return Scored::hard(HardFailure::NoMatch, format!("nothing at `{path}`"));
            }
            let rv = parse_json_answer(reference).map(|r| found(&r)).unwrap_or_default();
            let (r, c) = (Value::Array(rv), Value::Array(cv));
            match json_diff(&r, &c, DEFAULT_TOLERANCE, "") {
                None => Scored::agree(format!("{path} = {c}")),
                Some(d) => Scored::differ(format!("{path}: {d}")),
            }
        }
        ScorerSpec::Judge { .. } => Scored::differ("the judge scorer runs with a model"),
    }
}

/// True when both texts read as the same number, date or yes/no.
fn same_value(a: &str, b: &str) -> bool {
    matches!((value::parse(a), value::parse(b)), (Some(x), Some(y)) if x.same(&y))
}

/// Compares the values two answers come to. A candidate with no final value where the reference has one
/// is a hard failure (`no_match`): an application reading the value would find none.
fn score_value(reference: &str, candidate: &str) -> Scored {
    match (value::final_value(reference), value::final_value(candidate)) {
        (Some(r), Some(c)) if r.value.same(&c.value) => Scored::agree(format!("value `{}`", c.value)),
        (Some(r), Some(c)) => Scored::differ(format!("`{}` instead of `{}`", c.value, r.value)),
        (Some(r), None) => Scored::hard(
            HardFailure::NoMatch,
            format!(
                "no final value in the candidate's answer (the reference's is `{}`)",
                r.value
            ),
        ),
        // A reference without a value: the texts must match after normalisation.
        (None, _) if value::normalise_text(reference) == value::normalise_text(candidate) => Scored::agree("same text"),
        (None, _) => Scored::differ("the reference's answer has no final value, and the texts differ"),
    }
}

/// The hard failure an answer shows on its own, with no reference to compare: a refusal, JSON that does not
/// parse or breaks the request's schema, a label outside the task's set, nothing for the pattern or path.
/// What a cascade checks before it trusts a cheap answer.
pub fn hard_failure(spec: &ScorerSpec, candidate: &str, ctx: &TaskContext) -> Option<HardFailure> {
    if is_refusal(candidate) {
        return Some(HardFailure::Refused);
    }
    match spec {
        ScorerSpec::Label => (!ctx.labels.is_empty() && !ctx.labels.contains(&normalise_label(candidate)))
            .then_some(HardFailure::UnknownLabel),
        ScorerSpec::Json { .. } => {
            let Some(c) = parse_json_answer(candidate) else {
                return Some(HardFailure::InvalidJson);
            };
            let schema = ctx.schema.as_ref()?;
            let validator = jsonschema::validator_for(schema).ok()?;
            validator.iter_errors(&c).next().map(|_| HardFailure::SchemaViolation)
        }
        ScorerSpec::Value => value::final_value(candidate).is_none().then_some(HardFailure::NoMatch),
        ScorerSpec::Regex { pattern } => {
            let re = regex::Regex::new(pattern).ok()?;
            (!re.is_match(candidate)).then_some(HardFailure::NoMatch)
        }
        ScorerSpec::JsonPath { path } => {
            let jp = serde_json_path::JsonPath::parse(path).ok()?;
            let Some(c) = parse_json_answer(candidate) else {
                return Some(HardFailure::InvalidJson);
            };
            jp.query(&c).all().is_empty().then_some(HardFailure::NoMatch)
        }
        ScorerSpec::Similarity { .. } | ScorerSpec::Judge { .. } => None,
    }
}

fn score_json(reference: &str, candidate: &str, tolerance: f64, schema: Option<&Value>) -> Scored {
    let Some(c) = parse_json_answer(candidate) else {
        return Scored::hard(HardFailure::InvalidJson, "the candidate's answer is not JSON");
    };
    if let Some(schema) = schema
        && let Ok(validator) = jsonschema::validator_for(schema)
        && let Some(err) = validator.iter_errors(&c).next()
    {
        return Scored::hard(
            HardFailure::SchemaViolation,
            format!("breaks the schema at `{}`: {err}", err.instance_path),
        );
    }
    let Some(r) = parse_json_answer(reference) else {
        // A reference that is not JSON cannot be matched field by field; equal text still agrees.
        return if reference.trim() == candidate.trim() {
            Scored::agree("same text")
        } else {
            Scored::differ("the reference answer is not JSON")
        };
    };
    match json_diff(&r, &c, tolerance, "") {
        None => Scored::agree("every field matches"),
        Some(d) => Scored::differ(d),
    }
}

/// The first difference between two JSON values, or `None` when they match: objects field by field
/// (every reference field present and equal; extra candidate fields are fine only if null), numbers within
/// a relative tolerance, strings up to case and surrounding whitespace, arrays as multisets.
pub fn json_diff(r: &Value, c: &Value, tolerance: f64, at: &str) -> Option<String> {
    let here = if at.is_empty() { "$" } else { at };
    match (r, c) {
        (Value::Object(ro), Value::Object(co)) => {
            for (k, rv) in ro {
                let path = format!("{here}.{k}");
                match co.get(k) {
                    Some(cv) => {
                        if let Some(d) = json_diff(rv, cv, tolerance, &path) {
                            return Some(d);
                        }
                    }
                    None if rv.is_null() => {}
                    None => return Some(format!("{path} is missing")),
                }
            }
            co.iter()
                .find(|(k, v)| !ro.contains_key(*k) && !v.is_null())
                .map(|(k, _)| format!("{here}.{k} is not in the reference"))
        }
        (Value::Array(ra), Value::Array(ca)) => {
            if ra.len() != ca.len() {
                return Some(format!("{here} has {} items, not {}", ca.len(), ra.len()));
            }
            // Order-insensitive: match each reference item to a distinct candidate item.
            let mut used = vec![false; ca.len()];
            for (i, rv) in ra.iter().enumerate() {
                let hit = ca
                    .iter()
                    .enumerate()
                    .find(|(j, cv)| !used[*j] && json_diff(rv, cv, tolerance, "").is_none());
                match hit {
                    Some((j, _)) => used[j] = true,
                    None => return Some(format!("{here}[{i}] = {rv} has no match")),
                }
            }
            None
        }
        (Value::Number(rn), Value::Number(cn)) => {
            let (a, b) = (rn.as_f64().unwrap_or(f64::NAN), cn.as_f64().unwrap_or(f64::NAN));
            let scale = a.abs().max(b.abs()).max(1e-12);
            ((a - b).abs() / scale > tolerance).then(|| format!("{here} is {cn}, not {rn}"))
        }
        (Value::String(rs), Value::String(cs)) => {
            (rs.trim().to_lowercase() != cs.trim().to_lowercase()).then(|| format!("{here} is {c}, not {r}"))
        }
        _ => (r != c).then(|| format!("{here} is {c}, not {r}")),
    }
}

/// `a` with one of its differences from `b` taken from `b`: the same sentence with one fact changed, the
/// hard case for a scorer that reads wording. Answers of one task often share a shape ("your {item} arrives
/// on {day}"); aligned word by word (longest common subsequence), the places where they differ are its
/// slots, and `which` picks one. `None` when the two share less than half their words (no shared shape to
/// vary) or do not differ.
pub fn swap_one_difference(a: &str, b: &str, which: usize) -> Option<String> {
    const MAX_WORDS: usize = 200;
    let wa: Vec<&str> = a.split_whitespace().take(MAX_WORDS).collect();
    let wb: Vec<&str> = b.split_whitespace().take(MAX_WORDS).collect();
    let (n, m) = (wa.len(), wb.len());
    if n == 0 || m == 0 {
        return None;
    }
    let eq = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
    // lcs[i][j]: the common subsequence of wa[i..] and wb[j..].
    let mut lcs = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if eq(wa[i], wb[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    if (lcs[0][0] as usize) * 2 < n.max(m) {
        return None;
    }
    // The differing stretches, as (a's range, b's range).
    let mut hunks: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && eq(wa[i], wb[j]) {
            i += 1;
            j += 1;
            continue;
        }
        let (si, sj) = (i, j);
        while (i < n || j < m) && !(i < n && j < m && eq(wa[i], wb[j])) {
            if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
                i += 1;
            } else {
                j += 1;
            }
        }
        hunks.push((si..i, sj..j));
    }
    if hunks.is_empty() {
        return None;
    }
    let (ra, rb) = hunks[which % hunks.len()].clone();
    let mut out: Vec<&str> = wa[..ra.start].to_vec();
    out.extend_from_slice(&wb[rb]);
    out.extend_from_slice(&wa[ra.end..]);
    Some(out.join(" "))
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// ROUGE-L F1: the longest common subsequence of words, as a share of both texts.
pub fn rouge_l(reference: &str, candidate: &str) -> f64 {
    let (r, c) = (tokens(reference), tokens(candidate));
    if r.is_empty() || c.is_empty() {
        return if r.is_empty() && c.is_empty() { 1.0 } else { 0.0 };
    }
    let mut prev = vec![0usize; c.len() + 1];
    let mut cur = vec![0usize; c.len() + 1];
    for rt in &r {
        for (j, ct) in c.iter().enumerate() {
            cur[j + 1] = if rt == ct { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[c.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (p, rec) = (lcs / c.len() as f64, lcs / r.len() as f64);
    2.0 * p * rec / (p + rec)
}

fn score_similarity(reference: &str, candidate: &str, threshold: Option<f64>, embedder: Option<&dyn Embed>) -> Scored {
    let s = similar(reference, candidate, threshold, embedder);
    if !s.agree {
        return s;
    }
    // Similar wording is not the same facts: a different final value, number or date is a different answer.
    if let (Some(r), Some(c)) = (value::final_value(reference), value::final_value(candidate))
        && r.marked
        && c.marked
        && !r.value.same(&c.value)
    {
        return Scored::differ(format!(
            "{}, but the final value is `{}`, not `{}`",
            s.note, c.value, r.value
        ));
    }
    let stated = value::values_in(reference);
    if let Some(new) = value::values_in(candidate)
        .into_iter()
        .find(|c| !stated.iter().any(|r| r.same(c)))
    {
        return Scored::differ(format!("{}, but `{new}` is not in the reference", s.note));
    }
    s
}

fn similar(reference: &str, candidate: &str, threshold: Option<f64>, embedder: Option<&dyn Embed>) -> Scored {
    let rouge = rouge_l(reference, candidate);
    if let Some(e) = embedder {
        match e.embed(&[reference, candidate]) {
            Ok(v) if v.len() == 2 => {
                let cos = cosine(&v[0], &v[1]);
                let t = threshold.unwrap_or(DEFAULT_COSINE);
                let note = format!("cosine {cos:.3} (threshold {t}), ROUGE-L {rouge:.3}");
                return if cos >= t as f32 {
                    Scored::agree(note)
                } else {
                    Scored::differ(note)
                };
            }
            _ => {}
        }
    }
    let t = threshold.unwrap_or(DEFAULT_ROUGE);
    let note = format!("ROUGE-L {rouge:.3} (threshold {t})");
    if rouge >= t {
        Scored::agree(note)
    } else {
        Scored::differ(note)
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> TaskContext<'static> {
        TaskContext::default()
    }

    #[test]
    fn labels_match_after_normalising_and_unknown_labels_are_hard_failures() {
        let mut c = ctx();
        c.labels = ["card_arrival", "lost_card"].into_iter().map(String::from).collect();
        assert!(score(&ScorerSpec::Label, "card_arrival", " Intent: `Card_Arrival`.", &c).agree);
        let wrong = score(&ScorerSpec::Label, "card_arrival", "lost_card", &c);
        assert!(!wrong.agree && wrong.hard.is_none());
        let unknown = score(&ScorerSpec::Label, "card_arrival", "something_else", &c);
        assert_eq!(unknown.hard, Some(HardFailure::UnknownLabel));
        let refused = score(
            &ScorerSpec::Label,
            "card_arrival",
            "I'm sorry, but I can't help with that.",
            &c,
        );
        assert_eq!(refused.hard, Some(HardFailure::Refused));
    }

    #[test]
    fn values_compare_by_meaning_not_wording() {
        let v = |r: &str, c: &str| score(&ScorerSpec::Value, r, c, &ctx());
        let reference = "She buys 4 packs at $5 each: 4 x 5 = 20.\n#### 20";
        assert!(v(reference, "Four packs cost five dollars each. The answer is $20.00.").agree);
        assert!(v(reference, "\\boxed{20}").agree);
        let wrong = v(reference, "4 x 5 = 25, so the answer is 25.");
        assert!(!wrong.agree && wrong.hard.is_none(), "{}", wrong.note);
        assert!(wrong.note.contains("`25` instead of `20`"), "{}", wrong.note);
        let none = v(
            reference,
            "She spends some money on packs of gum at the shop on Monday.",
        );
        assert_eq!(none.hard, Some(HardFailure::NoMatch));
        assert_eq!(
            hard_failure(&ScorerSpec::Value, "no value here in a long sentence of words", &ctx()),
            Some(HardFailure::NoMatch)
        );
        assert!(v("Yes", "yes.").agree);
        assert!(v("50%", "0.5").agree);
        assert!(v("2024-03-05", "March 5, 2024").agree);
        // The regex scorer compares what it extracts as values too.
        let re = ScorerSpec::Regex {
            pattern: r"Total: (.+)".into(),
        };
        assert!(score(&re, "Total: 1,000", "Total: $1000.00", &ctx()).agree);
        assert!(!score(&re, "Total: 1,000", "Total: 100", &ctx()).agree);
    }

    #[test]
    fn similar_wording_with_other_facts_differs() {
        let sim = ScorerSpec::Similarity { threshold: None };
        let reference = "Your refund of $40 will arrive in 5 business days.";
        assert!(
            score(
                &sim,
                reference,
                "Your refund of $40 will arrive within 5 business days.",
                &ctx()
            )
            .agree
        );
        let changed = score(
            &sim,
            reference,
            "Your refund of $40 will arrive in 7 business days.",
            &ctx(),
        );
        assert!(
            !changed.agree && changed.note.contains("`7` is not in the reference"),
            "{}",
            changed.note
        );
        let worked = "3 + 4 = 7 apples in all.\n#### 7";
        let other = score(&sim, worked, "3 + 4 = 7 apples in all.\n#### 8", &ctx());
        assert!(!other.agree, "{}", other.note);
    }

    #[test]
    fn one_difference_is_swapped_in() {
        let a = "Thanks, Ava: your lamps arrive with DHL on Monday.";
        let b = "Thanks, Ben: your shirts arrive with UPS on Friday.";
        let swapped: Vec<String> = (0..4).map(|k| swap_one_difference(a, b, k).unwrap()).collect();
        assert_eq!(swapped[0], "Thanks, Ben: your lamps arrive with DHL on Monday.");
        assert_eq!(swapped[3], "Thanks, Ava: your lamps arrive with DHL on Friday.");
        assert_eq!(swap_one_difference(a, a, 0), None, "nothing differs");
        assert_eq!(
            swap_one_difference(a, "Something else entirely, in other words.", 0),
            None
        );
    }

    #[test]
    fn json_matches_field_by_field() {
        let spec = ScorerSpec::Json { tolerance: 0.01 };
        let r = r#"{"name": "Ada", "total": 100.0, "tags": ["a", "b"], "note": null}"#;
        assert!(
            score(
                &spec,
                r,
                "```json\n{\"tags\": [\"b\", \"A\"], \"total\": 100.5, \"name\": \"ada \"}\n```",
                &ctx()
            )
            .agree
        );
        let off = score(&spec, r, r#"{"name": "Ada", "total": 103, "tags": ["a", "b"]}"#, &ctx());
        assert!(!off.agree && off.note.contains("$.total"), "{}", off.note);
        let missing = score(&spec, r, r#"{"name": "Ada", "tags": ["a", "b"]}"#, &ctx());
        assert!(missing.note.contains("$.total is missing"));
        let extra = score(
            &spec,
            r,
            r#"{"name": "Ada", "total": 100, "tags": ["a","b"], "x": 1}"#,
            &ctx(),
        );
        assert!(!extra.agree && extra.note.contains("$.x"));
        assert_eq!(score(&spec, r, "not json", &ctx()).hard, Some(HardFailure::InvalidJson));

        let mut c = ctx();
        c.schema = Some(json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}));
        let bad = score(&spec, r, r#"{"name": 3}"#, &c);
        assert_eq!(bad.hard, Some(HardFailure::SchemaViolation), "{}", bad.note);
    }

    #[test]
    fn rouge_l_and_similarity() {
        assert_eq!(rouge_l("the cat sat", "the cat sat"), 1.0);
        assert_eq!(rouge_l("a b", "c d"), 0.0);
        // LCS of "the cat sat on the mat" / "the cat lay on the mat" is 5 words of 6 on both sides.
        assert!((rouge_l("the cat sat on the mat", "the cat lay on the mat") - 5.0 / 6.0).abs() < 1e-9);
        let spec = ScorerSpec::Similarity { threshold: None };
        assert!(score(&spec, "the cat sat on the mat", "The cat lay on the mat.", &ctx()).agree);
        assert!(!score(&spec, "the cat sat on the mat", "dogs bark loudly", &ctx()).agree);

        struct Fixed;
        impl Embed for Fixed {
            fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
                Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
            }
        }
        let c = TaskContext {
            embedder: Some(&Fixed),
            ..Default::default()
        };
        let s = score(&spec, "abc", "xyz", &c);
        assert!(s.agree && s.note.contains("cosine 1.000"), "{}", s.note);
    }

    #[test]
    fn user_rules() {
        let re: ScorerSpec = "regex:Answer: ([A-D])".parse().unwrap();
        assert!(score(&re, "Thinking... Answer: B", "Answer: B because", &ctx()).agree);
        assert!(!score(&re, "Answer: B", "Answer: C", &ctx()).agree);
        assert_eq!(
            score(&re, "Answer: B", "no idea", &ctx()).hard,
            Some(HardFailure::NoMatch)
        );
        let jp: ScorerSpec = "json-path:$.intent".parse().unwrap();
        assert!(
            score(
                &jp,
                r#"{"intent": "refund", "why": "x"}"#,
                r#"{"intent": "Refund", "why": "y"}"#,
                &ctx()
            )
            .agree
        );
        assert!(!score(&jp, r#"{"intent": "refund"}"#, r#"{"intent": "cancel"}"#, &ctx()).agree);
        assert_eq!(
            score(&jp, r#"{"intent": "refund"}"#, r#"{"other": 1}"#, &ctx()).hard,
            Some(HardFailure::NoMatch)
        );
    }

    #[test]
    fn hard_failures_are_found_without_a_reference() {
        let ctx = TaskContext {
            labels: ["refund".to_owned(), "card_lost".to_owned()].into(),
            schema: Some(json!({"type": "object", "required": ["a"]})),
            embedder: None,
        };
        assert_eq!(hard_failure(&ScorerSpec::Label, "Refund.", &ctx), None);
        assert_eq!(
            hard_failure(&ScorerSpec::Label, "weather", &ctx),
            Some(HardFailure::UnknownLabel)
        );
        let json_spec = ScorerSpec::Json {
            tolerance: DEFAULT_TOLERANCE,
        };
        assert_eq!(hard_failure(&json_spec, r#"{"a": 1}"#, &ctx), None);
        assert_eq!(
            hard_failure(&json_spec, r#"{"b": 1}"#, &ctx),
            Some(HardFailure::SchemaViolation)
        );
        assert_eq!(
            hard_failure(&json_spec, "not json", &ctx),
            Some(HardFailure::InvalidJson)
        );
        let regex = ScorerSpec::Regex { pattern: r"\d+".into() };
        assert_eq!(hard_failure(&regex, "no digits", &ctx), Some(HardFailure::NoMatch));
        assert_eq!(
            hard_failure(
                &ScorerSpec::Similarity { threshold: None },
                "I'm unable to help with that.",
                &ctx
            ),
            Some(HardFailure::Refused)
        );
    }
}
