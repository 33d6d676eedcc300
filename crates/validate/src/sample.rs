//! Which logged calls a validation replays.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Picks `n` of the calls, stratified over time: the calls (in time order) are cut into `n` equal strata
/// and one is drawn from each, so a week of traffic is judged on the whole week, not on its busiest hour.
/// The picks come back shuffled, so that any prefix (a sequential look) is itself spread over time.
pub fn stratified<T: Clone>(calls: &[(i64, T)], n: usize, seed: u64) -> Vec<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sorted: Vec<&(i64, T)> = calls.iter().collect();
    sorted.sort_by_key(|c| c.0);
    let n = n.min(sorted.len());
    let mut picks: Vec<T> = (0..n)
        .map(|i| {
            let lo = i * sorted.len() / n;
            let hi = ((i + 1) * sorted.len() / n).max(lo + 1);
            let j = rand::Rng::random_range(&mut rng, lo..hi);
            sorted[j].1.clone()
        })
        .collect();
    picks.shuffle(&mut rng);
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cover_the_whole_period_once_each() {
        // 900 calls on day 0, 100 on day 1: a uniform draw of 100 would take ~10 from day 1.
        let calls: Vec<(i64, usize)> = (0..1000usize)
            .map(|i| (if i < 900 { i as i64 } else { 86_400_000 + i as i64 }, i))
            .collect();
        let picks = stratified(&calls, 100, 1);
        assert_eq!(picks.len(), 100);
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "no call twice");
        // Strata are by position in time, so each tenth of the log gives a tenth of the sample.
        let late = picks.iter().filter(|&&i| i >= 900).count();
        assert_eq!(late, 10);
        // The order is shuffled: the first 20 are not all early.
        assert!(picks[..20].iter().any(|&i| i >= 500));
        assert_eq!(stratified(&calls, 100, 1), picks, "a seed gives the same sample");
        assert_ne!(stratified(&calls, 100, 2), picks);
        assert_eq!(stratified(&calls, 5000, 1).len(), 1000);
    }
}
