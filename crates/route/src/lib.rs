//! Learned routing between a cheap and a strong model, as in RouteLLM: a model predicts from a prompt's
//! features whether the cheap model's answer will do; calls it doubts go to the strong model. The threshold
//! is calibrated on held-out outcomes to a quality bound at the lowest cost. Also the metrics RouteLLM
//! reports: the cost/quality curve, PGR, APGR and CPT.

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

/// A task's learned router: calls scoring at least `threshold` go to `cheap`, the rest to `strong`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRouter {
    pub cheap: String,
    pub strong: String,
    /// P(the cheap model's answer agrees with the strong one's) from [`features`].
    pub model: Logistic,
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
        self.model.predict(features) >= self.threshold
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
    let mut best = f64::INFINITY;
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
    // Calls scoring at least `best` go cheap (none when it stays infinite).
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
}
