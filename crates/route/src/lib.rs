//! Learned routing between a cheap and a strong model, as in RouteLLM: a model predicts from a prompt's
//! features whether the cheap model's answer will do; calls it doubts go to the strong model. The threshold
//! is calibrated on held-out outcomes to a quality bound at the lowest cost. Also the metrics RouteLLM
//! reports: the cost/quality curve, PGR, APGR and CPT.

pub mod cascade;
mod neighbours;

pub use neighbours::{MAX_NEIGHBOURS, Neighbours};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// L2-regularised logistic regression on standardised features, fitted by full-batch gradient descent
/// with Nesterov momentum: a few hundred features and tens of thousands of rows fit in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Logistic {
    /// Fits `P(y = 1 | x)`. `l2` is the penalty on the weights (not the bias).
    pub fn fit(x: &[Vec<f32>], y: &[bool], l2: f64, iterations: usize) -> Logistic {
        assert_eq!(x.len(), y.len(), "one label per row");
        let n = x.len().max(1) as f64;
        let d = x.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; d];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v) / n;
            }
        }
        let mut scale = vec![0.0; d];
        for row in x {
            for ((s, v), m) in scale.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(*v) - m).powi(2) / n;
            }
        }
        for s in &mut scale {
            *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
        }
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (f64::from(*v) - m) / s)
                    .collect()
            })
            .collect();
        let positives = y.iter().filter(|b| **b).count() as f64;
        let prior = ((positives + 1.0) / (n + 2.0)).clamp(1e-6, 1.0 - 1e-6);
        let (mut w, mut b) = (vec![0.0; d], (prior / (1.0 - prior)).ln());
        let (mut vw, mut vb) = (vec![0.0; d], 0.0);
        let (lr, momentum) = (0.5, 0.9);
        let mut grad = vec![0.0; d];
        for _ in 0..iterations {
            // Gradient at the look-ahead point.
            let wa: Vec<f64> = w.iter().zip(&vw).map(|(w, v)| w + momentum * v).collect();
            let ba = b + momentum * vb;
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut gb = 0.0;
            for (row, label) in z.iter().zip(y) {
                let p = sigmoid(ba + row.iter().zip(&wa).map(|(a, b)| a * b).sum::<f64>());
                let err = p - f64::from(u8::from(*label));
                gb += err;
                for (g, v) in grad.iter_mut().zip(row) {
                    *g += err * v;
                }
            }
            for ((v, g), wa) in vw.iter_mut().zip(&grad).zip(&wa) {
                *v = momentum * *v - lr * (g / n + l2 * wa);
            }
            vb = momentum * vb - lr * gb / n;
            for (w, v) in w.iter_mut().zip(&vw) {
                *w += v;
            }
            b += vb;
        }
        Logistic {
            mean,
            scale,
            weights: w,
            bias: b,
        }
    }

    pub fn predict(&self, x: &[f32]) -> f64 {
        let z: f64 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((v, m), s), w)| (f64::from(*v) - m) / s * w)
            .sum();
        sigmoid(self.bias + z)
    }
}

/// A prompt's features for routing: its sentence embedding, and its length in characters and words.
pub fn features(embedding: &[f32], text: &str) -> Vec<f32> {
    let mut f = embedding.to_vec();
    f.push((text.len() as f32).ln_1p());
    f.push((text.split_whitespace().count() as f32).ln_1p());
    f
}

/// How a router scores a call (high: keep it on the cheap model): a logistic model of P(the cheap model is
/// right), minus one of P(the strong model is right) where the strong model is not always right, optionally
/// blended with the call's nearest training calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorer {
    /// P(the cheap model's answer will do) from [`features`]. (Stored as `model` since the first routers.)
    #[serde(rename = "model")]
    pub cheap: Logistic,
    /// P(the strong model's answer will do): where both can fail, a call both get wrong stays cheap.
    #[serde(default, rename = "strong_model")]
    pub strong: Option<Logistic>,
    #[serde(default)]
    pub neighbours: Option<Neighbours>,
    /// The logistic part's weight against the neighbours' (1 without neighbours).
    #[serde(default = "one")]
    pub blend: f64,
}

fn one() -> f64 {
    1.0
}

impl Scorer {
    pub fn score(&self, features: &[f32]) -> f64 {
        let linear = self.cheap.predict(features) - self.strong.as_ref().map_or(0.0, |m| m.predict(features));
        match &self.neighbours {
            Some(n) => self.blend * linear + (1.0 - self.blend) * n.score(features),
            None => linear,
        }
    }

    /// What the scorer is, in a few words.
    pub fn describe(&self) -> String {
        let linear = if self.strong.is_some() {
            "logistic gain"
        } else {
            "logistic"
        };
        match &self.neighbours {
            Some(n) if self.blend <= 0.0 => format!("{}-nearest-neighbour gain", n.k),
            Some(n) => format!("{linear} blended {:.2} with {}-nearest-neighbour gain", self.blend, n.k),
            None => linear.to_owned(),
        }
    }
}

/// The logistic scorer with the highest APGR on the calibration calls: four penalties, each with and
/// without the strong model's own logistic model (only where the strong model can fail), and that APGR.
pub fn fit_linear(x_train: &[Vec<f32>], o_train: &[Outcome], x_cal: &[Vec<f32>], o_cal: &[Outcome]) -> (Scorer, f64) {
    let y_cheap: Vec<bool> = o_train.iter().map(|o| o.cheap_correct).collect();
    let y_strong: Vec<bool> = o_train.iter().map(|o| o.strong_correct).collect();
    let strong_varies = y_strong.iter().any(|y| *y) && y_strong.iter().any(|y| !*y);
    let judge = calibration_apgr(o_cal);
    let mut best: Option<(f64, Scorer)> = None;
    for l2 in [1e-4, 1e-3, 1e-2, 1e-1] {
        let plain = Scorer {
            cheap: Logistic::fit(x_train, &y_cheap, l2, 300),
            strong: None,
            neighbours: None,
            blend: 1.0,
        };
        let gain = strong_varies.then(|| Scorer {
            strong: Some(Logistic::fit(x_train, &y_strong, l2, 300)),
            ..plain.clone()
        });
        for s in std::iter::once(plain).chain(gain) {
            let a = judge(&x_cal.iter().map(|x| s.score(x)).collect::<Vec<_>>());
            // Strictly better only: on a tie the simpler, earlier candidate stays.
            if best.as_ref().is_none_or(|b| a > b.0 + 1e-9) {
                best = Some((a, s));
            }
        }
    }
    let (a, s) = best.unwrap_or_else(|| {
        (
            0.0,
            Scorer {
                cheap: Logistic::fit(x_train, &y_cheap, 1e-3, 0),
                strong: None,
                neighbours: None,
                blend: 1.0,
            },
        )
    });
    (s, a)
}

/// The router's scorer: the best logistic one ([`fit_linear`]), or the similarity-weighted gain of the k
/// nearest training calls (k of 20 to 200) alone or blended with it, whichever has the highest APGR on the
/// calibration calls; and that APGR. `dim` is the embedding's length at the front of each feature vector.
pub fn fit(
    x_train: &[Vec<f32>],
    o_train: &[Outcome],
    x_cal: &[Vec<f32>],
    o_cal: &[Outcome],
    dim: usize,
) -> (Scorer, f64) {
    let (linear, mut best_apgr) = fit_linear(x_train, o_train, x_cal, o_cal);
    let judge = calibration_apgr(o_cal);
    let mut best = linear.clone();
    let embeddings: Vec<&[f32]> = x_train.iter().map(|x| &x[..dim.min(x.len())]).collect();
    let gains: Vec<i8> = o_train
        .iter()
        .map(|o| i8::from(o.cheap_correct) - i8::from(o.strong_correct))
        .collect();
    let linear_cal: Vec<f64> = x_cal.iter().map(|x| linear.score(x)).collect();
    for k in [20usize, 50, 100, 200] {
        // Neighbourhoods of more than half the training calls are no longer local.
        if k > 20 && k * 2 > x_train.len() {
            continue;
        }
        let neighbours = Neighbours::new(&embeddings, &gains, k);
        let near: Vec<f64> = x_cal.iter().map(|x| neighbours.score(x)).collect();
        for blend in [0.0, 0.25, 0.5, 0.75] {
            let scores: Vec<f64> = linear_cal
                .iter()
                .zip(&near)
                .map(|(l, n)| blend * l + (1.0 - blend) * n)
                .collect();
            let a = judge(&scores);
            if a > best_apgr + 1e-9 {
                best_apgr = a;
                best = Scorer {
                    neighbours: Some(neighbours.clone()),
                    blend,
                    ..linear.clone()
                };
            }
        }
    }
    (best, best_apgr)
}

/// APGR of scores on the calibration calls (the cheap and strong models' accuracies taken from them).
fn calibration_apgr(o_cal: &[Outcome]) -> impl Fn(&[f64]) -> f64 + '_ {
    let accuracy = |f: fn(&Outcome) -> bool| o_cal.iter().filter(|o| f(o)).count() as f64 / o_cal.len().max(1) as f64;
    let (cheap, strong) = (accuracy(|o| o.cheap_correct), accuracy(|o| o.strong_correct));
    move |scores| apgr(&curve(scores, o_cal, 100), cheap, strong)
}

/// A task's learned router: calls scoring at least `threshold` go to `cheap`, the rest to `strong`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRouter {
    pub cheap: String,
    pub strong: String,
    #[serde(flatten)]
    pub scorer: Scorer,
    pub threshold: f64,
    /// The agreement the threshold was calibrated to.
    pub bound: f64,
    pub trained_on: usize,
    pub calibrated_on: usize,
    /// On the calibration calls: the share kept on the cheap model, and the agreement reached.
    pub cheap_share: f64,
    pub calibration_agreement: f64,
}

impl TaskRouter {
    /// True when the call should go to the cheap model.
    pub fn cheap(&self, features: &[f32]) -> bool {
        self.scorer.score(features) >= self.threshold
    }
}

/// One question's outcome under each model, and each model's cost for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub cheap_correct: bool,
    pub strong_correct: bool,
    pub cheap_cost: f64,
    pub strong_cost: f64,
}

/// One point of a router's cost/quality curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The share of calls sent to the strong model.
    pub strong_share: f64,
    pub accuracy: f64,
    pub cost: f64,
}

/// Sends the `k` calls with the lowest scores (least confidence in the cheap model) to the strong model, for
/// every k in `steps` even steps, and measures each point.
pub fn curve(scores: &[f64], outcomes: &[Outcome], steps: usize) -> Vec<Point> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let n = order.len().max(1);
    (0..=steps)
        .map(|i| {
            let k = (i * n).div_ceil(steps).min(n);
            let mut strong = vec![false; n];
            for &j in &order[..k.min(order.len())] {
                strong[j] = true;
            }
            point(outcomes, &strong)
        })
        .collect()
}

fn point(outcomes: &[Outcome], strong: &[bool]) -> Point {
    let n = outcomes.len().max(1) as f64;
    let (mut correct, mut cost, mut k) = (0.0, 0.0, 0.0);
    for (o, s) in outcomes.iter().zip(strong) {
        if *s {
            k += 1.0;
            correct += f64::from(u8::from(o.strong_correct));
            cost += o.strong_cost;
        } else {
            correct += f64::from(u8::from(o.cheap_correct));
            cost += o.cheap_cost;
        }
    }
    Point {
        strong_share: k / n,
        accuracy: correct / n,
        cost,
    }
}

/// A random router's curve, averaged over `trials` shuffles: what "no signal" measures to.
pub fn random_curve(outcomes: &[Outcome], steps: usize, trials: usize, seed: u64) -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sum = vec![
        Point {
            strong_share: 0.0,
            accuracy: 0.0,
            cost: 0.0
        };
        steps + 1
    ];
    for _ in 0..trials.max(1) {
        let mut scores: Vec<f64> = (0..outcomes.len()).map(|i| i as f64).collect();
        scores.shuffle(&mut rng);
        for (s, p) in sum.iter_mut().zip(curve(&scores, outcomes, steps)) {
            s.strong_share += p.strong_share / trials.max(1) as f64;
            s.accuracy += p.accuracy / trials.max(1) as f64;
            s.cost += p.cost / trials.max(1) as f64;
        }
    }
    sum
}

/// Performance gap recovered: 0 at the cheap model's accuracy, 1 at the strong model's.
pub fn pgr(accuracy: f64, cheap: f64, strong: f64) -> f64 {
    if (strong - cheap).abs() < 1e-12 {
        return 0.0;
    }
    (accuracy - cheap) / (strong - cheap)
}

/// Average PGR over the share of strong calls (the area under the PGR curve, by trapezoids).
pub fn apgr(curve: &[Point], cheap: f64, strong: f64) -> f64 {
    curve
        .windows(2)
        .map(|w| {
            let dx = w[1].strong_share - w[0].strong_share;
            dx * (pgr(w[0].accuracy, cheap, strong) + pgr(w[1].accuracy, cheap, strong)) / 2.0
        })
        .sum()
}

/// Call-performance threshold: the least share of strong calls reaching a PGR of `target`.
pub fn cpt(curve: &[Point], cheap: f64, strong: f64, target: f64) -> Option<f64> {
    curve
        .iter()
        .find(|p| pgr(p.accuracy, cheap, strong) >= target)
        .map(|p| p.strong_share)
}

/// The score under which calls go to the strong model: the highest-cost-saving threshold whose accuracy on
/// the calibration outcomes still reaches `bound` (an absolute accuracy). `None` when even all-strong
/// does not.
pub fn calibrate(scores: &[f64], outcomes: &[Outcome], bound: f64) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Start with everything on the strong model; move the most confident calls to the cheap one while the
    // accuracy holds, and keep the furthest point that held.
    let n = outcomes.len() as f64;
    let mut correct: f64 = outcomes.iter().map(|o| f64::from(u8::from(o.strong_correct))).sum();
    if correct / n < bound {
        return None;
    }
    // Calls with equal scores move together: a threshold cannot split them.
    // Not infinity: a threshold is stored as JSON, which has no infinities.
    let mut best = f64::MAX;
    let mut k = order.len();
    while k > 0 {
        let score = scores[order[k - 1]];
        while k > 0 && scores[order[k - 1]] == score {
            let o = &outcomes[order[k - 1]];
            correct += f64::from(u8::from(o.cheap_correct)) - f64::from(u8::from(o.strong_correct));
            k -= 1;
        }
        if correct / n >= bound {
            best = score;
        }
    }
    // Calls scoring at least `best` go cheap (none when it stays at the maximum).
    Some(best)
}

/// Applies a threshold: calls scoring below it go to the strong model.
pub fn route_with(scores: &[f64], threshold: f64, outcomes: &[Outcome]) -> Point {
    let strong: Vec<bool> = scores.iter().map(|s| *s < threshold).collect();
    point(outcomes, &strong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(n: usize) -> Vec<Outcome> {
        // The cheap model is right on even items only; the strong one always.
        (0..n)
            .map(|i| Outcome {
                cheap_correct: i % 2 == 0,
                strong_correct: true,
                cheap_cost: 1.0,
                strong_cost: 10.0,
            })
            .collect()
    }

    #[test]
    fn logistic_regression_learns_a_separable_rule() {
        let x: Vec<Vec<f32>> = (0..400).map(|i| vec![(i % 2) as f32, (i % 7) as f32]).collect();
        let y: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
        let m = Logistic::fit(&x, &y, 1e-4, 300);
        assert!(m.predict(&[0.0, 3.0]) > 0.9);
        assert!(m.predict(&[1.0, 3.0]) < 0.1);
        let round = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Logistic>(&round).unwrap(), m);
    }

    #[test]
    fn a_perfect_router_recovers_the_gap_and_a_random_one_half() {
        let o = outcomes(1000);
        let perfect: Vec<f64> = (0..1000).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let c = curve(&perfect, &o, 100);
        assert_eq!(c[0].accuracy, 0.5);
        assert_eq!(c[100].accuracy, 1.0);
        assert_eq!(c[50].accuracy, 1.0, "half the calls to strong fixes every miss");
        let a = apgr(&c, 0.5, 1.0);
        assert!((a - 0.75).abs() < 0.01, "{a}");
        assert_eq!(cpt(&c, 0.5, 1.0, 0.5), Some(0.25));
        let r = random_curve(&o, 100, 50, 1);
        let ar = apgr(&r, 0.5, 1.0);
        assert!((ar - 0.5).abs() < 0.02, "{ar}");
    }

    #[test]
    fn calibration_keeps_the_bound_at_the_lowest_cost() {
        let o = outcomes(1000);
        let perfect: Vec<f64> = (0..1000).map(|i| if i % 2 == 0 { 0.9 } else { 0.1 }).collect();
        let t = calibrate(&perfect, &o, 0.99).unwrap();
        let p = route_with(&perfect, t, &o);
        assert!(p.accuracy >= 0.99);
        assert!(
            (p.strong_share - 0.5).abs() < 1e-9,
            "only the cheap model's misses go strong: {p:?}"
        );
        assert!(calibrate(&perfect, &o, 1.01).is_none());
    }

    #[test]
    fn neighbours_win_where_a_linear_model_cannot_separate() {
        // The cheap model fails on two opposite clusters (an XOR a linear model of the embedding cannot
        // draw) and is right in between; neighbours see the clusters.
        let point = |i: usize| -> (Vec<f32>, bool) {
            let angle = (i % 8) as f32 * std::f32::consts::FRAC_PI_4 + (i / 8 % 5) as f32 * 0.01;
            let e = vec![angle.cos(), angle.sin(), 0.0];
            let wrong = i.is_multiple_of(4);
            (features(&e, "q"), !wrong)
        };
        let data: Vec<(Vec<f32>, Outcome)> = (0..800)
            .map(|i| {
                let (x, right) = point(i);
                let o = Outcome {
                    cheap_correct: right,
                    strong_correct: true,
                    cheap_cost: 1.0,
                    strong_cost: 10.0,
                };
                (x, o)
            })
            .collect();
        let (train, cal) = data.split_at(600);
        let split = |d: &[(Vec<f32>, Outcome)]| -> (Vec<Vec<f32>>, Vec<Outcome>) { d.iter().cloned().unzip() };
        let ((xt, ot), (xc, oc)) = (split(train), split(cal));
        let (_, linear) = fit_linear(&xt, &ot, &xc, &oc);
        let (scorer, best) = fit(&xt, &ot, &xc, &oc, 3);
        assert!(scorer.neighbours.is_some(), "{}", scorer.describe());
        assert!(best > 0.7 && best > linear + 0.1, "neighbours {best}, linear {linear}");
        // A stored router round-trips, and one stored before neighbours existed still reads.
        let router = TaskRouter {
            cheap: "c".into(),
            strong: "s".into(),
            scorer: scorer.clone(),
            threshold: -0.5,
            bound: 0.9,
            trained_on: 600,
            calibrated_on: 200,
            cheap_share: 0.7,
            calibration_agreement: 0.95,
        };
        let json = serde_json::to_value(&router).unwrap();
        assert_eq!(serde_json::from_value::<TaskRouter>(json.clone()).unwrap(), router);
        let mut old = json;
        let old_obj = old.as_object_mut().unwrap();
        old_obj.remove("neighbours");
        old_obj.remove("blend");
        old_obj.remove("strong_model");
        let old: TaskRouter = serde_json::from_value(old).unwrap();
        assert_eq!(old.scorer.blend, 1.0);
        assert!(old.scorer.neighbours.is_none());
        assert_eq!(old.scorer.score(&xc[0]), scorer.cheap.predict(&xc[0]));
    }
}
