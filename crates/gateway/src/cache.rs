//! The exact cache: a repeated request, byte for byte in meaning, answered from memory.
//!
//! The key is a hash of everything that shapes the answer (the client's wire format, the provider and model
//! that serve it, and the request with its JSON keys sorted and whitespace gone), leaving out only what
//! does not change the answer (`stream`, `stream_options`, `user`, `metadata`). A request is served from
//! the cache only where that is safe: deterministic requests (temperature 0) or an explicit opt-in
//! (`X-LeanLM-Cache: on`). The whole response is cached, so `n > 1` is served only with all its choices.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;
use bytes::Bytes;
use leanlm_wire::ClientFormat;
use redis::aio::ConnectionManager;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{CacheConfig, CacheMode};
use crate::route::Target;

pub const HEADER_CACHE: &str = "x-leanlm-cache";

/// What the client asked of the cache with `X-LeanLM-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// No header: the configured mode decides.
    Default,
    /// Use the cache even for a request that is not deterministic.
    On,
    /// Neither read nor write.
    Off,
    /// Do not read; ask the upstream and store its answer.
    Refresh,
}

impl Directive {
    pub fn from_headers(headers: &HeaderMap) -> Result<Directive, String> {
        match headers
            .get(HEADER_CACHE)
            .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
        {
            None => Ok(Directive::Default),
            Some(v) => match v.as_str() {
                "on" => Ok(Directive::On),
                "off" => Ok(Directive::Off),
                "refresh" => Ok(Directive::Refresh),
                other => Err(format!("X-LeanLM-Cache must be on, off or refresh, not `{other}`")),
            },
        }
    }
}

pub type Key = [u8; 32];

/// A cached answer: the response body in the client's format, non-streaming, with what it cost.
#[derive(Debug, Clone)]
pub struct Entry {
    pub body: Bytes,
    pub cost_usd: Option<f64>,
    pub model: String,
    pub provider: String,
    stored: Instant,
    ttl: std::time::Duration,
}

impl Entry {
    pub fn new(body: Bytes, cost_usd: Option<f64>, target: &Target, ttl: std::time::Duration) -> Entry {
        Entry {
            body,
            cost_usd,
            model: target.model.clone(),
            provider: target.provider.name.clone(),
            stored: Instant::now(),
            ttl,
        }
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Insertion order, for evicting the oldest entry once full.
    order: VecDeque<Key>,
}

/// Where entries live: this process's memory, or a Redis shared by several gateway instances.
enum Backend {
    Memory(Mutex<Inner>),
    Redis(Box<Redis>),
}

/// A Redis connection is driven by the runtime it was first used on. Serving threads each run their own
/// runtime, so each has a connection of its own (see [`ExactCache::worker_connection`]); the shared one
/// serves everything else (the in-process `Gateway::serve`, background tasks).
struct Redis {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    shared: ConnectionManager,
}

thread_local! {
    /// The serving thread's own Redis connection, set for as long as the thread serves.
    static LOCAL_REDIS: RefCell<Option<ConnectionManager>> = const { RefCell::new(None) };
}

/// Makes `conn` the calling serving thread's Redis connection (`None`: back to the shared one).
pub(crate) fn set_worker_connection(conn: Option<ConnectionManager>) {
    LOCAL_REDIS.set(conn);
}

impl Redis {
    /// A connection that connects on first use: no I/O here, so a Redis that is down cannot stop a start.
    fn connect(&self) -> Result<ConnectionManager, String> {
        self.client
            .get_connection_manager_lazy(self.config.clone())
            .map_err(|e| format!("cache.redis: {e}"))
    }

    /// The calling serving thread's own connection, else the shared one.
    fn conn(&self) -> ConnectionManager {
        LOCAL_REDIS
            .with_borrow(|c| c.clone())
            .unwrap_or_else(|| self.shared.clone())
    }
}

/// A Redis lookup slower than this counts as a miss: the cache must never make a call slower than no cache.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

pub struct ExactCache {
    config: CacheConfig,
    backend: Backend,
}

impl ExactCache {
    /// A cache in memory, or in the Redis at `config.redis` (connected lazily; failures count as misses).
    pub fn new(config: CacheConfig) -> Result<ExactCache, String> {
        let backend = match &config.redis {
            None => Backend::Memory(Mutex::default()),
            Some(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| format!("cache.redis `{url}`: {e}"))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                let shared = client
                    .get_connection_manager_lazy(config.clone())
                    .map_err(|e| format!("cache.redis `{url}`: {e}"))?;
                Backend::Redis(Box::new(Redis { client, config, shared }))
            }
        };
        Ok(ExactCache { config, backend })
    }

    /// A Redis connection for one serving thread, to be made within that thread's runtime (which then
    /// drives it) and installed with [`set_worker_connection`]: a lookup then never waits for another
    /// thread's runtime to read its reply, and a worker that stops first does not cut the others off.
    /// `None` for a cache in memory.
    pub(crate) fn worker_connection(&self) -> Result<Option<ConnectionManager>, String> {
        match &self.backend {
            Backend::Memory(_) => Ok(None),
            Backend::Redis(redis) => redis.connect().map(Some),
        }
    }

    fn redis_key(key: &Key) -> String {
        format!("leanlm:exact:{}", hex::encode(key))
    }

    /// The key for a request and how long its answer may be kept, or `None` when it may not use the cache.
    /// A task's own policy (by id or name) overrides the global one.
    #[allow(clippy::too_many_arguments)] // the parts of one key, each named at the call
    pub fn key(
        &self,
        directive: Directive,
        format: ClientFormat,
        target: &Target,
        request: &[u8],
        deterministic: bool,
        task: Option<(&str, &str)>,
        scope: Option<&[u8; 32]>,
    ) -> Option<(Key, std::time::Duration)> {
        let policy = task
            .and_then(|(id, name)| self.config.tasks.get(id).or_else(|| self.config.tasks.get(name)))
            .copied()
            .unwrap_or_default();
        let mode = policy.mode.unwrap_or(self.config.mode);
        let ttl = policy.ttl.unwrap_or(self.config.ttl);
        let allowed = match (mode, directive) {
            (_, Directive::Off) | (CacheMode::Off, _) => false,
            (_, Directive::On | Directive::Refresh) | (CacheMode::Always, Directive::Default) => true,
            (CacheMode::Deterministic, Directive::Default) => deterministic,
            (CacheMode::OptIn, Directive::Default) => false,
        };
        if !allowed {
            return None;
        }
        let mut v: Value = serde_json::from_slice(request).ok()?;
        if let Some(o) = v.as_object_mut() {
            for k in ["stream", "stream_options", "user", "metadata", "model"] {
                o.remove(k);
            }
        }
        let mut h = Sha256::new();
        for part in [format.as_str(), &target.provider.name, &target.upstream_model] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        // Where the client's own key authorises the call, an answer is that key's alone.
        if let Some(scope) = scope {
            h.update(b"scope");
            h.update(scope);
        }
        // serde_json's maps are sorted, so this is the canonical form: key order and whitespace are gone.
        h.update(v.to_string().as_bytes());
        Some((h.finalize().into(), ttl))
    }

    pub async fn get(&self, key: &Key) -> Option<Entry> {
        match &self.backend {
            Backend::Memory(inner) => {
                let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
                let fresh = inner.map.get(key).is_some_and(|e| e.stored.elapsed() < e.ttl);
                if !fresh {
                    inner.map.remove(key);
                    return None;
                }
                inner.map.get(key).cloned()
            }
            Backend::Redis(redis) => {
                let mut conn = redis.conn();
                let got: Result<redis::RedisResult<Option<String>>, _> = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("GET").arg(Self::redis_key(key)).query_async(&mut conn),
                )
                .await;
                let text = match got {
                    Ok(Ok(v)) => v?,
                    Ok(Err(e)) => return redis_failed("GET", &e.to_string()),
                    Err(_) => return redis_failed("GET", "timed out"),
                };
                let v: Value = serde_json::from_str(&text).ok()?;
                Some(Entry {
                    body: Bytes::from(v.get("body")?.as_str()?.to_owned()),
                    cost_usd: v.get("cost_usd").and_then(Value::as_f64),
                    model: v.get("model")?.as_str()?.to_owned(),
                    provider: v.get("provider")?.as_str()?.to_owned(),
                    stored: Instant::now(),
                    // Redis expires the key itself.
                    ttl: std::time::Duration::MAX,
                })
            }
        }
    }

    /// Stores an answer. With Redis the write leaves the request path: a task sends it.
    pub fn put(&self, key: Key, entry: Entry) {
        let inner = match &self.backend {
            Backend::Memory(inner) => inner,
            Backend::Redis(redis) => {
                let mut conn = redis.conn();
                let value = serde_json::json!({
                    "body": String::from_utf8_lossy(&entry.body), "cost_usd": entry.cost_usd,
                    "model": entry.model, "provider": entry.provider,
                })
                .to_string();
                let ttl = entry.ttl.as_secs().max(1);
                tokio::spawn(async move {
                    let set: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(Self::redis_key(&key))
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = set {
                        redis_failed::<()>("SET", &e.to_string());
                    }
                });
                return;
            }
        };
        if self.config.max_entries == 0 {
            return;
        }
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.insert(key, entry).is_none() {
            inner.order.push_back(key);
        }
        while inner.map.len() > self.config.max_entries {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys evicted by TTL leave stale order slots behind; keep the queue bounded too.
        if inner.order.len() > 2 * self.config.max_entries.max(1) {
            let Inner { map, order } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
    }
}

/// A Redis failure is a miss, counted and logged, never an error for the caller.
fn redis_failed<T>(op: &str, error: &str) -> Option<T> {
    metrics::counter!("leanlm_cache_errors_total").increment(1);
    tracing::warn!(op, error, "exact cache: Redis unavailable, treated as a miss");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use crate::route::Routes;
    use std::sync::Arc;
    use std::time::Duration;

    fn target() -> Target {
        let c = Arc::new(Config::from_toml("t", "", &Overrides::default(), &|_| None).unwrap());
        Routes::new(c).resolve("gpt-4o").unwrap().remove(0)
    }

    fn cache(mode: CacheMode) -> ExactCache {
        let mut tasks = std::collections::HashMap::new();
        let labels = crate::config::TaskCachePolicy {
            mode: Some(CacheMode::Always),
            ttl: Some(Duration::from_secs(9)),
        };
        tasks.insert("labels".to_owned(), labels);
        ExactCache::new(CacheConfig {
            mode,
            ttl: Duration::from_millis(200),
            max_entries: 2,
            redis: None,
            tasks,
            semantic: Default::default(),
            semantic_tasks: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn keys_ignore_key_order_whitespace_and_streaming() {
        let c = cache(CacheMode::Deterministic);
        let t = target();
        let a = c.key(
            Directive::Default,
            ClientFormat::OpenAi,
            &t,
            br#"{"model":"x","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
            true,
            None,
            None,
        );
        let b = c.key(
            Directive::Default,
            ClientFormat::OpenAi,
            &t,
            b"{ \"messages\": [ {\"content\": \"hi\", \"role\": \"user\"} ],\n \"stream\": true, \"temperature\": 0 }",
            true,
            None,
            None,
        );
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(a.unwrap().1, Duration::from_millis(200), "the global TTL");
        let other = c.key(
            Directive::Default,
            ClientFormat::OpenAi,
            &t,
            br#"{"temperature":0,"messages":[{"role":"user","content":"hello"}]}"#,
            true,
            None,
            None,
        );
        assert_ne!(a, other);
        let anthropic = c.key(
            Directive::Default,
            ClientFormat::Anthropic,
            &t,
            br#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
            true,
            None,
            None,
        );
        assert_ne!(a, anthropic, "one cache entry per client format");
    }

    #[test]
    fn only_safe_requests_use_the_cache() {
        let t = target();
        let body = br#"{"temperature":0.7,"messages":[]}"#;
        let det = cache(CacheMode::Deterministic);
        assert!(
            det.key(Directive::Default, ClientFormat::OpenAi, &t, body, false, None, None)
                .is_none()
        );
        assert!(
            det.key(Directive::On, ClientFormat::OpenAi, &t, body, false, None, None)
                .is_some()
        );
        assert!(
            det.key(Directive::Off, ClientFormat::OpenAi, &t, body, true, None, None)
                .is_none()
        );
        assert!(
            cache(CacheMode::OptIn)
                .key(Directive::Default, ClientFormat::OpenAi, &t, body, true, None, None)
                .is_none()
        );
        assert!(
            cache(CacheMode::Off)
                .key(Directive::On, ClientFormat::OpenAi, &t, body, true, None, None)
                .is_none()
        );
    }

    #[test]
    fn a_credential_scope_keys_its_own_entries() {
        let c = cache(CacheMode::Deterministic);
        let t = target();
        let body = br#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
        let key =
            |scope: Option<&[u8; 32]>| c.key(Directive::Default, ClientFormat::OpenAi, &t, body, true, None, scope);
        assert_ne!(key(Some(&[1; 32])), key(Some(&[2; 32])));
        assert_ne!(key(Some(&[1; 32])), key(None));
        assert_eq!(key(Some(&[1; 32])), key(Some(&[1; 32])));
    }

    #[tokio::test]
    async fn entries_expire_and_the_oldest_are_evicted() {
        let c = cache(CacheMode::Deterministic);
        let t = target();
        let e = || Entry::new(Bytes::from_static(b"{}"), Some(0.1), &t, Duration::from_millis(200));
        c.put([1; 32], e());
        c.put([2; 32], e());
        assert!(c.get(&[1; 32]).await.is_some());
        c.put([3; 32], e());
        assert!(c.get(&[1; 32]).await.is_none(), "evicted: at most two entries");
        assert!(c.get(&[3; 32]).await.is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(c.get(&[3; 32]).await.is_none(), "expired");
    }

    #[test]
    fn a_task_policy_overrides_the_global_one() {
        let c = cache(CacheMode::OptIn);
        let t = target();
        let body = br#"{"temperature":0.9,"messages":[]}"#;
        assert!(
            c.key(
                Directive::Default,
                ClientFormat::OpenAi,
                &t,
                body,
                false,
                Some(("t_x", "other")),
                None,
            )
            .is_none()
        );
        let (_, ttl) = c
            .key(
                Directive::Default,
                ClientFormat::OpenAi,
                &t,
                body,
                false,
                Some(("t_x", "labels")),
                None,
            )
            .unwrap();
        assert_eq!(ttl, Duration::from_secs(9));
        assert!(
            c.key(
                Directive::Off,
                ClientFormat::OpenAi,
                &t,
                body,
                false,
                Some(("labels", "x")),
                None,
            )
            .is_none()
        );
    }

    #[test]
    fn the_header_is_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(Directive::from_headers(&h), Ok(Directive::Default));
        h.insert(HEADER_CACHE, "Refresh".parse().unwrap());
        assert_eq!(Directive::from_headers(&h), Ok(Directive::Refresh));
        h.insert(HEADER_CACHE, "sometimes".parse().unwrap());
        assert!(Directive::from_headers(&h).unwrap_err().contains("on, off or refresh"));
    }
}
