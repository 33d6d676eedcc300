//! Time series for the dashboard's charts: calls and spend per bucket by model, task or cache outcome, and
//! how many policies stood at each stage over time. Every series is bounded (buckets and keys) whatever the
//! window or the traffic, so a chart never asks the store or the browser for more than a screen can show.

use std::collections::{BTreeMap, HashMap};

use leanlm_store::{SeriesBy, SeriesPoint, Span, Store};
use serde::Serialize;

use crate::{ControlError, unix_ms};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The most buckets a series has; a wider window gets wider buckets.
pub const MAX_BUCKETS: i64 = 1_000;
/// The most keys a series names; the rest are summed under `other`.
pub const MAX_KEYS: usize = 8;
/// The most policy changes a stage chart replays.
const MAX_CHANGES: usize = 100_000;

/// Series over shared buckets: `values[k][b]` is key `k`'s figure in bucket `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub bucket_ms: i64,
    /// Start of each bucket, ms since the epoch (UTC).
    pub buckets: Vec<i64>,
    pub series: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub key: String,
    pub calls: Vec<u64>,
    pub cost_usd: Vec<f64>,
    pub cost_avoided_usd: Vec<f64>,
}

/// The bucket width for a window: hours up to two days, else days, widened (by whole days) until the
/// window fits in [`MAX_BUCKETS`].
pub fn bucket_for(since_ms: i64, until_ms: i64) -> i64 {
    let width = (until_ms - since_ms).max(1);
    if width <= 2 * DAY_MS {
        return HOUR_MS;
    }
    let days = (width / DAY_MS / MAX_BUCKETS) + 1;
    days * DAY_MS
}

/// Calls and spend per bucket of the window, by `by`. A window with no start starts at the first call.
pub fn calls(store: &Store, by: SeriesBy, span: Span) -> Result<Series, ControlError> {
    let until = span.until_ms.unwrap_or_else(|| unix_ms() + 1);
    let since = match span.since_ms {
        Some(s) => s,
        None => store.first_call_ms()?.unwrap_or(until - DAY_MS),
    };
    let bucket = bucket_for(since, until);
    let points = store.series(
        by,
        Span {
            since_ms: Some(since),
            until_ms: Some(until),
        },
        bucket,
    )?;
    Ok(pivot(points, since, until, bucket))
}

/// The first bucket's start (aligned to the bucket's width in UTC) and every bucket's start up to `until`.
fn starts(since: i64, until: i64, bucket: i64) -> (i64, Vec<i64>) {
    let first = since.div_euclid(bucket) * bucket;
    let buckets = (0..)
        .map(|i| first + i * bucket)
        .take_while(|b| *b < until)
        .take(MAX_BUCKETS as usize + 1)
        .collect();
    (first, buckets)
}

/// Lays points out over the buckets from `since` to `until`, keeping the [`MAX_KEYS`] keys that cost most
/// (or are called most, where nothing is priced) and summing the rest as `other`.
fn pivot(points: Vec<SeriesPoint>, since: i64, until: i64, bucket: i64) -> Series {
    let (first, buckets) = starts(since, until, bucket);
    let mut totals: HashMap<&str, (f64, u64)> = HashMap::new();
    for p in &points {
        let t = totals.entry(&p.key).or_default();
        t.0 += p.cost_usd;
        t.1 += p.calls;
    }
    let mut ranked: Vec<(&str, (f64, u64))> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(b.0)));
    let keep: Vec<String> = ranked.iter().take(MAX_KEYS).map(|(k, _)| (*k).to_owned()).collect();
    let other = ranked.len() > MAX_KEYS;
    let mut lines: Vec<Line> = keep
        .iter()
        .cloned()
        .chain(other.then(|| "other".to_owned()))
        .map(|key| Line {
            key,
            calls: vec![0; buckets.len()],
            cost_usd: vec![0.0; buckets.len()],
            cost_avoided_usd: vec![0.0; buckets.len()],
        })
        .collect();
    let index: HashMap<&str, usize> = keep.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    for p in &points {
        let Ok(b) = usize::try_from((p.at_ms - first) / bucket) else {
            continue;
        };
        if b >= buckets.len() {
            continue;
        }
        let Some(line) = index.get(p.key.as_str()).copied().or(other.then_some(keep.len())) else {
            continue;
        };
        let l = &mut lines[line];
        l.calls[b] += p.calls;
        l.cost_usd[b] += p.cost_usd;
        l.cost_avoided_usd[b] += p.cost_avoided_usd;
    }
    Series {
        bucket_ms: bucket,
        buckets,
        series: lines,
    }
}

/// How many policies stood at each stage at the end of each bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stages {
    pub bucket_ms: i64,
    pub buckets: Vec<i64>,
    /// Stage name → count per bucket.
    pub stages: BTreeMap<String, Vec<u64>>,
}

/// Replays the policy log up to each bucket's end. A window with no start starts at the first change.
pub fn stages(store: &Store, span: Span) -> Result<Stages, ControlError> {
    let until = span.until_ms.unwrap_or_else(|| unix_ms() + 1);
    let changes = store.policy_changes(Some(until), MAX_CHANGES)?;
    let since = span
        .since_ms
        .or_else(|| changes.first().map(|c| c.at_ms))
        .unwrap_or(until - DAY_MS);
    let bucket = bucket_for(since, until);
    let (_, buckets) = starts(since, until, bucket);
    let mut current: HashMap<&str, &str> = HashMap::new();
    let mut stages: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut next = changes.iter().peekable();
    for (i, b) in buckets.iter().enumerate() {
        let end = b + bucket;
        while let Some(c) = next.next_if(|c| c.at_ms < end) {
            current.insert(&c.task_id, &c.to_stage);
        }
        for stage in current.values() {
            stages
                .entry((*stage).to_owned())
                .or_insert_with(|| vec![0; buckets.len()])[i] += 1;
        }
    }
    Ok(Stages {
        bucket_ms: bucket,
        buckets,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_ms: i64, key: &str, calls: u64, cost: f64) -> SeriesPoint {
        SeriesPoint {
            at_ms,
            key: key.into(),
            calls,
            cost_usd: cost,
            cost_avoided_usd: 0.0,
        }
    }

    #[test]
    fn buckets_are_hours_for_two_days_and_days_beyond_and_never_too_many() {
        assert_eq!(bucket_for(0, DAY_MS), HOUR_MS);
        assert_eq!(bucket_for(0, 30 * DAY_MS), DAY_MS);
        let ten_years = 3650 * DAY_MS;
        assert!(ten_years / bucket_for(0, ten_years) <= MAX_BUCKETS);
    }

    #[test]
    fn the_costliest_keys_are_kept_and_the_rest_summed_as_other() {
        let mut points = Vec::new();
        for k in 0..12 {
            points.push(point(0, &format!("m{k:02}"), 1, k as f64));
            points.push(point(DAY_MS, &format!("m{k:02}"), 2, k as f64));
        }
        let s = pivot(points, 0, 2 * DAY_MS + 1, DAY_MS);
        assert_eq!(s.buckets, vec![0, DAY_MS, 2 * DAY_MS]);
        assert_eq!(s.series.len(), MAX_KEYS + 1);
        assert_eq!(s.series[0].key, "m11", "the costliest first");
        let other = s.series.last().unwrap();
        assert_eq!(other.key, "other");
        assert_eq!(
            other.calls,
            vec![4, 8, 0],
            "m00..m03 in the first two buckets, nothing in the third"
        );
        let total: u64 = s.series.iter().flat_map(|l| l.calls.iter()).sum();
        assert_eq!(total, 36, "every call is somewhere");
    }
}
