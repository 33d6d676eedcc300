//! Lexical guards: differences that embeddings blur but that change the answer.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::lexicon;

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
    /// The same two things in the opposite direction: "from savings to current" against "from current to
    /// savings".
    Direction,
    /// One word swapped for another that is not a synonym, a form or a misspelling of it: "adults" against
    /// "children", "approved" against "rejected".
    Substitution,
    /// A question narrowed by a word put next to one both name: "a gift" / "a gift card", "my account" / "my
    /// joint account".
    Qualifier,
    /// A bare reply ("yes please", "the second one") in a different conversation: what such a reply asks
    /// for was said before it, and that differs.
    Reply,
    /// Texts too long to compare word by word ([`crate::LONG_TEXT`]) that are not the same text.
    LongText,
}

impl Veto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Veto::Numbers => "numbers",
            Veto::Negation => "negation",
            Veto::Entities => "entities",
            Veto::Scope => "scope",
            Veto::Opposites => "opposites",
            Veto::Direction => "direction",
            Veto::Substitution => "substitution",
            Veto::Qualifier => "qualifier",
            Veto::Reply => "reply",
            Veto::LongText => "long_text",
        }
    }
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(?:[.,:/]\d+)*").expect("valid regex"));
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\p{L}][\p{L}'’-]*").expect("valid regex"));

const NUMBER_WORDS: &[&str] = &[
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

/// The words of a text, lower-case, with a trailing "'s" (possessive, or "is" / "has") dropped: "Australia's
/// capital" names Australia, "when's" asks when.
fn words(text: &str) -> Vec<String> {
    WORD.find_iter(text)
        .map(|m| {
            let mut w = normalise(m.as_str());
            if w.len() > 2 && w.ends_with("'s") {
                w.truncate(w.len() - 2);
            }
            w
        })
        .collect()
}

/// Number words, as the digits they stand for: "three more agents" and "3 more agents" name one number.
const CARDINALS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("thirteen", "13"),
    ("fourteen", "14"),
    ("fifteen", "15"),
    ("sixteen", "16"),
    ("seventeen", "17"),
    ("eighteen", "18"),
    ("nineteen", "19"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("sixty", "60"),
    ("seventy", "70"),
    ("eighty", "80"),
    ("ninety", "90"),
];

const DAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Monday to Friday, as the working week is named: "on weekdays".
static WORKING_WEEK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bmon(?:day)?\s*(?:to|-|–|through|thru|till|until)\s*fri(?:day)?\b").expect("valid regex")
});

/// Whether the text before a word ends with the article "a".
fn after_article(before: &str) -> bool {
    let before = before.trim_end();
    before
        .strip_suffix(['a', 'A'])
        .is_some_and(|rest| rest.is_empty() || rest.ends_with(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’'))
}

/// Whether a time-of-day word at this point greets rather than names a time: "Morning!", "Good evening,"
/// at the start of a text.
fn greeting(before: &str, after: &str) -> bool {
    let before = before.trim();
    if before.is_empty() {
        after.trim_start().starts_with(['!', ',', '.'])
    } else {
        before.eq_ignore_ascii_case("good")
    }
}

/// A day, month or time of day, in any of its forms ("Sundays" is "Sunday"), mistyped or not.
fn date_word(w: &str) -> bool {
    NUMBER_WORDS.contains(&w) || w.strip_suffix('s').is_some_and(|d| DAYS.contains(&d)) || misspelt_day(w).is_some()
}

/// A day name mistyped ("Mondys", "Tuesdy"): a slip of the keyboard on a word of five letters or more.
fn misspelt_day(w: &str) -> Option<&'static str> {
    let w = w.strip_suffix('s').unwrap_or(w);
    if w.len() < 5 {
        return None;
    }
    DAYS.iter().copied().find(|day| w != *day && lexicon::typo(w, day))
}

/// The numbers, amounts, dates and times a text names, number words as digits. Words that only look like
/// one are left out: "one" as a pronoun ("the 5GB one", "quick one:"), "am" that is not a time ("am I
/// allowed"), "may" that is not the month; "Sundays" and "tomorrow's" are "sunday" and "tomorrow".
fn numbers(text: &str) -> BTreeSet<String> {
    let working_week = WORKING_WEEK.replace_all(text, "weekdays");
    let text = working_week.as_ref();
    let mut out: BTreeSet<String> = NUMBER.find_iter(text).map(|m| m.as_str().replace(',', "")).collect();
    for m in WORD.find_iter(text) {
        let lower = normalise(m.as_str());
        let w = lower.strip_suffix("'s").unwrap_or(&lower);
        let (before, after) = (&text[..m.start()], &text[m.end()..]);
        match w {
            // A numeral counts something named right after it ("one egg"); a pronoun stands alone.
            "one" => {
                let counts = WORD.find(after).is_some_and(|next| {
                    let gap = &after[..next.start()];
                    !gap.is_empty()
                        && gap.chars().all(char::is_whitespace)
                        && !FUNCTION_WORDS.contains(&normalise(next.as_str()).as_str())
                });
                if counts {
                    out.insert("1".to_owned());
                }
            }
            // "7am", "7 pm": a time only after a number.
            "am" | "pm" => {
                if before.trim_end().ends_with(|c: char| c.is_ascii_digit()) {
                    out.insert(w.to_owned());
                }
            }
            // The month is capitalised; the verb is not, except where it starts a sentence.
            "may" => {
                let start = before.trim_end();
                if m.as_str() == "May" && !start.is_empty() && !start.ends_with(['.', '!', '?']) {
                    out.insert(w.to_owned());
                }
            }
            // A greeting is no time: "Morning! how do I ...", "good evening".
            "morning" | "evening" | "afternoon" | "night" if greeting(before, after) => {}
            // Times of day reworded: "9pm" is "9 at night", "in the evening" is "at night".
            "evening" | "night" => {
                out.insert("pm".to_owned());
            }
            "morning" => {
                out.insert("am".to_owned());
            }
            // "a single egg" is "one egg".
            "single" if after_article(before) => {
                out.insert("1".to_owned());
            }
            _ => {
                // "two-factor" counts as "two"; "one-off" as "one".
                let head = w.split_once('-').map_or(w, |(head, _)| head);
                if let Some((_, digits)) = CARDINALS.iter().find(|(word, _)| *word == head) {
                    out.insert((*digits).to_owned());
                } else if let Some(day) = w.strip_suffix('s').filter(|d| DAYS.contains(d)) {
                    out.insert(day.to_owned());
                } else if NUMBER_WORDS.contains(&w) {
                    out.insert(w.to_owned());
                } else if let Some(day) = misspelt_day(w) {
                    out.insert(day.to_owned());
                }
            }
        }
    }
    out
}

/// Units a rate is given in: "each month" and "a month" ask the same.
const PERIODS: &[&str] = &["hour", "day", "night", "week", "month", "year"];

/// The quantifiers and comparatives of a text ([`SCOPE`]), read as what they say: a rate is a rate however
/// put ("each month", "every month", "per month" and "pay a month" are "per"), and idioms that only look
/// like one are left out: "many thanks", "how many" (a question for a number), "the best way to" (how to),
/// "a single" (one, for the numbers guard); "quickest" is "fastest".
fn scope(words: &[String]) -> BTreeSet<&str> {
    let next = |i: usize| words.get(i + 1).map(String::as_str);
    let prev = |i: usize| i.checked_sub(1).map(|j| words[j].as_str());
    let period = |i: usize| next(i).is_some_and(|n| PERIODS.contains(&n.trim_end_matches('s')));
    words
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let w = match w.as_str() {
                "quickest" => "fastest",
                "each" | "every" | "per" if period(i) => "per",
                // "pay a month" is a rate; "in a month", "for a year" are a time.
                "a" if period(i) && prev(i).is_some_and(|p| !TIME_PREPOSITIONS.contains(&p)) => "per",
                w => w,
            };
            let idiom = match w {
                "many" => next(i) == Some("thanks") || prev(i) == Some("how"),
                "best" => next(i) == Some("way") && words.get(i + 2).is_some_and(|t| t == "to"),
                "single" => prev(i) == Some("a"),
                _ => false,
            };
            (SCOPE.contains(&w) && !idiom).then_some(w)
        })
        .collect()
}

/// Words before "a month" that make it a time rather than a rate.
const TIME_PREPOSITIONS: &[&str] = &[
    "in", "for", "within", "after", "before", "about", "over", "under", "than", "once", "twice", "only", "just",
];

fn marked(text: &str, list: &[&str]) -> BTreeSet<String> {
    words(text)
        .into_iter()
        .flat_map(|w| {
            // "doesn't" counts as a negation, and so does the bare "n't" ending of any verb.
            let neg = w.ends_with("n't").then(|| "n't".to_owned());
            [Some(w), neg]
        })
        .flatten()
        .filter(|w| list.contains(&w.as_str()) || list == NEGATIONS && w == "n't")
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
/// Capitalised words that name nothing: "I", "OK".
const NOT_NAMES: &[&str] = &["i", "ok"];

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
        let word = normalise(w);
        let word = word.strip_suffix("'s").unwrap_or(&word);
        // Days and months are for the numbers guard: "on Sundays" and "on a Sunday" name one day.
        if ((capital && !sentence_start) || inner_caps)
            && !date_word(word)
            && !NOT_NAMES.contains(&word)
            && !word.starts_with("i'")
        {
            out.insert(word.to_owned());
        }
        sentence_start = false;
    }
    out
}

/// Prefixes that negate or invert the word they start ("unsafe", "non-refundable", "self-employed"), with the
/// shortest word each is trusted on: "in" + "form" is another word, "in" + "valid" is not.
const NEGATING_PREFIXES: &[(&str, usize)] = &[
    ("un", 4),
    ("non-", 3),
    ("non", 4),
    ("anti-", 3),
    ("self-", 4),
    ("dis", 5),
    ("mis", 5),
    ("in", 5),
    ("im", 5),
    ("il", 5),
    ("ir", 5),
];

/// The words that negate `short`: it with a negating prefix ("unsafe" for "safe"), or its "-ful" and "-less"
/// turned round ("careless" for "careful").
fn negated_forms(short: &str) -> impl Iterator<Item = String> + '_ {
    let letters = short.chars().count();
    let prefixed = NEGATING_PREFIXES
        .iter()
        .filter(move |(_, min)| letters >= *min)
        .map(move |(p, _)| format!("{p}{short}"));
    let suffixed = [("ful", "less"), ("less", "ful")]
        .into_iter()
        .filter_map(move |(s, t)| {
            short
                .strip_suffix(s)
                .filter(|stem| stem.chars().count() >= 3)
                .map(|stem| format!("{stem}{t}"))
        });
    prefixed.chain(suffixed)
}

fn opposites(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let listed = OPPOSITES.iter().any(|&(x, y)| {
        (a.contains(x) && b.contains(y) && !a.contains(y) && !b.contains(x))
            || (a.contains(y) && b.contains(x) && !a.contains(x) && !b.contains(y))
    });
    // A word on one side only whose negated form is on the other side only. Each word's few negated forms are
    // looked up, so long conversations cost linear, not quadratic, time.
    let negated = |x: &BTreeSet<String>, y: &BTreeSet<String>| {
        x.iter()
            .filter(|w| !y.contains(*w))
            .any(|w| negated_forms(w).any(|v| y.contains(&v) && !x.contains(&v)))
    };
    listed || negated(a, b) || negated(b, a)
}

/// A word on one side only that is another word of the other side's stem negated with a hyphen: "self-employed
/// people" / "employees", "non-members" / "membership".
fn negated_stem(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    a.iter()
        .filter(|w| !b.contains(*w))
        .filter_map(|w| ["self-", "non-", "anti-"].iter().find_map(|p| w.strip_prefix(p)))
        .any(|rest| b.iter().any(|v| !a.contains(v) && lexicon::same_stem(rest, v)))
}

/// The guard for two conversations' histories. Histories grow (small talk, an extra turn), so only a *swap*
/// vetoes: each side naming a number or an entity the other lacks, or opposite words.
pub fn veto_context(a: &str, b: &str) -> Option<Veto> {
    if a == b {
        return None;
    }
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
    // "no" in a conversation is mostly "no need", "no problem", not the answer to a yes-or-no question.
    let answers = |w: &BTreeSet<String>| -> BTreeSet<String> {
        w.iter().filter(|x| *x != "yes" && *x != "no").cloned().collect()
    };
    if opposites(&answers(&wa), &answers(&wb)) {
        return Some(Veto::Opposites);
    }
    changed_in_place(a, b)
}

static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d+(?:[.,:/]\d+)*|[\p{L}][\p{L}'’-]*").expect("valid regex"));

/// A number, a name or a quantifier changed in place: a turn that stayed where it was in both conversations
/// but names another number, name or quantifier at the same point ("I did 12 hours overtime" / "21 hours",
/// "your Edinburgh Airport branch" / "Edinburgh Waverley branch", "monthly paid" / "weekly paid"), even where
/// both histories name both somewhere. The histories' lines are matched by a longest common subsequence; where
/// the same number of lines differs between two matches, they are compared pairwise. A history that merely
/// gained turns (small talk) is not compared line by line. (Doing the same for any content word swapped
/// stopped 4 more fow-cache traps for 15 good hits: reworded turns swap words too.)
fn changed_in_place(a: &str, b: &str) -> Option<Veto> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // Lines the two share at the start and the end are not aligned (a conversation that goes on repeats its
    // start); the middle that differs is, when it is short enough.
    let (start, end) = common_ends(&la, &lb);
    let (la, lb) = (&la[start..la.len() - end], &lb[start..lb.len() - end]);
    if la.len() > MAX_DIFFERENCE || lb.len() > MAX_DIFFERENCE {
        return None;
    }
    let tokens = |t: &str| -> Vec<String> {
        TOKEN
            .find_iter(t)
            .map(|m| normalise(m.as_str()).replace(',', ""))
            .collect()
    };
    // A number, or a day, month or time of day ("Thursday" / "Friday").
    let numeric = |w: &str| w.starts_with(|c: char| c.is_ascii_digit()) || date_word(w);
    // Word-by-word comparisons are quadratic in a line's changed words: a long reworded history (a document
    // in the prompt) stops being compared past this many steps rather than holding up the request.
    let mut budget: usize = 1 << 20;
    for (ra, rb) in replaced(la, lb) {
        if ra.len() != rb.len() {
            continue;
        }
        for (x, y) in ra.iter().zip(rb) {
            let dated = |t: &str| !numbers(t).is_empty();
            let (nx, ny) = (entities(x), entities(y));
            let scoped = |t: &str| words(t).iter().any(|w| SCOPE.contains(&w.as_str()));
            if !(dated(x) && dated(y)) && (nx.is_empty() || ny.is_empty()) && !(scoped(x) && scoped(y)) {
                continue;
            }
            let (tx, ty) = (tokens(x), tokens(y));
            let (start, end) = common_ends(&tx, &ty);
            let (dx, dy) = (&tx[start..tx.len() - end], &ty[start..ty.len() - end]);
            let cost = (dx.len() + 1) * (dy.len() + 1);
            if dx.len() > MAX_DIFFERENCE || dy.len() > MAX_DIFFERENCE || cost > budget {
                continue;
            }
            budget -= cost;
            for (p, q) in replaced(dx, dy) {
                match (p, q) {
                    ([p], [q]) if numeric(p) && numeric(q) => return Some(Veto::Numbers),
                    ([p], [q]) if nx.contains(p) && ny.contains(q) => return Some(Veto::Entities),
                    ([p], [q]) if SCOPE.contains(&p.as_str()) && SCOPE.contains(&q.as_str()) => {
                        return Some(Veto::Scope);
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

/// Words skipped between a preposition and what it points at.
const DETERMINERS: &[&str] = &[
    "my", "the", "a", "an", "our", "your", "their", "his", "her", "its", "this", "that",
];

/// What a text moves from and to ("from my savings to my current account": savings, current), if it says.
fn direction(words: &[String]) -> Option<(&str, &str)> {
    let after = |i: usize| {
        words[i + 1..]
            .iter()
            .find(|w| !DETERMINERS.contains(&w.as_str()))
            .map(String::as_str)
    };
    let from = words.iter().position(|w| w == "from")?;
    let to = words
        .iter()
        .enumerate()
        .skip(from + 1)
        .find(|(_, w)| *w == "to" || *w == "into")?
        .0;
    Some((after(from)?, after(to)?))
}

/// The content words before and after the last "to" / "into", when there are some after it: "convert a Word
/// document to PDF" has (convert, word, document) before and (pdf) after.
fn around_to(words: &[String]) -> Option<(BTreeSet<&str>, BTreeSet<&str>)> {
    fn content(ws: &[String]) -> BTreeSet<&str> {
        ws.iter()
            .map(String::as_str)
            .filter(|w| !FUNCTION_WORDS.contains(w))
            .collect()
    }
    let to = words.iter().rposition(|w| w == "to" || w == "into")?;
    let after = content(&words[to + 1..]);
    (!after.is_empty()).then(|| (content(&words[..to]), after))
}

/// The first guard that refuses to treat `a` and `b` as the same question, if any.
pub fn veto(a: &str, b: &str) -> Option<Veto> {
    fired(a, b, true).into_iter().next()
}

/// Every guard that refuses to treat `a` and `b` as the same question, in the order [`veto`] checks them
/// (all of them unless `first_only`): a learned verifier reads them as evidence rather than as vetoes.
pub fn fired(a: &str, b: &str, first_only: bool) -> Vec<Veto> {
    let mut out = Vec::new();
    macro_rules! fire {
        ($v:expr) => {{
            out.push($v);
            if first_only {
                return out;
            }
        }};
    }
    if numbers(a) != numbers(b) {
        fire!(Veto::Numbers);
    }
    // The word-level guards read English (its negations, quantifiers, capitalised names, WordNet's
    // synonyms): on other languages they would veto German nouns as names and miss Spanish negations. There,
    // the numbers hold and the similarity threshold (and the task's own evidence) decides.
    if !(english(a) && english(b)) {
        return out;
    }
    if marked(a, NEGATIONS).contains("not") != marked(b, NEGATIONS).contains("not") {
        fire!(Veto::Negation);
    }
    let (la, lb) = (words(a), words(b));
    let (wa, wb): (BTreeSet<String>, BTreeSet<String>) = (la.iter().cloned().collect(), lb.iter().cloned().collect());
    if opposites(&wa, &wb) || negated_stem(&wa, &wb) || negated_stem(&wb, &wa) {
        fire!(Veto::Opposites);
    }
    let swapped = matches!((direction(&la), direction(&lb)), (Some((from_a, to_a)), Some((from_b, to_b)))
        if from_a != to_a && from_a == to_b && to_a == from_b);
    let crossed = matches!((around_to(&la), around_to(&lb)), (Some((pre_a, post_a)), Some((pre_b, post_b)))
        if post_a.is_subset(&pre_b) && post_b.is_subset(&pre_a) && post_a.is_disjoint(&post_b));
    if swapped || crossed {
        fire!(Veto::Direction);
    }
    if scope(&la) != scope(&lb) {
        fire!(Veto::Scope);
    }
    let (ea, eb) = (entities(a), entities(b));
    // A name in one text that appears nowhere in the other, in any case.
    let missing = |e: &BTreeSet<String>, other: &BTreeSet<String>| e.iter().any(|x| !other.contains(x));
    if missing(&ea, &wb) || missing(&eb, &wa) {
        fire!(Veto::Entities);
    }
    if substituted(&la, &lb) {
        fire!(Veto::Substitution);
    }
    if qualified(&la, &lb) || qualified(&lb, &la) {
        fire!(Veto::Qualifier);
    }
    out
}

/// The lower-case words of a text, as the guards read them.
pub fn word_set(text: &str) -> BTreeSet<String> {
    words(text).into_iter().collect()
}

/// Words that add nothing to what a question asks, beyond the [`FUNCTION_WORDS`]: greetings, hedges.
const FILLERS: &[&str] = &[
    "um",
    "uh",
    "er",
    "erm",
    "hmm",
    "morning",
    "afternoon",
    "evening",
    "cheers",
    "quick",
    "question",
    "really",
    "actually",
    "exactly",
    "currently",
    "ever",
    "still",
    "now",
    "again",
    "also",
    "anyway",
    "well",
    "like",
    "basically",
    "tonight",
    "today",
    "hiya",
    "advance",
];

/// Whether `b` narrows what `a` asks about by a word put next to a word both name: "a gift" / "a gift card",
/// "my account" / "my joint account", "symptoms of flu" / "symptoms of flu in babies". Only where `b` adds
/// words and changes none (a reworded question is the similarity threshold's), and only a word that names a
/// thing or a quality (usually a noun or adjective in WordNet: "asap" and "fast" say how or when, not which;
/// "tell" is a verb); greetings and thanks are no qualifier, quantifiers are the scope guard's.
fn qualified(a: &[String], b: &[String]) -> bool {
    if a.len() >= b.len() {
        return false;
    }
    let (start, end) = common_ends(a, b);
    let (da, db) = (&a[start..a.len() - end], &b[start..b.len() - end]);
    if da.len() > MAX_DIFFERENCE || db.len() > MAX_DIFFERENCE {
        return false;
    }
    let content = |w: &str| !FUNCTION_WORDS.contains(&w) && !FILLERS.contains(&w) && !SCOPE.contains(&w);
    let in_a = |w: &str| a.iter().any(|x| x == w);
    let shared = |w: &String| content(w) && in_a(w);
    let narrows = |w: &String| {
        content(w)
            && !in_a(w)
            && matches!(
                lexicon::usual_part(w),
                Some(lexicon::Part::Noun | lexicon::Part::Adjective)
            )
    };
    let runs = differences(da, db);
    runs.iter().all(|(x, _)| x.is_empty())
        && runs.into_iter().any(|(_, y)| {
            let y = y.start + start..y.end + start;
            b[y.clone()].iter().any(narrows)
                && (y.start.checked_sub(1).is_some_and(|i| shared(&b[i])) || b.get(y.end).is_some_and(shared))
        })
}

/// Words that carry the form of a question rather than what it is about: "how do I" and "how can I", "what's"
/// and "what is" ask the same thing.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "you", "your", "we", "our", "us", "it", "its", "is", "are", "was", "were", "be",
    "been", "being", "to", "of", "in", "on", "for", "with", "at", "by", "do", "does", "did", "can", "could", "would",
    "should", "will", "shall", "may", "might", "must", "how", "what", "whats", "which", "where", "when", "why", "who",
    "there", "here", "that", "this", "these", "those", "and", "or", "so", "if", "please", "any", "am", "have", "has",
    "had", "get", "got", "s", "about", "from", "as", "up", "just", "some", "i'm", "i'd", "i'll", "then", "than", "not",
    "no", "yes", "hi", "hello", "hey", "thanks", "thank", "won't", "doesn't", "don't", "can't", "isn't", "much",
    "many", "often", "possible", "able", "ok", "okay",
];

/// Who a question is about when it asks for the asker: "can I" is not "can my child" or "can contractors".
const ASKER: &[&str] = &["i", "me", "we", "us"];

/// Texts longer than this (in words, after their common start and end) are not compared word by word: a
/// one-word swap is a short difference.
const MAX_DIFFERENCE: usize = 256;

/// Whether the texts differ by one content word swapped for one that may not stand for it, or by the asker
/// swapped for someone else. Rewordings that change more than one content word at a time are left to the
/// similarity threshold.
fn substituted(a: &[String], b: &[String]) -> bool {
    let (start, end) = common_ends(a, b);
    let (a, b) = (&a[start..a.len() - end], &b[start..b.len() - end]);
    if a.len() > MAX_DIFFERENCE || b.len() > MAX_DIFFERENCE {
        return false;
    }
    fn content(words: &[String]) -> Vec<&str> {
        words
            .iter()
            .map(String::as_str)
            .filter(|w| !FUNCTION_WORDS.contains(w))
            .collect()
    }
    let asker = |words: &[String]| words.iter().any(|w| ASKER.contains(&w.as_str()));
    replaced(a, b)
        .into_iter()
        .any(|(x, y)| match (&content(x)[..], &content(y)[..]) {
            ([cx], [cy]) => !lexicon::interchangeable(cx, cy),
            // A noun against a compound of two that neither stands for: "economy" / "business class".
            ([c], [d, e]) | ([d, e], [c]) => {
                [c, d, e]
                    .iter()
                    .all(|w| lexicon::usual_part(w) == Some(lexicon::Part::Noun))
                    && !lexicon::interchangeable(c, d)
                    && !lexicon::interchangeable(c, e)
            }
            ([], [_, ..]) => asker(x) && !asker(y),
            ([_, ..], []) => asker(y) && !asker(x),
            _ => false,
        })
}

/// Words a reply can be made of without saying anything of its own: it accepts, declines or picks from
/// what it answers.
const REPLY_WORDS: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "aye",
    "ok",
    "okay",
    "k",
    "sure",
    "please",
    "pls",
    "thanks",
    "thank",
    "you",
    "cheers",
    "go",
    "ahead",
    "on",
    "do",
    "it",
    "that",
    "this",
    "those",
    "these",
    "one",
    "ones",
    "option",
    "the",
    "a",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "last",
    "other",
    "lets",
    "let",
    "us",
    "me",
    "i",
    "i'll",
    "i'd",
    "we'll",
    "then",
    "fine",
    "great",
    "good",
    "sounds",
    "perfect",
    "cool",
    "alright",
    "right",
    "absolutely",
    "definitely",
    "of",
    "course",
    "no",
    "nope",
    "nah",
    "not",
    "don't",
    "like",
    "would",
    "and",
    "just",
    "take",
    "have",
    "pick",
    "choose",
    "want",
    "prefer",
    "go",
    "with",
    "for",
    "both",
    "neither",
    "either",
    "agreed",
    "deal",
    "lovely",
    "brilliant",
    "now",
    "thx",
    "ty",
];

/// Whether `text` only accepts, declines or picks from what was said to the user last ("yes please", "go
/// ahead", "the second one"): its answer is decided by that turn, not by its own words.
pub fn bare_reply(text: &str) -> bool {
    let words = words(text);
    NUMBER.find(text).is_none() && !words.is_empty() && words.iter().all(|w| REPLY_WORDS.contains(&w.as_str()))
}

/// The longest text (in bytes) read as a question of its own or checked for misspellings: longer ones (a
/// document to summarise) are compared as before, with their conversation.
const SHORT_TEXT: usize = 1024;

/// Whether a text is English, the one language the word-level guards were written for (their word lists,
/// WordNet's dictionary, English capitalisation). A language model of letter n-grams (`lingua`, among the
/// languages users mostly write in; its models load on first use, ~30 MB) rules a text out when it is fairly
/// sure (60%) the text is another language; otherwise the text is English when three in five of its words are
/// English (WordNet's words and inflections, and the function words WordNet lacks), which keeps "cancel it"
/// English where the model, on two words, leans Italian.
pub fn english(text: &str) -> bool {
    // A lookup compares one question with several cached ones, and a cached one with many over its life:
    // the answer is kept per text (bounded; cleared when full), as detection takes 0.1–0.5 ms.
    static SEEN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<u64, bool>>> =
        std::sync::LazyLock::new(Default::default);
    const SEEN_LIMIT: usize = 16_384;
    let key = {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(text)
    };
    if let Some(known) = SEEN.lock().ok().and_then(|m| m.get(&key).copied()) {
        return known;
    }
    let answer = detect_english(text);
    if let Ok(mut m) = SEEN.lock() {
        if m.len() >= SEEN_LIMIT {
            m.clear();
        }
        m.insert(key, answer);
    }
    answer
}

fn detect_english(text: &str) -> bool {
    use lingua::Language;
    static DETECTOR: std::sync::LazyLock<lingua::LanguageDetector> = std::sync::LazyLock::new(|| {
        lingua::LanguageDetectorBuilder::from_languages(&[
            Language::English,
            Language::Spanish,
            Language::French,
            Language::German,
            Language::Italian,
            Language::Portuguese,
            Language::Dutch,
        ])
        .build()
    });
    // The guards compare questions; past this length a text is compared as a whole (see `SHORT_TEXT`).
    let sample: String = text.chars().take(300).collect();
    if let Some((language, confidence)) = DETECTOR.compute_language_confidence_values(&sample).first()
        && *language != Language::English
        && *confidence >= 0.6
    {
        return false;
    }
    let ws: Vec<String> = words(text)
        .into_iter()
        .filter(|w| w.chars().all(char::is_alphabetic))
        .collect();
    if ws.is_empty() {
        return true;
    }
    let known = ws
        .iter()
        .filter(|w| lexicon::known(w) || FUNCTION_WORDS.contains(&w.as_str()) || OWN.contains(&w.as_str()))
        .count();
    known * 5 >= ws.len() * 3
}

/// Whether two texts are the same words but for misspellings ("How do I cancle an order I placed this
/// morning?", "the email adress on my acount"): each word that differs is a slip of the keyboard (a letter
/// dropped, added, changed or two swapped, one per four letters) of a word of five letters or more, and not
/// itself another word (a misspelling is no dictionary word: "cancer" is not "cancel" mistyped). The
/// embedding reads a misspelt word as other word pieces and scores such texts lower than they are.
pub fn spelled_alike(a: &str, b: &str) -> bool {
    // A question, not a document: past this the word-by-word comparison costs more than it is worth.
    if a.len().max(b.len()) > SHORT_TEXT {
        return false;
    }
    // A misspelling is a word not in the English dictionary: in another language every word is one.
    if !(english(a) && english(b)) {
        return false;
    }
    let (wa, wb) = (words(a), words(b));
    let slip = |x: &str, y: &str| x.chars().count().min(y.chars().count()) >= 5 && lexicon::typo(x, y);
    wa.len() == wb.len()
        && wa != wb
        && numbers(a) == numbers(b)
        && wa.iter().zip(&wb).all(|(x, y)| x == y || slip(x, y))
}

/// Words that point back at something said before them: "cancel it", "does that include breakfast?",
/// "what time do they close?", "the same time the following week", "can I still return it?".
const BACK_REFERENCES: &[&str] = &[
    "it",
    "it's",
    "its",
    "itself",
    "that",
    "that's",
    "this",
    "these",
    "those",
    "they",
    "they're",
    "them",
    "their",
    "theirs",
    "he",
    "him",
    "his",
    "she",
    "her",
    "hers",
    "one",
    "ones",
    "same",
    "again",
    "instead",
    "else",
    "then",
    "here",
    "also",
    "too",
    "either",
    "former",
    "latter",
    "above",
    "mentioned",
    "earlier",
    "previous",
    "still",
    "yet",
    "already",
    "both",
    "such",
    "there's",
    "difference",
    "total",
    "extra",
    "more",
];

/// Words that tie a turn to the speaker's own circumstances, which the conversation may have set out: "my
/// dog", "six of us", "can you book me in for Thursday?" (book what).
const OWN: &[&str] = &[
    "my", "mine", "our", "ours", "me", "we", "us", "we're", "we've", "we'll", "i've", "i'd",
];

/// Words a turn opens with when it carries on from the last one: "so when's my first payday?", "and with the
/// TV add-on?", "ok, downgrade me then".
const CARRY_ON: &[&str] = &[
    "so", "and", "but", "or", "ok", "okay", "then", "also", "yeah", "yes", "yep", "great", "fine", "cool", "right",
    "sorry", "alright", "oh", "hmm", "nice", "well", "actually",
];

/// Whether a last turn stands on its own, so that what was said before it cannot change its answer: it points
/// back at nothing ("it", "that", "the same", "still", "the subscription"), is not about the speaker's own
/// circumstances ("my", "me", "we"), does not carry on from the last turn ("so", "and", "ok"), and names what
/// it is about: a name, or the service itself ("you", "your"), or says it changes the topic ("By the way").
/// "Is PulseFit open on Christmas Day?" and "Do you accept Amex?" stand on their own; "how long will the
/// refund take?" and "which day do the recycling bins go out?" do not, since which refund and whose bins were
/// said before.
pub fn standalone(text: &str) -> bool {
    if text.len() > SHORT_TEXT || bare_reply(text) {
        return false;
    }
    let words = words(text);
    let existential = |i: usize| i > 0 && ["is", "are", "was", "were"].contains(&words[i - 1].as_str());
    let points_back = words.iter().enumerate().any(|(i, w)| {
        BACK_REFERENCES.contains(&w.as_str()) || OWN.contains(&w.as_str()) || (w == "there" && !existential(i))
    });
    let content = words.iter().filter(|w| !FUNCTION_WORDS.contains(&w.as_str())).count();
    if points_back || content < 2 || words.first().is_none_or(|w| CARRY_ON.contains(&w.as_str())) {
        return false;
    }
    let opens = |phrase: &&str| {
        let phrase: Vec<&str> = phrase.split(' ').collect();
        words.len() > phrase.len() && words.iter().zip(&phrase).all(|(w, p)| w == p)
    };
    if TOPIC_CHANGES.iter().any(opens) {
        return true;
    }
    // "the subscription" is the one said before, unless the question says which: by a name or a date ("the
    // Larkfield", "the December pay run") or what follows ("the minimum age to hire a car", "the weight limit
    // for cabin bags").
    let names = entities(text);
    let definite = words.iter().enumerate().any(|(i, w)| {
        let after = &words[i + 1..];
        w == "the"
            && !after
                .iter()
                .take(3)
                .any(|n| names.contains(n) || NUMBER_WORDS.contains(&n.as_str()))
            && !after
                .iter()
                .take(5)
                .any(|n| ["to", "for", "of", "with", "on", "at", "in", "from", "about"].contains(&n.as_str()))
    });
    let addressed = words.iter().any(|w| ADDRESSEE.contains(&w.as_str()));
    (!names.is_empty() || addressed) && !definite
}

/// What a speaker opens with to leave the conversation so far: "Unrelated, but is the contact centre open on
/// bank holidays?", "Before I go, how long do I get to return things bought in the sale?".
const TOPIC_CHANGES: &[&str] = &[
    "unrelated",
    "by the way",
    "btw",
    "different question",
    "another question",
    "separate question",
    "random question",
    "on another note",
    "before i go",
    "while i have you",
    "changing the subject",
    "off topic",
];

/// The service a question is put to: what it asks about is the service's, the same in every conversation.
const ADDRESSEE: &[&str] = &["you", "your", "you're", "yours"];

/// The guard for a bare reply: what it accepts or picks is said somewhere before it (the offer just made,
/// options listed a few turns back, "what I suggested" earlier still), so it is the same request only in the
/// same conversation: the same numbers and content words in the same order throughout, each word the same or
/// interchangeable with it (a synonym, a form, a misspelling). Stricter than [`veto_context`] because nothing
/// in the reply itself tells two offers apart: "yes please" to "shall I cancel it?" and to "shall I switch
/// you to annual billing?", "the first one" after the same two options in the other order.
pub fn veto_reply(context_a: &str, context_b: &str) -> Option<Veto> {
    let numbers = |t: &str| -> Vec<String> { NUMBER.find_iter(t).map(|m| m.as_str().replace(',', "")).collect() };
    // Negations are content here: "shall I cancel it?" is not "shall I not cancel it?".
    let content = |t: &str| -> Vec<String> {
        words(t)
            .into_iter()
            .filter(|w| !FUNCTION_WORDS.contains(&w.as_str()) || NEGATIONS.contains(&w.as_str()) || w.ends_with("n't"))
            .collect()
    };
    let (ca, cb) = (content(context_a), content(context_b));
    let same = numbers(context_a) == numbers(context_b)
        && ca.len() == cb.len()
        && ca
            .iter()
            .zip(&cb)
            .all(|(x, y)| x == y || lexicon::interchangeable(x, y));
    (!same).then_some(Veto::Reply)
}

/// Where two sequences stop agreeing: how many items they share at the start, and how many at the end after
/// that. Only the middle between is aligned word by word (quadratic), and only when it is short.
fn common_ends<T: PartialEq>(a: &[T], b: &[T]) -> (usize, usize) {
    let start = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let end = a[start..]
        .iter()
        .rev()
        .zip(b[start..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (start, end)
}

/// The runs of words that replace each other between two texts, from a longest common subsequence: in
/// "how do I cancel my plan" / "how can I end my plan", ("do", "can") and ("cancel", "end").
fn replaced<'t, T: PartialEq>(a: &'t [T], b: &'t [T]) -> Vec<(&'t [T], &'t [T])> {
    differences(a, b)
        .into_iter()
        .map(|(x, y)| (&a[x], &b[y]))
        .filter(|(x, y)| !x.is_empty() && !y.is_empty())
        .collect()
}

/// Where `a` and `b` differ, aligned by a longest common subsequence: each run of `a` and the run of `b` in
/// its place, either of them empty where the other text only adds words.
fn differences<T: PartialEq>(a: &[T], b: &[T]) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u16; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut from) = (0, 0, (0, 0));
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            if from != (i, j) {
                out.push((from.0..i, from.1..j));
            }
            i += 1;
            j += 1;
            from = (i, j);
        } else if j == b.len() || i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    if from != (a.len(), b.len()) {
        out.push((from.0..a.len(), from.1..b.len()));
    }
    out
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
    fn numbers_are_read_as_numbers_and_look_alikes_are_not() {
        let n = |t: &str| numbers(t).into_iter().collect::<Vec<_>>();
        assert_eq!(n("I need three more agents"), n("I need 3 more agents"));
        assert_eq!(n("What's 15% of 200?"), n("Calculate fifteen percent of 200"));
        assert_eq!(n("How many calories are in one egg?"), ["1"]);
        assert!(n("Hi, quick one: how do I order a card?").is_empty());
        assert!(n("I'll take the 5GB one, how do I add it?") == ["5"]);
        assert!(n("How much luggage am I allowed?").is_empty());
        assert_eq!(n("Remind me at 7am"), ["7", "am"]);
        assert_eq!(n("Remind me at 7 pm"), ["7", "pm"]);
        assert!(n("It may still be on its way. May I ask?").is_empty());
        assert_eq!(n("Is it still cold in May?"), ["may"]);
        assert_eq!(n("Is the clinic open on Sundays?"), n("Can I come on a Sunday?"));
        assert_eq!(n("What's tomorrow's forecast?"), ["tomorrow"]);
        // Still different numbers.
        assert_ne!(
            n("How many calories are in one egg?"),
            n("How many calories are in three eggs?")
        );
        assert_ne!(n("Are you open on Saturday?"), n("Are you open on Sunday?"));
        assert_ne!(n("Remind me at 7am"), n("Remind me at 7pm"));
        // Possessives and the asker are no names.
        assert_eq!(
            veto("What's the capital of Austria?", "Austria's capital city is what?"),
            None
        );
        assert_eq!(entities("Is it OK to bring my own wine?"), BTreeSet::new());
        assert_eq!(
            veto("Is the clinic open on Sundays?", "Is the clinic open on a Sunday?"),
            None
        );
        assert_eq!(
            veto("Is the clinic open on Sundays?", "Is the clinic open on Mondays?"),
            Some(Veto::Numbers)
        );
        assert_eq!(entities("Can I fly when I'm 30 weeks pregnant?"), BTreeSet::new());
        // "can't" is a negation, not a change of scope.
        assert_eq!(
            veto(
                "I can't log in, what should I do?",
                "I cannot log in, what should I do?"
            ),
            None
        );
        // Rewordings of the same number, day or time.
        for (a, b) in [
            (
                "How many calories are in one egg?",
                "How many calories are in a single egg?",
            ),
            ("Is it open at 9pm?", "Is it open at 9 at night?"),
            ("Is it open in the evening?", "Is it open at night?"),
            ("When does it open on Mondays?", "When does it open on Mondys?"),
            (
                "When does the pharmacy close on weekdays?",
                "When does the pharmacy close Monday to Friday?",
            ),
            ("Morning! How do I book a collection?", "How do I book a collection?"),
            (
                "Good evening, how do I book a collection?",
                "How do I book a collection?",
            ),
        ] {
            assert_eq!(numbers(a), numbers(b), "{a} / {b}");
        }
        assert_eq!(numbers("my two-factor code"), numbers("my 2FA code"));
        // ... and what is another time.
        for (a, b) in [
            (
                "Can you book it for Thursday morning?",
                "Can you book it for Thursday evening?",
            ),
            ("Do you have morning slots?", "Do you have slots?"),
            ("When does it open on Mondays?", "When does it open on Sundays?"),
            ("Is a single room extra?", "Is a double room extra?"),
        ] {
            assert_ne!(numbers(a), numbers(b), "{a} / {b}");
        }
    }

    #[test]
    fn idioms_are_no_change_of_scope() {
        for (a, b) in [
            (
                "How do I transfer my number?",
                "How do I transfer my number? Many thanks",
            ),
            ("What will I pay each month?", "What will I pay a month?"),
            (
                "How do I book an appointment?",
                "What's the best way to book an appointment?",
            ),
            (
                "What's the fastest way to learn typing?",
                "What's the quickest way to learn typing?",
            ),
            (
                "What's the calorie count of one egg?",
                "How many calories are in one egg?",
            ),
        ] {
            assert_eq!(scope(&words(a)), scope(&words(b)), "{a} / {b}");
        }
        for (a, b) in [
            ("Which is the best plan?", "Which is the cheapest plan?"),
            ("Can I cancel any order?", "Can I cancel every order?"),
            ("What will I pay?", "What will I pay every month?"),
            ("What will I pay in a month?", "What will I pay a month?"),
            ("Do I need many forms?", "Do I need forms?"),
        ] {
            assert_ne!(scope(&words(a)), scope(&words(b)), "{a} / {b}");
        }
    }

    #[test]
    fn a_name_changed_in_place_is_a_different_history() {
        let chat = |branch: &str, other: &str| {
            format!(
                "user: picking up from your Edinburgh {branch} branch on Saturday\nassistant: Booked.\nuser: last time we used {other}\nassistant: Noted."
            )
        };
        // Both histories name both branches; which one the booking is at differs.
        assert_eq!(
            veto_context(&chat("Airport", "Waverley"), &chat("Waverley", "Airport")),
            Some(Veto::Entities)
        );
        assert_eq!(
            veto_context(&chat("Airport", "Waverley"), &chat("airport", "Waverley")),
            None,
            "only the case differs"
        );
        // So is a quantifier or a period: "monthly paid" / "weekly paid".
        assert_eq!(
            veto_context(
                "user: I'm one of the monthly paid staff, just started\nassistant: Welcome aboard!",
                "user: I'm one of the weekly paid staff, just started\nassistant: Welcome aboard!"
            ),
            Some(Veto::Scope)
        );
    }

    #[test]
    fn a_question_stands_on_its_own_when_it_names_its_subject_and_points_back_at_nothing() {
        for own in [
            "Is PulseFit open on Christmas Day?",
            "Do you accept Amex?",
            "What's your office address?",
            "How do I get a PAC code if I want to switch to another network?",
            "Are there any parking spaces at your Leeds office?",
            "What's the minimum age to hire a car with you?",
            "What time is check-in at the Larkfield?",
            "By the way, do you have a status page?",
        ] {
            assert!(standalone(own), "{own}");
        }
        for not in [
            "how long will the refund take?",
            "which day do the recycling bins go out?",
            "Can I bring my dog to PulseFit?",
            "does that include breakfast?",
            "so is Kestrel open on Sundays?",
            "can you cancel it then please",
            "Is Kestrel open there?",
            "Can you book me in for Thursday?",
            "Can you cancel the subscription?",
            "yes please",
            "Amex?",
        ] {
            assert!(!standalone(not), "{not}");
        }
        // A document is judged with its conversation, however it ends.
        let document = format!("{} Is PulseFit open on Christmas Day?", "Gyms open late. ".repeat(80));
        assert!(!standalone(&document));
    }

    #[test]
    fn a_number_changed_in_place_is_a_different_history() {
        let chat = |hours: &str, later: &str| {
            format!(
                "user: I did {hours} hours overtime in August\nassistant: It missed the September run.\nuser: {later}\nassistant: Noted."
            )
        };
        // Both histories name both numbers, so the sets agree; the places do not.
        assert_eq!(
            veto_context(
                &chat("12", "my mate did 21 hours"),
                &chat("21", "in July I did 12 hours")
            ),
            Some(Veto::Numbers)
        );
        // A day is a number here too, also far back in a long history.
        let turn = |i: usize| {
            format!("user: move booking {i} to Thursday please\nassistant: Done, booking {i} is on Thursday.\n")
        };
        let long: String = (0..200).map(turn).collect();
        assert_eq!(
            veto_context(&long, &long.replacen("to Thursday please", "to Friday please", 1)),
            Some(Veto::Numbers)
        );
        // Small talk added, or a turn reworded as a whole, is no change in place.
        assert_eq!(
            veto_context(
                "user: I did 12 hours overtime\nassistant: It missed the run.",
                "user: hi there\nassistant: Hello!\nuser: I did 12 hours overtime\nassistant: It missed the run."
            ),
            None
        );
        assert_eq!(
            veto_context(
                "user: can I switch my SIM to an eSIM?\nassistant: Yes, for free in the app.",
                "user: is it possible to move my SIM over to eSIM?\nassistant: Yes, it's a free switch in the app."
            ),
            None
        );
    }

    #[test]
    fn no_in_a_conversation_is_not_the_opposite_of_yes() {
        let a = "user: my flight was late\nassistant: Was it all on one booking?\nuser: yes, one booking";
        let b = "user: my flight was late\nassistant: Were both flights booked together?\nuser: yeah\nassistant: No problem.";
        assert_eq!(veto_context(a, b), None);
        assert_eq!(
            veto_context("user: is the pool open?", "user: is the pool closed?"),
            Some(Veto::Opposites)
        );
    }

    #[test]
    fn a_word_against_its_negated_form_is_an_opposite() {
        for (a, b) in [
            (
                "Is ibuprofen safe to take with alcohol?",
                "Is ibuprofen unsafe to take with alcohol?",
            ),
            ("Is the deposit refundable?", "Is the deposit non-refundable?"),
            (
                "Can I claim it if I'm employed?",
                "Can I claim it if I'm self-employed?",
            ),
            (
                "How much maternity pay do employees get?",
                "How much maternity pay do self-employed people get?",
            ),
            (
                "Is the room available on arrival?",
                "Is the room unavailable on arrival?",
            ),
            (
                "Which of these filters are useful?",
                "Which of these filters are useless?",
            ),
        ] {
            assert_eq!(veto(a, b), Some(Veto::Opposites), "{a} / {b}");
        }
        // Prefixes that often start unrelated words are trusted only on longer ones.
        let negated_form = |short: &str, long: &str| negated_forms(short).any(|v| v == long);
        assert!(negated_form("valid", "invalid"));
        assert!(!negated_form("form", "inform"));
        assert!(!negated_form("play", "display"));
        assert!(!negated_form("do", "undo"));
        assert!(negated_form("careful", "careless") && negated_form("careless", "careful"));
    }

    #[test]
    fn the_same_move_in_the_other_direction_is_vetoed() {
        assert_eq!(
            veto(
                "How do I convert a Word document to PDF?",
                "How do I convert a PDF to a Word document?"
            ),
            Some(Veto::Direction)
        );
        assert_eq!(
            veto(
                "What documents does my child need to travel to France?",
                "What does my child need to travel to France?"
            ),
            None
        );
        assert_eq!(
            veto(
                "Transfer £50 from my savings to my current account",
                "Transfer £50 from my current account to my savings"
            ),
            Some(Veto::Direction)
        );
        assert_eq!(
            veto(
                "How do I migrate from MySQL to Postgres?",
                "How do I migrate from Postgres to MySQL?"
            ),
            Some(Veto::Direction)
        );
        assert_eq!(
            veto(
                "Move money from savings to checking",
                "Send money from savings to checking please"
            ),
            None
        );
    }

    #[test]
    fn a_word_swapped_for_a_non_synonym_is_vetoed() {
        for (a, b) in [
            ("Is breakfast included for adults?", "Is breakfast included for kids?"),
            (
                "What vaccines does my puppy need?",
                "What vaccines does my kitten need?",
            ),
            (
                "What should I do if my insurance claim is approved?",
                "What should I do if my insurance claim is rejected?",
            ),
            (
                "Do I pay council tax as a full-time student?",
                "Do I pay council tax as a part-time student?",
            ),
            (
                "Are dogs allowed in the restaurant?",
                "Are dogs banned from the restaurant?",
            ),
            // The asker swapped for someone else.
            (
                "Can I get the flu jab for free?",
                "Can my child get the flu jab for free?",
            ),
            (
                "Can I work from home on Fridays?",
                "Can contractors work from home on Fridays?",
            ),
        ] {
            assert_eq!(veto(a, b), Some(Veto::Substitution), "{a} / {b}");
        }
    }

    #[test]
    fn synonyms_typos_and_rewordings_are_not_substitutions() {
        for (a, b) in [
            ("How do I start a claim?", "How do I begin a claim?"),
            ("Is the store open late?", "Is the shop open late?"),
            ("Is breakfast free for children?", "Is breakfast free for kids?"),
            (
                "Can I get a copy of my bank statement?",
                "Can I get a copy of my bank statment?",
            ),
            // Only the form of the question changes.
            ("How do I reset the router?", "How can I reset the router?"),
            ("What is the notice period?", "Hi! What's the notice period? Cheers"),
            // More than one content word reworded: left to the similarity threshold.
            (
                "How often should I water succulents?",
                "What's the right watering schedule for succulents?",
            ),
            (
                "Can I change the name on my ticket?",
                "Is it possible to change the name on my ticket?",
            ),
        ] {
            assert_eq!(veto(a, b), None, "{a} / {b}");
        }
    }

    #[test]
    fn misspellings_are_the_same_words_and_real_words_are_not() {
        for (a, b) in [
            (
                "How do I cancel an order I placed this morning?",
                "How do I cancle an order I placed this morning?",
            ),
            (
                "How do I change the email address on my account?",
                "How do I chnage the email adress on my acount?",
            ),
            (
                "Where can I find my invoice history?",
                "Where can I find my invioce history?",
            ),
        ] {
            assert!(spelled_alike(a, b), "{a} / {b}");
            assert_eq!(veto(a, b), None, "{a} / {b}");
        }
        for (a, b) in [
            // Two words, each spelt right; the same text; a number changed; a short word.
            ("How long is the trial?", "How long is the trail?"),
            ("Where is my card?", "Where is my card?"),
            ("Is order 1234 late?", "Is ordr 1235 late?"),
            ("Where is the form?", "Where is the from?"),
        ] {
            assert!(!spelled_alike(a, b), "{a} / {b}");
        }
        let long = "How do I cancel an order? ".repeat(50);
        assert!(
            !spelled_alike(&long, &long.replacen("cancel", "cancle", 1)),
            "documents are not checked"
        );
        assert_eq!(
            veto("How long is the trial?", "How long is the trail?"),
            Some(Veto::Substitution)
        );
    }

    #[test]
    fn a_noun_against_a_compound_that_does_not_stand_for_it_is_a_substitution() {
        assert_eq!(
            veto(
                "What's the baggage allowance for economy passengers?",
                "What's the baggage allowance for business class passengers?"
            ),
            Some(Veto::Substitution)
        );
        // One of the two stands for it, or the single word is no noun WordNet knows.
        for (a, b) in [
            ("How do I book a taxi?", "How do I book a minicab ride?"),
            ("Where is the nearest cashpoint?", "Where is the nearest cash machine?"),
        ] {
            assert_eq!(veto(a, b), None, "{a} / {b}");
        }
    }

    #[test]
    fn a_word_that_narrows_the_question_is_a_qualifier() {
        for (a, b) in [
            (
                "How do I get a refund on a gift?",
                "How do I get a refund on a gift card?",
            ),
            ("What's my account balance?", "What's my joint account balance?"),
            (
                "What are the symptoms of flu?",
                "What are the symptoms of flu in babies?",
            ),
        ] {
            assert_eq!(veto(a, b), Some(Veto::Qualifier), "{a} / {b}");
            assert_eq!(veto(b, a), Some(Veto::Qualifier), "{b} / {a}");
        }
        for (a, b) in [
            // Greetings, thanks, adverbs, words moved about: the same question.
            (
                "How do I apply for a student loan?",
                "Hiya, how do I apply for a student loan? Thanks in advance",
            ),
            (
                "How long does it take to get my deposit back?",
                "How long does it usually take to get my deposit back?",
            ),
            (
                "How do I set up voicemail on my phone?",
                "On my phone, how do I set up voicemail?",
            ),
        ] {
            assert_eq!(veto(a, b), None, "{a} / {b}");
        }
    }

    #[test]
    fn replaced_runs_come_from_the_common_subsequence() {
        let w = |t: &str| words(t);
        let (a, b) = (w("how do I cancel my plan"), w("how can I end my plan today"));
        let runs: Vec<(Vec<&str>, Vec<&str>)> = replaced(&a, &b)
            .into_iter()
            .map(|(x, y)| {
                (
                    x.iter().map(String::as_str).collect(),
                    y.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(runs, vec![(vec!["do"], vec!["can"]), (vec!["cancel"], vec!["end"])]);
        assert!(replaced(&a, &a).is_empty());
        assert!(replaced(&a, &[]).is_empty());
    }

    #[test]
    fn a_bare_reply_is_served_only_in_the_same_conversation() {
        for reply in [
            "yes please",
            "Go ahead.",
            "the second one",
            "ok do it",
            "yep",
            "let's do the first one",
            "no thanks",
        ] {
            assert!(bare_reply(reply), "{reply}");
        }
        for question in [
            "cancel it",
            "how much is it?",
            "six of us, 7.30?",
            "yes, on the 14th",
            "ok freeze it",
            "",
        ] {
            assert!(!bare_reply(question), "{question}");
        }
        let chat = |offer: &str| format!("system: be brief\nuser: my plan renews tomorrow\nassistant: {offer}");
        let cancel = chat("That's right. Would you like me to cancel it before then?");
        // Different offers, a negated offer, the same options in another order.
        for other in [
            "That's right. Would you like me to switch you to annual billing instead?",
            "That's right. Would you like me to not cancel it before then?",
            "That's right. Would you like me to cancel it after then?",
        ] {
            assert_eq!(veto_reply(&cancel, &chat(other)), Some(Veto::Reply), "{other}");
        }
        let options = |first: &str, second: &str| {
            format!(
                "user: book me a flight\nassistant: Option 1 is {first}, option 2 is {second}.\nuser: hmm\nassistant: Want me to book one?"
            )
        };
        assert_eq!(
            veto_reply(
                &options("the 07:10 direct at £142", "the 06:40 via Amsterdam at £98"),
                &options("the 06:40 via Amsterdam at £98", "the 07:10 direct at £142")
            ),
            Some(Veto::Reply),
            "the options were listed turns before the reply"
        );
        assert_eq!(
            veto_reply(
                &format!("user: it's my kettle\n{cancel}"),
                &format!("user: it's my toaster\n{cancel}")
            ),
            Some(Veto::Reply),
            "what the conversation is about was said at its start"
        );
        // The same conversation, reworded only in function words or interchangeable ones.
        assert_eq!(veto_reply(&cancel, &cancel), None);
        assert_eq!(
            veto_reply(&cancel, &chat("that's right - do you want me to cancel it before then")),
            None
        );
    }

    #[test]
    fn other_languages_get_only_the_guards_that_hold_in_any_language() {
        for (text, en) in [
            ("How do I cancle an order I placed this morning?", true),
            ("Do you accept Amex?", true),
            ("¿Cómo comprar un seguro?", false),
            ("¿Cómo comparar un seguro?", false),
            ("Wie kann ich meine Karte sperren?", false),
            ("Comment annuler ma commande ?", false),
            ("Quiero cancelar mi pedido", false),
            ("Is PulseFit open on Christmas Day?", true),
            ("my card never came", true),
            ("card still not here", true),
            ("I lost my card", true),
        ] {
            assert_eq!(english(text), en, "{text}");
        }
        // One word apart in Spanish is another question, not a misspelling (no Spanish word is in WordNet).
        assert!(!spelled_alike("¿Cómo comprar un seguro?", "¿Cómo comparar un seguro?"));
        assert!(spelled_alike("How do I cancle my order?", "How do I cancel my order?"));
        // German nouns are capitalised: not names for the entities guard.
        assert_eq!(
            veto(
                "Wie kann ich meine Karte sperren?",
                "Wie kann ich meine Karte sofort sperren?"
            ),
            None
        );
        // Numbers hold in any language.
        assert_eq!(
            veto("¿Cuánto cuesta enviar 2 paquetes?", "¿Cuánto cuesta enviar 3 paquetes?"),
            Some(Veto::Numbers)
        );
        assert_eq!(
            veto(
                "Combien coûte la livraison de 2 colis ?",
                "Combien coûte la livraison de 5 colis ?"
            ),
            Some(Veto::Numbers)
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
