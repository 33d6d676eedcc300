//! Prometheus metrics: requests, errors, tokens and spend by model, latency, and the gateway's own
//! added latency.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram};

use leanlm_store::{CallRecord, CallStatus};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for the gateway's own overhead, from 10 µs to 50 ms.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process-wide recorder; installed once, shared by every gateway in the process (tests run several).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("leanlm_gateway_overhead_seconds".into()),
                OVERHEAD_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("leanlm_request_duration_seconds".into()), LATENCY_BUCKETS)
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "leanlm_requests_total",
        "Calls through the gateway, by served model, provider and status."
    );
    metrics::describe_counter!(
        "leanlm_errors_total",
        "Calls that did not end well, by model and status."
    );
    metrics::describe_counter!(
        "leanlm_tokens_total",
        "Tokens by model and kind (input, cached_input, cache_write, output, reasoning)."
    );
    metrics::describe_gauge!(
        "leanlm_spend_usd_total",
        "Cumulative spend in USD by model, from provider usage."
    );
    metrics::describe_histogram!("leanlm_request_duration_seconds", "End-to-end call latency by model.");
    metrics::describe_histogram!(
        "leanlm_gateway_overhead_seconds",
        "Time the gateway itself adds to a call: total latency minus time waiting on upstreams."
    );
    metrics::describe_counter!(
        "leanlm_call_log_dropped_total",
        "Call records dropped because the log queue was full."
    );
    metrics::describe_counter!("leanlm_call_log_written_total", "Call records written to the store.");
    metrics::describe_counter!(
        "leanlm_call_log_failed_total",
        "Call records lost to store write errors."
    );
    metrics::describe_gauge!("leanlm_call_log_queued", "Call records waiting to be written.");
    metrics::describe_counter!(
        "leanlm_semantic_shared_total",
        "Semantic-cache entries taken in from other gateways on the same store."
    );
    metrics::describe_counter!(
        "leanlm_semantic_evidence_shared_total",
        "Verified semantic would-be hits taken in from other gateways on the same store."
    );
    metrics::describe_counter!(
        "leanlm_semantic_vetoes_total",
        "Similar cached requests the semantic cache refused to answer with, by the guard that refused."
    );
}

/// A served model's metric handles, built once: looking a labelled metric up by name and labels on every call
/// (a key built, hashed and found in the registry, per metric) was ~3% of the gateway's CPU at saturation.
struct ModelMetrics {
    /// By provider, then status: the requests counter and, for statuses other than `ok`, the errors counter.
    routes: RwLock<HashMap<String, HashMap<&'static str, RouteCounters>>>,
    /// In the order of [`TOKEN_KINDS`].
    tokens: [Counter; 5],
    spend: Gauge,
    saved: Gauge,
    duration: Histogram,
}

/// A route's requests counter, and its errors counter where the status is not `ok`.
type RouteCounters = (Counter, Option<Counter>);

const TOKEN_KINDS: [&str; 5] = ["input", "cached_input", "cache_write", "output", "reasoning"];

/// Models (and providers per model) with cached handles at most; past it, calls are recorded through the
/// registry directly. Only configured or priced models are labels (others are [`OTHER`]), so this bounds
/// memory, not the series.
const MAX_CACHED: usize = 1024;

impl ModelMetrics {
    fn new(model: &str) -> ModelMetrics {
        let model = model.to_owned();
        ModelMetrics {
            routes: RwLock::default(),
            tokens: TOKEN_KINDS
                .map(|kind| metrics::counter!("leanlm_tokens_total", "model" => model.clone(), "kind" => kind)),
            spend: metrics::gauge!("leanlm_spend_usd_total", "model" => model.clone()),
            saved: metrics::gauge!("leanlm_cache_saved_usd_total", "model" => model.clone()),
            duration: metrics::histogram!("leanlm_request_duration_seconds", "model" => model),
        }
    }

    fn count(&self, model: &str, provider: &str, status: CallStatus) {
        let label = status.as_str();
        let known = self
            .routes
            .read()
            .ok()
            .and_then(|r| r.get(provider).and_then(|p| p.get(label)).cloned());
        let (requests, errors) = known.unwrap_or_else(|| {
            let handles = (
                metrics::counter!("leanlm_requests_total", "model" => model.to_owned(), "provider" => provider.to_owned(), "status" => label),
                (status != CallStatus::Ok)
                    .then(|| metrics::counter!("leanlm_errors_total", "model" => model.to_owned(), "status" => label)),
            );
            if let Ok(mut w) = self.routes.write()
                && (w.len() < MAX_CACHED || w.contains_key(provider))
            {
                w.entry(provider.to_owned()).or_default().insert(label, handles.clone());
            }
            handles
        });
        requests.increment(1);
        if let Some(e) = errors {
            e.increment(1);
        }
    }
}

/// Model names configured in any gateway of this process (aliases and `[prices]` entries): labelled in
/// metrics, as are the bundled price table's.
static CONFIGURED: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(RwLock::default);

/// The label every model neither configured nor priced is counted under: a client choosing model names
/// must not create a series per name.
pub const OTHER: &str = "other";

/// Makes these model names labels of their own in metrics.
pub fn configure_models(names: impl IntoIterator<Item = String>) {
    if let Ok(mut w) = CONFIGURED.write() {
        w.extend(names);
    }
}

/// Whether a served model name gets a label of its own: configured, or priced (as itself, or as the model
/// after a `provider/` prefix).
fn labelled(model: &str) -> bool {
    let priced = |name: &str| {
        CONFIGURED.read().is_ok_and(|c| c.contains(name)) || leanlm_cost::PriceTable::active().lookup(name).is_some()
    };
    model == UNKNOWN || priced(model) || model.split_once('/').is_some_and(|(_, m)| priced(m))
}

/// The label of calls that ended before a model was chosen.
const UNKNOWN: &str = "unknown";

fn model_metrics(model: &str) -> (Arc<ModelMetrics>, &str) {
    static MODELS: LazyLock<RwLock<HashMap<String, Arc<ModelMetrics>>>> = LazyLock::new(RwLock::default);
    // Names found not to be labels, so the price table is not searched for them on every call; cleared when
    // full, so a client inventing names cannot grow it.
    static UNLABELLED: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(RwLock::default);
    if let Some(m) = MODELS.read().ok().and_then(|m| m.get(model).cloned()) {
        return (m, model);
    }
    let known_other = UNLABELLED.read().is_ok_and(|u| u.contains(model));
    let (key, label) = if !known_other && labelled(model) {
        (model, model)
    } else {
        if !known_other && let Ok(mut u) = UNLABELLED.write() {
            if u.len() >= MAX_CACHED {
                u.clear();
            }
            u.insert(model.to_owned());
        }
        (OTHER, OTHER)
    };
    if let Some(m) = MODELS.read().ok().and_then(|m| m.get(key).cloned()) {
        return (m, label);
    }
    let m = Arc::new(ModelMetrics::new(key));
    if let Ok(mut w) = MODELS.write()
        && w.len() < MAX_CACHED
    {
        return (w.entry(key.to_owned()).or_insert(m).clone(), label);
    }
    (m, label)
}

/// Records one finished call.
pub fn record(rec: &CallRecord) {
    // Handles are bound to the recorder installed when they are made: install it first.
    handle();
    let (m, model) = model_metrics(rec.served_model.as_deref().unwrap_or(UNKNOWN));
    m.count(model, rec.provider.as_deref().unwrap_or("none"), rec.status);
    if let Some(u) = rec.usage {
        let counts = [
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.output_tokens,
            u.reasoning_tokens,
        ];
        for (counter, n) in m.tokens.iter().zip(counts) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
    if let Some(outcome) = rec.cache {
        metrics::counter!("leanlm_cache_total", "outcome" => outcome.as_str()).increment(1);
    }
    if let Some(saved) = rec.cost_avoided_usd {
        m.saved.increment(saved);
    }
    if let Some(c) = rec.cost_usd {
        m.spend.increment(c);
    }
    m.duration.record(rec.latency_ms / 1000.0);
    if let Some(o) = rec.overhead_us {
        metrics::histogram!("leanlm_gateway_overhead_seconds").record(o / 1_000_000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leanlm_core::ClientFormat;

    fn call(model: &str, provider: &str) -> CallRecord {
        CallRecord {
            id: "c".into(),
            started_at_ms: 0,
            endpoint: "chat/completions".into(),
            client_format: ClientFormat::OpenAi,
            client_key_id: None,
            task: None,
            requested_model: model.to_owned(),
            served_model: Some(model.to_owned()),
            provider: Some(provider.to_owned()),
            upstream_model: None,
            stream: false,
            status: CallStatus::UpstreamError,
            http_status: 404,
            error: None,
            usage: None,
            cost_usd: None,
            cost_estimated: false,
            latency_ms: 1.0,
            ttft_ms: None,
            overhead_us: None,
            attempts: 1,
            request_body: None,
            response_body: None,
            cache: None,
            cost_avoided_usd: None,
            policy: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn client_chosen_model_names_share_one_label() {
        configure_models(["team-fast".to_owned()]);
        for i in 0..3000 {
            record(&call(&format!("invented-model-{i}"), "metrics-test"));
            record(&call(&format!("openai/invented-{i}"), "metrics-test"));
        }
        record(&call("gpt-4o-mini", "metrics-test"));
        record(&call("openai/gpt-4o-mini-2024-07-18", "metrics-test"));
        record(&call("team-fast", "metrics-test"));
        let text = handle().render();
        assert!(!text.contains("invented"), "no invented name is a label");
        let series = |model: &str| {
            text.lines()
                .filter(|l| l.starts_with("leanlm_requests_total{"))
                .filter(|l| l.contains(&format!("model=\"{model}\"")) && l.contains("provider=\"metrics-test\""))
                .count()
        };
        assert_eq!(series("other"), 1, "{text}");
        for model in ["gpt-4o-mini", "openai/gpt-4o-mini-2024-07-18", "team-fast"] {
            assert_eq!(series(model), 1, "{model} is priced or configured");
        }
        let other = text
            .lines()
            .find(|l| {
                l.starts_with("leanlm_requests_total{") && l.contains("model=\"other\"") && l.contains("metrics-test")
            })
            .unwrap_or_default();
        assert!(other.ends_with(" 6000"), "{other}");
    }
}
