//! Mock "models" that answer a labelled data set with a known error rate.
//!
//! Validation needs models whose quality is known in advance: a prompt that is an example of the data set
//! is answered with its true label with the model's accuracy, and with another label otherwise. Which
//! prompts a model gets wrong is fixed by a hash of the seed, the model and the prompt, so a model answers
//! the same prompt the same way every time (like a model at temperature 0), and a model of accuracy `p`
//! is wrong on a share `1 - p` of the examples, spread evenly over them.

use std::collections::HashMap;

/// A labelled data set and the accuracy of each mock model on it.
#[derive(Debug, Clone, Default)]
pub struct Labeller {
    labels: Vec<String>,
    /// Normalised example text to the index of its label.
    truth: HashMap<String, usize>,
    accuracy: HashMap<String, f64>,
    seed: u64,
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// FNV-1a: stable across platforms and Rust versions, which `DefaultHasher` does not promise.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // FNV's low bits mix poorly; a final avalanche (from splitmix64) spreads them.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Labeller {
    /// Reads a `text,label` CSV with a header row (the Banking77 layout).
    pub fn from_csv(data: &str) -> anyhow::Result<Labeller> {
        let mut reader = csv::Reader::from_reader(data.as_bytes());
        let mut labeller = Labeller::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| anyhow::anyhow!("labels row {}: {e}", i + 2))?;
            let (Some(text), Some(label)) = (row.get(0), row.get(1)) else {
                anyhow::bail!("labels row {}: expected two columns, text and label", i + 2);
            };
            let next = labeller.labels.len();
            let idx = *index.entry(label.to_owned()).or_insert(next);
            if idx == next {
                labeller.labels.push(label.to_owned());
            }
            labeller.truth.insert(normalise(text), idx);
        }
        if labeller.labels.len() < 2 {
            anyhow::bail!("labels: need at least two distinct labels");
        }
        Ok(labeller)
    }

    /// Sets a model's accuracy (models not named are always right).
    pub fn accuracy(mut self, model: impl Into<String>, p: f64) -> Labeller {
        self.accuracy.insert(model.into(), p.clamp(0.0, 1.0));
        self
    }

    /// Changes which examples each model gets wrong, not how many.
    pub fn seed(mut self, seed: u64) -> Labeller {
        self.seed = seed;
        self
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The model's answer to a prompt, if the prompt is an example of the data set.
    pub fn answer(&self, model: &str, prompt: &str) -> Option<&str> {
        self.answer_with_logprob(model, prompt).map(|(a, _)| a)
    }

    /// The model's answer and the log-probability it gives its answer's token. Like a real model's, it is
    /// mostly high when the answer is right and lower when wrong, with overlap: right answers fall in
    /// [-0.4, -0.01], wrong ones in [-2.5, -0.2].
    pub fn answer_with_logprob(&self, model: &str, prompt: &str) -> Option<(&str, f64)> {
        let text = normalise(prompt);
        let truth = *self.truth.get(&text)?;
        let p = self.accuracy.get(model).copied().unwrap_or(1.0);
        let h = fnv(&[&self.seed.to_le_bytes(), model.as_bytes(), text.as_bytes()]);
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let v = (fnv(&[&h.to_le_bytes()]) >> 11) as f64 / (1u64 << 53) as f64;
        if u < p {
            return Some((&self.labels[truth], -0.01 - 0.39 * v));
        }
        // A wrong label, the same one every time for this prompt.
        let offset = 1 + (h % (self.labels.len() as u64 - 1)) as usize;
        Some((&self.labels[(truth + offset) % self.labels.len()], -0.2 - 2.3 * v))
    }
}

impl Labeller {
    /// Answers LeanLM's judge prompt as a judge that knows the data set: the answer that names the
    /// request's true label wins, a tie when both or neither do. `None` when the prompt is not a judge
    /// prompt about an example of the data set.
    pub fn judge(&self, prompt: &str) -> Option<&'static str> {
        let between = |open: &str, close: &str| -> Option<String> {
            let start = prompt.find(open)? + open.len();
            let end = prompt[start..].find(close)? + start;
            Some(prompt[start..end].trim().to_owned())
        };
        let request = between("<request>", "</request>")?;
        let (a, b) = (
            between("<answer_a>", "</answer_a>")?,
            between("<answer_b>", "</answer_b>")?,
        );
        let truth = request
            .lines()
            .rev()
            .filter_map(|l| l.strip_prefix("user: "))
            .find_map(|q| self.truth.get(&normalise(q)))?;
        let label = &self.labels[*truth];
        let right = |answer: &str| normalise(answer) == normalise(label);
        Some(match (right(&a), right(&b)) {
            (true, false) => "A",
            (false, true) => "B",
            _ => "TIE",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> String {
        let mut s = String::from("text,category\n");
        for i in 0..5000 {
            s.push_str(&format!("\"question {i}, please\",label{}\n", i % 7));
        }
        s
    }

    #[test]
    fn models_are_wrong_at_their_rate_and_deterministic() {
        let l = Labeller::from_csv(&data()).unwrap().accuracy("cheap", 0.9);
        let wrong = |l: &Labeller, model: &str| {
            (0..5000)
                .filter(|i| l.answer(model, &format!("Question {i},  please")) != Some(&format!("label{}", i % 7)))
                .count()
        };
        assert_eq!(wrong(&l, "reference"), 0);
        let w = wrong(&l, "cheap");
        assert!((400..600).contains(&w), "{w} wrong of 5000 at 90%");
        // The same prompt gets the same answer; another seed moves the errors, not their number.
        assert_eq!(
            l.answer("cheap", "question 3, please"),
            l.answer("cheap", "question 3, please")
        );
        let other = l.clone().seed(7);
        let w2 = wrong(&other, "cheap");
        assert!((400..600).contains(&w2));
        let moved = (0..5000)
            .filter(|i| {
                let q = format!("question {i}, please");
                l.answer("cheap", &q) != other.answer("cheap", &q)
            })
            .count();
        assert!(moved > 500, "{moved}");
        assert_eq!(l.answer("cheap", "not in the data"), None);
    }

    #[test]
    fn the_judge_prefers_the_true_label() {
        let l = Labeller::from_csv(&data()).unwrap();
        let ask = |a: &str, b: &str| {
            format!(
                "<request>\nsystem: classify\nuser: question 3, please\n</request>\n<answer_a>\n{a}\n</answer_a>\n<answer_b>\n{b}\n</answer_b>"
            )
        };
        assert_eq!(l.judge(&ask("label3", "label4")), Some("A"));
        assert_eq!(l.judge(&ask("label4", "label3")), Some("B"));
        assert_eq!(l.judge(&ask("label3", "label3")), Some("TIE"));
        assert_eq!(l.judge("not a judge prompt"), None);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Labeller::from_csv("text,category\na,x\n").is_err());
        let e = Labeller::from_csv("text,category\nonly one column\n").unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
    }
}
