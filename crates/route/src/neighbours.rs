//! Similarity-weighted nearest neighbours (RouteLLM's "SW ranking"): a call is scored by the outcomes of the
//! training calls most like it, each weighted by its cosine similarity to the fourth power, so a few close
//! look-alikes outweigh a crowd of loose ones. Where a linear model of the embedding sees one direction,
//! neighbours see the clusters of questions a cheap model gets wrong.

use leanlm_semantic::{dot_i8, quantise};
use serde::{Deserialize, Serialize};

/// The most training calls a router keeps: 10,000 × 384 dimensions is under 4 MB, and a scan of them costs
/// well under a millisecond next to the ~20 ms the embedding itself takes.
pub const MAX_NEIGHBOURS: usize = 10_000;

/// Training calls' embeddings (unit length, stored as i8 with a scale each) and their gains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// How many of the nearest calls vote.
    pub k: usize,
    dim: usize,
    #[serde(with = "packed")]
    vectors: Vec<i8>,
    scales: Vec<f32>,
    /// Each call's gain: the cheap model right (1) minus the strong model right (1): -1, 0 or 1.
    gains: Vec<i8>,
}

impl Neighbours {
    /// Keeps `embeddings[i]` with `gains[i]`; past [`MAX_NEIGHBOURS`], an evenly spaced subset.
    pub fn new(embeddings: &[&[f32]], gains: &[i8], k: usize) -> Neighbours {
        let n = embeddings.len().min(gains.len());
        let keep: Vec<usize> = if n > MAX_NEIGHBOURS {
            (0..MAX_NEIGHBOURS).map(|i| i * n / MAX_NEIGHBOURS).collect()
        } else {
            (0..n).collect()
        };
        let dim = embeddings.first().map_or(0, |e| e.len());
        let mut out = Neighbours {
            k: k.max(1),
            dim,
            vectors: Vec::with_capacity(keep.len() * dim),
            scales: Vec::with_capacity(keep.len()),
            gains: Vec::with_capacity(keep.len()),
        };
        for i in keep {
            let Some(e) = embeddings.get(i).filter(|e| e.len() == dim) else {
                continue;
            };
            let (q, scale) = quantise(&unit(e));
            out.vectors.extend(q);
            out.scales.push(scale);
            out.gains.push(gains[i].clamp(-1, 1));
        }
        out
    }

    /// The embedding length the neighbours were stored with.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.gains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gains.is_empty()
    }

    /// The similarity-weighted mean gain of the `k` stored calls nearest `embedding` (its first
    /// [`Self::dim`] values), in [-1, 1]; 0 with nothing to go on.
    pub fn score(&self, embedding: &[f32]) -> f64 {
        if self.dim == 0 || embedding.len() < self.dim || self.is_empty() {
            return 0.0;
        }
        let (query, query_scale) = quantise(&unit(&embedding[..self.dim]));
        let mut sims: Vec<(f32, i8)> = self
            .vectors
            .chunks_exact(self.dim)
            .zip(&self.scales)
            .zip(&self.gains)
            .map(|((v, s), g)| (dot_i8(&query, v) as f32 * query_scale * s, *g))
            .collect();
        let k = self.k.clamp(1, sims.len());
        if k < sims.len() {
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        }
        let (mut num, mut den) = (0.0, 0.0);
        for (sim, gain) in &sims[..k] {
            let w = f64::from(sim.max(0.0)).powi(4);
            num += w * f64::from(*gain);
            den += w;
        }
        if den > 0.0 { num / den } else { 0.0 }
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// i8 vectors as one base64 string: a quarter of the JSON a number array takes.
mod packed {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[i8], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().map(|x| x.to_le_bytes()[0]).collect();
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i8>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        Ok(bytes.into_iter().map(|b| i8::from_le_bytes([b])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin(), 0.0, 0.0]
    }

    #[test]
    fn near_calls_outvote_far_ones() {
        // Calls near angle 0 were cheap-right (gain 0: both right); near angle 1.5 cheap-wrong (-1).
        let e: Vec<Vec<f32>> = (0..40)
            .map(|i| vector(if i < 20 { 0.01 * i as f32 } else { 1.5 }))
            .collect();
        let g: Vec<i8> = (0..40).map(|i| if i < 20 { 0 } else { -1 }).collect();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let n = Neighbours::new(&refs, &g, 30);
        assert!(n.score(&vector(0.05)) > -0.05, "{}", n.score(&vector(0.05)));
        assert!(n.score(&vector(1.45)) < -0.95, "{}", n.score(&vector(1.45)));
        // Shorter queries than the stored dimension score nothing rather than panic.
        assert_eq!(n.score(&[1.0]), 0.0);
        let round: Neighbours = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(round, n);
        assert_eq!(round.score(&vector(1.45)), n.score(&vector(1.45)));
    }

    #[test]
    fn keeps_at_most_the_cap() {
        let e: Vec<Vec<f32>> = (0..MAX_NEIGHBOURS + 500).map(|i| vector(i as f32)).collect();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let n = Neighbours::new(&refs, &vec![1; refs.len()], 10);
        assert_eq!(n.len(), MAX_NEIGHBOURS);
    }

    #[test]
    fn a_corrupt_stored_router_scores_nothing_instead_of_panicking() {
        let json = r#"{"k":5,"dim":0,"vectors":"","scales":[],"gains":[]}"#;
        let n: Neighbours = serde_json::from_str(json).unwrap();
        assert_eq!(n.score(&[1.0, 2.0]), 0.0);
        let json = r#"{"k":5,"dim":2,"vectors":"AQID","scales":[1.0,1.0],"gains":[1,1]}"#;
        let n: Neighbours = serde_json::from_str(json).unwrap();
        assert!(n.score(&[1.0, 0.0]).is_finite());
    }
}
