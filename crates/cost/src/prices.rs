use std::collections::HashMap;
use std::sync::OnceLock;

use leanlm_wire::ProviderKind;
use serde::{Deserialize, Serialize};

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Prompt length past which the `*_above` prices apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_above: Option<f64>,
}

impl Price {
    /// Checks that every price is a finite, non-negative number.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("input_above", self.input_above),
            ("cached_input_above", self.cached_input_above),
            ("output_above", self.output_above),
        ];
        for (name, v) in all {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("`{name}` must be a non-negative number, got {v}"));
            }
        }
        Ok(())
    }
}

/// Who serves a model of the table: a provider's own API, or an OpenAI-compatible host. A request for the
/// model goes to the configured provider of that name (built in for `openai`, `anthropic`, `gemini`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    Groq,
    Together,
    #[serde(rename = "deepseek")]
    DeepSeek,
    Mistral,
}

impl Host {
    pub fn as_str(self) -> &'static str {
        match self {
            Host::OpenAi => "openai",
            Host::Anthropic => "anthropic",
            Host::Gemini => "gemini",
            Host::Groq => "groq",
            Host::Together => "together",
            Host::DeepSeek => "deepseek",
            Host::Mistral => "mistral",
        }
    }

    fn of(kind: ProviderKind) -> Host {
        match kind {
            ProviderKind::OpenAi => Host::OpenAi,
            ProviderKind::Anthropic => Host::Anthropic,
            ProviderKind::Gemini => Host::Gemini,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawEntry")]
pub struct PriceEntry {
    /// The API the model speaks.
    pub provider: ProviderKind,
    /// Who serves it: the provider a request for it goes to.
    pub host: Host,
    #[serde(flatten)]
    pub price: Price,
    #[serde(flatten)]
    pub caps: Capabilities,
}

/// A table entry as written: one flat block, every field named, so a typo is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    provider: ProviderKind,
    host: Option<Host>,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    above_tokens: Option<u64>,
    input_above: Option<f64>,
    cached_input_above: Option<f64>,
    output_above: Option<f64>,
    kind: ModelKind,
    context: u64,
    tools: bool,
    json_schema: bool,
    vision: bool,
}

impl From<RawEntry> for PriceEntry {
    fn from(r: RawEntry) -> Self {
        PriceEntry {
            provider: r.provider,
            host: r.host.unwrap_or(Host::of(r.provider)),
            price: Price {
                input: r.input,
                output: r.output,
                cached_input: r.cached_input,
                cache_write: r.cache_write,
                above_tokens: r.above_tokens,
                input_above: r.input_above,
                cached_input_above: r.cached_input_above,
                output_above: r.output_above,
            },
            caps: Capabilities {
                kind: r.kind,
                context: r.context,
                tools: r.tools,
                json_schema: r.json_schema,
                vision: r.vision,
            },
        }
    }
}

/// What a model can do, as far as choosing a cheaper one for a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub kind: ModelKind,
    /// Context window in tokens.
    pub context: u64,
    /// Function calling.
    pub tools: bool,
    /// Native structured output against a JSON schema.
    pub json_schema: bool,
    /// Image input.
    pub vision: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("price table: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("price table: model `{model}`: {message}")]
    Invalid { model: String, message: String },
    #[error("price list: {message}")]
    Import { message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// The date the prices were taken from the providers' pages.
    pub as_of: String,
    models: HashMap<String, PriceEntry>,
    /// Models checked against the provider's published prices since `as_of`: the date, then the page.
    #[serde(default)]
    checked: HashMap<String, String>,
    /// Models whose price came from an imported list, with that list's date.
    #[serde(skip)]
    imported: HashMap<String, String>,
}

/// The table in use: the bundled one with imported prices over it, installed once at start.
static ACTIVE: OnceLock<PriceTable> = OnceLock::new();

/// How old a table may get before a start warns that its prices may have changed.
pub const STALE_AFTER_DAYS: i64 = 90;

impl PriceTable {
    /// The table every price lookup of this process reads: [`PriceTable::bundled`] until [`PriceTable::install`]
    /// puts imported prices over it.
    pub fn active() -> &'static PriceTable {
        ACTIVE.get().unwrap_or_else(|| PriceTable::bundled())
    }

    /// Makes `table` the [`PriceTable::active`] one. Only the first install of a process counts (prices are
    /// read from many threads, and must not change under a running call); `false` for later ones.
    pub fn install(table: PriceTable) -> bool {
        ACTIVE.set(table).is_ok()
    }

    /// This table with `entries` over it: imported prices replace bundled ones of the same name.
    pub fn with_imported(&self, entries: &[(String, PriceEntry, String)]) -> PriceTable {
        let mut t = self.clone();
        for (name, entry, as_of) in entries {
            t.models.insert(name.clone(), *entry);
            t.imported.insert(name.clone(), as_of.clone());
        }
        t
    }

    /// The date a model's price was taken: its import's, else its last check's, else the table's.
    pub fn dated(&self, model: &str) -> &str {
        self.imported
            .get(model)
            .map(String::as_str)
            .or_else(|| self.checked.get(model).and_then(|c| c.split_whitespace().next()))
            .unwrap_or(&self.as_of)
    }

    /// The newest date of the table or of an import: what "how old are these prices" is measured from (a
    /// check of a few entries does not make the rest current).
    pub fn newest(&self) -> &str {
        self.imported
            .values()
            .map(String::as_str)
            .chain([self.as_of.as_str()])
            .max()
            .unwrap_or(&self.as_of)
    }

    /// The table shipped inside the binary.
    pub fn bundled() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            PriceTable::parse(include_str!("../prices.toml")).expect("the bundled price table is checked by tests")
        })
    }

    pub fn parse(text: &str) -> Result<PriceTable, PriceError> {
        let table: PriceTable = toml::from_str(text)?;
        for (model, check) in &table.checked {
            let date = check.split_whitespace().next().unwrap_or_default();
            if !table.models.contains_key(model) || crate::days_since_epoch(date).is_none() {
                return Err(PriceError::Invalid {
                    model: model.clone(),
                    message: format!("[checked] needs a model of the table and \"YYYY-MM-DD source\", got `{check}`"),
                });
            }
        }
        for (model, e) in &table.models {
            e.price.validate().map_err(|message| PriceError::Invalid {
                model: model.clone(),
                message,
            })?;
        }
        Ok(table)
    }

    /// Finds a model's price, tolerating dated snapshots (`gpt-4o-2024-08-06`, `claude-3-5-haiku-20241022`),
    /// `-latest` aliases and case. Nothing looser: `claude-opus-4-6` is not `claude-opus-4`, and a wrong
    /// price is worse than an unknown one.
    pub fn lookup(&self, model: &str) -> Option<&PriceEntry> {
        if let Some(e) = self.models.get(model) {
            return Some(e);
        }
        let lower = model.to_ascii_lowercase();
        let trimmed = strip_snapshot(&lower);
        self.models.get(trimmed).or_else(|| {
            self.models
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(trimmed) || k.eq_ignore_ascii_case(&lower))
                .map(|(_, e)| e)
        })
    }

    /// Every catalogued model, sorted by name.
    pub fn models(&self) -> Vec<(&str, &PriceEntry)> {
        let mut v: Vec<_> = self.models.iter().map(|(k, e)| (k.as_str(), e)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-3-5-haiku-20241022` → `claude-3-5-haiku`, `x-latest` → `x`.
fn strip_snapshot(model: &str) -> &str {
    let m = model.strip_suffix("-latest").unwrap_or(model);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, tail)) = m.rsplit_once('-')
        && tail.len() == 8
        && digits(tail)
    {
        return head;
    }
    // -YYYY-MM-DD
    let parts: Vec<&str> = m.rsplitn(4, '-').collect();
    if parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 2
        && parts[2].len() == 4
        && parts[..3].iter().all(|p| digits(p))
    {
        return parts[3];
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_parses_and_covers_every_provider() {
        let t = PriceTable::bundled();
        assert!(!t.as_of.is_empty());
        for m in [
            "gpt-4o-mini",
            "claude-haiku-4-5",
            "gemini-2.5-flash",
            "mistral-small-latest",
            "deepseek-chat",
            "llama-3.3-70b-versatile",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ] {
            assert!(t.lookup(m).is_some(), "{m} missing");
        }
        // Who serves each: OpenAI-compatible hosts are named, not taken for OpenAI.
        for (m, host) in [
            ("gpt-4o-mini", Host::OpenAi),
            ("claude-haiku-4-5", Host::Anthropic),
            ("gemini-2.5-flash", Host::Gemini),
            ("mistral-small-latest", Host::Mistral),
            ("deepseek-chat", Host::DeepSeek),
            ("llama-3.1-8b-instant", Host::Groq),
            ("meta-llama/Llama-3.3-70B-Instruct-Turbo", Host::Together),
        ] {
            assert_eq!(t.lookup(m).unwrap().host, host, "{m}");
        }
        assert_eq!(t.lookup("llama-3.1-8b-instant").unwrap().provider, ProviderKind::OpenAi);
    }

    #[test]
    fn snapshots_and_aliases_resolve_to_their_family() {
        let t = PriceTable::bundled();
        assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().price.input, 2.50);
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18").unwrap().price.input, 0.15);
        assert_eq!(t.lookup("claude-3-5-haiku-20241022").unwrap().price.input, 0.80);
        assert_eq!(
            t.lookup("claude-sonnet-4-5-20250929").unwrap().provider,
            ProviderKind::Anthropic
        );
        assert_eq!(t.lookup("GPT-4.1-MINI").unwrap().price.output, 1.60);
        assert!(
            t.lookup("gpt-4").is_none(),
            "no loose prefix match in the other direction"
        );
        assert!(t.lookup("totally-unknown").is_none());
    }

    #[test]
    fn bad_prices_are_refused() {
        let caps = "kind = \"chat\"\ncontext = 1000\ntools = true\njson_schema = true\nvision = false\n";
        let e = PriceTable::parse(&format!(
            "as_of = \"x\"\n[models.m]\nprovider = \"openai\"\ninput = -1.0\noutput = 1.0\n{caps}"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("`input`"), "{e}");
        assert!(
            PriceTable::parse("as_of = \"x\"\n[models.m]\nprovider = \"nope\"\ninput = 1.0\noutput = 1.0\n").is_err()
        );
        let entry = format!("[models.m]\nprovider = \"openai\"\ninput = 1.0\noutput = 1.0\n{caps}");
        let ok = format!("as_of = \"x\"\n[checked]\nm = \"2026-12-08 example.com\"\n{entry}");
        assert_eq!(PriceTable::parse(&ok).unwrap().dated("m"), "2026-12-08");
        for bad in ["other = \"2026-12-08 x\"", "m = \"last week\""] {
            let e = PriceTable::parse(&format!("as_of = \"x\"\n[checked]\n{bad}\n{entry}")).unwrap_err();
            assert!(e.to_string().contains("[checked]"), "{e}");
        }
    }
}
