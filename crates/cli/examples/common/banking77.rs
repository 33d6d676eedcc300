//! Banking77 for the examples: the questions with their intents, and their MiniLM embeddings, computed once
//! and kept on disk (`leanlm_embed::cached`).

// Each example uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::Context;

/// One labelled question.
pub struct Question {
    pub text: String,
    pub intent: String,
}

/// `$LEANLM_SHARED_DATA/banking77`: the public data sets are not part of the repository (bench/RESULTS.md says
/// where they come from).
fn dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("LEANLM_SHARED_DATA")
        .map(|d| PathBuf::from(d).join("banking77"))
        .filter(|p| p.join("test.csv").exists())
        .context("Banking77 not found: set LEANLM_SHARED_DATA to the folder of public data sets (see bench/RESULTS.md)")
}

/// The test split as it is on disk.
pub fn test_csv() -> anyhow::Result<String> {
    let path = dir()?.join("test.csv");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
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

/// MiniLM embeddings of `questions`, read from the cache when these exact texts were embedded before
/// (`leanlm_embed::cached`).
pub fn embeddings(questions: &[Question]) -> anyhow::Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
    leanlm_embed::cached::embed_cached("banking77", &texts)
        .context("embedding Banking77 (the local model: run scripts/fetch-model)")
}
