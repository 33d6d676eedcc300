//! Banking77 for the examples: the questions with their intents, and their MiniLM embeddings, computed once
//! and kept under $LEANLM_DATA (default /var/cache/leanlm-data, else ~/.cache/leanlm-data); nothing is
//! committed.

// Each example uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::Context;

/// One labelled question.
pub struct Question {
    pub text: String,
    pub intent: String,
}

fn dir() -> anyhow::Result<PathBuf> {
    [
        std::env::var_os("LEANLM_SHARED_DATA").map(|d| PathBuf::from(d).join("banking77")),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/banking77")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("test.csv").exists())
    .context("Banking77 not found: set LEANLM_SHARED_DATA to the shared data folder")
}

/// The questions of one split (`train` or `test`), in file order.
pub fn questions(split: &str) -> anyhow::Result<Vec<Question>> {
    let path = dir()?.join(format!("{split}.csv"));
    let mut reader = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .records()
        .map(|r| {
            let r = r?;
            Ok(Question {
                text: r.get(0).context("a row without text")?.to_owned(),
                intent: r.get(1).context("a row without an intent")?.to_owned(),
            })
        })
        .collect()
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LEANLM_DATA") {
        return PathBuf::from(d);
    }
    let var = PathBuf::from("/var/cache/leanlm-data");
    if std::fs::create_dir_all(&var).is_ok() {
        return var;
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/leanlm-data")
}

/// MiniLM embeddings of `questions`, read from the cache when these exact texts were embedded before.
pub fn embeddings(questions: &[Question]) -> anyhow::Result<Vec<Vec<f32>>> {
    const DIM: usize = 384;
    let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
    for b in questions.iter().flat_map(|q| q.text.bytes().chain([0])) {
        fingerprint = (fingerprint ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("banking77-minilm-{fingerprint:016x}.bin"));
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == questions.len() * DIM * 4
    {
        return Ok(bytes
            .chunks_exact(DIM * 4)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect());
    }
    let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
        .context("the local embedding model: run scripts/fetch-model")?;
    let started = std::time::Instant::now();
    let mut out = Vec::with_capacity(questions.len());
    for chunk in questions.chunks(32) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.text.as_str()).collect();
        out.extend(embedder.embed(&texts)?);
        if out.len() % 1024 < 32 {
            eprintln!("embedded {} of {}", out.len(), questions.len());
        }
    }
    eprintln!(
        "embedded {} questions in {:.0} s",
        out.len(),
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        out.iter().all(|v| v.len() == DIM),
        "the model's vectors are not {DIM}-dimensional"
    );
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(out)
}
