//! Labelled data sets whose answers are not labels, built by the project so tests need nothing from outside
//! the repository: maths word problems whose answers come to a number, and delivery questions answered by
//! sentences that read alike but state different facts. With a [`Style`] per mock model, two models answer
//! the same problem in different words and formats ("#### 1250" against "The answer is $1,250.00."), as a
//! strong and a cheap model do.

use std::collections::HashSet;

use crate::labels::fnv;

/// How many rows each set has.
pub const ROWS: usize = 3000;

const NAMES: &[&str] = &[
    "Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Liam", "Mara", "Noah",
    "Olga", "Priya",
];
const ITEMS: &[&str] = &[
    "apples", "pencils", "stickers", "books", "tickets", "cupcakes", "marbles", "plants", "shirts", "candles",
];
const VEHICLES: &[&str] = &["train", "bus", "truck", "cyclist", "ferry", "car"];

/// `(question, answer)`: [`ROWS`] distinct word problems and their final values, written plainly ("1250",
/// "12.5"), in an order fixed by a stable hash.
pub fn word_problems() -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut rows = Vec::with_capacity(ROWS);
    let mut n = 0u64;
    while rows.len() < ROWS {
        let h = fnv(&[b"maths", &n.to_le_bytes()]);
        n += 1;
        let at = |shift: u32, range: u64| (h >> shift) % range;
        let name = NAMES[at(4, NAMES.len() as u64) as usize];
        let item = ITEMS[at(9, ITEMS.len() as u64) as usize];
        let (a, b, c) = (2 + at(14, 48), 2 + at(22, 23), 1 + at(30, 19));
        let (q, value): (String, f64) = match h % 7 {
            0 => (
                format!("{name} has {a} boxes with {b} {item} in each. How many {item} does {name} have?"),
                (a * b) as f64,
            ),
            1 => {
                let cents = [0.5, 0.25, 0.75, 0.0][at(38, 4) as usize];
                let price = c as f64 + cents;
                (
                    format!("{name} buys {a} {item} at ${price:.2} each. How many dollars does {name} spend?"),
                    a as f64 * price,
                )
            }
            2 => (
                format!(
                    "{name} had {} {item} and gave away {b}. How many {item} are left?",
                    a + b + c
                ),
                (a + c) as f64,
            ),
            3 => {
                let v = VEHICLES[at(38, VEHICLES.len() as u64) as usize];
                (
                    format!(
                        "A {v} travels {} km per hour for {c} hours. How many km does it travel?",
                        10 * a
                    ),
                    (10 * a * c) as f64,
                )
            }
            4 => (
                format!(
                    "{name} saves ${} a week for {b} weeks, then spends ${c}. How many dollars does {name} have left?",
                    5 * a
                ),
                (5 * a * b - c) as f64,
            ),
            5 => (
                format!(
                    "There are {} {item} shared equally among {b} friends. How many {item} does each friend get?",
                    a * b
                ),
                a as f64,
            ),
            _ => (
                format!(
                    "A shop sells {} {item} on Monday and {} on Tuesday at ${c} each. How many dollars does the shop take?",
                    10 * a,
                    10 * b
                ),
                (10 * (a + b) * c) as f64,
            ),
        };
        if seen.insert(q.to_lowercase()) {
            rows.push((fnv(&[q.as_bytes()]), q, plain(value)));
        }
        assert!(n < 1_000_000, "too few distinct word problems");
    }
    rows.sort();
    rows.into_iter().map(|(_, q, v)| (q, v)).collect()
}

const CARRIERS: &[&str] = &["DHL", "UPS", "FedEx", "the postal service", "our own courier"];
const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `(question, label)`: [`ROWS`] questions about a delivery from a named customer about an item, labelled
/// `CARRIER|DAY` (35 labels). [`Style::Delivery`] answers in a sentence that names the customer and the item
/// (so every answer is different) and the label's carrier and day: a wrong answer is the same sentence with
/// other facts, which similarity cannot tell from the right one.
pub fn deliveries() -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut rows = Vec::with_capacity(ROWS);
    let mut n = 0u64;
    while rows.len() < ROWS {
        let h = fnv(&[b"delivery", &n.to_le_bytes()]);
        n += 1;
        let name = NAMES[(h % NAMES.len() as u64) as usize];
        let item = ITEMS[((h >> 8) % ITEMS.len() as u64) as usize];
        let carrier = CARRIERS[((h >> 16) % CARRIERS.len() as u64) as usize];
        let day = DAYS[((h >> 24) % DAYS.len() as u64) as usize];
        let ask = [
            "Where are my",
            "When will I get my",
            "Who is delivering my",
            "Any news on my",
        ][((h >> 32) % 4) as usize];
        let q = format!(
            "Hi, this is {name}. {ask} {item}? I ordered them {} days ago.",
            1 + (h >> 40) % 30
        );
        if seen.insert(q.clone()) {
            rows.push((fnv(&[q.as_bytes()]), q, format!("{carrier}|{day}")));
        }
        assert!(n < 1_000_000, "too few distinct delivery questions");
    }
    rows.sort();
    rows.into_iter().map(|(_, q, a)| (q, a)).collect()
}

/// A set as a `text,label` CSV with a header, the layout [`crate::Labeller::from_csv`] reads.
pub fn csv(rows: &[(String, String)]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("text,label\n");
    for (text, label) in rows {
        out.push_str(&format!("{},{}\n", quote(text), quote(label)));
    }
    out
}

/// A number as plain text: no separators, no trailing zeros ("1250", "12.5").
fn plain(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// How a mock model words its answer around the label it picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The label alone.
    Plain,
    /// Reasoning, then `#### VALUE`, as GSM8K's reference solutions end.
    Worked,
    /// Reasoning in other words, then "The answer is …" with the value formatted for people ("$1,250.00",
    /// "1,250").
    Casual,
    /// A `CARRIER|DAY` label in a sentence to the customer about the item the question names.
    Delivery,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Style, String> {
        match s {
            "plain" => Ok(Style::Plain),
            "worked" => Ok(Style::Worked),
            "casual" => Ok(Style::Casual),
            "delivery" => Ok(Style::Delivery),
            other => Err(format!(
                "unknown style `{other}`; expected plain, worked, casual or delivery"
            )),
        }
    }
}

/// The answer `style` gives for `label` to `question`.
pub fn render(style: Style, question: &str, label: &str) -> String {
    match style {
        Style::Plain => label.to_owned(),
        Style::Worked => format!(
            "Let's work through it step by step. {question} Putting the numbers together gives {label}.\n#### {label}"
        ),
        Style::Casual => {
            let money = question.contains('$') || question.contains("dollars");
            let shown = match label.parse::<f64>() {
                Ok(v) if money => format!("${}", grouped(v, 2)),
                Ok(v) => grouped(v, if v.fract() == 0.0 { 0 } else { 2 }),
                Err(_) => label.to_owned(),
            };
            format!("Okay, so: {question} Working it out, the result comes to {shown}. The answer is {shown}.")
        }
        Style::Delivery => {
            let between = |open: &str, close: char| -> &str {
                question
                    .find(open)
                    .map(|i| &question[i + open.len()..])
                    .and_then(|rest| rest.split(close).next())
                    .unwrap_or("there")
            };
            let name = between("this is ", '.');
            let item = between(" my ", '?');
            let (carrier, day) = label.split_once('|').unwrap_or((label, "soon"));
            format!(
                "Thanks for waiting, {name}: your {item} are on their way with {carrier} and should reach you on {day}."
            )
        }
    }
}

/// `1250.5` as `1,250.50` (with `decimals` digits after the point).
fn grouped(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sets_are_distinct_and_stable() {
        let maths = word_problems();
        assert_eq!(maths.len(), ROWS);
        let distinct: HashSet<&str> = maths.iter().map(|(q, _)| q.as_str()).collect();
        assert_eq!(distinct.len(), ROWS);
        let values: HashSet<&str> = maths.iter().map(|(_, v)| v.as_str()).collect();
        assert!(values.len() > 300, "{} distinct answers", values.len());
        assert!(
            maths.iter().any(|(_, v)| v.len() >= 4),
            "some answers run into thousands"
        );
        assert_eq!(maths, word_problems());
        let deliveries = deliveries();
        let labels: HashSet<&str> = deliveries.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(labels.len(), CARRIERS.len() * DAYS.len());
        let (q, label) = &deliveries[0];
        let answer = render(Style::Delivery, q, label);
        let (carrier, day) = label.split_once('|').unwrap();
        assert!(
            answer.contains(carrier) && answer.ends_with(&format!("on {day}.")),
            "{answer}"
        );
        assert!(!answer.contains("{"), "{answer}");
        let labeller = crate::Labeller::from_csv(&csv(&maths)).unwrap();
        assert_eq!(labeller.truth(&maths[7].0), Some(maths[7].1.as_str()));
    }

    #[test]
    fn styles_word_the_same_value_differently() {
        let q = "Ava buys 50 pencils at $25.00 each. How many dollars does Ava spend?";
        assert_eq!(render(Style::Plain, q, "1250"), "1250");
        assert!(render(Style::Worked, q, "1250").ends_with("\n#### 1250"));
        assert!(render(Style::Casual, q, "1250").ends_with("The answer is $1,250.00."));
        assert!(render(Style::Casual, "How many km?", "12.5").ends_with("The answer is 12.50."));
        assert_eq!(grouped(1234567.0, 0), "1,234,567");
    }
}
