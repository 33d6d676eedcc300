//! The value an answer comes to, for answers whose meaning is a value rather than their wording: a number
//! (with units, currency, thousands separators, fractions, percentages), a date, yes/no, or the short text
//! after a final-answer marker (`#### 18`, `\boxed{18}`, "The answer is 18").
//!
//! Two answers that reason differently but come to the same value agree; two that read alike but come to
//! different values do not. Task typing uses [`final_value`] to see whether a task's answers are values, and
//! the `value` and `regex` scorers compare what it extracts with [`Value::same`].

use std::sync::OnceLock;

use regex::Regex;

/// A normalised answer value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number as written; `percent` when it was followed by `%` (50% is kept as 50, and equals 0.5).
    Number {
        value: f64,
        percent: bool,
    },
    Date {
        year: i32,
        month: u32,
        day: u32,
    },
    Bool(bool),
    /// A final answer that is none of the above: lower case, single spaces, no surrounding punctuation.
    Text(String),
}

/// What [`final_value`] found in an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: Value,
    /// True when a final-answer marker introduced it (the answer reasons first); false for an answer that
    /// is the value alone.
    pub marked: bool,
}

impl Value {
    /// True when the two values are the same: numbers up to formatting (and a percentage equals its
    /// fraction: 50% = 0.5), dates, booleans, and texts after normalisation.
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number { value: a, percent: pa }, Value::Number { value: b, percent: pb }) => {
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
                match (pa, pb) {
                    (true, false) => close(a / 100.0, *b) || close(*a, *b),
                    (false, true) => close(*a, b / 100.0) || close(*a, *b),
                    _ => close(*a, *b),
                }
            }
            (a, b) => a == b,
        }
    }

    /// True for a number, a date or a boolean: a value a scorer can compare exactly, unlike free text.
    pub fn is_typed(&self) -> bool {
        !matches!(self, Value::Text(_))
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number { value, percent } => write!(f, "{value}{}", if *percent { "%" } else { "" }),
            Value::Date { year, month, day } => write!(f, "{year:04}-{month:02}-{day:02}"),
            Value::Bool(b) => write!(f, "{}", if *b { "yes" } else { "no" }),
            Value::Text(t) => write!(f, "{t}"),
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid built-in pattern"))
}

/// The share of a task's answers that must come to a value for the task to be scored on values.
pub const VALUE_SHARE: f64 = 0.6;

/// True when an answer comes to a value a scorer can compare exactly: a number, date or yes/no, or any final
/// answer after a marker. JSON is left to the JSON scorer.
pub fn comes_to_value(answer: &str) -> bool {
    let a = answer.trim_start();
    if a.starts_with('{') || a.starts_with('[') {
        return false;
    }
    final_value(a).is_some_and(|f| f.marked || f.value.is_typed())
}

/// The longest answer, in words, that is read as a value on its own without a marker.
const SHORT_ANSWER_WORDS: usize = 6;

/// The value an answer comes to: after its last final-answer marker, or the whole answer when it is short.
/// `None` for a longer answer without a marker.
pub fn final_value(text: &str) -> Option<Found> {
    if let Some(span) = final_span(text) {
        let value = parse(span).unwrap_or_else(|| Value::Text(normalise_text(span)));
        return Some(Found { value, marked: true });
    }
    let t = text.trim();
    if t.is_empty() || t.lines().count() > 1 || t.split_whitespace().count() > SHORT_ANSWER_WORDS {
        return None;
    }
    let value = parse(t).unwrap_or_else(|| Value::Text(normalise_text(t)));
    Some(Found { value, marked: false })
}

/// The text after the last final-answer marker: `#### X`, `\boxed{X}`, "the answer is X", "final answer:
/// X", "answer: X". Cut at the end of its line or sentence.
pub fn final_span(text: &str) -> Option<&str> {
    static MARKER: OnceLock<Regex> = OnceLock::new();
    let marker = re(
        &MARKER,
        r"(?i)(####|\\boxed\{|final answer(?:\s+is)?\s*[:=]?|the answer is\s*:?|answer\s*[:=]|answer is\s*:?)",
    );
    let m = marker.find_iter(text).last()?;
    let rest = &text[m.end()..];
    if m.as_str() == "\\boxed{" {
        // Up to the matching brace (LaTeX nests: \boxed{\frac{1}{2}}).
        let mut depth = 1usize;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(rest[..i].trim());
                    }
                }
                _ => {}
            }
        }
        return Some(rest.trim());
    }
    let line = rest.trim_start().lines().next().unwrap_or("").trim();
    // The sentence ends at a period followed by a space (not a decimal point).
    let end = line
        .char_indices()
        .find(|&(i, c)| c == '.' && line[i + 1..].starts_with(char::is_whitespace))
        .map_or(line.len(), |(i, _)| i);
    let span = line[..end].trim().trim_end_matches(['.', '!']).trim();
    (!span.is_empty()).then_some(span)
}

/// Lower case, single spaces, no surrounding quotes, markdown or punctuation.
pub fn normalise_text(text: &str) -> String {
    text.trim()
        .trim_matches(|c: char| c.is_whitespace() || "\"'`*_.,;:!?()[]$".contains(c))
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a span as a date, a yes/no, or a number, in that order (a date holds numbers too). `None` when it
/// is none of them.
pub fn parse(span: &str) -> Option<Value> {
    let cleaned = clean_latex(span);
    let s = cleaned.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(d) = parse_date(s) {
        return Some(d);
    }
    let first_word = normalise_text(s.split([' ', ',', '.', '!', ';']).next().unwrap_or(""));
    if s.split_whitespace().count() <= SHORT_ANSWER_WORDS {
        match first_word.as_str() {
            "yes" | "true" | "correct" => return Some(Value::Bool(true)),
            "no" | "false" | "incorrect" => return Some(Value::Bool(false)),
            _ => {}
        }
    }
    parse_number(s)
}

/// `\frac{a}{b}` as `a/b`; `\$`, `\%`, `\,`, `\text{…}` and `$…$` delimiters dropped.
fn clean_latex(s: &str) -> String {
    static FRAC: OnceLock<Regex> = OnceLock::new();
    static TEXT: OnceLock<Regex> = OnceLock::new();
    let frac = re(&FRAC, r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}");
    let text = re(&TEXT, r"\\(?:text|mathrm|mbox)\{([^{}]*)\}");
    let s = frac.replace_all(s, "$1/$2");
    let s = text.replace_all(&s, " $1");
    s.replace("\\$", "$")
        .replace("\\%", "%")
        .replace("\\,", "")
        .replace("\\!", "")
        .replace("\\ ", " ")
}

fn parse_number(s: &str) -> Option<Value> {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    let number = re(
        &NUMBER,
        r"(?i)(?P<neg>[-−])?\s*(?:[$€£¥]|usd\s|eur\s)?\s*(?:(?P<whole>\d+)\s+(?P<mnum>\d+)/(?P<mden>\d+)|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?)\s*(?P<pct>%|percent\b)?",
    );
    let c = number.captures(s)?;
    let neg = c.name("neg").is_some();
    let mut value = if let (Some(w), Some(n), Some(d)) = (c.name("whole"), c.name("mnum"), c.name("mden")) {
        let (w, n, d): (f64, f64, f64) = (
            w.as_str().parse().ok()?,
            n.as_str().parse().ok()?,
            d.as_str().parse().ok()?,
        );
        if d == 0.0 {
            return None;
        }
        w + n / d
    } else {
        let num: f64 = c.name("num")?.as_str().replace(',', "").parse().ok()?;
        match c.name("den") {
            Some(d) => {
                let d: f64 = d.as_str().parse().ok()?;
                if d == 0.0 {
                    return None;
                }
                num / d
            }
            None => num,
        }
    };
    if neg {
        value = -value;
    }
    value.is_finite().then_some(Value::Number {
        value,
        percent: c.name("pct").is_some(),
    })
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn month_of(word: &str) -> Option<u32> {
    let w = word.to_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTHS.iter().position(|m| w.starts_with(m)).map(|i| i as u32 + 1)
}

fn date(year: i32, month: u32, day: u32) -> Option<Value> {
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Value::Date { year, month, day })
}

fn parse_date(s: &str) -> Option<Value> {
    static ISO: OnceLock<Regex> = OnceLock::new();
    static SLASH: OnceLock<Regex> = OnceLock::new();
    static MONTH_FIRST: OnceLock<Regex> = OnceLock::new();
    static DAY_FIRST: OnceLock<Regex> = OnceLock::new();
    if let Some(c) = re(&ISO, r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b").captures(s) {
        return date(c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?);
    }
    if let Some(c) = re(&SLASH, r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b").captures(s) {
        let (a, b): (u32, u32) = (c[1].parse().ok()?, c[2].parse().ok()?);
        // Month first (US) unless the first part cannot be a month.
        let (month, day) = if a > 12 { (b, a) } else { (a, b) };
        return date(c[3].parse().ok()?, month, day);
    }
    if let Some(c) = re(
        &MONTH_FIRST,
        r"(?i)\b([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b",
    )
    .captures(s)
        && let Some(month) = month_of(&c[1])
    {
        return date(c[3].parse().ok()?, month, c[2].parse().ok()?);
    }
    if let Some(c) = re(
        &DAY_FIRST,
        r"(?i)\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]{3,9})\.?,?\s+(\d{4})\b",
    )
    .captures(s)
        && let Some(month) = month_of(&c[2])
    {
        return date(c[3].parse().ok()?, month, c[1].parse().ok()?);
    }
    None
}

/// Every number and date in a text, normalised: the facts a free-text answer states, for checking that a
/// similar-reading answer does not change them.
pub fn values_in(text: &str) -> Vec<Value> {
    static TOKEN: OnceLock<Regex> = OnceLock::new();
    let token = re(
        &TOKEN,
        r"(?i)\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b|\b[a-z]{3,9}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b|[-−]?[$€£¥]?\d[\d,]*(?:\.\d+)?%?",
    );
    let cleaned = clean_latex(text);
    token
        .find_iter(&cleaned)
        .filter_map(|m| {
            let s = m.as_str().trim_end_matches(',');
            parse_date(s).or_else(|| parse_number(s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: f64) -> Value {
        Value::Number {
            value: v,
            percent: false,
        }
    }

    fn value(text: &str) -> Option<Value> {
        final_value(text).map(|f| f.value)
    }

    #[test]
    fn final_answers_after_reasoning() {
        let worked = "Tom has 3 bags of 6 apples: 3 x 6 = 18.\n#### 18";
        assert_eq!(
            final_value(worked),
            Some(Found {
                value: num(18.0),
                marked: true
            })
        );
        assert_eq!(value("So the total is \\boxed{\\frac{1}{2}}."), Some(num(0.5)));
        assert_eq!(
            value("First 2 + 2 = 4. The answer is $1,250.00. Done."),
            Some(num(1250.0))
        );
        assert_eq!(value("Final answer: 18 apples"), Some(num(18.0)));
        assert_eq!(value("**Answer:** 3.5"), Some(num(3.5)));
        // The last marker wins: earlier ones are part of the reasoning.
        assert_eq!(value("The answer is 4? No. The answer is 5."), Some(num(5.0)));
        assert_eq!(value("the answer is: Paris."), Some(Value::Text("paris".into())));
        // A long answer without a marker has no single value.
        assert_eq!(
            value("She bought 3 apples and 4 pears at the market on Monday morning."),
            None
        );
    }

    #[test]
    fn numbers_are_normalised() {
        let same = |a: &str, b: &str| value(a).unwrap().same(&value(b).unwrap());
        assert!(same("$20.00", "20"));
        assert!(same("1,000", "1000"));
        assert!(same("0.5", "1/2"));
        assert!(same("50%", "0.5"));
        assert!(same("50%", "50"));
        assert!(same("1 1/2", "1.5"));
        assert!(same("-3", "−3"));
        assert!(same("18 apples", "18"));
        assert!(same("USD 7", "$7"));
        assert!(!same("18", "19"));
        assert!(!same("1,000", "100"));
        assert!(!same("0.5", "5"));
        assert_eq!(parse("1/0"), None);
    }

    #[test]
    fn dates_and_booleans() {
        let d = Value::Date {
            year: 2024,
            month: 3,
            day: 5,
        };
        for s in [
            "2024-03-05",
            "3/5/2024",
            "March 5, 2024",
            "5th March 2024",
            "Mar. 5 2024",
        ] {
            assert_eq!(parse(s), Some(d.clone()), "{s}");
        }
        assert_eq!(parse("25/12/2024").unwrap().to_string(), "2024-12-25");
        assert_eq!(parse("Yes."), Some(Value::Bool(true)));
        assert_eq!(parse("true"), Some(Value::Bool(true)));
        assert_eq!(parse("No, it is not"), Some(Value::Bool(false)));
        assert_eq!(value("The answer is yes"), Some(Value::Bool(true)));
        assert!(!Value::Bool(true).same(&Value::Bool(false)));
        assert!(!d.same(&num(2024.0)));
    }

    #[test]
    fn facts_in_free_text() {
        let v = values_in("Your order of 1,200 units ships on 2024-03-05 for $30.50, 15% off.");
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].same(&num(1200.0)));
        assert!(matches!(v[1], Value::Date { .. }));
        assert!(v[2].same(&num(30.5)));
        assert!(v[3].same(&num(0.15)));
        assert!(values_in("no numbers here").is_empty());
    }
}
