//! A learned verifier for would-be hits: instead of vetoes written while reading one data set, a logistic
//! model over what can be measured about a pair (the similarities, word overlap, length, and which guards
//! fired, as evidence rather than as vetoes) scores how likely the cached answer is right for the new
//! request. It is fitted on the task's own verified would-be hits (the task's scorer said whether the fresh
//! answer matched the cached one); until a task has enough of them, a prior fitted on public paraphrase data
//! ranks its candidates. Either way the threshold that is served is read off the task's own evidence
//! ([`crate::calibrate`] on the score instead of the similarity), so the bound holds whatever the model.

use serde::{Deserialize, Serialize};

use crate::Query;
use crate::guards::{self, Veto};

/// Features per pair.
pub const FEATURES: usize = 14;

/// What can be measured about a pair, as the verifier reads it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Features(pub [f32; FEATURES]);

/// The guards read as features, in this order.
const GUARDS: [Veto; 8] = [
    Veto::Numbers,
    Veto::Negation,
    Veto::Opposites,
    Veto::Direction,
    Veto::Scope,
    Veto::Entities,
    Veto::Substitution,
    Veto::Qualifier,
];

/// The names of the features, for reports.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "last-turn similarity",
    "context similarity",
    "word overlap",
    "length ratio",
    "both English",
    "spelled alike",
    "numbers differ",
    "negation differs",
    "opposite words",
    "direction swapped",
    "scope differs",
    "entity missing",
    "word substituted",
    "qualifier added",
];

impl Features {
    /// Measures a pair: `last_sim` and `context_sim` are the cosine similarities of the last turns and of the
    /// contexts (`None` when neither has one).
    pub fn measure(new: Query, cached: Query, last_sim: f32, context_sim: Option<f32>) -> Features {
        let mut f = [0f32; FEATURES];
        f[0] = last_sim;
        f[1] = context_sim.unwrap_or(1.0);
        let (wa, wb) = (guards::word_set(new.last), guards::word_set(cached.last));
        let union = wa.union(&wb).count();
        f[2] = if union == 0 {
            1.0
        } else {
            wa.intersection(&wb).count() as f32 / union as f32
        };
        let (la, lb) = (new.last.chars().count(), cached.last.chars().count());
        f[3] = la.min(lb) as f32 / la.max(lb).max(1) as f32;
        f[4] = f32::from(u8::from(guards::english(new.last) && guards::english(cached.last)));
        f[5] = f32::from(u8::from(guards::spelled_alike(new.last, cached.last)));
        let fired = guards::fired(new.last, cached.last, false);
        for (i, g) in GUARDS.iter().enumerate() {
            f[6 + i] = f32::from(u8::from(fired.contains(g)));
        }
        Features(f)
    }
}

/// A logistic model over [`Features`]: `weights[0]` is the intercept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verifier {
    pub weights: [f64; FEATURES + 1],
}

/// L2 penalty on the weights (not the intercept): keeps a model fitted on a few hundred pairs, with guards
/// that rarely fire, from trusting one of them absolutely.
const PENALTY: f64 = 1.0;

/// The fewest verified pairs, and the fewest of each outcome, a task's own model is fitted on; below this
/// the prior ranks.
pub const MIN_FIT: usize = 200;
pub const MIN_CLASS: usize = 20;

impl Verifier {
    /// The probability that a cached answer is right for the new request.
    pub fn score(&self, f: &Features) -> f32 {
        let z = self.weights[0]
            + f.0
                .iter()
                .zip(&self.weights[1..])
                .map(|(x, w)| f64::from(*x) * w)
                .sum::<f64>();
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    /// Fits a model on labelled pairs (`true`: the cached answer was right), by Newton's method on the
    /// penalised log-likelihood. `None` with too few pairs of either outcome to fit on.
    #[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with indices
    pub fn fit(samples: &[(Features, bool)]) -> Option<Verifier> {
        let positives = samples.iter().filter(|s| s.1).count();
        if samples.len() < MIN_FIT || positives < MIN_CLASS || samples.len() - positives < MIN_CLASS {
            return None;
        }
        const D: usize = FEATURES + 1;
        // Standardised features, so one penalty suits a similarity that varies by hundredths and a guard
        // that is 0 or 1; a feature that never varies drops out.
        let n = samples.len() as f64;
        let mut mean = [0f64; FEATURES];
        let mut sd = [0f64; FEATURES];
        for (f, _) in samples {
            for j in 0..FEATURES {
                mean[j] += f64::from(f.0[j]) / n;
            }
        }
        for (f, _) in samples {
            for j in 0..FEATURES {
                sd[j] += (f64::from(f.0[j]) - mean[j]).powi(2) / n;
            }
        }
        let sd = sd.map(|v| if v > 1e-12 { v.sqrt() } else { 0.0 });
        let x = |f: &Features, j: usize| {
            if j == 0 {
                1.0
            } else if sd[j - 1] == 0.0 {
                0.0
            } else {
                (f64::from(f.0[j - 1]) - mean[j - 1]) / sd[j - 1]
            }
        };
        let mut w = [0f64; D];
        for _ in 0..25 {
            let mut grad = [0f64; D];
            let mut hess = [[0f64; D]; D];
            for (f, y) in samples {
                let z: f64 = (0..D).map(|j| w[j] * x(f, j)).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let r = p - f64::from(u8::from(*y));
                let s = (p * (1.0 - p)).max(1e-9);
                for j in 0..D {
                    let xj = x(f, j);
                    grad[j] += r * xj;
                    for k in j..D {
                        hess[j][k] += s * xj * x(f, k);
                    }
                }
            }
            for j in 0..D {
                for k in 0..j {
                    hess[j][k] = hess[k][j];
                }
                if j > 0 {
                    grad[j] += PENALTY * w[j];
                    hess[j][j] += PENALTY;
                }
            }
            let step = solve(hess, grad)?;
            let mut largest = 0f64;
            for j in 0..D {
                w[j] -= step[j];
                largest = largest.max(step[j].abs());
            }
            if largest < 1e-6 {
                break;
            }
        }
        // Back to the raw features' scale.
        let mut raw = [0f64; D];
        raw[0] = w[0];
        for j in 1..D {
            if sd[j - 1] > 0.0 {
                raw[j] = w[j] / sd[j - 1];
                raw[0] -= w[j] * mean[j - 1] / sd[j - 1];
            }
        }
        raw.iter().all(|v| v.is_finite()).then_some(Verifier { weights: raw })
    }

    /// The prior: fitted on public paraphrase data (see [`PRIOR`]), for tasks without enough evidence of
    /// their own.
    pub fn prior() -> Verifier {
        Verifier { weights: PRIOR }
    }
}

/// One verified would-be hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub similarity: f32,
    /// What the verifier measured (`None`: verified before features were kept).
    pub features: Option<Features>,
    pub agreed: bool,
}

impl Sample {
    /// A sample from stored numbers; features of the wrong length are dropped.
    pub fn of(similarity: f32, features: Option<&[f32]>, agreed: bool) -> Sample {
        Sample {
            similarity,
            features: features.and_then(|f| <[f32; FEATURES]>::try_from(f).ok().map(Features)),
            agreed,
        }
    }
}

/// New samples after which a task's own verifier is fitted again.
pub const REFIT: usize = 100;

/// What a learned judgement compares with the threshold, chosen on each task's own evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Judge {
    /// The plain similarity (no guard vetoes): kept where no model serves more of the task's evidence.
    Similarity,
    /// The similarity, with a pair any written guard fired on never served: kept where the guards earn
    /// their place on the task's evidence.
    Guarded,
    /// The public prior's score.
    Prior,
    /// The task's own verifier, cross-fitted on its evidence.
    Own,
}

impl Judge {
    pub fn as_str(self) -> &'static str {
        match self {
            Judge::Similarity => "similarity",
            Judge::Guarded => "guarded similarity",
            Judge::Prior => "prior",
            Judge::Own => "own",
        }
    }
}

/// A task's verified would-be hits and what they say: the threshold its hits must clear, on the similarity
/// (`learned: false`, the written guards having vetoed) or, for a learned judgement, on whichever of the
/// plain similarity, the similarity under the guards' vetoes, the prior's score and the task's own verifier
/// serves the most of the task's evidence at the bound. The gateway and `leanlm cache` both read a task's threshold through this, so they agree.
///
/// The task's own verifier is cross-fitted: one model on the even-numbered samples, one on the odd, each
/// sample scored by the model that did not see it, and the threshold read off all those scores. A pair
/// being served is scored by one of the two, picked by its features, so the calibrated mixture is what
/// serves.
#[derive(Debug, Clone)]
pub struct Evidence {
    samples: std::collections::VecDeque<(u64, Sample)>,
    /// Numbers the samples in arrival order: which fold a sample belongs to must not change as the window
    /// slides.
    next: u64,
    learned: bool,
    /// The task's own verifiers (fitted on the even and on the odd samples), once its evidence fits them.
    own: Option<Box<[Verifier; 2]>>,
    judge: Judge,
    since_fit: usize,
    window: usize,
    /// Refits handed out, and the latest one installed: a slow fit that finishes after a newer one is
    /// dropped.
    issued: u64,
    installed: u64,
}

/// A refit of a task's verifier, due and not yet fitted.
#[derive(Debug)]
pub struct Refit {
    generation: u64,
    folds: [Vec<(Features, bool)>; 2],
}

/// A refit's result, for [`Evidence::install`].
#[derive(Debug)]
pub struct Fitted {
    generation: u64,
    verifiers: Option<Box<[Verifier; 2]>>,
}

impl Refit {
    /// Fits the two folds' verifiers (milliseconds at a full window: do it without holding the evidence's
    /// lock).
    pub fn fit(self) -> Fitted {
        let [even, odd] = &self.folds;
        Fitted {
            generation: self.generation,
            verifiers: Verifier::fit(even)
                .zip(Verifier::fit(odd))
                .map(|(a, b)| Box::new([a, b])),
        }
    }
}

/// Which of the two cross-fitted models scores a pair: stable for the same features, even across pairs.
fn fold_of(f: &Features) -> usize {
    let h = f.0.iter().fold(0u32, |h, x| h.rotate_left(5) ^ x.to_bits());
    (h.wrapping_mul(0x9e37_79b9) >> 31) as usize
}

impl Features {
    /// Whether any written guard fired on the pair.
    fn guarded(&self) -> bool {
        self.0[6..].iter().any(|g| *g > 0.5)
    }
}

/// The guarded similarity of a pair: vetoed pairs score below any threshold (and out of calibration).
fn guarded(similarity: f32, f: &Features) -> f32 {
    if f.guarded() { f32::NEG_INFINITY } else { similarity }
}

impl Evidence {
    /// Keeps the latest `window` samples.
    pub fn new(learned: bool, window: usize) -> Evidence {
        Evidence {
            samples: Default::default(),
            next: 0,
            learned,
            own: None,
            judge: if learned { Judge::Prior } else { Judge::Similarity },
            since_fit: REFIT,
            window,
            issued: 0,
            installed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether the task's own verifier has been fitted.
    pub fn fitted(&self) -> bool {
        self.own.is_some()
    }

    /// What the threshold is on, as the latest [`Evidence::estimate`] chose.
    pub fn judge(&self) -> Judge {
        self.judge
    }

    /// Adds samples, oldest first. A learned judgement refits the task's own verifiers every [`REFIT`] of
    /// them, here and now; [`Evidence::add`] leaves the fit to the caller.
    pub fn extend(&mut self, samples: impl IntoIterator<Item = Sample>) {
        if let Some(refit) = self.add(samples) {
            self.install(refit.fit());
        }
    }

    /// Adds samples, oldest first, and returns the refit that is due, if one is: fit it outside any lock
    /// the evidence is behind ([`Refit::fit`]), then [`Evidence::install`] the result.
    pub fn add(&mut self, samples: impl IntoIterator<Item = Sample>) -> Option<Refit> {
        for s in samples {
            self.samples.push_back((self.next, s));
            self.next += 1;
            self.since_fit += 1;
        }
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
        if !self.learned || self.since_fit < REFIT {
            return None;
        }
        self.since_fit = 0;
        self.issued += 1;
        let fold = |parity: u64| {
            self.samples
                .iter()
                .filter(|(n, _)| n % 2 == parity)
                .filter_map(|(_, s)| s.features.map(|f| (f, s.agreed)))
                .collect()
        };
        Some(Refit {
            generation: self.issued,
            folds: [fold(0), fold(1)],
        })
    }

    /// Takes a fitted refit in; one older than the verifiers in place is dropped. True when it changed them
    /// (the threshold must be read again).
    pub fn install(&mut self, fitted: Fitted) -> bool {
        if fitted.generation <= self.installed {
            return false;
        }
        self.installed = fitted.generation;
        match fitted.verifiers {
            Some(v) => {
                self.own = Some(v);
                true
            }
            None => false,
        }
    }

    /// What the threshold is compared with for a pair (`None`: a judgement on a model cannot score a pair
    /// without features).
    pub fn score(&self, similarity: f32, features: Option<&Features>) -> Option<f32> {
        match (self.judge, &self.own) {
            (Judge::Similarity, _) => Some(similarity),
            (Judge::Guarded, _) => features.map(|f| guarded(similarity, f)),
            (Judge::Own, Some(own)) => features.map(|f| own[fold_of(f)].score(f)),
            _ => features.map(|f| Verifier::prior().score(f)),
        }
    }

    /// Reads the threshold off the evidence for `bound`. A learned judgement tries the similarity (plain and
    /// guarded), the prior and (once fitted) the task's own verifiers, each on the scores of pairs it was not fitted on,
    /// and keeps the one whose threshold serves the most verified agreeing pairs; without a threshold
    /// anywhere, the own verifiers (or the prior) stay, to learn on.
    pub fn estimate(&mut self, bound: f64) -> crate::Estimate {
        let read = |score: &dyn Fn(u64, &Sample) -> Option<f32>| {
            let verified: Vec<crate::Verified> = self
                .samples
                .iter()
                .filter_map(|(n, s)| {
                    score(*n, s).map(|similarity| crate::Verified {
                        similarity,
                        agreed: s.agreed,
                    })
                })
                .collect();
            crate::calibrate(&verified, bound)
        };
        let similarity = read(&|_, s| Some(s.similarity));
        if !self.learned {
            self.judge = Judge::Similarity;
            return similarity;
        }
        let prior = Verifier::prior();
        let mut options = vec![
            (Judge::Similarity, similarity),
            (
                Judge::Guarded,
                read(&|_, s| s.features.map(|f| guarded(s.similarity, &f))),
            ),
            (Judge::Prior, read(&|_, s| s.features.map(|f| prior.score(&f)))),
        ];
        if let Some(own) = &self.own {
            // Out of fold: the even samples fitted own[0], so own[1] scores them, and the other way round.
            let own = read(&|n, s| s.features.map(|f| own[1 - (n % 2) as usize].score(&f)));
            options.push((Judge::Own, own));
        }
        let served = |e: &crate::Estimate| e.threshold.map(|_| e.n - e.false_hits);
        let best = options
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| served(e).is_some())
            .max_by_key(|(i, (_, e))| (served(e), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(options.len() - 1);
        let (judge, estimate) = options.swap_remove(best);
        self.judge = judge;
        estimate
    }
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; `None` when `a` is singular.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with indices
fn solve<const D: usize>(mut a: [[f64; D]; D], mut b: [f64; D]) -> Option<[f64; D]> {
    for col in 0..D {
        let pivot = (col..D).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..D {
            let factor = a[row][col] / a[col][col];
            for k in col..D {
                a[row][k] -= factor * a[col][k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0f64; D];
    for row in (0..D).rev() {
        let rest: f64 = (row + 1..D).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

/// The prior's weights, intercept first, in the order of [`FEATURE_NAMES`]. Fitted by
/// `cargo run --release -p leanlm-semantic --example banking_faq -- fit` on the would-be hits of
/// Banking77's training split as an FAQ assistant's traffic (two queries share an answer exactly when they
/// share an intent); its test split is held out for the figures.
pub const PRIOR: [f64; FEATURES + 1] = [
    -3.2313681083714276,
    11.535617607819425,
    0.0,
    0.6401052443139343,
    0.8600879483781201,
    -5.228652122711486,
    0.0,
    0.1541208158111234,
    -0.18870515777257404,
    0.4701701566633649,
    4.247706780523438,
    0.17937961767403626,
    0.16349501637598762,
    -0.03919761658408175,
    -1.390260517825232,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn q(last: &str) -> Query<'_> {
        Query {
            context: "",
            preamble: Some(""),
            last,
        }
    }

    #[test]
    fn features_read_the_guards_as_evidence() {
        let f = Features::measure(q("Cancel my order 1234"), q("Cancel my order 5678"), 0.97, None);
        assert_eq!(f.0[0], 0.97);
        assert_eq!(f.0[1], 1.0);
        assert_eq!(f.0[6], 1.0, "numbers differ: {f:?}");
        let f = Features::measure(
            q("How do I top up my card?"),
            q("How do I top up my card?"),
            1.0,
            Some(0.9),
        );
        assert_eq!((f.0[1], f.0[2], f.0[3], f.0[4]), (0.9, 1.0, 1.0, 1.0));
        assert!(f.0[6..].iter().all(|x| *x == 0.0));
    }

    #[test]
    fn evidence_fits_its_own_verifier_and_calibrates_it_on_other_samples() {
        let mut e = Evidence::new(true, 1000);
        // Pairs that share few words are wrong whatever their similarity (no guard sees it); the others
        // are right above 0.9.
        let sample = |i: usize| {
            let mut f = [0f32; FEATURES];
            f[0] = 0.85 + (i % 15) as f32 * 0.01;
            f[1] = 1.0;
            f[2] = if i.is_multiple_of(5) { 0.1 } else { 0.8 };
            Sample {
                similarity: f[0],
                features: Some(Features(f)),
                agreed: f[2] > 0.5 && f[0] >= 0.9,
            }
        };
        e.extend((0..150).map(sample));
        assert!(!e.fitted(), "too few to fit: the prior scores");
        e.extend((150..600).map(sample));
        assert!(e.fitted());
        let est = e.estimate(0.05);
        let t = est.threshold.expect("separable evidence keeps a 5% bound");
        // Neither the similarity nor the guards tell the traps (a fifth of the pairs, whatever their
        // similarity): the task's own verifiers serve more, and every sample calibrates them, out of fold.
        assert_eq!(e.judge(), Judge::Own);
        assert!(est.n > 300, "{est:?}");
        let mut trap = [0f32; FEATURES];
        trap[0] = 0.95;
        trap[1] = 1.0;
        trap[2] = 0.1;
        let mut right = trap;
        right[2] = 0.8;
        assert!(e.score(0.95, Some(&Features(right))).unwrap() >= t);
        assert!(e.score(0.95, Some(&Features(trap))).unwrap() < t);
        assert_eq!(e.score(0.99, None), None, "a learned judgement needs features");
        // The window keeps the latest samples.
        e.extend((600..1500).map(sample));
        assert_eq!(e.len(), 1000);

        // Without the learned judgement the threshold is on the similarity.
        let mut plain = Evidence::new(false, 1000);
        plain.extend((0..600).map(sample));
        assert_eq!(plain.score(0.93, None), Some(0.93));
        assert!(!plain.fitted());
    }

    #[test]
    fn the_similarity_is_kept_where_no_model_serves_more() {
        // Agreement follows the similarity alone; the other features are noise the models can only lose on.
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        let samples: Vec<Sample> = (0..1000)
            .map(|_| {
                let mut f = [0f32; FEATURES];
                f[0] = 0.8 + 0.2 * next();
                f[1] = 1.0;
                f[2] = next();
                f[6] = f32::from(u8::from(next() < 0.3));
                Sample {
                    similarity: f[0],
                    features: Some(Features(f)),
                    agreed: f[0] >= 0.9,
                }
            })
            .collect();
        let mut e = Evidence::new(true, 1000);
        e.extend(samples);
        assert!(e.fitted());
        let est = e.estimate(0.05);
        assert_eq!(e.judge(), Judge::Similarity, "{est:?}");
        let t = est.threshold.expect("a clean cut keeps the bound");
        assert!((0.89..=0.91).contains(&t), "{t}");
        assert_eq!(e.score(0.95, None), Some(0.95), "the similarity needs no features");
    }

    #[test]
    fn the_guards_are_kept_where_the_evidence_shows_them_right() {
        // A guard fires on a fifth of the pairs, and those are wrong whatever their similarity.
        let sample = |i: usize| {
            let mut f = [0f32; FEATURES];
            f[0] = 0.9 + (i % 10) as f32 * 0.01;
            f[1] = 1.0;
            f[7] = f32::from(u8::from(i.is_multiple_of(5)));
            Sample {
                similarity: f[0],
                features: Some(Features(f)),
                agreed: f[7] == 0.0,
            }
        };
        let mut e = Evidence::new(true, 1000);
        e.extend((0..300).map(sample));
        let est = e.estimate(0.05);
        assert_eq!(e.judge(), Judge::Guarded, "{est:?}");
        assert_eq!(est.false_hits, 0);
        let mut fired = [0f32; FEATURES];
        fired[0] = 0.99;
        fired[7] = 1.0;
        assert!(
            e.score(0.99, Some(&Features(fired)))
                .is_some_and(|s| s < est.threshold.unwrap())
        );
    }

    #[test]
    fn cross_fitted_models_each_score_only_pairs_they_did_not_see() {
        let sample = |i: usize| {
            let mut f = [0f32; FEATURES];
            f[0] = 0.85 + (i % 15) as f32 * 0.01;
            f[1] = 1.0;
            f[2] = (i % 7) as f32 / 7.0;
            f[6] = f32::from(u8::from(i.is_multiple_of(5)));
            (Features(f), f[6] == 0.0 && f[0] >= 0.9)
        };
        let mut e = Evidence::new(true, 1000);
        let refit = e
            .add((0..400).map(|i| {
                let (f, agreed) = sample(i);
                Sample {
                    similarity: f.0[0],
                    features: Some(f),
                    agreed,
                }
            }))
            .expect("due");
        let [even, odd] = &refit.folds;
        assert_eq!((even.len(), odd.len()), (200, 200));
        assert_eq!(even[1], sample(2), "the even fold holds the even-numbered samples");
        assert_eq!(odd[1], sample(3));
        // Both folds' models score a pair; which one is fixed by the pair's features.
        let f = sample(12).0;
        assert_eq!(fold_of(&f), fold_of(&f.clone()));
        let folds: std::collections::HashSet<usize> = (0..60).map(|i| fold_of(&sample(i).0)).collect();
        assert_eq!(folds.len(), 2, "pairs are spread over both models");
    }

    #[test]
    fn a_refit_fitted_outside_the_lock_is_installed_unless_a_newer_one_was() {
        let sample = |i: usize| {
            let mut f = [0f32; FEATURES];
            f[0] = 0.85 + (i % 15) as f32 * 0.01;
            f[1] = 1.0;
            Sample {
                similarity: f[0],
                features: Some(Features(f)),
                agreed: f[0] >= 0.9,
            }
        };
        let mut e = Evidence::new(true, 1000);
        let first = e.add((0..400).map(sample)).expect("a refit is due");
        assert!(!e.fitted(), "add leaves the fit to the caller");
        assert!(
            e.add((400..450).map(sample)).is_none(),
            "not due again before REFIT more"
        );
        let second = e.add((450..500).map(sample)).expect("due again");
        assert!(e.install(second.fit()));
        assert!(e.fitted());
        assert!(!e.install(first.fit()), "an older fit that finishes late is dropped");
        // Without the learned judgement nothing is ever due.
        assert!(Evidence::new(false, 1000).add((0..400).map(sample)).is_none());
    }

    #[test]
    fn a_fitted_model_separates_what_the_evidence_separates() {
        // Agreement depends on similarity and on a guard; word overlap is noise.
        let mut samples = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        for _ in 0..600 {
            let mut f = [0f32; FEATURES];
            f[0] = 0.8 + 0.2 * next();
            f[1] = 1.0;
            f[2] = next();
            f[6] = f32::from(u8::from(next() < 0.2));
            let agreed = f[6] == 0.0 && f[0] > 0.85 + 0.1 * next();
            samples.push((Features(f), agreed));
        }
        let v = Verifier::fit(&samples).expect("enough of both outcomes");
        assert!(v.weights[1] > 0.0, "similarity raises the score: {v:?}");
        assert!(v.weights[7] < 0.0, "differing numbers lower it: {v:?}");
        let mut high = [0f32; FEATURES];
        high[0] = 0.99;
        high[1] = 1.0;
        let mut trap = high;
        trap[6] = 1.0;
        assert!(v.score(&Features(high)) > 0.8);
        assert!(v.score(&Features(trap)) < v.score(&Features(high)) - 0.3);
        // Too little evidence, or one outcome only: no model.
        assert!(Verifier::fit(&samples[..50]).is_none());
        let all_agree: Vec<_> = samples.iter().map(|(f, _)| (*f, true)).collect();
        assert!(Verifier::fit(&all_agree).is_none());
    }
}
