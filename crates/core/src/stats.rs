//! Intervals for agreement rates, and the sequential plan that lets a validation stop as soon as the
//! evidence decides, without the false-pass rate growing with every look.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// A rate with its two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub successes: u64,
    pub n: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
    /// The interval's confidence, e.g. 0.95.
    pub confidence: f64,
}

/// The two-sided normal quantile for a confidence level (1.96 for 0.95).
pub fn z(confidence: f64) -> f64 {
    let normal = Normal::standard();
    normal.inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

/// A confidence level as people read it, the same wherever it is printed: 0.9875 is "98.75%", 0.95 "95%".
pub fn confidence_label(confidence: f64) -> String {
    format!("{}%", (confidence * 10_000.0).round() / 100.0)
}

/// The Wilson score interval: unlike the normal approximation it stays inside [0, 1] and behaves at rates
/// near 0 and 1, which is where agreement and error rates live.
pub fn wilson(successes: u64, n: u64, confidence: f64) -> Rate {
    if n == 0 {
        return Rate {
            successes,
            n,
            rate: 0.0,
            low: 0.0,
            high: 1.0,
            confidence,
        };
    }
    let z = z(confidence);
    let nf = n as f64;
    let p = successes.min(n) as f64 / nf;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * nf);
    let spread = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    let denom = 1.0 + z2 / nf;
    Rate {
        successes,
        n,
        rate: p,
        low: ((centre - spread) / denom).max(0.0),
        high: ((centre + spread) / denom).min(1.0),
        confidence,
    }
}

/// When to look at the evidence: after `first` scored calls, then each time the count doubles, up to the
/// whole sample. Each look uses a wider interval (Bonferroni over the looks), so the chance that any look
/// wrongly passes stays within the overall confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub looks: Vec<usize>,
    /// The confidence each look's interval is computed at.
    pub per_look_confidence: f64,
    /// The confidence the verdict is stated at.
    pub confidence: f64,
}

impl Plan {
    pub fn new(sample: usize, first: usize, confidence: f64) -> Plan {
        let mut looks = Vec::new();
        let mut n = first.max(1).min(sample);
        while n < sample {
            looks.push(n);
            n *= 2;
        }
        looks.push(sample);
        let alpha = 1.0 - confidence;
        Plan {
            per_look_confidence: 1.0 - alpha / looks.len() as f64,
            looks,
            confidence,
        }
    }

    /// The fewest scored calls with which a perfect agreement could clear `bound` at this plan's
    /// per-look confidence: below it, no verdict can pass.
    pub fn min_to_pass(&self, bound: f64) -> usize {
        min_to_pass(bound, self.per_look_confidence)
    }
}

/// The fewest calls, all agreeing, whose interval's lower end clears `bound`.
pub fn min_to_pass(bound: f64, confidence: f64) -> usize {
    if bound <= 0.0 {
        return 1;
    }
    if bound >= 1.0 {
        return usize::MAX;
    }
    // With every call agreeing the Wilson lower end is n / (n + z²).
    let z2 = z(confidence).powi(2);
    (z2 * bound / (1.0 - bound)).floor() as usize + 1
}

/// How many calls the verdict's own interval (Wilson, at `confidence`) needs at this rate before its lower end
/// clears `bound`, for the message when a verdict stays open. `None` when the rate does not clear the bound.
pub fn needed_for(rate: f64, bound: f64, confidence: f64) -> Option<usize> {
    if rate.is_nan() || rate <= bound {
        return None;
    }
    let clears = |n: u64| wilson((rate * n as f64).round() as u64, n, confidence).low >= bound;
    // Double until the interval clears, then halve the gap: the smallest count that does.
    let mut high = 1u64;
    while !clears(high) {
        high = high.checked_mul(2).filter(|h| *h <= 1 << 40)?;
    }
    let mut low = high / 2;
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if clears(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_wilson_match_textbook_values() {
        assert!((z(0.95) - 1.959964).abs() < 1e-5);
        assert!((z(0.99) - 2.575829).abs() < 1e-5);
        // 81 of 263 at 95%: Wilson gives [0.2553, 0.3662] (Newcombe 1998, example).
        let r = wilson(81, 263, 0.95);
        assert!((r.low - 0.2553).abs() < 5e-4, "{r:?}");
        assert!((r.high - 0.3662).abs() < 5e-4, "{r:?}");
        let all = wilson(50, 50, 0.95);
        assert_eq!(all.high, 1.0);
        assert!((all.low - 50.0 / (50.0 + 1.959964f64.powi(2))).abs() < 1e-6);
        let none = wilson(0, 0, 0.95);
        assert_eq!((none.low, none.high), (0.0, 1.0));
    }

    #[test]
    fn plans_double_up_to_the_sample_and_split_the_error() {
        let p = Plan::new(400, 50, 0.95);
        assert_eq!(p.looks, vec![50, 100, 200, 400]);
        assert!((p.per_look_confidence - 0.9875).abs() < 1e-12);
        let single = Plan::new(30, 50, 0.95);
        assert_eq!(single.looks, vec![30]);
        assert_eq!(single.per_look_confidence, 0.95);
    }

    #[test]
    fn minimum_sizes_follow_from_the_bound() {
        // 95% bound at 95% confidence: n / (n + 3.84) > 0.95 first holds at n = 73.
        let n = min_to_pass(0.95, 0.95);
        assert_eq!(n, 73);
        assert!(wilson(n as u64, n as u64, 0.95).low > 0.95);
        assert!(wilson(n as u64 - 1, n as u64 - 1, 0.95).low <= 0.95);
        assert_eq!(min_to_pass(1.0, 0.95), usize::MAX);
        assert_eq!(confidence_label(0.9875), "98.75%");
        assert_eq!(confidence_label(0.95), "95%");
        assert!(needed_for(0.94, 0.95, 0.95).is_none());
        let need = needed_for(0.99, 0.95, 0.95).unwrap();
        assert!((60..200).contains(&need), "{need}");
        // The count is the one at which the verdict's own interval clears the bound, not an approximation of
        // it: 97% at a 98.75% interval (a sequential look) against a 95% bound.
        let need = needed_for(0.97, 0.95, 0.9875).unwrap();
        assert!(wilson((0.97 * need as f64).round() as u64, need as u64, 0.9875).low >= 0.95);
        assert!(wilson((0.97 * (need - 1) as f64).round() as u64, need as u64 - 1, 0.9875).low < 0.95);
        assert!(
            need > 400,
            "97% cannot clear 95% at a 98.75% interval on 400 calls: {need}"
        );
    }
}
