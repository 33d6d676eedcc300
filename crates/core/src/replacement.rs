//! What may replace a task's current model, as one type: validation and deployment treat every kind alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A replacement for the way a task is served now. Written as a SPEC on the command line: a model name
/// (or `model:NAME`), `cache:exact`, `cache:semantic`, `cascade:CHEAP[,CHEAPER…],STRONG`, `router:CHEAP,STRONG`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Replacement {
    /// Another model answers every call.
    Model { model: String },
    /// Repeated requests are answered from the exact cache.
    ExactCache,
    /// Similar requests are answered from the semantic cache.
    SemanticCache,
    /// The cheap model answers first; unsure answers escalate to the next model in `then` (each judged the
    /// same way), and finally to the strong one.
    Cascade {
        cheap: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        then: Vec<String>,
        strong: String,
    },
    /// A learned router sends each call to the cheap or the strong model.
    Router { cheap: String, strong: String },
}

impl Replacement {
    /// A cascade's cheap models in the order they answer (empty for other kinds).
    pub fn cascade_stages(&self) -> Vec<&str> {
        match self {
            Replacement::Cascade { cheap, then, .. } => {
                std::iter::once(cheap).chain(then).map(String::as_str).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The kind, as the CLI and reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Replacement::Model { .. } => "model",
            Replacement::ExactCache => "exact-cache",
            Replacement::SemanticCache => "semantic-cache",
            Replacement::Cascade { .. } => "cascade",
            Replacement::Router { .. } => "router",
        }
    }
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replacement::Model { model } => write!(f, "model:{model}"),
            Replacement::ExactCache => f.write_str("cache:exact"),
            Replacement::SemanticCache => f.write_str("cache:semantic"),
            Replacement::Cascade { cheap, then, strong } => {
                write!(f, "cascade:{cheap}")?;
                for m in then {
                    write!(f, ",{m}")?;
                }
                write!(f, ",{strong}")
            }
            Replacement::Router { cheap, strong } => write!(f, "router:{cheap},{strong}"),
        }
    }
}

impl FromStr for Replacement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty replacement; expected a model name, cache:exact, cache:semantic, cascade:CHEAP,STRONG or router:CHEAP,STRONG".into());
        }
        let pair = |kind: &str, rest: &str| -> Result<(String, String), String> {
            match rest.split_once(',') {
                Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
                    Ok((a.trim().to_owned(), b.trim().to_owned()))
                }
                _ => Err(format!("`{s}`: a {kind} names two models, `{kind}:CHEAP,STRONG`")),
            }
        };
        Ok(match s.split_once(':') {
            Some(("model", m)) if !m.is_empty() => Replacement::Model { model: m.to_owned() },
            Some(("cache", "exact")) => Replacement::ExactCache,
            Some(("cache", "semantic")) => Replacement::SemanticCache,
            Some(("cache", other)) => {
                return Err(format!(
                    "unknown cache `{other}`; expected cache:exact or cache:semantic"
                ));
            }
            Some(("cascade", rest)) => {
                let models: Vec<String> = rest.split(',').map(|m| m.trim().to_owned()).collect();
                if models.len() < 2 || models.iter().any(String::is_empty) {
                    return Err(format!(
                        "`{s}`: a cascade names two models or more, the cheap ones first: `cascade:CHEAP[,CHEAPER…],STRONG`"
                    ));
                }
                let (strong, cheap) = models.split_last().unwrap_or((&models[0], &[]));
                Replacement::Cascade {
                    cheap: cheap[0].clone(),
                    then: cheap[1..].to_vec(),
                    strong: strong.clone(),
                }
            }
            Some(("router", rest)) => {
                let (cheap, strong) = pair("router", rest)?;
                Replacement::Router { cheap, strong }
            }
            // Anything else is a model name: they may contain colons (`ft:gpt-4o-mini:acme`, `llama3:8b`).
            _ => Replacement::Model { model: s.to_owned() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        for s in [
            "model:gpt-4o-mini",
            "cache:exact",
            "cache:semantic",
            "cascade:a,b",
            "cascade:a,b,c",
            "router:a,b",
            "model:ft:gpt-4o-mini:acme",
        ] {
            assert_eq!(s.parse::<Replacement>().unwrap().to_string(), s);
        }
        assert_eq!(
            "llama3:8b".parse::<Replacement>().unwrap(),
            Replacement::Model {
                model: "llama3:8b".into()
            }
        );
        assert!("cascade:a".parse::<Replacement>().unwrap_err().contains("two models"));
        assert!(
            "cascade:a,,c"
                .parse::<Replacement>()
                .unwrap_err()
                .contains("two models")
        );
        let chain: Replacement = "cascade:a, b ,c".parse().unwrap();
        assert_eq!(chain.cascade_stages(), ["a", "b"]);
        // Stored before chains existed, and read back the same.
        let old: Replacement = serde_json::from_str(r#"{"kind": "cascade", "cheap": "a", "strong": "b"}"#).unwrap();
        assert_eq!(old, "cascade:a,b".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            serde_json::json!({"kind": "cascade", "cheap": "a", "strong": "b"})
        );
        assert!(
            "cache:fuzzy"
                .parse::<Replacement>()
                .unwrap_err()
                .contains("unknown cache")
        );
        assert!("".parse::<Replacement>().is_err());
    }
}
