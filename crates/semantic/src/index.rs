//! Nearest-neighbour search over one partition of the cache.
//!
//! A partition holds the entries of one task, served model and set of sampling parameters, so it usually
//! stays small next to the whole cache, and an exact scan (no build step, no tuning, no missed neighbour)
//! is the default. The scan is bound by memory bandwidth, so it reads a copy of the vectors quantised to 8
//! bits (a quarter of the bytes) and re-scores the best few with the full vectors: the similarities it
//! returns are exact. A partition allowed [`ANN_FROM`] entries or more also keeps an HNSW graph (usearch,
//! 8-bit) and, once it holds [`ANN_SEARCH_FROM`] entries, searches the graph for the short list instead of
//! scanning: sub-millisecond at a million entries, at the price of sometimes missing a neighbour (a cache
//! miss, never a wrong hit: the short list is still re-scored exactly). Entries are kept in a ring: once
//! full, the oldest is overwritten.

/// Partitions allowed at least this many entries keep an HNSW graph beside the scan copy.
pub const ANN_FROM: usize = 50_000;
/// From this many entries such a partition searches the graph instead of scanning.
pub const ANN_SEARCH_FROM: usize = 20_000;

/// One partition: unit vectors of one dimension, each with an item.
pub struct Partition<T> {
    dim: usize,
    capacity: usize,
    vectors: Vec<f32>,
    /// The vectors scaled to i8 (each by its own largest component), for the scan.
    quantised: Vec<i8>,
    /// Per vector, the factor that turns an i8 dot product back into a cosine.
    scales: Vec<f32>,
    items: Vec<T>,
    /// The slot the next insertion overwrites once the ring is full.
    next: usize,
    /// The HNSW graph of a large partition, keyed by slot.
    ann: Option<usearch::Index>,
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
        Partition::with_ann_from(dim, capacity, ANN_FROM)
    }

    /// Like [`Partition::new`], with the capacity from which the graph is kept (tests use small ones).
    pub fn with_ann_from(dim: usize, capacity: usize, ann_from: usize) -> Partition<T> {
        let capacity = capacity.max(1);
        let ann = (capacity >= ann_from && dim > 0)
            .then(|| graph(dim, capacity))
            .flatten();
        Partition {
            dim,
            capacity,
            vectors: Vec::new(),
            quantised: Vec::new(),
            scales: Vec::new(),
            items: Vec::new(),
            next: 0,
            ann,
        }
    }

    /// True when lookups search the HNSW graph rather than scan.
    pub fn searches_graph(&self) -> bool {
        self.ann.is_some() && self.items.len() >= ANN_SEARCH_FROM.min(self.capacity)
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
        let (q, scale) = quantise(vector);
        if self.items.len() < self.capacity {
            self.vectors.extend_from_slice(vector);
            self.quantised.extend_from_slice(&q);
            self.scales.push(scale);
            self.items.push(item);
            let slot = self.items.len() - 1;
            self.index(slot, vector, false);
            return Some(slot);
        }
        let slot = self.next;
        self.index(slot, vector, true);
        self.vectors[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(vector);
        self.quantised[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&q);
        self.scales[slot] = scale;
        self.items[slot] = item;
        self.next = (slot + 1) % self.capacity;
        Some(slot)
    }

    /// Adds a slot's vector to the graph, replacing what the slot held. A graph that fails is dropped (the
    /// partition goes back to scanning), never left half-updated.
    fn index(&mut self, slot: usize, vector: &[f32], replace: bool) {
        let Some(ann) = &self.ann else { return };
        let key = slot as u64;
        // Room grows with the partition (doubling), not reserved for its whole capacity up front.
        let room = ann.size() < ann.capacity() || ann.reserve((ann.capacity() * 2).clamp(1024, self.capacity)).is_ok();
        let done = room && (!replace || ann.remove(key).is_ok()) && ann.add(key, vector).is_ok();
        if !done {
            self.ann = None;
        }
    }

    pub fn get(&self, slot: usize) -> Option<&T> {
        self.items.get(slot)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.items.get_mut(slot)
    }

    /// The `k` entries most similar to `query` (a unit vector), most similar first, with exact similarities.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<Neighbour> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        // Scan the 8-bit copy (or search the graph) for a short list, then re-score it with the full vectors.
        // Quantisation moves a cosine by about 0.01 at most, so a short list of 4k + 8 keeps the true top k.
        let short = 4 * k + 8;
        if self.searches_graph()
            && let Some(found) = self.ann.as_ref().and_then(|a| a.search(query, short).ok())
        {
            return self.rescore_with(query, found.keys.iter().map(|key| *key as usize), k);
        }
        let (q, q_scale) = quantise(query);
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(short + 1);
        for (slot, v) in self.quantised.chunks_exact(self.dim).enumerate() {
            let approx = dot_i8(&q, v) as f32 * q_scale * self.scales[slot];
            if best.len() == short && best.last().is_some_and(|w| w.1 >= approx) {
                continue;
            }
            let at = best.partition_point(|b| b.1 >= approx);
            best.insert(at, (slot, approx));
            best.truncate(short);
        }
        self.rescore_with(query, best.into_iter().map(|(slot, _)| slot), k)
    }

    /// The exact similarities of the short list's slots to `query`; the best `k`.
    fn rescore_with(&self, query: &[f32], slots: impl Iterator<Item = usize>, k: usize) -> Vec<Neighbour> {
        let mut exact: Vec<Neighbour> = slots
            .filter(|slot| *slot < self.items.len())
            .map(|slot| Neighbour {
                slot,
                similarity: dot(query, &self.vectors[slot * self.dim..(slot + 1) * self.dim]),
            })
            .collect();
        exact.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        exact.truncate(k);
        exact
    }
}

/// An 8-bit inner-product HNSW graph for up to `capacity` unit vectors; `None` if usearch cannot make one.
fn graph(dim: usize, capacity: usize) -> Option<usearch::Index> {
    let options = usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::I8,
        connectivity: 16,
        expansion_add: 64,
        expansion_search: 96,
        multi: false,
    };
    let index = usearch::Index::new(&options).ok()?;
    index.reserve(capacity.min(1024)).ok()?;
    Some(index)
}

/// A vector scaled to i8 by its largest component, and the factor back: `dot_i8(a, b) * fa * fb`
/// approximates `dot` of the originals.
pub fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let scale = 127.0 / max;
    (v.iter().map(|x| (x * scale).round() as i8).collect(), 1.0 / scale)
}

/// The dot product of two i8 vectors, in i32: with AVX2 where the CPU has it.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 16;
    // SAFETY (all loads): every offset read is below `chunks * 16 <= n`, inside both slices.
    unsafe {
        let mut acc = _mm256_setzero_si256();
        for i in 0..chunks {
            let p = i * 16;
            let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(p) as *const __m128i));
            let y = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(p) as *const __m128i));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
        }
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
        let mut sum: i32 = lanes.iter().sum();
        for i in chunks * 16..n {
            sum += i32::from(a[i]) * i32::from(b[i]);
        }
        sum
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

    /// A seeded xorshift source of components in [-0.5, 0.5).
    fn components(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
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
    fn a_large_partition_searches_its_graph_and_finds_near_duplicates() {
        let mut next = components(11);
        let mut random = |d: usize| unit(&(0..d).map(|_| next()).collect::<Vec<_>>());
        let (dim, capacity) = (32, 3_000);
        let mut p = Partition::with_ann_from(dim, capacity, 1_000);
        let vs: Vec<Vec<f32>> = (0..capacity + 500).map(|_| random(dim)).collect();
        for (i, v) in vs.iter().enumerate() {
            p.insert(v, i).unwrap();
            if i + 1 == capacity / 2 {
                assert!(!p.searches_graph(), "a partition still filling scans");
            }
        }
        assert!(p.searches_graph());
        // The last 500 overwrote the oldest slots: the graph must find what the slots hold now.
        let mut found = 0;
        for (i, v) in vs.iter().enumerate().skip(500) {
            let noise = random(dim);
            let q = unit(&v.iter().zip(&noise).map(|(a, b)| a + 0.2 * b).collect::<Vec<_>>());
            let got = p.nearest(&q, 1);
            if let Some(n) = got.first()
                && p.get(n.slot) == Some(&i)
            {
                found += 1;
                assert!((n.similarity - dot(&q, v)).abs() < 1e-5, "similarities stay exact");
            }
        }
        assert!(
            found * 100 >= 97 * capacity,
            "{found} of {capacity} near-duplicates found"
        );
        // A small partition never builds a graph.
        assert!(!Partition::<u8>::new(dim, 100).searches_graph());
    }

    #[test]
    fn quantised_scan_returns_the_exact_top_k() {
        // 2,000 pseudo-random unit vectors; the quantised scan must find what an exact scan finds.
        let mut next = components(7);
        let mut p = Partition::new(64, 2_000);
        let vs: Vec<Vec<f32>> = (0..2_000)
            .map(|_| unit(&(0..64).map(|_| next()).collect::<Vec<_>>()))
            .collect();
        for (i, v) in vs.iter().enumerate() {
            p.insert(v, i).unwrap();
        }
        for q in vs.iter().take(50) {
            let mut exact: Vec<(usize, f32)> = vs.iter().enumerate().map(|(i, v)| (i, dot(q, v))).collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = p.nearest(q, 4);
            assert_eq!(
                got.iter().map(|n| n.slot).collect::<Vec<_>>(),
                exact.iter().take(4).map(|e| e.0).collect::<Vec<_>>()
            );
            assert!((got[0].similarity - 1.0).abs() < 1e-5);
        }
        let a: Vec<i8> = (0..100).map(|i| (i % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..100).map(|i| ((i * 7) % 255 - 127) as i8).collect();
        let want: i32 = a.iter().zip(&b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
        assert_eq!(dot_i8(&a, &b), want);
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
