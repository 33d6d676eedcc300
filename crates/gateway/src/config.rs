//! Configuration: a TOML file, defaults that need no file, and overrides from flags and environment.
//!
//! A bad file is refused at start with its path, line, column and the offending field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leanlm_cost::Price;
use leanlm_wire::ProviderKind;
use serde::Deserialize;
use toml::Spanned;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The gateway's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Serving threads, each with its own runtime, listening socket and upstream connections.
    pub workers: NonZeroUsize,
    pub store_url: String,
    /// Keep request and response bodies in the call log; off keeps metadata only.
    pub log_bodies: bool,
    /// Bearer token for the admin API under `/api/`; without one the admin API is off.
    pub admin_token: Option<Secret>,
    pub log_queue_capacity: usize,
    /// Bytes the queued records' bodies may hold; past it records are queued without bodies.
    pub log_queue_bytes: usize,
    pub max_body_bytes: usize,
    /// Open connections, and how long a client may take over a request's headers and body.
    pub limits: crate::listen::Limits,
    /// Web origins whose pages may call the gateway (`https://app.example.com`); others are refused.
    pub allowed_origins: Vec<String>,
    /// Host names a gateway listening on loopback answers to besides `localhost` and loopback addresses
    /// (DNS rebinding would otherwise let any web page read its answers).
    pub allowed_hosts: Vec<String>,
    /// Pass `/v1/` endpoints LeanLM has no handler for on to a provider; off, they are not found.
    pub passthrough: bool,
    pub retry: RetryPolicy,
    pub cache: CacheConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    /// Price overrides by upstream model name.
    pub prices: BTreeMap<String, Price>,
    /// Models a validation may propose as replacements (`[catalog] allow`); the configured models when unset.
    pub catalog_allow: Vec<String>,
    /// The model that judges answers (`[validation] judge`): the default scorer of free-text tasks, and
    /// the check on a cheaper scorer before a validation trusts it.
    pub judge_model: Option<String>,
    /// `[optimizer]`: the guardrails `leanlm optimize` works within.
    pub optimizer: OptimizerConfig,
}

/// `[optimizer]`: what the team allows the optimizer to do; `leanlm optimize`'s flags override it.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// Tasks never touched, by id or name.
    pub exclude: Vec<String>,
    /// Calls a task needs in the last 30 days before the optimizer acts on it.
    pub min_calls: u64,
    /// The most one pass may spend on validations, in USD.
    pub budget_usd: Option<f64>,
    /// How long a failed validation keeps its candidate out.
    pub retry_after_days: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            exclude: Vec::new(),
            min_calls: 100,
            budget_usd: None,
            retry_after_days: 7.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// `None`: the client's own key is passed through.
    pub api_key: Option<Secret>,
    /// Until the upstream's response headers arrive, and for a whole non-streaming body.
    pub timeout: Duration,
    /// The longest silence allowed between two events of a stream.
    pub stream_idle_timeout: Duration,
    /// Endpoint URLs parsed once at start, not on every request.
    pub(crate) chat_url: reqwest::Url,
    pub(crate) embeddings_url: reqwest::Url,
    /// Whether the upstream is Google's OpenAI-compatible API, the one OpenAI-compatible server that reads
    /// `extra_content` (Gemini's thought signatures) on tool calls; strict others refuse the field.
    pub(crate) takes_extra_content: bool,
}

impl ProviderConfig {
    fn new(
        name: String,
        kind: ProviderKind,
        base_url: String,
        api_key: Option<Secret>,
        timeout: Duration,
        stream_idle_timeout: Duration,
    ) -> Result<Self, String> {
        let parse = |path: &str| {
            reqwest::Url::parse(&format!("{base_url}{path}"))
                .map_err(|e| format!("providers.{name}.base_url: `{base_url}` is not a valid URL: {e}"))
        };
        let (chat, embeddings) = match kind {
            ProviderKind::OpenAi => ("/chat/completions", "/embeddings"),
            ProviderKind::Anthropic => ("/v1/messages", "/v1/embeddings"),
            // Gemini names the model in the path; these are only checked here.
            ProviderKind::Gemini => ("/v1beta/models", "/v1beta/models"),
        };
        let chat_url = parse(chat)?;
        let takes_extra_content = kind == ProviderKind::OpenAi
            && chat_url
                .host_str()
                .is_some_and(|h| h == "googleapis.com" || h.ends_with(".googleapis.com"));
        Ok(ProviderConfig {
            takes_extra_content,
            chat_url,
            embeddings_url: parse(embeddings)?,
            name,
            kind,
            base_url,
            api_key,
            timeout,
            stream_idle_timeout,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: String,
    pub upstream: String,
    pub fallbacks: Vec<String>,
    pub price: Option<Price>,
}

/// When the exact cache may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    Off,
    /// Every request, deterministic or not: for tasks whose answers do not vary (classification, extraction).
    Always,
    /// Deterministic requests (temperature 0), and any request sent with `X-LeanLM-Cache: on`.
    Deterministic,
    /// Only requests sent with `X-LeanLM-Cache: on`.
    OptIn,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub mode: CacheMode,
    pub ttl: Duration,
    pub max_entries: usize,
    /// A Redis URL to share the cache between gateway instances; memory otherwise.
    pub redis: Option<String>,
    /// Per-task policies, by task id or name: a mode and a TTL of their own.
    pub tasks: HashMap<String, TaskCachePolicy>,
    /// `[cache.semantic]`.
    pub semantic: SemanticConfig,
    /// Per-task semantic settings (`[cache.tasks.NAME] semantic`, `semantic_bound`, `scorer`).
    pub semantic_tasks: HashMap<String, TaskSemantic>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCachePolicy {
    pub mode: Option<CacheMode>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries per model after the first attempt.
    pub max_retries: u32,
    pub base_backoff: Duration,
    /// The longest wait between attempts; a `Retry-After` longer than this is not waited for.
    pub max_backoff: Duration,
    /// The most a request may take until its answer starts, over every attempt, retry and fallback
    /// (`X-LeanLM-Timeout` shortens it per request).
    pub deadline: Duration,
}

/// Overrides from the command line or environment, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub db: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}\n    {snippet}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error("{0}")]
    Other(String),
}

fn fraction(what: &str, v: Option<f64>, default: f64) -> Result<f64, String> {
    match v {
        None => Ok(default),
        Some(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Some(x) => Err(format!("{what} must be between 0 and 1, not {x}")),
    }
}

fn semantic_config(r: &RawSemantic) -> Result<SemanticConfig, String> {
    let d = SemanticConfig::default();
    let min_similarity = fraction(
        "cache.semantic.min_similarity",
        r.min_similarity.map(f64::from),
        f64::from(d.min_similarity),
    )? as f32;
    Ok(SemanticConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        bound: fraction("cache.semantic.bound", r.bound, d.bound)?,
        verify: fraction("cache.semantic.verify", r.verify, d.verify)?,
        min_similarity,
        max_entries: r.max_entries.unwrap_or(d.max_entries).max(1),
        max_total_entries: r.max_total_entries.unwrap_or(d.max_total_entries).max(1),
        persist: r.persist.unwrap_or(d.persist),
        judgement: match r.judgement.as_deref().map(str::trim) {
            None => d.judgement,
            Some("learned") => Judgement::Learned,
            Some("guards") => Judgement::Guards,
            Some(other) => {
                return Err(format!(
                    "cache.semantic.judgement: expected `learned` or `guards`, not `{other}`"
                ));
            }
        },
        embeddings: match r.embeddings.as_deref().map(str::trim) {
            None | Some("local") => Embeddings::Local {
                model_dir: r.model_dir.clone(),
            },
            Some("") => return Err("cache.semantic.embeddings: expected `local` or a model name".to_owned()),
            Some(model) => Embeddings::Remote {
                model: model.to_owned(),
            },
        },
    })
}

fn task_semantic(name: &str, t: &RawTaskCache) -> Result<TaskSemantic, String> {
    Ok(TaskSemantic {
        enabled: t.semantic,
        bound: match t.semantic_bound {
            None => None,
            Some(b) => Some(fraction(&format!("cache.tasks.{name}.semantic_bound"), Some(b), 0.0)?),
        },
        scorer: match &t.scorer {
            None => None,
            Some(s) => Some(s.parse().map_err(|e| format!("cache.tasks.{name}.scorer: {e}"))?),
        },
    })
}

// --- the file as written ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    providers: BTreeMap<String, Spanned<RawProvider>>,
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawModel>>,
    #[serde(default)]
    prices: BTreeMap<String, Spanned<Price>>,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    validation: RawValidation,
    #[serde(default)]
    optimizer: RawOptimizer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptimizer {
    exclude: Option<Vec<String>>,
    min_calls: Option<u64>,
    budget_usd: Option<Spanned<f64>>,
    retry_after_days: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    judge: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    allow: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    workers: Option<Spanned<usize>>,
    max_body_bytes: Option<usize>,
    passthrough: Option<bool>,
    max_connections: Option<Spanned<usize>>,
    header_timeout_secs: Option<Spanned<f64>>,
    body_timeout_secs: Option<Spanned<f64>>,
    shutdown_grace_secs: Option<Spanned<f64>>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    exact: Option<CacheMode>,
    ttl_secs: Option<u64>,
    max_entries: Option<usize>,
    redis: Option<Spanned<String>>,
    #[serde(default)]
    tasks: BTreeMap<String, Spanned<RawTaskCache>>,
    semantic: Option<Spanned<RawSemantic>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskCache {
    exact: Option<CacheMode>,
    ttl_secs: Option<u64>,
    semantic: Option<bool>,
    semantic_bound: Option<f64>,
    scorer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSemantic {
    enabled: Option<bool>,
    bound: Option<f64>,
    verify: Option<f64>,
    min_similarity: Option<f32>,
    max_entries: Option<usize>,
    max_total_entries: Option<usize>,
    persist: Option<bool>,
    /// `local`, or the name of a configured embedding model.
    embeddings: Option<String>,
    model_dir: Option<PathBuf>,
    /// `learned` or `guards`.
    judgement: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<String>,
    token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    log_bodies: Option<bool>,
    queue_capacity: Option<usize>,
    queue_max_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_retries: Option<u32>,
    base_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    deadline_secs: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: ProviderKind,
    base_url: Option<Spanned<String>>,
    api_key: Option<String>,
    api_key_env: Option<Spanned<String>>,
    timeout_secs: Option<u64>,
    stream_idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: Spanned<String>,
    upstream: Option<String>,
    #[serde(default)]
    fallbacks: Vec<Spanned<String>>,
    price: Option<Price>,
}

fn default_base_url(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "https://api.openai.com/v1",
        ProviderKind::Anthropic => "https://api.anthropic.com",
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
    }
}

/// The variable a provider of `kind` reads its key from when its block names none.
pub(crate) fn default_key_env(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "OPENAI_API_KEY",
        ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
        ProviderKind::Gemini => "GEMINI_API_KEY",
    }
}

fn default_base_env(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "OPENAI_BASE_URL",
        ProviderKind::Anthropic => "ANTHROPIC_BASE_URL",
        ProviderKind::Gemini => "GEMINI_BASE_URL",
    }
}

/// Where `line:column` of a byte offset is, with the text of that line.
fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[start..].chars().count() + 1;
    let snippet = text[start..].lines().next().unwrap_or("").trim().to_owned();
    (line, column, snippet)
}

impl Config {
    /// The semantic cache's settings as the control plane's cache overview reads them.
    pub fn cache_settings(&self) -> leanlm_control::cache::Settings {
        leanlm_control::cache::Settings {
            enabled: self.cache.semantic.enabled,
            bound: self.cache.semantic.bound,
            learned: self.cache.semantic.judgement == Judgement::Learned,
            tasks: self
                .cache
                .semantic_tasks
                .iter()
                .map(|(k, t)| {
                    let settings = leanlm_control::cache::TaskSettings {
                        enabled: t.enabled,
                        bound: t.bound,
                    };
                    (k.clone(), settings)
                })
                .collect(),
        }
    }

    /// Loads the file (if any), then applies defaults, environment and overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                (p.display().to_string(), text)
            }
            None => ("<defaults>".to_owned(), String::new()),
        };
        Config::from_toml(&source, &text, overrides, &|k| std::env::var(k).ok())
    }

    /// Parses config text; `env` looks up environment variables (injectable for tests).
    pub fn from_toml(
        source: &str,
        text: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let at = |offset: usize, message: String| {
            let (line, column, snippet) = locate(text, offset);
            ConfigError::Invalid {
                path: source.to_owned(),
                line,
                column,
                message,
                snippet,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            at(offset, e.message().trim().to_owned())
        })?;

        let limits = {
            let default = crate::listen::Limits::default();
            let secs = |v: &Option<Spanned<f64>>, name: &str, default: Duration| match v {
                None => Ok(default),
                Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 && *v.get_ref() <= 86_400.0 => {
                    Ok(Duration::from_secs_f64(*v.get_ref()))
                }
                Some(v) => Err(at(
                    v.span().start,
                    format!(
                        "server.{name}: {} is not a number of seconds above 0 (at most a day)",
                        v.get_ref()
                    ),
                )),
            };
            crate::listen::Limits {
                max_connections: match &raw.server.max_connections {
                    None => default.max_connections,
                    Some(n) if *n.get_ref() >= 1 => *n.get_ref(),
                    Some(n) => {
                        return Err(at(
                            n.span().start,
                            "server.max_connections must be 1 or more".to_owned(),
                        ));
                    }
                },
                header_timeout: secs(
                    &raw.server.header_timeout_secs,
                    "header_timeout_secs",
                    default.header_timeout,
                )?,
                body_timeout: secs(&raw.server.body_timeout_secs, "body_timeout_secs", default.body_timeout)?,
                shutdown_grace: secs(
                    &raw.server.shutdown_grace_secs,
                    "shutdown_grace_secs",
                    default.shutdown_grace,
                )?,
            }
        };
        let listen_text = overrides
            .listen
            .clone()
            .or_else(|| env("LEANLM_LISTEN"))
            .map(|s| (s, None))
            .or_else(|| {
                raw.server
                    .listen
                    .as_ref()
                    .map(|l| (l.get_ref().clone(), Some(l.span().start)))
            })
            .unwrap_or_else(|| ("127.0.0.1:8080".to_owned(), None));
        let listen: SocketAddr = listen_text.0.parse().map_err(|_| {
            let msg = format!("`listen`: `{}` is not an address like 127.0.0.1:8080", listen_text.0);
            match listen_text.1 {
                Some(offset) => at(offset, msg),
                None => ConfigError::Other(msg),
            }
        })?;

        let workers = match (env("LEANLM_WORKERS"), &raw.server.workers) {
            (Some(text), _) => text
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(NonZeroUsize::new)
                .ok_or_else(|| {
                    ConfigError::Other(format!(
                        "`LEANLM_WORKERS`: `{text}` is not a number of threads (1 or more)"
                    ))
                })?,
            (None, Some(n)) => NonZeroUsize::new(*n.get_ref())
                .ok_or_else(|| at(n.span().start, "`workers` must be 1 or more".to_owned()))?,
            (None, None) => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };

        let mut providers = BTreeMap::new();
        for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Gemini] {
            let name = kind.as_str().to_owned();
            let base_url = env(default_base_env(kind))
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| default_base_url(kind).to_owned());
            let key = env(default_key_env(kind)).filter(|s| !s.is_empty()).map(Secret::new);
            let p = ProviderConfig::new(
                name.clone(),
                kind,
                base_url,
                key,
                Duration::from_secs(600),
                Duration::from_secs(300),
            )
            .map_err(|e| ConfigError::Other(format!("{e} (from {})", default_base_env(kind))))?;
            providers.insert(name, p);
        }
        for (name, p) in &raw.providers {
            let offset = p.span().start;
            let p = p.get_ref();
            if name.is_empty() || name.contains('/') {
                return Err(at(
                    offset,
                    format!("provider name `{name}` must be non-empty and contain no `/`"),
                ));
            }
            let base_url = match &p.base_url {
                Some(u) => {
                    let s = u.get_ref().trim_end_matches('/').to_owned();
                    if !(s.starts_with("http://") || s.starts_with("https://")) {
                        return Err(at(
                            u.span().start,
                            format!("providers.{name}.base_url: `{s}` must start with http:// or https://"),
                        ));
                    }
                    s
                }
                None => default_base_url(p.kind).to_owned(),
            };
            if p.api_key.is_some() && p.api_key_env.is_some() {
                return Err(at(
                    offset,
                    format!("providers.{name}: set `api_key` or `api_key_env`, not both"),
                ));
            }
            let api_key = match (&p.api_key, &p.api_key_env) {
                (Some(k), _) => Some(Secret::new(k.clone())),
                (None, Some(var)) => env(var.get_ref()).filter(|s| !s.is_empty()).map(Secret::new),
                (None, None) => env(default_key_env(p.kind)).filter(|s| !s.is_empty()).map(Secret::new),
            };
            let secs = |v: Option<u64>, default: u64, field: &str| match v {
                Some(0) => Err(at(offset, format!("providers.{name}.{field} must be at least 1"))),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(Duration::from_secs(default)),
            };
            let base_offset = p.base_url.as_ref().map(|u| u.span().start).unwrap_or(offset);
            let provider = ProviderConfig::new(
                name.clone(),
                p.kind,
                base_url,
                api_key,
                secs(p.timeout_secs, 600, "timeout_secs")?,
                secs(p.stream_idle_timeout_secs, 300, "stream_idle_timeout_secs")?,
            )
            .map_err(|e| at(base_offset, e))?;
            providers.insert(name.clone(), provider);
        }

        let mut models = BTreeMap::new();
        for (name, m) in &raw.models {
            let mref = m.get_ref();
            let provider = mref.provider.get_ref();
            if !providers.contains_key(provider) {
                let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                return Err(at(
                    mref.provider.span().start,
                    format!(
                        "models.\"{name}\".provider: unknown provider `{provider}` (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            if let Some(p) = &mref.price {
                p.validate()
                    .map_err(|e| at(m.span().start, format!("models.\"{name}\".price: {e}")))?;
            }
            models.insert(
                name.clone(),
                ModelConfig {
                    provider: provider.clone(),
                    upstream: mref.upstream.clone().unwrap_or_else(|| name.clone()),
                    fallbacks: mref.fallbacks.iter().map(|f| f.get_ref().clone()).collect(),
                    price: mref.price,
                },
            );
        }
        for (name, m) in &raw.models {
            for f in &m.get_ref().fallbacks {
                let target = f.get_ref();
                let known = models.contains_key(target)
                    || target.split_once('/').is_some_and(|(p, _)| providers.contains_key(p))
                    || leanlm_cost::PriceTable::active().lookup(target).is_some();
                if !known {
                    return Err(at(
                        f.span().start,
                        format!(
                            "models.\"{name}\".fallbacks: `{target}` is neither a configured model, provider/model, nor a catalogued model"
                        ),
                    ));
                }
                if target == name {
                    return Err(at(
                        f.span().start,
                        format!("models.\"{name}\".fallbacks: a model cannot fall back to itself"),
                    ));
                }
            }
        }
        let mut prices = BTreeMap::new();
        for (name, p) in &raw.prices {
            p.get_ref()
                .validate()
                .map_err(|e| at(p.span().start, format!("prices.\"{name}\": {e}")))?;
            prices.insert(name.clone(), *p.get_ref());
        }

        let catalog_allow = match &raw.catalog.allow {
            Some(list) => {
                let mut out = Vec::new();
                for m in list {
                    if m.get_ref().trim().is_empty() {
                        return Err(at(m.span().start, "catalog.allow: a model name is empty".into()));
                    }
                    out.push(m.get_ref().trim().to_owned());
                }
                out
            }
            None => models.keys().cloned().collect(),
        };
        let judge_model = match &raw.validation.judge {
            Some(j) if j.get_ref().trim().is_empty() => {
                return Err(at(j.span().start, "validation.judge: the model name is empty".into()));
            }
            Some(j) => Some(j.get_ref().trim().to_owned()),
            None => None,
        };
        let d = OptimizerConfig::default();
        let optimizer = OptimizerConfig {
            exclude: raw.optimizer.exclude.clone().unwrap_or_default(),
            min_calls: raw.optimizer.min_calls.unwrap_or(d.min_calls),
            budget_usd: match &raw.optimizer.budget_usd {
                Some(b) if b.get_ref().is_finite() && *b.get_ref() > 0.0 => Some(*b.get_ref()),
                Some(b) => {
                    return Err(at(
                        b.span().start,
                        format!(
                            "optimizer.budget_usd must be a positive amount of USD, not {}",
                            b.get_ref()
                        ),
                    ));
                }
                None => None,
            },
            retry_after_days: match &raw.optimizer.retry_after_days {
                Some(r) if r.get_ref().is_finite() && *r.get_ref() >= 0.0 => *r.get_ref(),
                Some(r) => {
                    return Err(at(
                        r.span().start,
                        format!("optimizer.retry_after_days must be 0 or more days, not {}", r.get_ref()),
                    ));
                }
                None => d.retry_after_days,
            },
        };
        let retry = RetryPolicy {
            max_retries: raw.retry.max_retries.unwrap_or(2),
            base_backoff: Duration::from_millis(raw.retry.base_backoff_ms.unwrap_or(250)),
            max_backoff: Duration::from_millis(raw.retry.max_backoff_ms.unwrap_or(20_000)),
            deadline: match &raw.retry.deadline_secs {
                None => Duration::from_secs(600),
                Some(d) if d.get_ref().is_finite() && *d.get_ref() > 0.0 && *d.get_ref() <= 86_400.0 => {
                    Duration::from_secs_f64(*d.get_ref())
                }
                Some(d) => {
                    return Err(at(
                        d.span().start,
                        format!(
                            "retry.deadline_secs: {} is not a number of seconds above 0 (at most a day)",
                            d.get_ref()
                        ),
                    ));
                }
            },
        };
        Ok(Config {
            listen,
            workers,
            store_url: overrides
                .db
                .clone()
                .or_else(|| env("LEANLM_DB"))
                .or(raw.store.url)
                .unwrap_or_else(|| "sqlite://leanlm.db".to_owned()),
            log_bodies: raw.store.log_bodies.unwrap_or(true),
            admin_token: raw
                .admin
                .token
                .clone()
                .or_else(|| env(raw.admin.token_env.as_deref().unwrap_or("LEANLM_ADMIN_TOKEN")))
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            log_queue_capacity: raw.store.queue_capacity.unwrap_or(100_000).max(1),
            log_queue_bytes: raw.store.queue_max_bytes.unwrap_or(64 << 20),
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(32 * 1024 * 1024),
            limits,
            allowed_origins: raw
                .server
                .allowed_origins
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            allowed_hosts: raw
                .server
                .allowed_hosts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            passthrough: raw.server.passthrough.unwrap_or(true),
            retry,
            cache: CacheConfig {
                mode: raw.cache.exact.unwrap_or(CacheMode::Deterministic),
                ttl: Duration::from_secs(raw.cache.ttl_secs.unwrap_or(3600)),
                max_entries: raw.cache.max_entries.unwrap_or(10_000),
                redis: match &raw.cache.redis {
                    Some(u) if !(u.get_ref().starts_with("redis://") || u.get_ref().starts_with("rediss://")) => {
                        return Err(at(
                            u.span().start,
                            format!("cache.redis: `{}` must be a redis:// URL", u.get_ref()),
                        ));
                    }
                    Some(u) => Some(u.get_ref().clone()),
                    None => None,
                },
                tasks: raw
                    .cache
                    .tasks
                    .iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            TaskCachePolicy {
                                mode: t.get_ref().exact,
                                ttl: t.get_ref().ttl_secs.map(Duration::from_secs),
                            },
                        )
                    })
                    .collect(),
                semantic: match &raw.cache.semantic {
                    Some(s) => semantic_config(s.get_ref()).map_err(|m| at(s.span().start, m))?,
                    None => Default::default(),
                },
                semantic_tasks: raw
                    .cache
                    .tasks
                    .iter()
                    .map(|(k, t)| {
                        Ok((
                            k.clone(),
                            task_semantic(k, t.get_ref()).map_err(|m| at(t.span().start, m))?,
                        ))
                    })
                    .collect::<Result<_, ConfigError>>()?,
            },
            providers,
            models,
            prices,
            catalog_allow,
            judge_model,
            optimizer,
        })
    }
}

/// `[cache.semantic]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// On for every task; otherwise per task (`[cache.tasks.NAME] semantic = true`) or by a
    /// `cache:semantic` policy.
    pub enabled: bool,
    /// The highest false-hit rate allowed, as the upper end of its confidence interval.
    pub bound: f64,
    /// The share of would-be hits still sent upstream and compared once hits are served.
    pub verify: f64,
    /// Below this similarity a request is not even a would-be hit.
    pub min_similarity: f32,
    /// Entries per partition; the oldest are overwritten.
    pub max_entries: usize,
    /// Entries in all partitions together: once reached, only full partitions take new entries (over their
    /// oldest), so many small partitions cannot grow memory without bound.
    pub max_total_entries: usize,
    /// Entries are also written to the store and reloaded at start, so a restart keeps the cache (never
    /// where `[store] log_bodies = false`: an entry holds the request's text and the answer).
    pub persist: bool,
    pub embeddings: Embeddings,
    pub judgement: Judgement,
}

/// How a would-be hit is judged before its score meets the task's calibrated threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// A logistic verifier fitted on the task's own verified would-be hits (a public prior until it has
    /// enough), reading the lexical guards as evidence: the threshold applies to its score.
    Learned,
    /// The lexical guards veto; the threshold applies to the similarity.
    Guards,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig {
            enabled: false,
            bound: 0.01,
            verify: 0.05,
            min_similarity: 0.8,
            max_entries: 10_000,
            max_total_entries: 200_000,
            persist: true,
            embeddings: Embeddings::Local { model_dir: None },
            judgement: Judgement::Guards,
        }
    }
}

/// A task's own semantic settings, from `[cache.tasks.NAME]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskSemantic {
    pub enabled: Option<bool>,
    pub bound: Option<f64>,
    pub scorer: Option<leanlm_core::ScorerSpec>,
}

/// Where embeddings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Embeddings {
    /// In-process, from model files in this directory (default: the embedder's own default).
    Local { model_dir: Option<PathBuf> },
    /// A configured embedding model, asked through its provider's `/v1/embeddings`.
    Remote { model: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml("leanlm.toml", text, &Overrides::default(), &|k| match k {
            "OPENAI_API_KEY" => Some("sk-env".into()),
            "MY_KEY" => Some("sk-mine".into()),
            _ => None,
        })
    }

    #[test]
    fn defaults_need_no_file() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store_url, "sqlite://leanlm.db");
        assert_eq!(c.providers["openai"].api_key.as_ref().unwrap().expose(), "sk-env");
        assert!(c.providers["anthropic"].api_key.is_none());
        assert_eq!(c.providers["gemini"].kind, ProviderKind::Gemini);
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../leanlm.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.catalog_allow, ["gpt-4o-mini", "claude-haiku-4-5", "llama-local"]);
        assert_eq!(c.judge_model.as_deref(), Some("gpt-4o"));
        assert_eq!(c.optimizer, OptimizerConfig::default());
    }

    #[test]
    fn the_optimizer_guardrails_are_read_and_checked() {
        let c =
            parse("[optimizer]\nexclude = [\"billing\"]\nmin_calls = 500\nbudget_usd = 2.5\nretry_after_days = 1\n")
                .unwrap();
        assert_eq!(
            c.optimizer,
            OptimizerConfig {
                exclude: vec!["billing".into()],
                min_calls: 500,
                budget_usd: Some(2.5),
                retry_after_days: 1.0,
            }
        );
        assert_eq!(parse("").unwrap().optimizer, OptimizerConfig::default());
        for (bad, says) in [
            ("budget_usd = -1", "optimizer.budget_usd"),
            ("retry_after_days = -2", "optimizer.retry_after_days"),
            ("min_calls = -5", "min_calls"),
            ("budget = 3", "budget"),
        ] {
            let e = parse(&format!("[optimizer]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(":2:"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_judge_is_optional_and_never_empty() {
        assert_eq!(parse("").unwrap().judge_model, None);
        let e = parse("[validation]\njudge = \"  \"\n").unwrap_err().to_string();
        assert!(e.contains("validation.judge") && e.contains(":2:"), "{e}");
        let e = parse("[validation]\njudges = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("judges"), "{e}");
    }

    #[test]
    fn the_catalog_defaults_to_the_configured_models_and_refuses_empty_names() {
        let c = parse("[models.fast]\nprovider = \"openai\"\nupstream = \"gpt-4o-mini\"\n").unwrap();
        assert_eq!(c.catalog_allow, ["fast"]);
        let e = parse("[catalog]\nallow = [\"gpt-4o-mini\", \" \"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("catalog.allow") && e.contains(":2:"), "{e}");
        let e = parse("[catalog]\nallowed = []\n").unwrap_err().to_string();
        assert!(e.contains("allowed"), "{e}");
    }

    #[test]
    fn providers_and_models_are_read() {
        let c = parse(
            r#"
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:9000/v1/"
api_key_env = "MY_KEY"
timeout_secs = 5

[models.fast]
provider = "local"
upstream = "llama"
fallbacks = ["gpt-4o-mini", "anthropic/claude-haiku-4-5"]
price = { input = 0.1, output = 0.2 }
"#,
        )
        .unwrap();
        let p = &c.providers["local"];
        assert_eq!(p.base_url, "http://127.0.0.1:9000/v1");
        assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-mine");
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(c.models["fast"].upstream, "llama");
        assert_eq!(c.models["fast"].fallbacks.len(), 2);
        assert_eq!(format!("{:?}", p.api_key), "Some(Secret(***))");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\n[providers.x]\nkind = \"openai\"\nbse_url = \"http://a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("leanlm.toml:6:1:"), "{e}");
        assert!(e.contains("bse_url"), "{e}");

        let e = parse("[models.m]\nprovider = \"nope\"\n").unwrap_err().to_string();
        assert!(e.starts_with("leanlm.toml:2:"), "{e}");
        assert!(e.contains("unknown provider `nope`"), "{e}");

        let e = parse("[providers.x]\nkind = \"openai\"\ntimeout_secs = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("leanlm.toml:3:"), "{e}");
        assert!(e.contains("timeout_secs"), "{e}");

        let e = parse("[providers.x]\nkind = \"openai\"\nbase_url = \"http://exa mple.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("leanlm.toml:3:") && e.contains("not a valid URL"), "{e}");

        let e = parse("[providers.x]\nkind = \"cohere\"\n").unwrap_err().to_string();
        assert!(e.contains("cohere"), "{e}");

        let e = parse("[server]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.starts_with("leanlm.toml:2:"), "{e}");

        let e = parse("[models.m]\nprovider = \"openai\"\nfallbacks = [\"ghost\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("leanlm.toml:3:"), "{e}");
        assert!(e.contains("ghost"), "{e}");

        let e = parse("[models.m]\nprovider = \"openai\"\nprice = { input = -1.0, output = 1.0 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("input"), "{e}");
    }

    #[test]
    fn workers_come_from_the_environment_the_file_or_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse("").unwrap().workers.get(), cores);
        assert_eq!(parse("[server]\nworkers = 3\n").unwrap().workers.get(), 3);
        let with_env = |text: &str, value: &str| {
            Config::from_toml("leanlm.toml", text, &Overrides::default(), &|k| {
                (k == "LEANLM_WORKERS").then(|| value.to_owned())
            })
        };
        assert_eq!(with_env("[server]\nworkers = 3\n", "5").unwrap().workers.get(), 5);

        let e = parse("[server]\nworkers = 0\n").unwrap_err().to_string();
        assert!(
            e.starts_with("leanlm.toml:2:") && e.contains("`workers` must be 1 or more"),
            "{e}"
        );
        let e = parse("[server]\nworkers = \"many\"\n").unwrap_err().to_string();
        assert!(e.starts_with("leanlm.toml:2:") && e.contains("workers"), "{e}");
        let e = with_env("", "none").unwrap_err().to_string();
        assert!(e.contains("LEANLM_WORKERS") && e.contains("none"), "{e}");
        assert!(with_env("", "0").is_err());
    }

    #[test]
    fn overrides_win_over_the_file_and_environment() {
        let o = Overrides {
            listen: Some("127.0.0.1:9999".into()),
            db: Some("sqlite://other.db".into()),
        };
        let c = Config::from_toml(
            "f",
            "[server]\nlisten = \"127.0.0.1:1\"\n[store]\nurl = \"sqlite://a.db\"\n",
            &o,
            &|k| (k == "LEANLM_LISTEN").then(|| "127.0.0.1:2".into()),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.store_url, "sqlite://other.db");
        let c = Config::from_toml("f", "", &Overrides::default(), &|k| {
            (k == "LEANLM_LISTEN").then(|| "127.0.0.1:2".into())
        })
        .unwrap();
        assert_eq!(c.listen.port(), 2);
    }
}
