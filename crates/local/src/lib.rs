//! Self-hosted models run in-process: a quantized llama-architecture chat model (GGUF) on the CPU.
//!
//! Everything the model needs comes from its one GGUF file: the weights (candle's quantized llama), the
//! byte-level BPE vocabulary and merges (`tokenizer.ggml.*`), and the special tokens. No tokenizer file, no
//! network. The chat layout is ChatML (`<|im_start|>role\n…<|im_end|>`), which SmolLM2, Qwen and most small
//! instruction-tuned models use; a model whose vocabulary lacks those tokens is refused at load time rather
//! than prompted in a layout it was not trained on.
//!
//! Decoding is greedy (temperature 0): the same messages give the same answer, which is what replaying a
//! task's calls for validation needs.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a usable GGUF chat model: {reason}")]
    Format { path: String, reason: String },
    #[error("running the model: {0}")]
    Run(#[from] candle_core::Error),
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("the prompt is {prompt} tokens and the model's context is {context}")]
    TooLong { prompt: usize, context: usize },
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// What generation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// True when the model ended its answer; false when it was cut at the token cap.
    pub finished: bool,
}

/// A loaded model. Generation needs `&mut self` (the attention cache lives in the weights); share one
/// behind a mutex or load one per worker.
pub struct Model {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    /// Tokens that end an answer (`<|im_end|>`, the end-of-text token).
    stops: Vec<u32>,
    context: usize,
    device: Device,
}

impl Model {
    /// Loads a GGUF file (llama architecture, any quantization candle reads: Q4_0/Q4_1/Q8_0, k-quants).
    pub fn load(path: &Path) -> Result<Model, Error> {
        let shown = path.display().to_string();
        let io = |source| Error::Io {
            path: shown.clone(),
            source,
        };
        let format = |reason: String| Error::Format {
            path: shown.clone(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| format(e.to_string()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(format(format!("architecture `{arch}`, only `llama` is supported")));
        }
        let context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(2048) as usize;
        let tokenizer = tokenizer_from_gguf(&content.metadata).map_err(format)?;
        let stop = |t: &str| tokenizer.token_to_id(t);
        let im_end = stop("<|im_end|>").ok_or_else(|| format("no `<|im_end|>` token: not a ChatML model".into()))?;
        if stop("<|im_start|>").is_none() {
            return Err(format("no `<|im_start|>` token: not a ChatML model".into()));
        }
        let mut stops = vec![im_end];
        stops.extend(stop("<|endoftext|>"));
        let device = Device::Cpu;
        let weights = ModelWeights::from_gguf(content, &mut file, &device).map_err(|e| format(e.to_string()))?;
        Ok(Model {
            weights,
            tokenizer,
            stops,
            context,
            device,
        })
    }

    /// Answers a conversation greedily, with at most `max_tokens` new tokens.
    pub fn complete(&mut self, messages: &[Message], max_tokens: usize) -> Result<Completion, Error> {
        let prompt = chatml(messages);
        let ids = self
            .tokenizer
            .encode(prompt.as_str(), false)
            .map_err(|e| Error::Tokenize(e.to_string()))?
            .get_ids()
            .to_vec();
        if ids.len() + 1 >= self.context {
            return Err(Error::TooLong {
                prompt: ids.len(),
                context: self.context,
            });
        }
        let max_tokens = max_tokens.min(self.context - ids.len());
        self.weights.clear_kv_cache();
        let mut out: Vec<u32> = Vec::with_capacity(max_tokens);
        let mut input = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut pos = 0;
        let mut finished = false;
        while out.len() < max_tokens {
            let logits = self.weights.forward(&input, pos)?.squeeze(0)?;
            pos += input.dim(1)?;
            let next = logits.argmax(0)?.to_scalar::<u32>()?;
            if self.stops.contains(&next) {
                finished = true;
                break;
            }
            out.push(next);
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        let text = self
            .tokenizer
            .decode(&out, true)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        Ok(Completion {
            text: text.trim().to_owned(),
            prompt_tokens: ids.len(),
            completion_tokens: out.len(),
            finished,
        })
    }
}

/// The ChatML prompt for a conversation, ending with the opened assistant turn. A conversation without a
/// system turn gets none: the model's own template would add a default one, but a replayed call must be
/// answered on what the client sent.
pub fn chatml(messages: &[Message]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role.as_str());
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Builds the byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.model = "gpt2"`).
fn tokenizer_from_gguf(md: &HashMap<String, gguf_file::Value>) -> Result<Tokenizer, String> {
    let strings = |key: &str| -> Result<Vec<String>, String> {
        md.get(key)
            .ok_or_else(|| format!("no `{key}`"))?
            .to_vec()
            .map_err(|e| format!("`{key}`: {e}"))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| format!("`{key}`: {e}")))
            .collect()
    };
    let kind = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if kind != "gpt2" {
        return Err(format!("tokenizer `{kind}`, only byte-level BPE (`gpt2`) is supported"));
    }
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| format!("merge `{m}` is not two tokens"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Token types: 3 is a control token (`<|im_start|>`…), which must never be split.
    let types: Vec<i32> = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building the BPE: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    // SmolLM's pre-tokenizer ("smollm" in llama.cpp): every digit its own piece, then GPT-2's byte-level split.
    let digits_apart = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .is_some_and(|p| p == "smollm");
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    tokenizer.with_pre_tokenizer(Some(if digits_apart {
        PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ]))
    } else {
        byte_level
    }));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter().copied().chain(std::iter::repeat(1)))
        .filter(|(_, t)| *t == 3)
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| format!("adding the control tokens: {e}"))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_lays_out_turns_and_opens_the_answer() {
        let p = chatml(&[
            Message {
                role: Role::System,
                content: "Be brief.".into(),
            },
            Message {
                role: Role::User,
                content: "2+2?".into(),
            },
        ]);
        assert_eq!(
            p,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("leanlm-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not.gguf");
        std::fs::write(&path, b"definitely not a model").unwrap();
        let e = Model::load(&path).err().unwrap().to_string();
        assert!(e.contains("not.gguf") && e.contains("not a usable GGUF"), "{e}");
        let e = Model::load(&dir.join("missing.gguf")).err().unwrap().to_string();
        assert!(e.contains("missing.gguf"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
