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
    /// RouteLLM's MMLU folder (`responses/*.csv`, `contaminated_prompts.jsonl`): each model named in its
    /// columns answers each question right exactly where the real model did (instead of --labels).
    #[arg(long, conflicts_with = "labels")]
    routellm: Option<std::path::PathBuf>,
    /// Recorded answers, JSON lines of `{"model", "prompt", "answer"}`: a model answers a recorded prompt
    /// (its last user turn) as recorded; other prompts as without this option.
    #[arg(long)]
    answers: Option<std::path::PathBuf>,
    /// With --routellm, NAME=RECORDED answers requests for NAME as the recorded model RECORDED (repeatable).
    #[arg(long, value_parser = parse_alias)]
    alias: Vec<(String, String)>,
    /// How a model words its answers around the label, as MODEL=STYLE: plain (the label alone), worked
    /// (reasoning, then `#### VALUE`), casual (other words, then "The answer is $1,250.00"). Repeatable.
    #[arg(long, value_parser = parse_style)]
    style: Vec<(String, leanlm_mock::Style)>,
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

fn parse_style(s: &str) -> Result<(String, leanlm_mock::Style), String> {
    let (model, style) = s.split_once('=').ok_or("expected MODEL=STYLE, e.g. cheap=casual")?;
    Ok((model.to_owned(), style.parse()?))
}

fn parse_alias(s: &str) -> Result<(String, String), String> {
    let (name, recorded) = s
        .split_once('=')
        .filter(|(n, r)| !n.is_empty() && !r.is_empty())
        .ok_or("expected NAME=RECORDED, e.g. gpt-4-turbo=gpt-4-1106-preview")?;
    Ok((name.to_owned(), recorded.to_owned()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let labeller = match (&args.labels, &args.routellm) {
        (Some(path), _) => {
            let data = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            Some(leanlm_mock::Labeller::from_csv(&data)?)
        }
        (None, Some(root)) => {
            let l = leanlm_mock::Labeller::from_routellm(root)?;
            Some(
                args.alias
                    .iter()
                    .try_fold(l, |l, (name, recorded)| l.alias(name.clone(), recorded))?,
            )
        }
        (None, None) => None,
    }
    .map(|l| {
        let l = args
            .accuracy
            .iter()
            .fold(l.seed(args.seed), |l, (model, p)| l.accuracy(model.clone(), *p));
        args.style.iter().fold(l, |l, (model, s)| l.style(model.clone(), *s))
    });
    let recorded = match &args.answers {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            Some(leanlm_mock::Recorded::from_jsonl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
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
                leanlm_mock::Mock::serve_recorded(listener, args.record, labeller, recorded);
            }
        }
        // The first line on stdout is the address, for scripts that started us on port 0.
        println!("{addr}");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
