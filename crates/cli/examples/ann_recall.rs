//! How often the semantic cache's HNSW graph finds what an exact scan finds, on real sentence embeddings
//! (MiniLM) rather than the random vectors of `semantic_speed`, where a graph does worst.
//!
//! The ~10,000 Banking77 training questions fill one partition whose graph is on (as partitions of ≥ 50,000
//! entries are in the gateway; here it is forced at this size) and one searched by exact scan; each of the
//! ~3,000 test questions is then looked up in both. Reported: recall@1 (the graph's top hit is the scan's)
//! over all queries and over those whose best match is close enough to matter to a cache, and lookup p50/p99
//! for each, measured in the same run.
//!
//!     cargo run --release -p leanlm --example ann_recall
//!
//! Embedding the 13,000 questions takes ~5 minutes on this 2-core machine the first time (then they are
//! read from the cache, see `common/banking77.rs`). Prints a Markdown report.

use std::time::Instant;

use leanlm_semantic::Partition;

#[path = "common/banking77.rs"]
mod banking77;

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    (at(0.5), at(0.99))
}

fn main() -> anyhow::Result<()> {
    let train = banking77::questions("train")?;
    let test = banking77::questions("test")?;
    let t0 = Instant::now();
    let stored = banking77::embeddings(&train)?;
    let queries = banking77::embeddings(&test)?;
    eprintln!("embeddings ready in {:.0} s", t0.elapsed().as_secs_f64());

    let dim = stored.first().map_or(384, Vec::len);
    let mut graph: Partition<usize> = Partition::with_ann_from(dim, stored.len(), 0);
    let mut scan: Partition<usize> = Partition::with_ann_from(dim, stored.len(), usize::MAX);
    let t0 = Instant::now();
    for (i, v) in stored.iter().enumerate() {
        graph.insert(v, i);
    }
    let fill = t0.elapsed().as_secs_f64();
    for (i, v) in stored.iter().enumerate() {
        scan.insert(v, i);
    }
    anyhow::ensure!(graph.searches_graph(), "the graph partition does not search its graph");
    anyhow::ensure!(!scan.searches_graph(), "the scan partition searches a graph");

    // Similarity bands: every query, and those a cache could serve from (its best match at least this close).
    let bands = [0.0f32, 0.8, 0.9];
    let mut found = [0usize; 3];
    let mut total = [0usize; 3];
    let (mut graph_ms, mut scan_ms) = (Vec::new(), Vec::new());
    for q in &queries {
        let t = Instant::now();
        let exact = std::hint::black_box(scan.nearest(q, 1));
        scan_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let approx = std::hint::black_box(graph.nearest(q, 1));
        graph_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let Some(best) = exact.first() else { continue };
        let hit = approx
            .first()
            .is_some_and(|a| graph.get(a.slot) == scan.get(best.slot) || a.similarity >= best.similarity);
        for (b, min) in bands.iter().enumerate() {
            if best.similarity >= *min {
                total[b] += 1;
                found[b] += usize::from(hit);
            }
        }
    }
    let (g50, g99) = percentiles(graph_ms);
    let (s50, s99) = percentiles(scan_ms);
    println!(
        "Banking77 with MiniLM: {} stored questions, {} queries; graph filled in {fill:.1} s\n",
        stored.len(),
        queries.len()
    );
    println!("| queries whose best match has similarity | queries | graph's top hit = scan's |");
    println!("|---|---|---|");
    for (b, min) in bands.iter().enumerate() {
        let share = found[b] as f64 / total[b].max(1) as f64 * 100.0;
        println!("| ≥ {min:.1} | {} | {share:.1}% |", total[b]);
    }
    println!("\n| search | p50 | p99 |\n|---|---|---|");
    println!("| HNSW graph | {g50:.3} ms | {g99:.3} ms |");
    println!("| exact scan (baseline) | {s50:.3} ms | {s99:.3} ms |");
    Ok(())
}
