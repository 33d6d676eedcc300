//! Talking to providers: request construction per wire format, timeouts, retries with jittered backoff
//! that honour `Retry-After`, and the fallback chain.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use leanlm_wire::{ErrorKind, ProviderKind, WireError};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ProviderConfig, RetryPolicy, Secret};
use crate::route::Target;

/// What the client sent that an upstream may need.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// The client's own key, used where the provider has none configured.
    pub key: Option<Secret>,
    pub anthropic_version: Option<HeaderValue>,
    pub anthropic_beta: Option<HeaderValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat { stream: bool },
    Embeddings,
}

/// A request ready to send to one target.
#[derive(Debug)]
pub struct Prepared {
    pub url: reqwest::Url,
    pub body: Bytes,
    pub headers: HeaderMap,
    /// The key the request carries (the provider's, or the client's), to scrub from upstream messages.
    key: Option<Secret>,
}

const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Builds the URL and headers for a provider; the body is already in its format.
pub fn prepare(target: &Target, op: Operation, body: Bytes, auth: &ClientAuth) -> Result<Prepared, WireError> {
    let p = &target.provider;
    let key = p.api_key.as_ref().or(auth.key.as_ref());
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let secret = |k: &Secret| {
        HeaderValue::from_str(k.expose())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .map_err(|_| {
                WireError::new(
                    ErrorKind::Authentication,
                    "the API key contains characters not allowed in a header",
                )
            })
    };
    let gemini = |action: &str| {
        // The model name goes in the URL's path: only a plain name, never one that could reach another path.
        let plain = |m: &str| {
            !m.is_empty() && !m.contains("..") && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !plain(&target.upstream_model) {
            return Err(WireError::invalid(format!(
                "model name `{}` cannot go in a Gemini URL: letters, digits and `-_.` only",
                target.upstream_model
            )));
        }
        reqwest::Url::parse(&format!(
            "{}/v1beta/models/{}:{action}",
            p.base_url, target.upstream_model
        ))
        .map_err(|e| {
            WireError::invalid(format!(
                "model name `{}` cannot go in a URL: {e}",
                target.upstream_model
            ))
        })
    };
    let url = match (p.kind, op) {
        (ProviderKind::OpenAi, Operation::Chat { .. }) | (ProviderKind::Anthropic, Operation::Chat { .. }) => {
            p.chat_url.clone()
        }
        (ProviderKind::OpenAi, Operation::Embeddings) => p.embeddings_url.clone(),
        (ProviderKind::Anthropic, Operation::Embeddings) => {
            return Err(WireError::invalid(format!(
                "model `{}` is served by an Anthropic provider, which has no embeddings endpoint",
                target.model
            )));
        }
        (ProviderKind::Gemini, Operation::Chat { stream: false }) => gemini("generateContent")?,
        (ProviderKind::Gemini, Operation::Chat { stream: true }) => gemini("streamGenerateContent?alt=sse")?,
        (ProviderKind::Gemini, Operation::Embeddings) => gemini("batchEmbedContents")?,
    };
    match p.kind {
        ProviderKind::OpenAi => {
            if let Some(k) = key {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                    WireError::new(
                        ErrorKind::Authentication,
                        "the API key contains characters not allowed in a header",
                    )
                })?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        ProviderKind::Anthropic => {
            if let Some(k) = key {
                headers.insert(HeaderName::from_static("x-api-key"), secret(k)?);
            }
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                auth.anthropic_version
                    .clone()
                    .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION)),
            );
            if let Some(b) = &auth.anthropic_beta {
                headers.insert(HeaderName::from_static("anthropic-beta"), b.clone());
            }
        }
        ProviderKind::Gemini => {
            if let Some(k) = key {
                headers.insert(HeaderName::from_static("x-goog-api-key"), secret(k)?);
            }
        }
    }
    Ok(Prepared {
        url,
        body,
        headers,
        key: key.cloned(),
    })
}

/// Why no upstream answered successfully.
#[derive(Debug)]
pub enum UpstreamError {
    /// The request could not be put into the target's format.
    Translate(WireError),
    /// The upstream answered with an error status.
    Status {
        status: u16,
        message: String,
    },
    Timeout {
        provider: String,
        after: Duration,
    },
    Connect {
        provider: String,
        message: String,
    },
    /// The request's deadline passed before any upstream answered.
    Deadline {
        attempts: u32,
    },
}

impl UpstreamError {
    fn retryable(&self) -> bool {
        match self {
            UpstreamError::Translate(_) => false,
            UpstreamError::Status { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            UpstreamError::Timeout { .. } | UpstreamError::Connect { .. } => true,
            UpstreamError::Deadline { .. } => false,
        }
    }

    /// The HTTP status and error for the client.
    pub fn to_client(&self) -> (u16, WireError) {
        match self {
            UpstreamError::Translate(e) => (status_of(e.kind), e.clone()),
            UpstreamError::Status { status, message, .. } => (
                *status,
                WireError::new(ErrorKind::from_status(*status), message.clone()),
            ),
            UpstreamError::Timeout { provider, after } => (
                504,
                WireError::new(
                    ErrorKind::Timeout,
                    format!("upstream `{provider}` did not answer within {}s", after.as_secs_f64()),
                ),
            ),
            UpstreamError::Connect { provider, message } => (
                502,
                WireError::new(
                    ErrorKind::Upstream,
                    format!("could not reach upstream `{provider}`: {message}"),
                ),
            ),
            UpstreamError::Deadline { attempts } => (
                504,
                WireError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no upstream answered within the request's deadline ({attempts} attempts; [retry] deadline_secs or X-LeanLM-Timeout)"
                    ),
                ),
            ),
        }
    }
}

/// The HTTP status LeanLM uses for errors it raises itself.
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest => 400,
        ErrorKind::Authentication => 401,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::RequestTooLarge => 413,
        ErrorKind::RateLimited => 429,
        ErrorKind::Upstream => 502,
        ErrorKind::Overloaded => 503,
        ErrorKind::Timeout => 504,
    }
}

/// A successful upstream response and how it was reached.
pub struct Sent {
    pub response: reqwest::Response,
    /// Index into the chain of the target that answered.
    pub target: usize,
    pub attempts: u32,
    /// Time spent waiting on upstreams and backoff, to separate the gateway's own overhead.
    pub waited: Duration,
}

/// The outcome of a failed chain, with what it cost to get there.
pub struct Failed {
    pub error: UpstreamError,
    pub target: usize,
    pub attempts: u32,
    pub waited: Duration,
}

/// Sends to each target in turn, retrying each as the policy allows, until one answers 2xx.
///
/// `build` puts the request into a target's format. A non-retryable error (a 4xx other than 408/409/429)
/// ends the chain at once: another model would be asked the same bad question.
pub async fn send(
    http: &reqwest::Client,
    chain: &[Target],
    policy: &RetryPolicy,
    deadline: Instant,
    mut build: impl FnMut(&Target) -> Result<Prepared, WireError>,
) -> Result<Sent, Failed> {
    let mut attempts = 0;
    let mut waited = Duration::ZERO;
    let mut last = None;
    for (i, target) in chain.iter().enumerate() {
        if deadline <= Instant::now() {
            break;
        }
        let prepared = match build(target) {
            Ok(p) => p,
            Err(e) => {
                let error = UpstreamError::Translate(e);
                if i == 0 && chain.len() == 1 {
                    return Err(Failed {
                        error,
                        target: i,
                        attempts,
                        waited,
                    });
                }
                last = Some((error, i));
                continue;
            }
        };
        let provider = &target.provider;
        // The first attempt sends what was built; a retry builds it again rather than every call copying
        // its URL and headers in case one is needed.
        let mut first = Some(prepared);
        for attempt in 0..=policy.max_retries {
            let Prepared {
                url,
                body,
                headers,
                key,
            } = match first.take().map_or_else(|| build(target), Ok) {
                Ok(p) => p,
                Err(e) => {
                    last = Some((UpstreamError::Translate(e), i));
                    break;
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            attempts += 1;
            let started = Instant::now();
            let req = http.post(url).headers(headers).body(body);
            let result = tokio::time::timeout(provider.timeout.min(left), req.send()).await;
            waited += started.elapsed();
            let (error, retry_after) = match result {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    return Ok(Sent {
                        response: resp,
                        target: i,
                        attempts,
                        waited,
                    });
                }
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let retry_after = retry_after(resp.headers());
                    let t0 = Instant::now();
                    let body = tokio::time::timeout(provider.timeout, resp.bytes())
                        .await
                        .ok()
                        .and_then(Result::ok);
                    waited += t0.elapsed();
                    let mut message =
                        describe_error_body(provider, status, body.as_deref().unwrap_or_default(), key.as_ref());
                    if matches!(status, 401 | 403) && key.is_none() {
                        message.push_str(&no_key_hint(provider));
                    }
                    (UpstreamError::Status { status, message }, retry_after)
                }
                Ok(Err(e)) => (
                    UpstreamError::Connect {
                        provider: provider.name.clone(),
                        message: describe_reqwest(&e)
                            + &if key.is_none() {
                                no_key_hint(provider)
                            } else {
                                String::new()
                            },
                    },
                    None,
                ),
                Err(_) => (
                    UpstreamError::Timeout {
                        provider: provider.name.clone(),
                        after: provider.timeout.min(left),
                    },
                    None,
                ),
            };
            tracing::debug!(provider = %provider.name, model = %target.upstream_model, attempt, error = ?error, "upstream attempt failed");
            if !error.retryable() {
                return Err(Failed {
                    error,
                    target: i,
                    attempts,
                    waited,
                });
            }
            let wait = backoff(policy, attempt, retry_after);
            last = Some((error, i));
            match wait {
                Some(w) if attempt < policy.max_retries && Instant::now() + w < deadline => {
                    let t0 = Instant::now();
                    tokio::time::sleep(w).await;
                    waited += t0.elapsed();
                }
                // Out of retries, or told to wait longer than we allow: try the next model.
                _ => break,
            }
        }
    }
    let (error, target) = match last {
        // The deadline, not the upstreams, ended it.
        _ if deadline <= Instant::now() => (UpstreamError::Deadline { attempts }, last.map_or(0, |l| l.1)),
        Some(l) => l,
        None => (
            UpstreamError::Translate(WireError::new(ErrorKind::Upstream, "no upstream to send to")),
            0,
        ),
    };
    Err(Failed {
        error,
        target,
        attempts,
        waited,
    })
}

/// What to say when a call reached, or failed to reach, a provider without any key: which variable to set.
fn no_key_hint(provider: &ProviderConfig) -> String {
    format!(
        " (no API key was sent: set {} or `api_key_env` under [providers.{}], or send the client's own key)",
        crate::config::default_key_env(provider.kind),
        provider.name
    )
}

/// How long to wait before the next attempt, or `None` when `Retry-After` asks for more than the cap.
fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
    if let Some(ra) = retry_after {
        return (ra <= policy.max_backoff).then_some(ra);
    }
    let exp = policy
        .base_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(policy.max_backoff);
    // Full jitter: spreads retries from many clients hit by the same outage.
    let ms = rand::rng().random_range(0..=exp.as_millis() as u64);
    Some(Duration::from_millis(ms))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The upstream's own error message, with any trace of the provider's key removed.
pub(crate) fn describe_error_body(provider: &ProviderConfig, status: u16, body: &[u8], key: Option<&Secret>) -> String {
    let msg = leanlm_wire::error::upstream_error_message(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(300).collect();
        if text.trim().is_empty() {
            format!("upstream `{}` answered HTTP {status} with an empty body", provider.name)
        } else {
            format!("upstream `{}` answered HTTP {status}: {}", provider.name, text.trim())
        }
    });
    redact(&msg, key)
}

pub fn redact(text: &str, key: Option<&Secret>) -> String {
    match key {
        Some(k) if k.expose().len() >= 8 && text.contains(k.expose()) => text.replace(k.expose(), "[REDACTED]"),
        _ => text.to_owned(),
    }
}

/// [`redact`] for a body: the gateway's key wherever it appears (an upstream or a proxy in front of it that
/// echoes request headers), copied only when it does.
pub(crate) fn redact_bytes(body: bytes::Bytes, key: Option<&Secret>) -> bytes::Bytes {
    match key.map(|k| k.expose().as_bytes()).filter(|k| k.len() >= 8) {
        Some(k) => redact_key(body, k),
        None => body,
    }
}

/// [`redact_bytes`] across the pieces of a stream: a key split between two pieces is caught too. The bytes
/// at the end of a piece that could be the start of the key wait for the next piece (at most the key's
/// length less one byte, and only while they match its start); [`StreamRedactor::finish`] gives back what
/// still waits when the stream ends.
pub(crate) struct StreamRedactor {
    key: Option<Vec<u8>>,
    held: Vec<u8>,
}

impl StreamRedactor {
    pub(crate) fn new(key: Option<&Secret>) -> StreamRedactor {
        StreamRedactor {
            key: key.map(|k| k.expose().as_bytes().to_vec()).filter(|k| k.len() >= 8),
            held: Vec::new(),
        }
    }

    /// The piece to send for this one: redacted, less what waits for the next.
    pub(crate) fn push(&mut self, piece: bytes::Bytes) -> bytes::Bytes {
        let Some(k) = &self.key else {
            return piece;
        };
        let joined = if self.held.is_empty() {
            piece
        } else {
            let mut v = std::mem::take(&mut self.held);
            v.extend_from_slice(&piece);
            bytes::Bytes::from(v)
        };
        let out = redact_key(joined, k);
        let hold = (1..k.len())
            .rev()
            .find(|&n| n <= out.len() && out.ends_with(&k[..n]))
            .unwrap_or(0);
        self.held = out[out.len() - hold..].to_vec();
        out.slice(..out.len() - hold)
    }

    /// What still waits: the stream ended with the start of the key but not the rest of it.
    pub(crate) fn finish(self) -> bytes::Bytes {
        bytes::Bytes::from(self.held)
    }
}

fn redact_key(body: bytes::Bytes, k: &[u8]) -> bytes::Bytes {
    let finder = memchr::memmem::Finder::new(k);
    if finder.find(&body).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest: &[u8] = &body;
    while let Some(i) = finder.find(rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"[REDACTED]");
        rest = &rest[i + k.len()..];
    }
    out.extend_from_slice(rest);
    out.into()
}

pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of cutting a body holding the key twice into pieces: the key never reaches the client, and
    /// everything else does, in order.
    #[test]
    fn a_key_split_across_stream_pieces_is_redacted() {
        let key = Secret::new("sk-gateway-secret-1234");
        let body = b"data: {\"echo\": \"sk-gateway-secret-1234\"}\n\ndata: sk-gateway-secret-1234 and sk-gate";
        let want = redact_bytes(bytes::Bytes::from_static(body), Some(&key));
        assert!(!want.windows(22).any(|w| w == b"sk-gateway-secret-1234"));
        for a in 0..body.len() {
            for b in a..body.len() {
                let mut r = StreamRedactor::new(Some(&key));
                let mut out = Vec::new();
                for piece in [&body[..a], &body[a..b], &body[b..]] {
                    out.extend_from_slice(&r.push(bytes::Bytes::copy_from_slice(piece)));
                }
                out.extend_from_slice(&r.finish());
                assert_eq!(out, want, "cut at {a} and {b}");
            }
        }
        // Without a key nothing is held back.
        let mut r = StreamRedactor::new(None);
        assert_eq!(r.push(bytes::Bytes::from_static(b"sk-gate")), "sk-gate");
    }

    #[test]
    fn retry_after_reads_seconds_ms_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_is_jittered_capped_and_respects_retry_after() {
        let p = RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            deadline: Duration::from_secs(60),
        };
        for attempt in 0..10 {
            let w = backoff(&p, attempt, None).unwrap();
            assert!(w <= Duration::from_millis(1000));
            assert!(w <= Duration::from_millis(100 << attempt.min(16)));
        }
        assert_eq!(
            backoff(&p, 0, Some(Duration::from_millis(500))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            backoff(&p, 0, Some(Duration::from_secs(5))),
            None,
            "too long a Retry-After moves on"
        );
    }

    #[test]
    fn keys_are_redacted_from_upstream_messages() {
        let k = Secret::new("sk-supersecret123");
        assert_eq!(
            redact("Incorrect API key provided: sk-supersecret123.", Some(&k)),
            "Incorrect API key provided: [REDACTED]."
        );
        assert_eq!(redact("nothing here", Some(&k)), "nothing here");
        let echoed = bytes::Bytes::from_static(
            b"{\"headers\":{\"authorization\":\"Bearer sk-supersecret123\"},\"k\":\"sk-supersecret123\"}",
        );
        assert_eq!(
            &redact_bytes(echoed, Some(&k))[..],
            b"{\"headers\":{\"authorization\":\"Bearer [REDACTED]\"},\"k\":\"[REDACTED]\"}"
        );
        let clean = bytes::Bytes::from_static(b"nothing");
        assert_eq!(
            redact_bytes(clean.clone(), Some(&k)).as_ptr(),
            clean.as_ptr(),
            "not copied"
        );
    }
}
