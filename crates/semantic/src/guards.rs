//! Lexical guards: differences that embeddings blur but that change the answer.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

/// Why a hit was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Veto {
    /// The texts hold different numbers, amounts, dates or times.
    Numbers,
    /// One text is negated where the other is not.
    Negation,
    /// The texts name different things (people, products, places, brands).
    Entities,
    /// Different quantifiers or comparatives: "all" against "some", "more" against "less".
    Scope,
    /// Opposite words: "open" against "closed", "before" against "after".
    Opposites,
}

impl Veto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Veto::Numbers => "numbers",
            Veto::Negation => "negation",
            Veto::Entities => "entities",
            Veto::Scope => "scope",
            Veto::Opposites => "opposites",
        }
    }
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(?:[.,:/]\d+)*").expect("valid regex"));
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\p{L}][\p{L}'’-]*").expect("valid regex"));

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "hundred",
    "thousand",
    "million",
    "billion",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "half",
    "quarter",
    "double",
    "twice",
    "once",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "today",
    "tomorrow",
    "yesterday",
    "tonight",
    "weekend",
    "weekday",
    "weekdays",
    "weekends",
    "morning",
    "evening",
    "night",
    "noon",
    "midnight",
    "am",
    "pm",
];
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "without",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "won't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "shouldn't",
    "wouldn't",
    "couldn't",
    "mustn't",
    "haven't",
    "hasn't",
    "hadn't",
    "stop",
    "avoid",
    "except",
    "excluding",
    "unless",
];
const SCOPE: &[&str] = &[
    "all", "every", "each", "some", "any", "only", "most", "few", "many", "several", "both", "either", "more", "less",
    "fewer", "least", "maximum", "minimum", "max", "min", "total", "per", "whole", "partial", "entire", "single",
    "multiple", "monthly", "yearly", "annual", "annually", "weekly", "daily", "hourly", "cheapest", "fastest", "best",
    "worst", "largest", "smallest", "highest", "lowest", "oldest", "newest", "latest", "earliest",
];
const OPPOSITES: &[(&str, &str)] = &[
    ("open", "closed"),
    ("open", "close"),
    ("before", "after"),
    ("increase", "decrease"),
    ("buy", "sell"),
    ("add", "remove"),
    ("enable", "disable"),
    ("start", "stop"),
    ("start", "end"),
    ("cancel", "renew"),
    ("upgrade", "downgrade"),
    ("import", "export"),
    ("upload", "download"),
    ("in", "out"),
    ("on", "off"),
    ("up", "down"),
    ("eat", "avoid"),
    ("allowed", "forbidden"),
    ("safe", "dangerous"),
    ("cheap", "expensive"),
    ("hot", "cold"),
    ("early", "late"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("lowest", "highest"),
    ("subscribe", "unsubscribe"),
    ("lock", "unlock"),
    ("freeze", "unfreeze"),
    ("block", "unblock"),
    ("refund", "charge"),
    ("deposit", "withdraw"),
    ("inside", "outside"),
    ("above", "below"),
    ("over", "under"),
    ("send", "receive"),
    ("lend", "borrow"),
    ("win", "lose"),
    ("true", "false"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("arrive", "depart"),
    ("arrival", "departure"),
    ("import", "export"),
    ("north", "south"),
    ("east", "west"),
    ("left", "right"),
    ("first", "last"),
    ("new", "old"),
    ("private", "public"),
    ("keep", "cancel"),
    ("pause", "resume"),
    ("pause", "cancel"),
    ("return", "exchange"),
    ("refund", "replace"),
    ("refund", "exchange"),
    ("join", "leave"),
    ("activate", "deactivate"),
    ("approve", "deny"),
    ("confirm", "cancel"),
    ("extend", "shorten"),
    ("raise", "lower"),
    ("higher", "lower"),
    ("more", "less"),
    ("before", "during"),
    ("with", "without"),
    ("yes", "no"),
    ("love", "hate"),
    ("like", "dislike"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("correct", "incorrect"),
    ("valid", "invalid"),
    ("agree", "disagree"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("benefits", "risks"),
    ("maximise", "minimise"),
    ("maximize", "minimize"),
    ("fastest", "slowest"),
    ("cheapest", "most"),
    ("morning", "evening"),
];

fn normalise(w: &str) -> String {
    w.to_lowercase().replace('’', "'")
}

fn words(text: &str) -> Vec<String> {
    WORD.find_iter(text).map(|m| normalise(m.as_str())).collect()
}

fn numbers(text: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = NUMBER.find_iter(text).map(|m| m.as_str().replace(',', "")).collect();
    out.extend(words(text).into_iter().filter(|w| NUMBER_WORDS.contains(&w.as_str())));
    out
}

fn marked(text: &str, list: &[&str]) -> BTreeSet<String> {
    words(text)
        .into_iter()
        .flat_map(|w| {
            // "doesn't" counts as a negation, and so does the bare "n't" ending of any verb.
            let neg = w.ends_with("n't").then(|| "n't".to_owned());
            [Some(w), neg]
        })
        .flatten()
        .filter(|w| list.contains(&w.as_str()) || w == "n't")
        .map(|w| {
            if w.ends_with("n't") || NEGATIONS.contains(&w.as_str()) && list == NEGATIONS {
                "not".to_owned()
            } else {
                w
            }
        })
        .collect()
}

/// Capitalised words that do not start a sentence, and words with capitals or digits inside (iPhone,
/// GPT-4): the names a question is about.
fn entities(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut sentence_start = true;
    for m in WORD.find_iter(text) {
        let w = m.as_str();
        let before = text[..m.start()].trim_end();
        sentence_start = before.is_empty()
            || before.ends_with(['.', '?', '!', ':', '\n'])
            || sentence_start && before.ends_with(['"', '\'', '(']);
        let inner_caps = w.chars().skip(1).any(char::is_uppercase);
        let capital = w.chars().next().is_some_and(char::is_uppercase);
        if (capital && !sentence_start && w != "I") || inner_caps {
            out.insert(w.to_lowercase());
        }
        sentence_start = false;
    }
    out
}

fn opposites(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    OPPOSITES.iter().any(|(x, y)| {
        let (x, y) = (x.to_string(), y.to_string());
        (a.contains(&x) && b.contains(&y) && !a.contains(&y) && !b.contains(&x))
            || (a.contains(&y) && b.contains(&x) && !a.contains(&x) && !b.contains(&y))
    })
}

/// The guard for two conversations' histories. Histories grow (small talk, an extra turn), so only a *swap*
/// vetoes: each side naming a number or an entity the other lacks, or opposite words.
pub fn veto_context(a: &str, b: &str) -> Option<Veto> {
    let (wa, wb): (BTreeSet<String>, BTreeSet<String>) =
        (words(a).into_iter().collect(), words(b).into_iter().collect());
    let swapped = |x: &BTreeSet<String>, y: &BTreeSet<String>| {
        x.iter().any(|v| !y.contains(v)) && y.iter().any(|v| !x.contains(v))
    };
    if swapped(&numbers(a), &numbers(b)) {
        return Some(Veto::Numbers);
    }
    let (ea, eb) = (entities(a), entities(b));
    let only_a: BTreeSet<String> = ea.iter().filter(|e| !wb.contains(*e)).cloned().collect();
    let only_b: BTreeSet<String> = eb.iter().filter(|e| !wa.contains(*e)).cloned().collect();
    if !only_a.is_empty() && !only_b.is_empty() {
        return Some(Veto::Entities);
    }
    if opposites(&wa, &wb) {
        return Some(Veto::Opposites);
    }
    None
}

/// The first guard that refuses to treat `a` and `b` as the same question, if any.
pub fn veto(a: &str, b: &str) -> Option<Veto> {
    if numbers(a) != numbers(b) {
        return Some(Veto::Numbers);
    }
    if marked(a, NEGATIONS).contains("not") != marked(b, NEGATIONS).contains("not") {
        return Some(Veto::Negation);
    }
    let (wa, wb): (BTreeSet<String>, BTreeSet<String>) =
        (words(a).into_iter().collect(), words(b).into_iter().collect());
    if opposites(&wa, &wb) {
        return Some(Veto::Opposites);
    }
    if marked(a, SCOPE) != marked(b, SCOPE) {
        return Some(Veto::Scope);
    }
    let (ea, eb) = (entities(a), entities(b));
    // A name in one text that appears nowhere in the other, in any case.
    let missing = |e: &BTreeSet<String>, other: &BTreeSet<String>| e.iter().any(|x| !other.contains(x));
    if missing(&ea, &wb) || missing(&eb, &wa) {
        return Some(Veto::Entities);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_catch_the_classic_traps() {
        assert_eq!(
            veto("Cancel my subscription", "Don't cancel my subscription"),
            Some(Veto::Negation)
        );
        assert_eq!(
            veto("Is the clinic open on Sundays?", "Is the clinic closed on Sundays?"),
            Some(Veto::Opposites)
        );
        assert_eq!(
            veto("Transfer $50 to savings", "Transfer $500 to savings"),
            Some(Veto::Numbers)
        );
        assert_eq!(
            veto("Book a table for Friday", "Book a table for Saturday"),
            Some(Veto::Numbers)
        );
        assert_eq!(
            veto("How do I reset my iPhone?", "How do I reset my Pixel?"),
            Some(Veto::Entities)
        );
        assert_eq!(
            veto("Refund all my orders", "Refund some of my orders"),
            Some(Veto::Scope)
        );
    }

    #[test]
    fn paraphrases_pass() {
        assert_eq!(veto("How do I reset my password?", "how can I reset my password"), None);
        assert_eq!(
            veto("What's the capital of France?", "Tell me the capital of France."),
            None
        );
        assert_eq!(veto("Where is my order?", "Where's my order?"), None);
    }
}
