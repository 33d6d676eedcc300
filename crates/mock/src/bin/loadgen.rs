//! `leanlm-loadgen`: a small HTTP load generator for LeanLM's overhead benchmark.
//!
//! Closed loop (`--rate 0`): `--concurrency` workers send back to back, for throughput. Open loop
//! (`--rate R`): requests are scheduled at R per second across the workers and each latency is measured
//! from its scheduled start, so a slow server cannot hide its queueing (no coordinated omission).
//! Prints one JSON line of results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Parser)]
struct Args {
    /// Full URL to POST to.
    #[arg(long)]
    url: String,
    /// File holding the request body (JSON).
    #[arg(long)]
    body: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Requests per second in total; 0 for a closed loop as fast as the server allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of warm-up traffic before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Worker {
    hist: Histogram<u64>,
    errors: u64,
    ok: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let body = Bytes::from(std::fs::read(&args.body)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(args.concurrency * 2)
            .build(connector);
        let uri: hyper::Uri = args.url.parse()?;
        let send = {
            let client = client.clone();
            let uri = uri.clone();
            let body = body.clone();
            Arc::new(move || {
                let req = hyper::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(body.clone()))
                    .expect("valid request");
                let client = client.clone();
                async move {
                    let resp = client.request(req).await.map_err(|e| e.to_string())?;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await.map_err(|e| e.to_string())?;
                    if ok { Ok(()) } else { Err("status".to_owned()) }
                }
            })
        };

        // Warm up: open the connections and let both servers settle.
        let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
        let mut warm = Vec::new();
        for _ in 0..args.concurrency {
            let send = send.clone();
            warm.push(tokio::spawn(async move {
                while Instant::now() < warm_until {
                    let _ = send().await;
                }
            }));
        }
        for w in warm {
            w.await?;
        }

        let start = Instant::now();
        let end = start + Duration::from_secs_f64(args.duration_secs);
        let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
        let mut handles = Vec::new();
        for w in 0..args.concurrency {
            let send = send.clone();
            handles.push(tokio::spawn(async move {
                let mut me = Worker {
                    hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
                    errors: 0,
                    ok: 0,
                };
                // Workers are staggered so that the open loop sends evenly, not in bursts.
                let mut next = interval.map(|i| start + i.mul_f64(w as f64 / args.concurrency as f64));
                loop {
                    let scheduled = match next {
                        Some(t) => {
                            if t >= end {
                                break;
                            }
                            if Instant::now() < t {
                                // Ahead of schedule: wait, and time from the actual send, so the
                                // timer's own lateness (about a millisecond) is not charged to the server.
                                tokio::time::sleep_until(t.into()).await;
                                Instant::now()
                            } else {
                                // Behind schedule: the server kept us waiting; charge it from the schedule.
                                t
                            }
                        }
                        None => {
                            let now = Instant::now();
                            if now >= end {
                                break;
                            }
                            now
                        }
                    };
                    match send().await {
                        Ok(()) => {
                            me.ok += 1;
                            let us = scheduled.elapsed().as_micros() as u64;
                            let _ = me.hist.record(us.max(1));
                        }
                        Err(_) => me.errors += 1,
                    }
                    if let (Some(n), Some(i)) = (next.as_mut(), interval) {
                        *n += i;
                    }
                }
                me
            }));
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (mut ok, mut errors) = (0, 0);
        for h in handles {
            let w = h.await?;
            hist.add(&w.hist)?;
            ok += w.ok;
            errors += w.errors;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "label": args.label, "concurrency": args.concurrency, "rate": args.rate,
                "requests": ok, "errors": errors, "seconds": secs, "rps": ok as f64 / secs,
                "p50_us": hist.value_at_quantile(0.50), "p90_us": hist.value_at_quantile(0.90),
                "p99_us": hist.value_at_quantile(0.99), "max_us": hist.max(), "mean_us": hist.mean(),
            })
        );
        anyhow::Ok(())
    })
}
