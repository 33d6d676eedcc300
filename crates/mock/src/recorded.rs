//! Recorded answers: a model answers a prompt exactly as a real model once did.
//!
//! The benchmarks that judge verdicts on real model output (`bench/gsm8k.py`) record each model's answers
//! once (a local model is slow; a provider costs money) and replay them through this mock, so the
//! gateway, `validate` and the scorers see real answers at mock speed.

use std::collections::HashMap;

/// Answers keyed by model, system prompt (empty: any) and the prompt's last user turn, whitespace-normalised.
#[derive(Debug, Default)]
pub struct Recorded {
    answers: HashMap<(String, String, String), String>,
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Recorded {
    /// Reads JSON lines of `{"model": …, "prompt": …, "answer": …}` with an optional `"system"` prompt (for
    /// templates that share user turns); a later line for the same key replaces an earlier one.
    pub fn from_jsonl(text: &str) -> anyhow::Result<Recorded> {
        let mut answers = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| anyhow::anyhow!("answers line {}: {e}", i + 1))?;
            let field = |name: &str| {
                v.get(name)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("answers line {}: `{name}` must be a string", i + 1))
            };
            let system = match v.get("system") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(_) => normalise(field("system")?),
            };
            answers.insert(
                (field("model")?.to_owned(), system, normalise(field("prompt")?)),
                field("answer")?.to_owned(),
            );
        }
        anyhow::ensure!(!answers.is_empty(), "answers: no lines");
        Ok(Recorded { answers })
    }

    /// What `model` answered to `prompt` under `system`, or under any system prompt where none was recorded.
    pub fn answer(&self, model: &str, system: &str, prompt: &str) -> Option<&str> {
        let (model, prompt) = (model.to_owned(), normalise(prompt));
        let system = normalise(system);
        if !system.is_empty()
            && let Some(a) = self.answers.get(&(model.clone(), system, prompt.clone()))
        {
            return Some(a);
        }
        self.answers.get(&(model, String::new(), prompt)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_model_and_prompt_whitespace_aside() {
        let r = Recorded::from_jsonl(
            "{\"model\":\"small\",\"prompt\":\"What is  2+2?\",\"answer\":\"5\"}\n\n\
             {\"model\":\"big\",\"prompt\":\"What is 2+2?\",\"answer\":\"4\"}\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.answer("small", "", "What is 2+2?\n"), Some("5"));
        assert_eq!(
            r.answer("big", "Be brief.", "What is 2+2?"),
            Some("4"),
            "any system prompt"
        );
        assert_eq!(r.answer("other", "", "What is 2+2?"), None);
        assert_eq!(r.answer("big", "", "What is 3+3?"), None);
    }

    #[test]
    fn a_recorded_system_prompt_tells_templates_that_share_a_user_turn_apart() {
        let r = Recorded::from_jsonl(
            "{\"model\":\"m\",\"system\":\"Classify it.\",\"prompt\":\"card lost\",\"answer\":\"lost_card\"}\n\
             {\"model\":\"m\",\"system\":\"Reply  kindly.\",\"prompt\":\"card lost\",\"answer\":\"Sorry to hear it.\"}\n",
        )
        .unwrap();
        assert_eq!(r.answer("m", "Classify it.", "card lost"), Some("lost_card"));
        assert_eq!(r.answer("m", "Reply kindly.", "card lost"), Some("Sorry to hear it."));
        assert_eq!(r.answer("m", "Other.", "card lost"), None);
        assert_eq!(r.answer("m", "", "card lost"), None);
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let e = Recorded::from_jsonl("{\"model\":\"m\",\"prompt\":\"p\",\"answer\":\"a\"}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Recorded::from_jsonl("{\"model\":\"m\",\"prompt\":\"p\",\"answer\":3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("`answer`"), "{e}");
        assert!(Recorded::from_jsonl("\n").is_err());
    }

    #[tokio::test]
    async fn the_mock_answers_a_recorded_prompt_as_recorded_and_others_as_before() {
        use http_body_util::BodyExt;
        let rec = Recorded::from_jsonl("{\"model\":\"small\",\"prompt\":\"2+2?\",\"answer\":\"It is 5.\"}\n").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = crate::Mock::serve_recorded(listener, false, None, Some(rec));
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        let ask = |model: &str| {
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "2+2?"}]});
            hyper::Request::post(format!("{}/v1/chat/completions", mock.url()))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap()
        };
        for (model, want) in [("small", "It is 5."), ("big", "Echo: 2+2?")] {
            let resp = client.request(ask(model)).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], want, "{model}: {v}");
        }
    }
}
