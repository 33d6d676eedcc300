//! Exact nearest-neighbour search over one partition of the cache.
//!
//! A partition holds the entries of one task, served model and set of sampling parameters, so it stays small
//! next to the whole cache; an exact scan over a contiguous matrix of unit vectors has no recall loss, no
//! build step and no tuning, and with AVX2 it scans about a hundred thousand 384-dimension vectors in a few
//! milliseconds. Entries are kept in a ring: once full, the oldest is overwritten.

/// One partition: unit vectors of one dimension, each with an item.
pub struct Partition<T> {
    dim: usize,
    capacity: usize,
    vectors: Vec<f32>,
    items: Vec<T>,
    /// The slot the next insertion overwrites once the ring is full.
    next: usize,
}

/// A search result: the slot of an entry and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub slot: usize,
    pub similarity: f32,
}

impl<T> Partition<T> {
    /// An empty partition for vectors of `dim` dimensions holding at most `capacity` entries (at least one).
    pub fn new(dim: usize, capacity: usize) -> Partition<T> {
        Partition {
            dim,
            capacity: capacity.max(1),
            vectors: Vec::new(),
            items: Vec::new(),
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Adds an entry, evicting the oldest when full; returns its slot. A vector of the wrong dimension is
    /// refused (`None`): it would compare with nothing.
    pub fn insert(&mut self, vector: &[f32], item: T) -> Option<usize> {
        if vector.len() != self.dim {
            return None;
        }
        if self.items.len() < self.capacity {
            self.vectors.extend_from_slice(vector);
            self.items.push(item);
            return Some(self.items.len() - 1);
        }
        let slot = self.next;
        self.vectors[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(vector);
        self.items[slot] = item;
        self.next = (slot + 1) % self.capacity;
        Some(slot)
    }

    pub fn get(&self, slot: usize) -> Option<&T> {
        self.items.get(slot)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.items.get_mut(slot)
    }

    /// The `k` entries most similar to `query` (a unit vector), most similar first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<Neighbour> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut best: Vec<Neighbour> = Vec::with_capacity(k + 1);
        for (slot, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            let similarity = dot(query, v);
            if best.len() == k && best.last().is_some_and(|w| w.similarity >= similarity) {
                continue;
            }
            let at = best.partition_point(|b| b.similarity >= similarity);
            best.insert(at, Neighbour { slot, similarity });
            best.truncate(k);
        }
        best
    }
}

/// The dot product of two equal-length slices: with AVX2 and FMA where the CPU has them, else a portable
/// loop with eight accumulators the compiler vectorises with SSE.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for i in 0..chunks {
        for (j, s) in acc.iter_mut().enumerate() {
            *s += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 16;
    // SAFETY (all loads): every offset read is below `chunks * 16 <= n`, inside both slices.
    unsafe {
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        for i in 0..chunks {
            let p = i * 16;
            s0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(p)),
                _mm256_loadu_ps(b.as_ptr().add(p)),
                s0,
            );
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(p + 8)),
                _mm256_loadu_ps(b.as_ptr().add(p + 8)),
                s1,
            );
        }
        let s = _mm256_add_ps(s0, s1);
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), s);
        let mut sum: f32 = lanes.iter().sum();
        for i in chunks * 16..n {
            sum += a[i] * b[i];
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_fast_and_portable_dot_products_agree() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-3);
        assert!((dot_portable(&a, &b) - want).abs() < 1e-3);
    }

    #[test]
    fn finds_the_nearest_first() {
        let mut p = Partition::new(3, 10);
        p.insert(&unit(&[1.0, 0.0, 0.0]), "x").unwrap();
        p.insert(&unit(&[0.0, 1.0, 0.0]), "y").unwrap();
        p.insert(&unit(&[1.0, 1.0, 0.0]), "xy").unwrap();
        let got = p.nearest(&unit(&[1.0, 0.2, 0.0]), 2);
        assert_eq!(got.len(), 2);
        assert_eq!(p.get(got[0].slot), Some(&"x"));
        assert_eq!(p.get(got[1].slot), Some(&"xy"));
        assert!(got[0].similarity > got[1].similarity);
        assert!(p.nearest(&[1.0, 0.0], 2).is_empty(), "wrong dimension");
        assert!(p.insert(&[1.0], "bad").is_none());
    }

    #[test]
    fn a_full_partition_overwrites_its_oldest_entry() {
        let mut p = Partition::new(2, 2);
        p.insert(&unit(&[1.0, 0.0]), 1).unwrap();
        p.insert(&unit(&[0.0, 1.0]), 2).unwrap();
        let slot = p.insert(&unit(&[1.0, 0.1]), 3).unwrap();
        assert_eq!(slot, 0);
        assert_eq!(p.len(), 2);
        let best = p.nearest(&unit(&[1.0, 0.0]), 1)[0];
        assert_eq!(p.get(best.slot), Some(&3));
        assert_eq!(p.insert(&unit(&[0.0, 1.0]), 4), Some(1));
    }
}
