//! `leanlm demo`, as the README's offline path runs it: no provider key, no network. Its traffic lands in
//! a task, typed classify, that the commands it suggests can read, and a validation of its good candidate
//! passes while the poor one fails.

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
    let validate = |candidate: &str| {
        leanlm(
            &dir,
            &[
                "validate",
                "--config",
                "leanlm-demo.toml",
                "--task",
                id,
                "--candidate",
                candidate,
                "--json",
            ],
        )
    };
    let (code, out, err) = validate("gpt-4o-mini");
    assert_eq!(code, 0, "gpt-4o-mini passes: {out} {err}");
    let (code, out, _) = validate("gpt-4.1-nano");
    assert_eq!(code, 2, "gpt-4.1-nano fails: {out}");
    // A second demo on the same port is refused before any traffic is sent.
    let (code, _, err) = leanlm(&dir, &["demo", "--listen", &listen, "--calls", "5"]);
    assert_ne!(code, 0);
    assert!(err.contains("already running"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
