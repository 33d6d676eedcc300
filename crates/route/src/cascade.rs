//! Cascades, as in FrugalGPT: the cheap model answers first, and its answer is served only when it passes
//! the task's hard checks (valid JSON and schema, a label from the task's set, no refusal) and a learned
//! acceptance score clears a threshold calibrated to the task's quality bound; otherwise the call escalates
//! to the strong model. The score is learned from the cheap model's own answers to the task's logged calls,
//! scored against the logged answers: what the prompt looks like (as a router sees it) and what the answer
//! shows (its token log-probabilities where the provider returns them, whether a second sample agrees, how
//! often the cheap model was right when it gave this label).

use std::collections::{BTreeMap, BTreeSet};

use leanlm_validate::score::{self, HardFailure, ScorerSpec, TaskContext};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Logistic, Outcome, Scorer, calibrate, route_with};

/// What the acceptance score sees of one cheap answer.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The prompt's router features ([`crate::features`]): its embedding, then its length.
    pub prompt: &'a [f32],
    pub answer: &'a str,
    /// The answer's token log-probabilities, where the provider returned them.
    pub logprobs: Option<&'a [f64]>,
    /// A second sample's answer, for a cascade that draws two.
    pub second: Option<&'a str>,
}

/// How a cascade is set up before training: the models, the checks, what to ask the cheap model for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub cheap: String,
    pub strong: String,
    /// The task's scorer: its hard checks gate every cheap answer, and it compares two samples.
    pub scorer: ScorerSpec,
    /// The task's labels (normalised), for the label check.
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// The JSON schema the task's requests ask for, for the schema check.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Ask the cheap model for token log-probabilities (OpenAI-compatible providers return them).
    #[serde(default)]
    pub logprobs: bool,
    /// Cheap samples per call: 2 adds their agreement to the score, at twice the cheap cost.
    #[serde(default = "one_sample")]
    pub samples: u8,
    /// The agreement with the reference the accepted-or-escalated answers must keep.
    pub bound: f64,
}

fn one_sample() -> u8 {
    1
}

fn yes() -> bool {
    true
}

/// A task's trained cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCascade {
    #[serde(flatten)]
    pub setup: Setup,
    /// For each label the cheap model answered in training, how often it agreed (smoothed toward `prior`).
    pub label_precision: BTreeMap<String, f64>,
    /// The cheap model's agreement over all training answers.
    pub prior: f64,
    pub accept: Scorer,
    /// Whether the score reads the prompt's features besides the answer's (cascades stored before the
    /// choice existed always did).
    #[serde(default = "yes")]
    pub reads_prompt: bool,
    /// Answers scoring at least this are served.
    pub threshold: f64,
    /// Answers the score was fitted on (those passing the hard checks).
    pub trained_on: usize,
    /// Answers the threshold was calibrated on: every answer, each scored by a model fitted without it.
    pub calibrated_on: usize,
    /// On the calibration answers: the share served, and the agreement reached.
    pub accepted_share: f64,
    pub calibration_agreement: f64,
}

/// What a cascade does with one cheap answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Accept {
        score: f64,
    },
    /// The answer fails a hard check: escalated whatever its score.
    Unusable(HardFailure),
    /// The score is under the threshold.
    Unsure {
        score: f64,
    },
}

impl Decision {
    pub fn accepted(&self) -> bool {
        matches!(self, Decision::Accept { .. })
    }

    pub fn score(&self) -> Option<f64> {
        match self {
            Decision::Accept { score } | Decision::Unsure { score } => Some(*score),
            Decision::Unusable(_) => None,
        }
    }
}

/// Why a cascade could not be trained.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("a cascade needs at least {need} scored answers of the cheap model and has {have}")]
    TooFew { have: usize, need: usize },
    #[error("the bound must be an agreement between 0 and 1, not {0}")]
    Bound(f64),
    #[error("a cascade has 1 to {MAX_STAGES} cheap stages before the strong model, not {0}")]
    Stages(usize),
    #[error("every stage needs an answer to every call, and a cost per stage and for the strong model")]
    Misaligned,
}

/// The fewest scored cheap answers a cascade is trained and calibrated on.
pub const MIN_EXAMPLES: usize = 100;

/// Pseudo-counts pulling a label's precision toward the overall agreement: a label seen twice says little.
const SMOOTHING: f64 = 5.0;

impl Setup {
    fn context(&self) -> TaskContext<'static> {
        TaskContext {
            labels: self.labels.clone(),
            schema: self.schema.clone(),
            embedder: None,
        }
    }

    /// The hard failure a cheap answer shows on its own, if any.
    pub fn hard_failure(&self, answer: &str) -> Option<HardFailure> {
        score::hard_failure(&self.scorer, answer, &self.context())
    }

    /// True when two samples agree under the task's scorer.
    fn samples_agree(&self, a: &str, b: &str) -> bool {
        match self.scorer {
            // Two samples compared by a judge would cost a third call: text similarity stands in.
            ScorerSpec::Judge { .. } => score::rouge_l(a, b) >= score::DEFAULT_ROUGE,
            _ => score::score(&self.scorer, a, b, &self.context()).agree,
        }
    }

    fn label_of(&self, answer: &str) -> Option<String> {
        match self.scorer {
            ScorerSpec::Label => Some(score::normalise_label(answer)),
            // The value an answer comes to is its label: reasoning that differs in wording still agrees.
            ScorerSpec::Value => score::value::final_value(answer).map(|f| f.value.to_string()),
            _ => None,
        }
    }

    /// The features the acceptance score reads: the prompt's (when `with_prompt`), then seven of the
    /// answer's.
    fn features(&self, e: &Evidence, precision: f64, with_prompt: bool) -> Vec<f32> {
        let mut f = if with_prompt {
            e.prompt.to_vec()
        } else {
            Vec::with_capacity(7)
        };
        let (has_lp, mean_lp, min_lp) = match e.logprobs.filter(|l| !l.is_empty()) {
            Some(l) => (
                1.0,
                l.iter().sum::<f64>() / l.len() as f64,
                l.iter().copied().fold(0.0, f64::min),
            ),
            None => (0.0, 0.0, 0.0),
        };
        let (has_second, agrees) = match e.second {
            Some(s) => (1.0, f64::from(u8::from(self.samples_agree(e.answer, s)))),
            None => (0.0, 0.0),
        };
        f.extend(
            [
                (e.answer.len() as f64).ln_1p(),
                has_lp,
                mean_lp.max(-20.0),
                min_lp.max(-20.0),
                has_second,
                agrees,
                precision,
            ]
            .map(|v| v as f32),
        );
        f
    }
}

impl TaskCascade {
    fn precision(&self, answer: &str) -> f64 {
        self.setup
            .label_of(answer)
            .and_then(|l| self.label_precision.get(&l).copied())
            .unwrap_or(self.prior)
    }

    /// The acceptance score of a cheap answer that passed the hard checks.
    pub fn score(&self, e: &Evidence) -> f64 {
        self.accept
            .score(&self.setup.features(e, self.precision(e.answer), self.reads_prompt))
    }

    /// True when no answer can clear the threshold: the stage is not asked at all.
    pub fn never_accepts(&self) -> bool {
        self.threshold == f64::MAX
    }

    /// Serve the cheap answer, or escalate.
    pub fn decide(&self, e: &Evidence) -> Decision {
        if let Some(h) = self.setup.hard_failure(e.answer) {
            return Decision::Unusable(h);
        }
        let score = self.score(e);
        if score >= self.threshold {
            Decision::Accept { score }
        } else {
            Decision::Unsure { score }
        }
    }
}

/// One cheap answer to a logged call, scored against the logged answer: a training example.
#[derive(Debug, Clone)]
pub struct Example {
    pub prompt: Vec<f32>,
    pub answer: String,
    pub logprobs: Option<Vec<f64>>,
    pub second: Option<String>,
    /// The cheap answer agreed with the reference.
    pub agreed: bool,
}

impl Example {
    fn evidence(&self) -> Evidence<'_> {
        Evidence {
            prompt: &self.prompt,
            answer: &self.answer,
            logprobs: self.logprobs.as_deref(),
            second: self.second.as_deref(),
        }
    }
}

/// Folds of the cross-fitting in [`train`].
const FOLDS: usize = 5;

/// Penalties tried for the acceptance score's logistic model.
const PENALTIES: [f64; 3] = [1e-3, 1e-2, 1e-1];

/// Trains a cascade on every example. Candidate acceptance scores (logistic models over the answer's
/// features alone, or over the prompt's too, at three penalties) are cross-fitted: each example is scored
/// by a model fitted on the other folds. The candidate that serves the most answers at `setup.bound` on
/// those out-of-fold scores is refitted on all examples, and its threshold is the lowest that keeps the
/// bound over all of them (answers that fail a hard check or score under it escalate, and the reference's
/// answers agree by definition). Calibrating on every example rather than a held-out 30% makes the
/// threshold far steadier at tight bounds, where it turns on the few wrong answers that score highest.
pub fn train(setup: Setup, examples: &[Example], seed: u64) -> Result<TaskCascade, TrainError> {
    fit(setup, examples, seed).map(|f| f.cascade)
}

/// A stage fitted by [`train`], with each example's out-of-fold score (`None`: it fails a hard check).
struct Fitted {
    cascade: TaskCascade,
    out_of_fold: Vec<Option<f64>>,
}

fn fit(setup: Setup, examples: &[Example], seed: u64) -> Result<Fitted, TrainError> {
    if !(0.0..=1.0).contains(&setup.bound) {
        return Err(TrainError::Bound(setup.bound));
    }
    if examples.len() < MIN_EXAMPLES {
        return Err(TrainError::TooFew {
            have: examples.len(),
            need: MIN_EXAMPLES,
        });
    }

    // Folds over all examples, in a seeded order.
    let n = examples.len() as f64;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut fold_of = vec![0; examples.len()];
    for (position, i) in order.iter().enumerate() {
        fold_of[*i] = position % FOLDS;
    }

    // Per-label precision: served from all examples; as a feature, each example sees it from the other
    // folds only (without itself alone, the value would move against its own outcome, and the fit learn
    // that).
    let prior = examples.iter().filter(|e| e.agreed).count() as f64 / n;
    let mut counts: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut fold_counts: Vec<BTreeMap<String, (f64, f64)>> = vec![BTreeMap::new(); FOLDS];
    for (i, e) in examples.iter().enumerate() {
        if let Some(l) = setup.label_of(&e.answer) {
            for c in [
                counts.entry(l.clone()).or_default(),
                fold_counts[fold_of[i]].entry(l).or_default(),
            ] {
                c.0 += f64::from(u8::from(e.agreed));
                c.1 += 1.0;
            }
        }
    }
    let smoothed = |agreed: f64, n: f64| (agreed + SMOOTHING * prior) / (n + SMOOTHING);
    let label_precision: BTreeMap<String, f64> =
        counts.iter().map(|(l, (a, n))| (l.clone(), smoothed(*a, *n))).collect();
    let precision_elsewhere = |i: usize| {
        let Some(l) = setup.label_of(&examples[i].answer) else {
            return prior;
        };
        let (a, n) = counts.get(&l).copied().unwrap_or_default();
        let (fa, fn_) = fold_counts[fold_of[i]].get(&l).copied().unwrap_or_default();
        smoothed(a - fa, n - fn_)
    };

    // Answers failing a hard check escalate whatever they score: the score is fitted on the others.
    let usable: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| setup.hard_failure(&examples[*i].answer).is_none())
        .collect();
    let outcomes: Vec<Outcome> = usable
        .iter()
        .map(|i| Outcome {
            cheap_correct: examples[*i].agreed,
            strong_correct: true,
            cheap_cost: 0.0,
            strong_cost: 1.0,
        })
        .collect();
    let agreed: Vec<bool> = usable.iter().map(|i| examples[*i].agreed).collect();
    let escalated = n - usable.len() as f64;
    // What the usable answers must reach for all answers to keep the bound.
    let need = if usable.is_empty() {
        1.0
    } else {
        ((setup.bound * n - escalated) / usable.len() as f64).min(1.0)
    };
    // The answer's features alone, then with the prompt's.
    let features = [false, true].map(|with_prompt| -> Vec<Vec<f32>> {
        usable
            .iter()
            .map(|i| setup.features(&examples[*i].evidence(), precision_elsewhere(*i), with_prompt))
            .collect()
    });
    let out_of_fold = |x: &[Vec<f32>], l2: f64| -> Vec<f64> {
        let mut scores = vec![0.0; x.len()];
        for fold in 0..FOLDS {
            let (fit_x, fit_y): (Vec<Vec<f32>>, Vec<bool>) = (0..x.len())
                .filter(|k| fold_of[usable[*k]] != fold)
                .map(|k| (x[k].clone(), agreed[k]))
                .unzip();
            let model = Logistic::fit(&fit_x, &fit_y, l2, ITERATIONS);
            for k in (0..x.len()).filter(|k| fold_of[usable[*k]] == fold) {
                scores[k] = model.predict(&x[k]);
            }
        }
        scores
    };

    // The answer's features alone come first: the prompt's must serve strictly more to be kept.
    let mut best: Option<(usize, bool, f64, Vec<f64>, f64)> = None;
    for (with_prompt, x) in [false, true].into_iter().zip(&features) {
        for l2 in PENALTIES {
            let scores = out_of_fold(x, l2);
            let threshold = calibrate(&scores, &outcomes, need).unwrap_or(f64::MAX);
            let served = scores.iter().filter(|s| **s >= threshold).count();
            if best.as_ref().is_none_or(|b| served > b.0) {
                best = Some((served, with_prompt, l2, scores, threshold));
            }
        }
    }
    let (reads_prompt, l2, scores, threshold) = match best {
        Some((_, p, l2, scores, t)) if !usable.is_empty() => (p, l2, scores, t),
        _ => (false, PENALTIES[0], Vec::new(), f64::MAX),
    };
    let accept = Scorer {
        cheap: Logistic::fit(&features[usize::from(reads_prompt)], &agreed, l2, ITERATIONS),
        strong: None,
        neighbours: None,
        blend: 1.0,
    };
    let p = route_with(&scores, threshold, &outcomes);
    let accepted = (1.0 - p.strong_share) * usable.len() as f64;
    let agreement = (p.accuracy * usable.len() as f64 + escalated) / n;
    let mut out_of_fold = vec![None; examples.len()];
    for (k, i) in usable.iter().enumerate() {
        out_of_fold[*i] = scores.get(k).copied();
    }
    Ok(Fitted {
        cascade: TaskCascade {
            setup,
            label_precision,
            prior,
            accept,
            reads_prompt,
            threshold,
            trained_on: usable.len(),
            calibrated_on: examples.len(),
            accepted_share: accepted / n,
            calibration_agreement: agreement,
        },
        out_of_fold,
    })
}

/// A cascade of one or more cheap stages before the strong model (FrugalGPT's chain): each stage's answer
/// is judged by its own acceptance score, the first one accepted is served, and a call no stage accepts
/// goes to the strong model. A two-model cascade is a chain of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    pub stages: Vec<TaskCascade>,
    /// Of the calibration calls, the share each stage served (the rest went to the strong model).
    pub served: Vec<f64>,
    /// The agreement with the reference on the calibration calls, as the chain serves them.
    pub calibration_agreement: f64,
    pub calibrated_on: usize,
}

impl<'de> Deserialize<'de> for Chain {
    /// A chain, or a single [`TaskCascade`] as stored before chains existed.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Chain, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            stages: Vec<TaskCascade>,
            served: Vec<f64>,
            calibration_agreement: f64,
            calibrated_on: usize,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Chain(Stored),
            One(Box<TaskCascade>),
        }
        Ok(match Either::deserialize(d)? {
            Either::Chain(c) if !c.stages.is_empty() && c.served.len() == c.stages.len() => Chain {
                stages: c.stages,
                served: c.served,
                calibration_agreement: c.calibration_agreement,
                calibrated_on: c.calibrated_on,
            },
            Either::Chain(_) => {
                return Err(serde::de::Error::custom(
                    "a cascade chain needs one served share per stage",
                ));
            }
            Either::One(c) => Chain::from(*c),
        })
    }
}

impl From<TaskCascade> for Chain {
    fn from(c: TaskCascade) -> Chain {
        Chain {
            served: vec![c.accepted_share],
            calibration_agreement: c.calibration_agreement,
            calibrated_on: c.calibrated_on,
            stages: vec![c],
        }
    }
}

impl Chain {
    /// The model a call goes to when no stage accepts its answer.
    pub fn strong(&self) -> &str {
        self.stages.last().map_or("", |s| s.setup.strong.as_str())
    }

    /// The stages a call is asked at, in order, with their index: a stage whose threshold is "never" is
    /// skipped (asking it would cost and could serve nothing).
    pub fn asked(&self) -> impl Iterator<Item = (usize, &TaskCascade)> {
        self.stages.iter().enumerate().filter(|(_, s)| !s.never_accepts())
    }

    /// The cheap models, in the order they answer.
    pub fn cheap(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.setup.cheap.as_str())
    }

    /// The share of calls a cheap stage served in calibration.
    pub fn accepted_share(&self) -> f64 {
        self.served.iter().sum()
    }
}

/// The most cheap stages a chain is trained with: the joint search over thresholds grows as a power of it.
pub const MAX_STAGES: usize = 3;

/// Trains a chain: each stage's acceptance score as [`train`] fits it, on its model's answers to the same
/// calls (`stages[j].1[i]` answers call `i`), then the stages' thresholds together, on the out-of-fold
/// scores: of every combination (a grid of each stage's score quantiles, "never" included), the one with
/// the lowest expected cost whose served answers keep `bound` over all calls (the strong model's agreeing
/// by definition). `costs` is each cheap stage's mean cost per call, then the strong model's: a stage's
/// cost is paid by every call that reaches it, unless it never accepts (then it is skipped).
pub fn train_chain(
    stages: Vec<(Setup, Vec<Example>)>,
    costs: &[f64],
    bound: f64,
    seed: u64,
) -> Result<Chain, TrainError> {
    if !(0.0..=1.0).contains(&bound) {
        return Err(TrainError::Bound(bound));
    }
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(TrainError::Stages(stages.len()));
    }
    let n = stages[0].1.len();
    if stages.iter().any(|(_, e)| e.len() != n) || costs.len() != stages.len() + 1 {
        return Err(TrainError::Misaligned);
    }
    if stages.len() == 1 {
        let (mut setup, examples) = stages.into_iter().next().ok_or(TrainError::Stages(0))?;
        setup.bound = bound;
        return train(setup, &examples, seed).map(Chain::from);
    }
    let mut fitted = Vec::with_capacity(stages.len());
    let mut agreed = Vec::with_capacity(stages.len());
    for (j, (mut setup, examples)) in stages.into_iter().enumerate() {
        setup.bound = bound;
        fitted.push(fit(setup, &examples, seed.wrapping_add(j as u64))?);
        agreed.push(examples.iter().map(|e| e.agreed).collect::<Vec<bool>>());
    }
    // Each stage's candidate thresholds: quantiles of its out-of-fold scores, and "never".
    let grid = match fitted.len() {
        2 => 120,
        _ => 30,
    };
    let candidates: Vec<Vec<f64>> = fitted
        .iter()
        .map(|f| {
            let mut s: Vec<f64> = f.out_of_fold.iter().flatten().copied().collect();
            s.sort_by(f64::total_cmp);
            s.dedup();
            let mut c: Vec<f64> = if s.len() <= grid {
                s
            } else {
                (0..grid).map(|q| s[q * (s.len() - 1) / (grid - 1)]).collect()
            };
            c.push(f64::MAX);
            c.dedup();
            c
        })
        .collect();
    let scores: Vec<&[Option<f64>]> = fitted.iter().map(|f| f.out_of_fold.as_slice()).collect();
    let allowed = ((1.0 - bound) * n as f64 + 1e-9).floor() as usize;
    let mut search = Search {
        scores: &scores,
        agreed: &agreed,
        costs,
        candidates: &candidates,
        allowed,
        thresholds: vec![f64::MAX; fitted.len()],
        best: None,
    };
    search.descend(0, &(0..n).collect::<Vec<usize>>(), 0, 0.0);
    // "Never" at every stage serves nothing wrong, so some combination always keeps the bound.
    let (thresholds, wrong) = search
        .best
        .map_or((vec![f64::MAX; fitted.len()], 0), |b| (b.thresholds, b.wrong));
    let served = served_by(&scores, &thresholds, n);
    let stages: Vec<TaskCascade> = fitted
        .into_iter()
        .zip(&thresholds)
        .zip(&served)
        .map(|((f, t), s)| TaskCascade {
            threshold: *t,
            accepted_share: *s as f64 / n as f64,
            calibration_agreement: 1.0 - wrong as f64 / n as f64,
            ..f.cascade
        })
        .collect();
    Ok(Chain {
        served: served.iter().map(|s| *s as f64 / n as f64).collect(),
        calibration_agreement: 1.0 - wrong as f64 / n as f64,
        calibrated_on: n,
        stages,
    })
}

/// How many calls each stage serves with these thresholds, on the out-of-fold scores.
fn served_by(scores: &[&[Option<f64>]], thresholds: &[f64], n: usize) -> Vec<usize> {
    let mut served = vec![0; thresholds.len()];
    (0..n)
        .filter_map(|i| (0..thresholds.len()).find(|j| scores[*j][i].is_some_and(|s| s >= thresholds[*j])))
        .for_each(|j| served[j] += 1);
    served
}

struct Best {
    cost: f64,
    thresholds: Vec<f64>,
    /// Wrong answers served.
    wrong: usize,
}

/// The joint threshold search of [`train_chain`], one stage per level.
struct Search<'a> {
    scores: &'a [&'a [Option<f64>]],
    agreed: &'a [Vec<bool>],
    costs: &'a [f64],
    candidates: &'a [Vec<f64>],
    allowed: usize,
    thresholds: Vec<f64>,
    best: Option<Best>,
}

impl Search<'_> {
    /// Tries every candidate threshold of `stage` for the calls that reach it, given `wrong` answers
    /// served and `cost` spent before it.
    fn descend(&mut self, stage: usize, reaching: &[usize], wrong: usize, cost: f64) {
        for c in 0..self.candidates[stage].len() {
            let t = self.candidates[stage][c];
            // A stage that never accepts is skipped: it costs nothing.
            let cost = if t == f64::MAX {
                cost
            } else {
                cost + self.costs[stage] * reaching.len() as f64
            };
            let (mut w, mut rest) = (wrong, Vec::with_capacity(reaching.len()));
            for i in reaching {
                match self.scores[stage][*i] {
                    Some(s) if s >= t => w += usize::from(!self.agreed[stage][*i]),
                    _ => rest.push(*i),
                }
            }
            if w > self.allowed {
                continue;
            }
            self.thresholds[stage] = t;
            if stage + 1 < self.scores.len() {
                self.descend(stage + 1, &rest, w, cost);
                continue;
            }
            let total = cost + self.costs[stage + 1] * rest.len() as f64;
            if self.best.as_ref().is_none_or(|b| total < b.cost - 1e-12) {
                self.best = Some(Best {
                    cost: total,
                    thresholds: self.thresholds.clone(),
                    wrong: w,
                });
            }
        }
    }
}

/// Gradient steps per logistic fit.
const ITERATIONS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(scorer: ScorerSpec) -> Setup {
        Setup {
            cheap: "cheap".into(),
            strong: "strong".into(),
            scorer,
            labels: ["a", "b", "c"].map(String::from).into(),
            schema: None,
            logprobs: true,
            samples: 1,
            bound: 0.95,
        }
    }

    /// A cheap labeller that is right 80% of the time, less sure (lower log-probabilities) when wrong, and
    /// sometimes answers outside the label set.
    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| {
                let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                let right = h % 10 < 8;
                let noise = (h % 97) as f64 / 97.0;
                let lp = if right { -0.05 - 0.4 * noise } else { -0.3 - 2.0 * noise };
                let answer = if i % 50 == 7 {
                    "banana".to_owned()
                } else {
                    ["a", "b", "c"][i % 3].to_owned()
                };
                Example {
                    prompt: vec![(i % 5) as f32, 1.0, 0.5],
                    answer,
                    logprobs: Some(vec![lp]),
                    second: None,
                    agreed: right && i % 50 != 7,
                }
            })
            .collect()
    }

    #[test]
    fn a_trained_cascade_keeps_the_bound_and_serves_the_sure_answers() {
        let ex = examples(2000);
        let c = train(setup(ScorerSpec::Label), &ex, 3).unwrap();
        assert_eq!(c.calibrated_on, 2000);
        assert!(c.calibration_agreement >= 0.95, "{c:?}");
        assert!(
            c.accepted_share > 0.5,
            "log-probabilities separate most answers: {}",
            c.accepted_share
        );
        // On all examples: the served answers' agreement keeps the bound.
        let (mut served, mut right) = (0, 0);
        for e in &ex {
            let d = c.decide(&e.evidence());
            if d.accepted() {
                served += 1;
                right += usize::from(e.agreed);
            }
        }
        let overall = (right + (ex.len() - served)) as f64 / ex.len() as f64;
        assert!(overall >= 0.94, "{overall}");
        let mut unusable = ex[7].clone();
        unusable.logprobs = Some(vec![0.0]);
        assert_eq!(
            c.decide(&unusable.evidence()),
            Decision::Unusable(HardFailure::UnknownLabel)
        );
        let round: TaskCascade = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        for e in &ex[..50] {
            assert_eq!(
                round.decide(&e.evidence()).accepted(),
                c.decide(&e.evidence()).accepted()
            );
        }
    }

    #[test]
    fn prompt_features_without_signal_do_not_drown_the_log_probabilities() {
        use rand::Rng;
        // As the mock upstream's 90% labeller: right answers have log-probabilities in [-0.4, -0.01], wrong
        // ones in [-2.5, -0.2]; the prompt's 384 features are noise. At a 99% bound, whatever the sample, a
        // cascade must trust most answers (the log-probabilities alone reach ~80%). A score fitted on a 70%
        // split and calibrated on the other 30% once trusted 9% here.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for run in 0..8 {
            let ex: Vec<Example> = (0..600)
                .map(|_| {
                    let right = rng.random::<f64>() < 0.9;
                    let v: f64 = rng.random();
                    let lp = if right { -0.01 - 0.39 * v } else { -0.2 - 2.3 * v };
                    Example {
                        prompt: (0..386).map(|_| rng.random::<f32>() - 0.5).collect(),
                        answer: ["a", "b", "c"][rng.random_range(0..3)].to_owned(),
                        logprobs: Some(vec![lp; 3]),
                        second: None,
                        agreed: right,
                    }
                })
                .collect();
            let mut s = setup(ScorerSpec::Label);
            s.bound = 0.99;
            let c = train(s, &ex, run).unwrap();
            assert!(c.calibration_agreement >= 0.99, "{c:?}");
            assert!(c.accepted_share > 0.5, "run {run}: {}", c.accepted_share);
        }
    }

    #[test]
    fn a_label_the_cheap_model_gets_wrong_is_learned() {
        // No log-probabilities; the cheap model is always wrong when it answers `c`.
        let ex: Vec<Example> = (0..900)
            .map(|i| Example {
                prompt: vec![0.0, 1.0],
                answer: ["a", "b", "c"][i % 3].to_owned(),
                logprobs: None,
                second: None,
                agreed: i % 3 != 2,
            })
            .collect();
        let mut s = setup(ScorerSpec::Label);
        s.bound = 0.99;
        let c = train(s, &ex, 1).unwrap();
        assert!(c.label_precision["c"] < 0.1, "{:?}", c.label_precision);
        assert!(c.decide(&ex[0].evidence()).accepted());
        assert!(!c.decide(&ex[2].evidence()).accepted());
        assert!((c.accepted_share - 2.0 / 3.0).abs() < 0.05, "{}", c.accepted_share);
    }

    #[test]
    fn two_samples_that_disagree_escalate() {
        let ex: Vec<Example> = (0..600)
            .map(|i| {
                let right = i % 4 != 0;
                Example {
                    prompt: vec![0.0, 1.0],
                    answer: "a".into(),
                    logprobs: None,
                    second: Some(if right { "a" } else { "b" }.into()),
                    agreed: right,
                }
            })
            .collect();
        let mut s = setup(ScorerSpec::Label);
        s.samples = 2;
        let c = train(s, &ex, 1).unwrap();
        assert!(c.decide(&ex[1].evidence()).accepted());
        assert!(!c.decide(&ex[0].evidence()).accepted());
    }

    /// A labeller right with probability `p`, with log-probabilities that mostly tell right from wrong.
    fn labeller(n: usize, p: f64, rng: &mut rand::rngs::StdRng) -> Vec<Example> {
        use rand::Rng;
        (0..n)
            .map(|_| {
                let right = rng.random::<f64>() < p;
                let v: f64 = rng.random();
                let lp = if right { -0.01 - 0.5 * v } else { -0.3 - 2.0 * v };
                Example {
                    prompt: vec![0.0, 1.0],
                    answer: ["a", "b", "c"][rng.random_range(0..3)].to_owned(),
                    logprobs: Some(vec![lp]),
                    second: None,
                    agreed: right,
                }
            })
            .collect()
    }

    /// Expected cost per call of a chain on its examples, and the agreement it reaches.
    // `call` indexes every stage's answers, not one slice.
    #[allow(clippy::needless_range_loop)]
    fn run_chain(chain: &Chain, stages: &[Vec<Example>], costs: &[f64]) -> (f64, f64) {
        let n = stages[0].len();
        let (mut cost, mut agreed) = (0.0, 0);
        for call in 0..n {
            let mut served = false;
            for (j, stage) in chain.asked() {
                cost += costs[j];
                let answer = &stages[j][call];
                if stage.decide(&answer.evidence()).accepted() {
                    agreed += usize::from(answer.agreed);
                    served = true;
                    break;
                }
            }
            if !served {
                cost += costs[chain.stages.len()];
                agreed += 1;
            }
        }
        (cost / n as f64, agreed as f64 / n as f64)
    }

    #[test]
    fn a_chain_of_two_cheap_stages_keeps_the_bound_for_less_than_either_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let costs = [0.05, 0.2, 1.0];
        let (first, second) = (labeller(1500, 0.6, &mut rng), labeller(1500, 0.85, &mut rng));
        let mut s1 = setup(ScorerSpec::Label);
        s1.cheap = "small".into();
        let mut s2 = setup(ScorerSpec::Label);
        s2.cheap = "medium".into();
        let chain = train_chain(
            vec![(s1.clone(), first.clone()), (s2.clone(), second.clone())],
            &costs,
            0.95,
            1,
        )
        .unwrap();
        assert_eq!(chain.cheap().collect::<Vec<_>>(), ["small", "medium"]);
        assert_eq!(chain.strong(), "strong");
        assert!(chain.calibration_agreement >= 0.95, "{:?}", chain.served);
        assert!(
            chain.served.iter().all(|s| *s > 0.05),
            "both stages serve: {:?}",
            chain.served
        );
        let (chain_cost, agreement) = run_chain(&chain, &[first.clone(), second.clone()], &costs);
        assert!(agreement >= 0.94, "{agreement}");
        // Each cheap model alone before the strong one, calibrated the same way.
        for (alone, c) in [
            (first.clone(), [costs[0], costs[2]]),
            (second.clone(), [costs[1], costs[2]]),
        ] {
            let one = train_chain(vec![(s1.clone(), alone.clone())], &c, 0.95, 1).unwrap();
            let (cost, _) = run_chain(&one, &[alone], &c);
            assert!(
                chain_cost < cost,
                "the chain costs {chain_cost:.3} per call, one stage alone {cost:.3}"
            );
        }
        // Stored and read back, including a single cascade stored before chains existed.
        let round: Chain = serde_json::from_str(&serde_json::to_string(&chain).unwrap()).unwrap();
        assert_eq!(round.served, chain.served);
        for (j, stage) in [&first, &second].into_iter().enumerate() {
            for e in &stage[..200] {
                assert_eq!(
                    round.stages[j].decide(&e.evidence()).accepted(),
                    chain.stages[j].decide(&e.evidence()).accepted()
                );
            }
        }
        let ex = examples(300);
        let single = train(setup(ScorerSpec::Label), &ex, 1).unwrap();
        let read: Chain = serde_json::from_str(&serde_json::to_string(&single).unwrap()).unwrap();
        assert_eq!(read.stages.len(), 1);
        assert_eq!(read.stages[0].setup, single.setup);
        assert_eq!(read.served, vec![single.accepted_share]);
        for e in &ex {
            assert_eq!(
                read.stages[0].decide(&e.evidence()).accepted(),
                single.decide(&e.evidence()).accepted()
            );
        }
    }

    #[test]
    fn bad_chains_are_refused() {
        let ex = examples(200);
        let s = setup(ScorerSpec::Label);
        assert_eq!(
            train_chain(
                vec![(s.clone(), ex.clone()), (s.clone(), ex[..150].to_vec())],
                &[0.1, 0.2, 1.0],
                0.9,
                1
            )
            .unwrap_err(),
            TrainError::Misaligned
        );
        assert_eq!(
            train_chain(vec![(s.clone(), ex.clone())], &[0.1], 0.9, 1).unwrap_err(),
            TrainError::Misaligned
        );
        assert_eq!(train_chain(vec![], &[1.0], 0.9, 1).unwrap_err(), TrainError::Stages(0));
        let four = vec![(s.clone(), ex.clone()); 4];
        assert_eq!(train_chain(four, &[0.1; 5], 0.9, 1).unwrap_err(), TrainError::Stages(4));
        assert!(
            serde_json::from_str::<Chain>(
                r#"{"stages": [], "served": [], "calibration_agreement": 1, "calibrated_on": 0}"#
            )
            .is_err()
        );
    }

    #[test]
    fn bad_training_input_is_refused() {
        let few = examples(10);
        assert!(matches!(
            train(setup(ScorerSpec::Label), &few, 1),
            Err(TrainError::TooFew { have: 10, .. })
        ));
        let mut s = setup(ScorerSpec::Label);
        s.bound = 1.5;
        assert_eq!(train(s, &examples(200), 1).unwrap_err(), TrainError::Bound(1.5));
    }
}
