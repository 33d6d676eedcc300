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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
                leanlm_mock::Mock::serve(listener, args.record);
            }
        }
        // The first line on stdout is the address, for scripts that started us on port 0.
        println!("{addr}");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
