//! The bounded-error threshold: from a task's own verified would-be hits, the lowest similarity at which
//! serving from the cache keeps the false-hit rate's upper confidence bound under the task's bound.
//!
//! A would-be hit is a request whose nearest cached neighbour passed the guards. Until the evidence says
//! serving is safe, every would-be hit goes upstream anyway (it costs nothing extra), and its fresh answer
//! is compared with the cached one by the task's scorer; once serving, a sample of hits still is. The
//! threshold is then read off those outcomes: the sets "all verified hits at or above similarity s" are
//! nested, so walking down from the most similar, each step adds evidence, and the threshold is the lowest
//! step whose Wilson upper bound on the false-hit rate stays within the bound.

use leanlm_core::stats::wilson;
use serde::{Deserialize, Serialize};

/// One verified would-be hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// The request's similarity to the cached one it would have been served from.
    pub similarity: f32,
    /// Whether the fresh answer agreed with the cached one.
    pub agreed: bool,
}

/// What the evidence says about serving a task from the semantic cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Serve hits at or above this similarity; `None` while no threshold keeps the bound.
    pub threshold: Option<f32>,
    /// Verified would-be hits at or above the threshold (all of them when there is none).
    pub n: u64,
    pub false_hits: u64,
    /// The false-hit rate among them, and the upper end of its confidence interval.
    pub rate: f64,
    pub upper: f64,
    /// The bound the upper end is held under.
    pub bound: f64,
}

/// The confidence of the interval whose upper end is held under the bound (two-sided, so the upper end
/// alone holds with 97.5%: a margin for reading the threshold off the same evidence).
pub const CONFIDENCE: f64 = 0.95;

/// Reads the threshold off the evidence for a false-hit bound such as 0.01.
pub fn calibrate(evidence: &[Verified], bound: f64) -> Estimate {
    let mut sorted: Vec<Verified> = evidence.iter().filter(|v| v.similarity.is_finite()).copied().collect();
    sorted.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    let estimate = |threshold: Option<f32>, n: u64, false_hits: u64| {
        let r = wilson(false_hits, n, CONFIDENCE);
        Estimate {
            threshold,
            n,
            false_hits,
            rate: r.rate,
            upper: r.high,
            bound,
        }
    };
    let (mut n, mut false_hits) = (0u64, 0u64);
    let mut best: Option<Estimate> = None;
    let mut i = 0;
    while i < sorted.len() {
        // Take every sample at this similarity together: a threshold cannot split them.
        let s = sorted[i].similarity;
        while i < sorted.len() && sorted[i].similarity == s {
            n += 1;
            false_hits += u64::from(!sorted[i].agreed);
            i += 1;
        }
        let e = estimate(Some(s), n, false_hits);
        if e.upper <= bound {
            best = Some(e);
        }
    }
    best.unwrap_or_else(|| estimate(None, n, false_hits))
}

/// How many verified would-be hits, all agreeing, it takes before any threshold can keep `bound`.
pub fn evidence_needed(bound: f64) -> u64 {
    (1..1_000_000u64)
        .find(|&n| wilson(0, n, CONFIDENCE).high <= bound)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(similarity: f32, agreed: bool) -> Verified {
        Verified { similarity, agreed }
    }

    #[test]
    fn no_threshold_without_enough_evidence() {
        let e: Vec<_> = (0..50).map(|i| v(0.9 + i as f32 * 0.001, true)).collect();
        let est = calibrate(&e, 0.01);
        assert_eq!(est.threshold, None);
        assert_eq!(est.n, 50);
        assert!(est.upper > 0.01);
        assert_eq!(calibrate(&[], 0.01).threshold, None);
    }

    #[test]
    fn the_threshold_stops_above_the_false_hits() {
        // 600 agreeing above 0.9, then false hits mixed in below it.
        let mut e: Vec<_> = (0..600).map(|i| v(0.9 + (i % 90) as f32 * 0.001, true)).collect();
        for i in 0..100 {
            e.push(v(0.85 + (i % 40) as f32 * 0.001, i % 3 != 0));
        }
        let est = calibrate(&e, 0.01);
        let t = est.threshold.expect("600 clean hits keep a 1% bound");
        assert!(t >= 0.88, "{t}");
        assert!(est.upper <= 0.01);
        assert!(est.n >= 600);
        // With a looser bound the threshold may go lower, never higher.
        let loose = calibrate(&e, 0.2);
        assert!(loose.threshold.unwrap() <= t);
    }

    #[test]
    fn false_hits_at_the_top_forbid_serving() {
        let mut e: Vec<_> = (0..1000).map(|i| v(0.8 + (i % 100) as f32 * 0.001, true)).collect();
        for _ in 0..30 {
            e.push(v(0.99, false));
        }
        assert_eq!(calibrate(&e, 0.01).threshold, None);
    }

    #[test]
    fn evidence_needed_matches_the_interval() {
        let n = evidence_needed(0.01);
        assert!((370..=400).contains(&n), "{n}");
        assert!(wilson(0, n, CONFIDENCE).high <= 0.01);
        assert!(wilson(0, n - 1, CONFIDENCE).high > 0.01);
    }
}
