//! Answers prompts with a local GGUF model, one JSON line in, one out: the stand-in "cheap model" of the
//! benchmarks that need a real model's answers (`bench/gsm8k.py`).
//!
//!     cargo run --release -p leanlm-local --example answer -- MODEL.gguf MAX_TOKENS < prompts.jsonl > answers.jsonl
//!
//! Each input line is `{"prompt": "…", "system": "…"?}`; each output line adds `answer`, `completion_tokens`,
//! `finished` and `ms`. Lines already answered in `$RESUME` (a previous output file) are copied, not re-run.

use std::io::{BufRead, Write};

use leanlm_local::{Message, Model, Role};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(max)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: answer MODEL.gguf MAX_TOKENS < prompts.jsonl");
    };
    let max: usize = max
        .parse()
        .map_err(|_| anyhow::anyhow!("MAX_TOKENS `{max}` is not a number"))?;
    let mut done = std::collections::HashMap::new();
    if let Ok(resume) = std::env::var("RESUME")
        && let Ok(text) = std::fs::read_to_string(&resume)
    {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(p) = v["prompt"].as_str()
            {
                done.insert(p.to_owned(), v.clone());
            }
        }
    }
    let mut model = Model::load(std::path::Path::new(&path))?;
    let stdout = std::io::stdout();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let input: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
        let prompt = input["prompt"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("line {}: no `prompt`", i + 1))?;
        let out = match done.get(prompt) {
            Some(v) => v.clone(),
            None => {
                let mut messages = Vec::new();
                if let Some(s) = input["system"].as_str() {
                    messages.push(Message {
                        role: Role::System,
                        content: s.to_owned(),
                    });
                }
                messages.push(Message {
                    role: Role::User,
                    content: prompt.to_owned(),
                });
                let started = std::time::Instant::now();
                let c = model.complete(&messages, max)?;
                let mut v = input.clone();
                v["answer"] = c.text.into();
                v["completion_tokens"] = c.completion_tokens.into();
                v["finished"] = c.finished.into();
                v["ms"] = (started.elapsed().as_millis() as u64).into();
                v
            }
        };
        let mut w = stdout.lock();
        writeln!(w, "{out}")?;
        w.flush()?;
    }
    Ok(())
}
