//! Sentence embeddings for the request path (the semantic cache, learned routers): the local model
//! in-process, on the blocking pool and one inference per core, or a configured embedding model over HTTP.

use std::sync::Arc;

use bytes::Bytes;
use leanlm_wire::WireError;
use serde_json::Value;

use crate::config::Embeddings;
use crate::route::Routes;

/// Embeds texts; blocking, so the gateway calls it on the blocking pool. The `leanlm` binary implements it
/// with the local MiniLM model, so the gateway itself builds without candle.
pub use leanlm_validate::score::Embed;

/// A shareable embedder.
pub type SharedEmbed = Arc<dyn Embed + Send + Sync>;

/// Loads the local embedder (from a model directory, or its default one) the first time a request needs
/// it, so a gateway that never uses the semantic cache never pays for the model.
pub type EmbedLoader = Box<dyn Fn(Option<&std::path::Path>) -> Result<SharedEmbed, String> + Send + Sync>;

/// Embeds texts for the request path.
pub struct Embedder {
    source: Embeddings,
    loader: Option<EmbedLoader>,
    local: tokio::sync::OnceCell<Result<SharedEmbed, String>>,
    /// Local inference is CPU-bound: one at a time per core, however many requests arrive together.
    cores: Arc<tokio::sync::Semaphore>,
}

impl Embedder {
    pub fn new(source: Embeddings, loader: Option<EmbedLoader>) -> Embedder {
        Embedder {
            source,
            loader,
            local: tokio::sync::OnceCell::new(),
            cores: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// One unit vector per text.
    pub async fn embed(
        &self,
        routes: &Routes,
        http: &reqwest::Client,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, String> {
        match &self.source {
            Embeddings::Local { model_dir } => {
                let embedder = self
                    .local
                    .get_or_init(|| async {
                        let Some(loader) = &self.loader else {
                            return Err("this gateway was built without a local embedder".to_owned());
                        };
                        let dir = model_dir.clone();
                        // Loading reads ~90 MB of weights: off the async workers too.
                        let load = loader(dir.as_deref());
                        if let Err(e) = &load {
                            tracing::error!(error = %e, "semantic cache: no local embedder; semantic lookups are skipped");
                        }
                        load
                    })
                    .await
                    .clone()?;
                // The permit moves into the blocking task: a caller that gives up does not free the core.
                let core = self.cores.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || {
                    let _core = core;
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    embedder.embed(&refs)
                })
                .await
                .map_err(|e| format!("embedding task failed: {e}"))?
            }
            Embeddings::Remote { model } => remote_embed(routes, http, model, &texts).await,
        }
    }
}

/// Embeddings from a configured model through its provider's OpenAI-compatible `/v1/embeddings`.
async fn remote_embed(
    routes: &Routes,
    http: &reqwest::Client,
    model: &str,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, String> {
    use crate::upstream::{self, ClientAuth, Operation};
    let chain = routes.resolve(model).map_err(|e: WireError| e.message)?;
    let target = chain.first().ok_or("no route for the embedding model")?;
    let body = serde_json::json!({"model": target.upstream_model, "input": texts}).to_string();
    let prepared = upstream::prepare(target, Operation::Embeddings, Bytes::from(body), &ClientAuth::default())
        .map_err(|e| e.message)?;
    let resp = http
        .post(prepared.url)
        .headers(prepared.headers)
        .body(prepared.body)
        .timeout(target.provider.timeout)
        .send()
        .await
        .map_err(|e| format!("embedding request to `{}` failed: {e}", target.provider.name))?;
    if !resp.status().is_success() {
        return Err(format!("embedding model `{model}` answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("embedding answer: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("embedding answer is not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("embedding answer has no `data`")?;
    let mut out = Vec::with_capacity(texts.len());
    for d in data {
        let e: Vec<f32> = d
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or("embedding answer without `embedding`")?
            .iter()
            .map(|x| x.as_f64().unwrap_or(0.0) as f32)
            .collect();
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err("embedding answer holds a zero vector".to_owned());
        }
        out.push(e.into_iter().map(|x| x / norm).collect());
    }
    if out.len() != texts.len() {
        return Err(format!("asked for {} embeddings, got {}", texts.len(), out.len()));
    }
    Ok(out)
}
