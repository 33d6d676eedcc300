//! `leanlm import`: existing logs into the call log, so a team can profile its traffic before moving it.
//!
//! Reads JSON Lines in three shapes, told apart line by line:
//! - a chat log: `{"request": {…chat request…}, "response": {…chat.completion…}}`, optionally with
//!   `created_at` (Unix seconds) and `latency_ms`;
//! - an OpenAI Batch API input file: `{"custom_id", "method", "url", "body"}`;
//! - an OpenAI Batch API output file: `{"custom_id", "response": {"status_code", "body"}, "error"}`.
//!
//! Batch inputs and outputs are joined by `custom_id` across all the files given. Bad lines are reported
//! with their file and line number and skipped. Ids are derived from the line's content, so importing the
//! same file twice does not duplicate calls.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use leanlm_cost::{PriceTable, cost_usd};
use leanlm_profile::{Discoverer, Shape};
use leanlm_store::{CallRecord, CallStatus, Store, TaskRef};
use leanlm_wire::Usage;
use leanlm_wire::openai::ChatRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ControlError;

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A line that was not imported, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: u64,
    pub skipped: Vec<Skipped>,
}

/// Options for an import.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// The share of list price the Batch API charges (OpenAI: 0.5).
    pub batch_price_factor: f64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_price_factor: 0.5,
        }
    }
}

struct Pending {
    body: Value,
    file: PathBuf,
    line: usize,
}

/// Imports the files into the store. `progress` is told how many bytes have been read so far.
pub fn import_files(
    paths: &[PathBuf],
    store: &mut Store,
    options: ImportOptions,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ControlError> {
    let known = store
        .tasks(None)?
        .into_iter()
        .filter(|t| t.origin == leanlm_core::Origin::Template)
        .map(|t| t.id);
    let tasks = Discoverer::with_known(known);
    // Templates mined by the gateway or an earlier import cover these calls from the first line.
    tasks.learn_templates(store.mined_templates_after(0)?.iter().map(|(_, t)| t));
    let mut report = ImportReport::default();
    let mut batch_inputs: HashMap<String, Pending> = HashMap::new();
    let mut batch_outputs: Vec<(String, Pending)> = Vec::new();
    let mut records = Vec::new();
    let mut read = 0u64;
    for path in paths {
        let file = std::fs::File::open(path)
            .map_err(|e| ControlError::NotFound(format!("cannot open {}: {e}", path.display())))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let skip = |reason: String| Skipped {
                file: path.clone(),
                line: n,
                reason,
            };
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    report.skipped.push(skip(format!("unreadable: {e}")));
                    continue;
                }
            };
            read += line.len() as u64 + 1;
            progress(read);
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    report.skipped.push(skip(format!("not JSON: {e}")));
                    continue;
                }
            };
            let pending = |body: Value| Pending {
                body,
                file: path.clone(),
                line: n,
            };
            let custom_id = v.get("custom_id").and_then(Value::as_str).map(str::to_owned);
            match (custom_id, v.get("request"), v.get("body"), v.get("response")) {
                (None, Some(req), _, Some(resp)) => match call_from(&tasks, req, resp, &v, 1.0, &line) {
                    Ok(r) => records.push(r),
                    Err(e) => report.skipped.push(skip(e)),
                },
                (Some(id), None, Some(body), None) => {
                    if v.get("url")
                        .and_then(Value::as_str)
                        .is_some_and(|u| !u.ends_with("/chat/completions"))
                    {
                        report
                            .skipped
                            .push(skip("only /v1/chat/completions batch requests are imported".into()));
                    } else {
                        batch_inputs.insert(id, pending(body.clone()));
                    }
                }
                (Some(id), None, None, Some(_)) => batch_outputs.push((id, pending(v))),
                _ => report.skipped.push(skip(
                    "not a chat log line ({request, response}) nor a Batch API input or output line".into(),
                )),
            }
            if records.len() >= 500 {
                report.imported += records.len() as u64;
                store.insert_batch(&records)?;
                records.clear();
            }
        }
    }
    for (id, out) in batch_outputs {
        let skip = |reason: String| Skipped {
            file: out.file.clone(),
            line: out.line,
            reason,
        };
        let Some(input) = batch_inputs.remove(&id) else {
            report.skipped.push(skip(format!(
                "no batch input line with custom_id `{id}` among the files given"
            )));
            continue;
        };
        let status = out
            .body
            .pointer("/response/status_code")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let Some(resp) = out.body.pointer("/response/body").filter(|_| status == 200) else {
            let why = out
                .body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no response body");
            report
                .skipped
                .push(skip(format!("batch request `{id}` failed (status {status}): {why}")));
            continue;
        };
        let key = format!("{}\n{}", input.body, resp);
        match call_from(&tasks, &input.body, resp, &out.body, options.batch_price_factor, &key) {
            Ok(r) => records.push(r),
            Err(e) => report.skipped.push(skip(e)),
        }
    }
    for (id, input) in batch_inputs {
        report.skipped.push(Skipped {
            file: input.file,
            line: input.line,
            reason: format!("batch input `{id}` has no output line among the files given"),
        });
    }
    report.imported += records.len() as u64;
    store.insert_batch(&records)?;
    report.skipped.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(report)
}

/// One logged call from a request and its response.
fn call_from(
    tasks: &Discoverer,
    req: &Value,
    resp: &Value,
    line: &Value,
    price_factor: f64,
    content: &str,
) -> Result<CallRecord, String> {
    let request_text = req.to_string();
    let parsed = ChatRequest::parse(request_text.as_bytes()).map_err(|e| format!("request: {}", e.message))?;
    if resp.get("choices").is_none() {
        return Err("response: not a chat.completion (no `choices`)".into());
    }
    let usage = resp.get("usage").and_then(Usage::from_openai);
    let served = resp
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&parsed.model)
        .to_owned();
    let price = PriceTable::active().lookup(&served).map(|e| e.price);
    let started_at_ms = line
        .get("created_at")
        .or_else(|| resp.get("created"))
        .and_then(Value::as_f64)
        .map(|s| (s * 1000.0) as i64)
        .unwrap_or(0);
    let task = match parsed
        .extra
        .get("metadata")
        .and_then(|m| m.get("leanlm_task"))
        .and_then(Value::as_str)
    {
        Some(name) => leanlm_profile::Identity::explicit(name),
        None => tasks.identify(&Shape::from_openai("chat", &parsed)),
    };
    let digest = Sha256::digest(content.as_bytes());
    Ok(CallRecord {
        id: format!("imp_{}", hex(&digest[..12])),
        started_at_ms,
        endpoint: "chat.completions".into(),
        client_format: leanlm_core::ClientFormat::OpenAi,
        client_key_id: None,
        task: Some(TaskRef {
            id: task.id,
            name: task.name,
            origin: task.origin,
            absorbs: task.absorbs,
        }),
        requested_model: parsed.model.clone(),
        served_model: Some(served.clone()),
        provider: Some("import".into()),
        upstream_model: Some(served),
        stream: false,
        status: CallStatus::Ok,
        http_status: 200,
        error: None,
        usage,
        cost_usd: match (usage, price) {
            (Some(u), Some(p)) => Some(cost_usd(&u, &p) * price_factor),
            _ => None,
        },
        cost_estimated: false,
        latency_ms: line.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0),
        ttft_ms: None,
        overhead_us: None,
        attempts: 1,
        request_body: Some(request_text),
        response_body: Some(resp.to_string()),
        cache: None,
        cost_avoided_usd: None,
        policy: None,
        stages: Vec::new(),
    })
}

/// The total size of the files, for a progress bar.
pub fn total_bytes(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(Path::new(p)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    fn completion(text: &str, model: &str) -> Value {
        json!({"id": "c", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})
    }

    fn request(q: &str) -> Value {
        json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Classify the intent."}, {"role": "user", "content": q}]})
    }

    #[test]
    fn chat_logs_and_batch_files_are_imported_and_bad_lines_reported() {
        let dir = std::env::temp_dir().join(format!("leanlm-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = write(
            &dir,
            "log.jsonl",
            &[
                json!({"request": request("lost card"), "response": completion("lost_card", "gpt-4o-2024-08-06")})
                    .to_string(),
                "{broken".into(),
                json!({"request": {"model": "gpt-4o"}, "response": completion("x", "gpt-4o")}).to_string(),
                json!({"hello": 1}).to_string(),
                String::new(),
                json!({"request": request("top up"), "response": completion("top_up", "gpt-4o")}).to_string(),
            ],
        );
        let input = write(
            &dir,
            "batch_in.jsonl",
            &[
                json!({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": request("pin")})
                    .to_string(),
                json!({"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": request("refund")})
                    .to_string(),
                json!({"custom_id": "r3", "method": "POST", "url": "/v1/chat/completions", "body": request("fee")})
                    .to_string(),
            ],
        );
        let output = write(
            &dir,
            "batch_out.jsonl",
            &[
                json!({"id": "b1", "custom_id": "r1", "response": {"status_code": 200, "body": completion("pin", "gpt-4o")}, "error": null}).to_string(),
                json!({"id": "b2", "custom_id": "r2", "response": {"status_code": 500, "body": null}, "error": {"message": "boom"}}).to_string(),
            ],
        );
        let mut store = Store::open("sqlite::memory:").unwrap();
        let mut seen = 0;
        let report = import_files(
            &[log.clone(), input.clone(), output.clone()],
            &mut store,
            ImportOptions::default(),
            |b| seen = b,
        )
        .unwrap();
        assert!(seen > 0);
        assert_eq!(report.imported, 3);
        let lines: Vec<(String, usize)> = report
            .skipped
            .iter()
            .map(|s| (s.file.file_name().unwrap().to_string_lossy().into_owned(), s.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("batch_in.jsonl".into(), 3),
                ("batch_out.jsonl".into(), 2),
                ("log.jsonl".into(), 2),
                ("log.jsonl".into(), 3),
                ("log.jsonl".into(), 4)
            ]
        );
        assert!(
            report.skipped.iter().any(|s| s.reason.contains("messages")),
            "{:?}",
            report.skipped
        );

        // All three imported calls are one task; the batch call is priced at half.
        let tasks = store.tasks(None).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].calls, 3);
        let full = (1000.0 * 2.5 + 100.0 * 10.0) / 1e6;
        assert!(
            (tasks[0].cost_usd - (2.0 * full + 0.5 * full)).abs() < 1e-12,
            "{}",
            tasks[0].cost_usd
        );

        // Importing again does not duplicate.
        let again = import_files(&[log, input, output], &mut store, ImportOptions::default(), |_| {}).unwrap();
        assert_eq!(again.imported, 3);
        assert_eq!(store.tasks(None).unwrap()[0].calls, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
