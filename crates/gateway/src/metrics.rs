//! Prometheus metrics: requests, errors, tokens and spend by model, latency, and the gateway's own
//! added latency.

use std::sync::OnceLock;

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
}

/// Records one finished call.
pub fn record(rec: &CallRecord) {
    let model = rec.served_model.clone().unwrap_or_else(|| "unknown".to_owned());
    let provider = rec.provider.clone().unwrap_or_else(|| "none".to_owned());
    let status = rec.status.as_str();
    metrics::counter!("leanlm_requests_total", "model" => model.clone(), "provider" => provider, "status" => status)
        .increment(1);
    if rec.status != CallStatus::Ok {
        metrics::counter!("leanlm_errors_total", "model" => model.clone(), "status" => status).increment(1);
    }
    if let Some(u) = rec.usage {
        for (kind, n) in [
            ("input", u.input_tokens),
            ("cached_input", u.cached_input_tokens),
            ("cache_write", u.cache_write_tokens),
            ("output", u.output_tokens),
            ("reasoning", u.reasoning_tokens),
        ] {
            if n > 0 {
                metrics::counter!("leanlm_tokens_total", "model" => model.clone(), "kind" => kind).increment(n);
            }
        }
    }
    if let Some(outcome) = &rec.cache {
        metrics::counter!("leanlm_cache_total", "outcome" => outcome.clone()).increment(1);
    }
    if let Some(saved) = rec.cost_avoided_usd {
        metrics::gauge!("leanlm_cache_saved_usd_total", "model" => model.clone()).increment(saved);
    }
    if let Some(c) = rec.cost_usd {
        metrics::gauge!("leanlm_spend_usd_total", "model" => model.clone()).increment(c);
    }
    metrics::histogram!("leanlm_request_duration_seconds", "model" => model).record(rec.latency_ms / 1000.0);
    if let Some(o) = rec.overhead_us {
        metrics::histogram!("leanlm_gateway_overhead_seconds").record(o / 1_000_000.0);
    }
}
