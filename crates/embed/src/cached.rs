//! Embeddings of a fixed set of texts, computed once and kept on disk, so benchmarks re-run on the same data
//! without paying the model again. Kept under `$LEANLM_DATA` (default `/var/cache/leanlm-data`, else
//! `~/.cache/leanlm-data`), one file per set, named by a label and a fingerprint of the texts; nothing is
//! committed.

use std::path::PathBuf;

use crate::{EmbedError, Embedder, default_model_dir};

/// MiniLM's dimension: a cached file of another length is stale and recomputed.
const DIM: usize = 384;

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

/// FNV-1a over the texts, each ended by a zero byte.
fn fingerprint<'a>(texts: impl Iterator<Item = &'a str>) -> u64 {
    texts
        .flat_map(|t| t.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The embeddings of `texts` with the default model, read from the cache when these exact texts were
/// embedded before under `label`, computed (with progress on stderr) and stored otherwise.
pub fn embed_cached(label: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
    let dir = cache_dir();
    let path = dir.join(format!(
        "{label}-minilm-{:016x}.bin",
        fingerprint(texts.iter().copied())
    ));
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == texts.len() * DIM * 4
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
    let model = Embedder::load(&default_model_dir())?;
    let started = std::time::Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        out.extend(model.embed(chunk)?);
        if out.len() % 1024 < 32 || out.len() == texts.len() {
            eprintln!(
                "embedded {} of {} ({:.0}/s)",
                out.len(),
                texts.len(),
                out.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    if out.iter().any(|v| v.len() != DIM) {
        return Err(EmbedError::Inference(format!(
            "the model's vectors are not {DIM}-dimensional"
        )));
    }
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    let stored = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes));
    if let Err(e) = stored {
        // Not fatal: the vectors are here, only the next run pays for them again.
        eprintln!("could not keep the embeddings in {}: {e}", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_text_boundaries_apart() {
        let a = fingerprint(["ab", "c"].into_iter());
        assert_ne!(a, fingerprint(["a", "bc"].into_iter()));
        assert_eq!(a, fingerprint(["ab", "c"].into_iter()));
    }
}
