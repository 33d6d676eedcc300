//! Mock "models" that answer a labelled data set with a known error rate.
//!
//! Validation needs models whose quality is known in advance: a prompt that is an example of the data set
//! is answered with its true label with the model's accuracy, and with another label otherwise. Which
//! prompts a model gets wrong is fixed by the seed, the model and the prompt's row, so a model answers the
//! same prompt the same way every time (like a model at temperature 0), and a model of accuracy `p` is
//! wrong on a share `1 - p` of the examples, spread evenly over them (and over any stride of them).
//!
//! Or it replays real models: RouteLLM's MMLU files record, per question, whether each model answered it
//! right. Those files hold no answers, so each question gets a stand-in true letter (a hash of the
//! question), and a model the file names answers that letter where it was right and another letter, fixed
//! per model and question, where it was wrong: right and wrong exactly where the real model was.

use std::collections::HashMap;

use crate::maths::{Style, render};

/// A labelled data set and the accuracy of each mock model on it.
#[derive(Debug, Clone, Default)]
pub struct Labeller {
    labels: Vec<String>,
    /// Normalised example text to the index of its label and its row.
    truth: HashMap<String, Example>,
    accuracy: HashMap<String, f64>,
    /// Recorded outcomes: for each model, whether it answered each row right (replaces its accuracy).
    recorded: HashMap<String, Vec<bool>>,
    /// How each model words its answer (models not named answer with the label alone).
    styles: HashMap<String, Style>,
    seed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Example {
    label: usize,
    row: usize,
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// FNV-1a: stable across platforms and Rust versions, which `DefaultHasher` does not promise.
pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
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
            let row = labeller.truth.len();
            labeller.truth.insert(normalise(text), Example { label: idx, row });
        }
        if labeller.labels.len() < 2 {
            anyhow::bail!("labels: need at least two distinct labels");
        }
        Ok(labeller)
    }

    /// Reads RouteLLM's MMLU folder: per-model correctness files under `responses/` (`prompt,<model>…` with
    /// `True`/`False` cells, one CSV per subject; the models are the columns), leaving out the prompts
    /// `contaminated_prompts.jsonl` lists (`eval_prompt`), as RouteLLM's own evaluation does.
    pub fn from_routellm(root: &std::path::Path) -> anyhow::Result<Labeller> {
        let exclude: std::collections::HashSet<String> =
            match std::fs::read_to_string(root.join("contaminated_prompts.jsonl")) {
                Ok(text) => text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v.get("eval_prompt")?.as_str().map(str::to_owned))
                    .collect(),
                Err(_) => Default::default(),
            };
        let dir = root.join("responses");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        files.sort();
        anyhow::ensure!(!files.is_empty(), "{}: no .csv files", dir.display());

        let mut labeller = Labeller {
            labels: ["A", "B", "C", "D"].map(String::from).to_vec(),
            ..Labeller::default()
        };
        for file in &files {
            let mut reader = csv::Reader::from_path(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let models: Vec<String> = reader
                .headers()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                .iter()
                .skip(1)
                .map(str::to_owned)
                .collect();
            anyhow::ensure!(
                !models.is_empty(),
                "{}: expected prompt,<model>… columns",
                file.display()
            );
            for (i, row) in reader.records().enumerate() {
                let row = row.map_err(|e| anyhow::anyhow!("{} row {}: {e}", file.display(), i + 2))?;
                let prompt = row.get(0).unwrap_or_default();
                if exclude.contains(prompt) {
                    continue;
                }
                let text = normalise(prompt);
                if labeller.truth.contains_key(&text) {
                    continue;
                }
                let mut right = Vec::with_capacity(models.len());
                for (m, cell) in models.iter().zip(row.iter().skip(1)) {
                    right.push(match cell {
                        "True" | "true" | "1" => true,
                        "False" | "false" | "0" => false,
                        other => anyhow::bail!(
                            "{} row {}: `{other}` for {m} is not True or False",
                            file.display(),
                            i + 2
                        ),
                    });
                }
                anyhow::ensure!(
                    right.len() == models.len(),
                    "{} row {}: missing cells",
                    file.display(),
                    i + 2
                );
                let row = labeller.truth.len();
                let label = (fnv(&[b"truth", text.as_bytes()]) % 4) as usize;
                labeller.truth.insert(text, Example { label, row });
                for (m, r) in models.iter().zip(right) {
                    labeller.recorded.entry(m.clone()).or_default().push(r);
                }
            }
        }
        anyhow::ensure!(!labeller.truth.is_empty(), "{}: no questions", dir.display());
        Ok(labeller)
    }

    /// The stand-in true answer to a prompt, if it is an example of the data set.
    pub fn truth(&self, prompt: &str) -> Option<&str> {
        self.truth
            .get(&normalise(prompt))
            .map(|e| self.labels[e.label].as_str())
    }

    /// The models whose outcomes were recorded (for [`Labeller::from_routellm`]).
    pub fn recorded_models(&self) -> impl Iterator<Item = &str> {
        self.recorded.keys().map(String::as_str)
    }

    /// Lets `name` answer as the recorded model `recorded` does (a model under its current name).
    pub fn alias(mut self, name: impl Into<String>, recorded: &str) -> anyhow::Result<Labeller> {
        let outcomes = self
            .recorded
            .get(recorded)
            .ok_or_else(|| anyhow::anyhow!("alias: no recorded model `{recorded}`"))?
            .clone();
        self.recorded.insert(name.into(), outcomes);
        Ok(self)
    }

    /// Sets a model's accuracy (models not named are always right).
    pub fn accuracy(mut self, model: impl Into<String>, p: f64) -> Labeller {
        self.accuracy.insert(model.into(), p.clamp(0.0, 1.0));
        self
    }

    /// Sets how a model words its answers around the label it picks.
    pub fn style(mut self, model: impl Into<String>, style: Style) -> Labeller {
        self.styles.insert(model.into(), style);
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
    pub fn answer(&self, model: &str, prompt: &str) -> Option<String> {
        self.answer_with_logprob(model, prompt).map(|(a, _)| a)
    }

    /// The model's answer and the log-probability it gives its answer's token. Like a real model's, it is
    /// mostly high when the answer is right and lower when wrong, with overlap: right answers fall in
    /// [-0.4, -0.01], wrong ones in [-2.5, -0.2].
    pub fn answer_with_logprob(&self, model: &str, prompt: &str) -> Option<(String, f64)> {
        let (label, logprob) = self.label_with_logprob(model, prompt)?;
        let style = self.styles.get(model).copied().unwrap_or(Style::Plain);
        Some((render(style, prompt.trim(), label), logprob))
    }

    fn label_with_logprob(&self, model: &str, prompt: &str) -> Option<(&str, f64)> {
        let text = normalise(prompt);
        let Example { label: truth, row } = *self.truth.get(&text)?;
        let h = fnv(&[&self.seed.to_le_bytes(), model.as_bytes(), text.as_bytes()]);
        // Which rows a model gets wrong: a Weyl sequence over the rows (row × the golden ratio, from an
        // offset fixed by the seed and the model), so that the wrong ones are spread evenly over the data set
        // and over any stride of it, and a model of accuracy `p` is wrong on a share `1 - p` of any sample of
        // it up to sampling error, not up to the luck of independent draws.
        let offset = fnv(&[&self.seed.to_le_bytes(), model.as_bytes()]);
        let u = (offset as f64 / u64::MAX as f64 + row as f64 * 0.618_033_988_749_894_9).fract();
        let v = (fnv(&[&h.to_le_bytes()]) >> 11) as f64 / (1u64 << 53) as f64;
        // A changed accuracy (`/mock/accuracy`) overrides what was recorded, to degrade a model on purpose.
        let right = match (self.accuracy.get(model), self.recorded.get(model)) {
            (None, Some(recorded)) => recorded[row],
            (p, _) => u < p.copied().unwrap_or(1.0),
        };
        if right {
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
        let label = &self.labels[truth.label];
        // Right when it is the label, or when it comes to the label's value ("The answer is $18.00" for 18).
        let right = |answer: &str| {
            normalise(answer) == normalise(label)
                // A `CARRIER|DAY` label is right when the answer states each of its parts.
                || (label.contains('|') && label.split('|').all(|part| normalise(answer).contains(&normalise(part))))
                || matches!(
                    (leanlm_core::value::final_value(answer), leanlm_core::value::parse(label)),
                    (Some(a), Some(l)) if a.value.same(&l)
                )
        };
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
                .filter(|i| l.answer(model, &format!("Question {i},  please")) != Some(format!("label{}", i % 7)))
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

    fn routellm_dir(files: &[(&str, &str)], contaminated: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "leanlm-mock-routellm-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("responses")).unwrap();
        for (name, text) in files {
            std::fs::write(root.join("responses").join(name), text).unwrap();
        }
        std::fs::write(root.join("contaminated_prompts.jsonl"), contaminated).unwrap();
        root
    }

    #[test]
    fn recorded_models_are_right_exactly_where_they_were() {
        let mut a = String::from("prompt,weak,strong\n");
        for i in 0..400 {
            a.push_str(&format!(
                "\"Question {i}?\nA. x\nB. y\",{},{}\n",
                i % 3 == 0,
                i % 5 != 0
            ));
        }
        let root = routellm_dir(
            &[
                ("mmlu_a.csv", &a),
                ("mmlu_b.csv", "prompt,weak,strong\nOther question,False,True\n"),
            ],
            "{\"train_prompt\": \"x\", \"eval_prompt\": \"Other question\"}\n",
        );
        let l = Labeller::from_routellm(&root).unwrap();
        let mut models: Vec<&str> = l.recorded_models().collect();
        models.sort();
        assert_eq!(models, ["strong", "weak"]);
        let mut letters = std::collections::HashSet::new();
        for i in 0..400 {
            let q = format!("Question {i}?\nA. x\nB. y");
            let truth = l.truth(&q).unwrap();
            letters.insert(truth.to_owned());
            assert_eq!(
                l.answer("weak", &q).as_deref() == Some(truth),
                i % 3 == 0,
                "weak on {i}"
            );
            assert_eq!(
                l.answer("strong", &q).as_deref() == Some(truth),
                i % 5 != 0,
                "strong on {i}"
            );
            // A model the files do not name is always right; a set accuracy overrides the record.
            assert_eq!(l.answer("unnamed", &q).as_deref(), Some(truth));
        }
        assert_eq!(letters.len(), 4, "the stand-in answers use every letter");
        // Contaminated prompts are left out.
        assert_eq!(l.truth("Other question"), None);
        let aliased = l.clone().alias("strong-2", "strong").unwrap();
        assert_eq!(
            aliased.answer("strong-2", "Question 5?\nA. x\nB. y"),
            l.answer("strong", "Question 5?\nA. x\nB. y")
        );
        assert!(l.clone().alias("x", "nope").is_err());
        let degraded = l.clone().accuracy("strong", 0.0);
        assert_ne!(
            degraded.answer("strong", "Question 1?\nA. x\nB. y").as_deref(),
            l.truth("Question 1?\nA. x\nB. y")
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn bad_routellm_files_are_refused() {
        let root = routellm_dir(&[("mmlu_a.csv", "prompt,weak\nQ,maybe\n")], "");
        let e = Labeller::from_routellm(&root).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("maybe"), "{e}");
        let _ = std::fs::remove_dir_all(root);
        let e = Labeller::from_routellm(std::path::Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Labeller::from_csv("text,category\na,x\n").is_err());
        let e = Labeller::from_csv("text,category\nonly one column\n").unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
    }
}
