//! How an answer is compared with the reference: the scorer a task gets, written as a SPEC. The scoring
//! itself lives with validation; the spec travels in reports, policies and cascades.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TaskType;

/// Which scorer, and its settings. Written `label`, `value`, `json`, `json:tol=0.01`, `similarity`,
/// `similarity:0.8`, `judge`, `judge:MODEL`, `regex:PATTERN`, `json-path:$.a.b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScorerSpec {
    /// Normalised exact match of a class label.
    Label,
    /// The value each answer comes to (after `####`, `\boxed{}`, "the answer is", or the whole of a short
    /// answer), compared as a number, date or yes/no: "$20.00" = "20", "1/2" = "50%".
    Value,
    /// Valid JSON (and valid against the request's schema), then field by field.
    Json { tolerance: f64 },
    /// Embedding cosine where an embedder is available, else ROUGE-L, against a threshold.
    Similarity { threshold: Option<f64> },
    /// An LLM judge compares the two answers, in both orders.
    Judge { model: Option<String> },
    /// The pattern's first group (or whole match) must be found in the answer and equal the reference's.
    Regex { pattern: String },
    /// The value at a JSON path must equal the reference's.
    JsonPath { path: String },
}

/// Default JSON numeric tolerance: relative, so it reads the same for prices and for counts.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// Default thresholds for `similarity`.
pub const DEFAULT_COSINE: f64 = 0.85;
pub const DEFAULT_ROUGE: f64 = 0.6;

impl ScorerSpec {
    /// The scorer a task gets unless the user names one: from its type, and `values` when its answers come
    /// to a value (a number, a date, yes/no, a final answer after reasoning), which only the `value` scorer
    /// compares for what it means.
    pub fn for_task(kind: Option<TaskType>, values: bool) -> ScorerSpec {
        match kind {
            Some(TaskType::Extract | TaskType::Code | TaskType::Embed) => {}
            _ if values => return ScorerSpec::Value,
            _ => {}
        }
        match kind {
            Some(TaskType::Classify) => ScorerSpec::Label,
            Some(TaskType::Extract) => ScorerSpec::Json {
                tolerance: DEFAULT_TOLERANCE,
            },
            _ => ScorerSpec::Similarity { threshold: None },
        }
    }
}

impl fmt::Display for ScorerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScorerSpec::Label => f.write_str("label"),
            ScorerSpec::Value => f.write_str("value"),
            ScorerSpec::Json { tolerance } if *tolerance == DEFAULT_TOLERANCE => f.write_str("json"),
            ScorerSpec::Json { tolerance } => write!(f, "json:tol={tolerance}"),
            ScorerSpec::Similarity { threshold: None } => f.write_str("similarity"),
            ScorerSpec::Similarity { threshold: Some(t) } => write!(f, "similarity:{t}"),
            ScorerSpec::Judge { model: None } => f.write_str("judge"),
            ScorerSpec::Judge { model: Some(m) } => write!(f, "judge:{m}"),
            ScorerSpec::Regex { pattern } => write!(f, "regex:{pattern}"),
            ScorerSpec::JsonPath { path } => write!(f, "json-path:{path}"),
        }
    }
}

impl FromStr for ScorerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let number = |a: &str, what: &str| -> Result<f64, String> {
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("scorer `{s}`: {what} `{a}` is not a non-negative number"))
        };
        Ok(match (kind, arg) {
            ("label", None) => ScorerSpec::Label,
            ("value", None) => ScorerSpec::Value,
            ("json", None) => ScorerSpec::Json {
                tolerance: DEFAULT_TOLERANCE,
            },
            ("json", Some(a)) => ScorerSpec::Json {
                tolerance: number(a.strip_prefix("tol=").unwrap_or(a), "tolerance")?,
            },
            ("similarity", None) => ScorerSpec::Similarity { threshold: None },
            ("similarity", Some(a)) => {
                let t = number(a, "threshold")?;
                if t > 1.0 {
                    return Err(format!("scorer `{s}`: the threshold is a similarity between 0 and 1"));
                }
                ScorerSpec::Similarity { threshold: Some(t) }
            }
            ("judge", model) => ScorerSpec::Judge {
                model: model.filter(|m| !m.is_empty()).map(str::to_owned),
            },
            ("regex", Some(p)) => {
                regex::Regex::new(p).map_err(|e| format!("scorer `{s}`: bad pattern: {e}"))?;
                ScorerSpec::Regex { pattern: p.to_owned() }
            }
            ("json-path", Some(p)) => {
                serde_json_path::JsonPath::parse(p).map_err(|e| format!("scorer `{s}`: bad JSON path: {e}"))?;
                ScorerSpec::JsonPath { path: p.to_owned() }
            }
            ("regex" | "json-path", None) => return Err(format!("scorer `{kind}` needs an argument: `{kind}:...`")),
            _ => {
                return Err(format!(
                    "unknown scorer `{s}`; expected label, value, json[:tol=X], similarity[:T], judge[:MODEL], regex:PATTERN or json-path:PATH"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "label",
            "value",
            "json",
            "json:tol=0.01",
            "similarity",
            "similarity:0.8",
            "judge",
            "judge:gpt-4o",
            "regex:Answer: ([A-D])",
            "json-path:$.intent",
        ] {
            let spec: ScorerSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert!(
            "similarity:2"
                .parse::<ScorerSpec>()
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!("regex:(".parse::<ScorerSpec>().unwrap_err().contains("bad pattern"));
        assert!(
            "json-path:nope"
                .parse::<ScorerSpec>()
                .unwrap_err()
                .contains("bad JSON path")
        );
        assert!("regex".parse::<ScorerSpec>().unwrap_err().contains("needs an argument"));
        assert!("bleu".parse::<ScorerSpec>().unwrap_err().contains("unknown scorer"));
        assert_eq!(ScorerSpec::for_task(Some(TaskType::Classify), false), ScorerSpec::Label);
        assert_eq!(ScorerSpec::for_task(Some(TaskType::Generate), true), ScorerSpec::Value);
        assert_eq!(ScorerSpec::for_task(Some(TaskType::Classify), true), ScorerSpec::Value);
        assert!(matches!(
            ScorerSpec::for_task(Some(TaskType::Extract), true),
            ScorerSpec::Json { .. }
        ));
        assert!(matches!(
            ScorerSpec::for_task(Some(TaskType::Generate), false),
            ScorerSpec::Similarity { .. }
        ));
    }
}
