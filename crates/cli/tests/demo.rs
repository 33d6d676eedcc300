//! `leanlm demo`, as the README's offline path runs it: no provider key, no network. Its traffic lands in
//! a task, typed classify, that the commands it suggests can read; `leanlm optimize` plans, respects its
//! budget, fails the poor candidate and deploys the good one to shadow.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn leanlm(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("LEANLM_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_runs_the_loop_offline() {
    let dir = std::env::temp_dir().join(format!("leanlm-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(["demo", "--listen", &listen, "--calls", "120"])
        .current_dir(&dir)
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Killed(child);
    // The demo says what to try once its traffic is through.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l.starts_with("Ctrl-C stops the demo")) {
        let left = Duration::from_secs(120).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => panic!("the demo never said it was ready:\n{}", said.join("\n")),
        }
    }
    let ready = said.iter().find(|l| l.starts_with("Demo: ")).unwrap();
    assert!(ready.starts_with("Demo: 120 calls"), "{ready}");
    assert!(
        said.iter()
            .any(|l| l.contains("leanlm validate --config leanlm-demo.toml"))
    );

    // The commands it suggests, with the file it wrote.
    let (code, out, err) = leanlm(&dir, &["tasks", "--config", "leanlm-demo.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "one template, one task: {out}");
    assert_eq!(tasks[0]["profile"]["type"]["type"], "classify");
    assert_eq!(tasks[0]["task"]["calls"], 120);
    assert!(tasks[0]["profile"]["savings"]["monthly_savings_usd"].as_f64().unwrap() > 0.0);
    let id = tasks[0]["task"]["id"].as_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--config", "leanlm-demo.toml", "--json"]);
        let (code, out, err) = leanlm(&dir, &all);
        assert_eq!(code, 0, "{args:?}: {out} {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    // The optimizer's plan: the cheapest candidate to prove first, nothing done.
    let plan = json(&["optimize", "--plan"]);
    assert_eq!(plan[0]["task_id"], id);
    assert_eq!(plan[0]["action"], "validate");
    assert_eq!(plan[0]["candidate"], "model:gpt-4.1-nano", "{plan:#}");
    assert!(plan[0]["estimated_validation_usd"].as_f64().unwrap() > 0.0);
    // The config's [optimizer] guardrails hold: a task excluded there is left alone.
    let name = tasks[0]["task"]["name"].as_str().unwrap();
    let demo = std::fs::read_to_string(dir.join("leanlm-demo.toml")).unwrap();
    std::fs::write(
        dir.join("guarded.toml"),
        format!("{demo}[optimizer]\nexclude = [\"{name}\"]\n"),
    )
    .unwrap();
    let (code, out, err) = leanlm(&dir, &["optimize", "--plan", "--config", "guarded.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("excluded by the guardrails"), "{out}");
    // A budget smaller than any validation does nothing.
    let poor = json(&["optimize", "--budget", "0.000001"]);
    assert_eq!(poor["steps"][0]["action"], "skip", "{poor:#}");
    assert_eq!(poor["spent_usd"], 0.0);
    // One pass: gpt-4.1-nano fails (70%), then gpt-4o-mini passes (99%) and goes to shadow, by the optimizer.
    let pass = json(&["optimize"]);
    let steps = pass["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{pass:#}");
    assert_eq!(
        (&steps[0]["candidate"], &steps[0]["passed"]),
        (&"model:gpt-4.1-nano".into(), &false.into())
    );
    assert_eq!(
        (&steps[1]["candidate"], &steps[1]["action"]),
        (&"model:gpt-4o-mini".into(), &"deployed".into())
    );
    assert!(pass["spent_usd"].as_f64().unwrap() > 0.0);
    let (_, log, _) = leanlm(&dir, &["policy-log", "--config", "leanlm-demo.toml", "--json"]);
    let entry: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&entry["actor"], &entry["to_stage"]),
        (&"optimizer".into(), &"shadow".into()),
        "{log}"
    );
    // The next plan leaves the task to its online rules, and the failed candidate stays out.
    let next = json(&["optimize", "--plan"]);
    assert_eq!(next[0]["action"], "skip");
    assert!(
        next[0]["reason"].as_str().unwrap().contains("already deployed"),
        "{next:#}"
    );
    // The validations it ran are stored like any other: the good candidate passed, the poor one failed.
    let (code, out, _) = leanlm(&dir, &["validations", "--config", "leanlm-demo.toml", "--json"]);
    assert_eq!(code, 0);
    let verdicts: Vec<(String, bool)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["candidate"].as_str().unwrap().to_owned(),
                v["verdict"]["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(verdicts.contains(&("model:gpt-4o-mini".into(), true)), "{verdicts:?}");
    assert!(verdicts.contains(&("model:gpt-4.1-nano".into(), false)), "{verdicts:?}");
    // A second demo on the same port is refused before any traffic is sent.
    let (code, _, err) = leanlm(&dir, &["demo", "--listen", &listen, "--calls", "5"]);
    assert_ne!(code, 0);
    assert!(err.contains("already running"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
