//! `leanlm-mock`: the mock upstream as a standalone server, for the end-to-end tests and the benchmark.
//! With `--forward URL` it is instead a do-nothing reverse proxy (no parsing, no logging), which the
//! benchmark uses to measure the floor cost of one extra HTTP hop on the machine.

use clap::Parser;

#[derive(Parser)]
#[command(about = "A mock OpenAI / Anthropic / Gemini upstream for LeanLM's tests and benchmarks")]
struct Args {
    /// Address to listen on (loopback only is sensible).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Keep every request for /mock/requests (off for benchmarks).
    #[arg(long)]
    record: bool,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Be a bare reverse proxy to this base URL instead of a mock.
    #[arg(long)]
    forward: Option<String>,
    /// A `text,label` CSV (Banking77's layout): prompts that are its examples are answered with a label.
    #[arg(long)]
    labels: Option<std::path::PathBuf>,
    /// A model's accuracy on the labels, as MODEL=P (repeatable; models not named are always right).
    #[arg(long, value_parser = parse_accuracy)]
    accuracy: Vec<(String, f64)>,
    /// Changes which examples each model gets wrong, not how many.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_accuracy(s: &str) -> Result<(String, f64), String> {
    let (model, p) = s.split_once('=').ok_or("expected MODEL=P, e.g. cheap=0.9")?;
    let p: f64 = p.parse().map_err(|_| format!("`{p}` is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("accuracy {p} is not between 0 and 1"));
    }
    Ok((model.to_owned(), p))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let labeller = match &args.labels {
        Some(path) => {
            let data = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let mut l = leanlm_mock::Labeller::from_csv(&data)?.seed(args.seed);
            for (model, p) in &args.accuracy {
                l = l.accuracy(model.clone(), *p);
            }
            Some(l)
        }
        None => None,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        let addr = listener.local_addr()?;
        match args.forward {
            Some(base) => {
                tokio::spawn(leanlm_mock::forward(listener, base));
            }
            None => {
                leanlm_mock::Mock::serve_with(listener, args.record, labeller);
            }
        }
        // The first line on stdout is the address, for scripts that started us on port 0.
        println!("{addr}");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
