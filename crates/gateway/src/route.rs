//! Which upstream serves a model name: configured models, `provider/model`, or the price catalogue.

use std::collections::HashMap;
use std::sync::Arc;

use leanlm_cost::{Price, PriceTable};
use leanlm_wire::{ErrorKind, WireError};

use crate::config::{Config, ProviderConfig};

/// One concrete way to serve a request.
#[derive(Debug, Clone)]
pub struct Target {
    /// The name the gateway reports as having served (a configured alias, or the name the client sent).
    pub model: String,
    pub upstream_model: String,
    pub provider: Arc<ProviderConfig>,
    pub price: Option<Price>,
}

/// Unpriced models warned about by name at most; past it they are logged without a warning.
const MAX_UNPRICED_WARNED: usize = 1024;

/// Resolves model names; built once from the config.
#[derive(Debug)]
pub struct Routes {
    providers: HashMap<String, Arc<ProviderConfig>>,
    config: Arc<Config>,
    /// Upstream models already warned about for having no price.
    unpriced: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Routes {
    pub fn new(config: Arc<Config>) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect();
        Routes {
            providers,
            config,
            unpriced: Default::default(),
        }
    }

    /// The model and its fallbacks, in order.
    pub fn resolve(&self, name: &str) -> Result<Vec<Target>, WireError> {
        let first = self.resolve_one(name)?;
        let mut chain = vec![first];
        if let Some(m) = self.config.models.get(name) {
            for f in &m.fallbacks {
                chain.push(self.resolve_one(f)?);
            }
        }
        Ok(chain)
    }

    fn resolve_one(&self, name: &str) -> Result<Target, WireError> {
        if let Some(m) = self.config.models.get(name) {
            let provider = self
                .providers
                .get(&m.provider)
                .cloned()
                .ok_or_else(|| unknown(name, self))?;
            return Ok(self.target(name, &m.upstream, provider, m.price));
        }
        // A table model goes to the provider named after who serves it: Groq's models to `[providers.groq]`,
        // never to OpenAI because they speak its API, nor because a name like Groq's `openai/gpt-oss-120b`
        // reads as `provider/model`.
        if let Some(entry) = PriceTable::active().lookup(name) {
            return match self.providers.get(entry.host.as_str()) {
                Some(provider) => Ok(self.target(name, name, provider.clone(), None)),
                None => Err(unknown(name, self)),
            };
        }
        if let Some((p, model)) = name.split_once('/')
            && let Some(provider) = self.providers.get(p)
            && !model.is_empty()
        {
            return Ok(self.target(name, model, provider.clone(), None));
        }
        Err(unknown(name, self))
    }

    fn target(&self, model: &str, upstream: &str, provider: Arc<ProviderConfig>, price: Option<Price>) -> Target {
        let price = price
            .or_else(|| self.config.prices.get(upstream).copied())
            .or_else(|| PriceTable::active().lookup(upstream).map(|e| e.price));
        if price.is_none() {
            let mut seen = self.unpriced.lock().unwrap_or_else(|p| p.into_inner());
            // Warned about once each, up to a bound: `provider/model` names are the client's to choose.
            if seen.len() < MAX_UNPRICED_WARNED && seen.insert(upstream.to_owned()) {
                tracing::warn!(
                    model = upstream,
                    "no price known for this model: its calls are logged without cost; add it under [prices] in leanlm.toml"
                );
            }
        }
        Target {
            model: model.to_owned(),
            upstream_model: upstream.to_owned(),
            provider,
            price,
        }
    }

    /// The provider a client of `kind` reaches where no model says otherwise: the one named after the kind
    /// (`openai`, `anthropic`), else the first of that kind by name.
    pub fn default_provider(&self, kind: leanlm_wire::ProviderKind) -> Option<Arc<ProviderConfig>> {
        let named = self.providers.get(kind.as_str()).filter(|p| p.kind == kind);
        named
            .or_else(|| {
                let (name, _) = self.config.providers.iter().find(|(_, p)| p.kind == kind)?;
                self.providers.get(name)
            })
            .cloned()
    }

    /// Every model name a client can use without `provider/`: configured ones and catalogued ones whose
    /// provider kind is available.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .config
            .models
            .iter()
            .map(|(k, m)| (k.clone(), m.provider.clone()))
            .collect();
        for (name, e) in PriceTable::active().models() {
            if self.providers.contains_key(e.provider.as_str()) && !self.config.models.contains_key(name) {
                out.push((name.to_owned(), e.provider.as_str().to_owned()));
            }
        }
        out
    }
}

fn unknown(name: &str, routes: &Routes) -> WireError {
    let mut providers: Vec<&str> = routes.providers.keys().map(String::as_str).collect();
    providers.sort();
    WireError::new(
        ErrorKind::NotFound,
        format!(
            "The model `{name}` does not exist in this LeanLM gateway: configure it under [models] in leanlm.toml, \
             use a catalogued model, or name it as provider/model (providers: {})",
            providers.join(", ")
        ),
    )
    .with_code("model_not_found")
}

/// The models this deployment can route to, priced, with what the price table knows of their
/// capabilities, and which of them may replace a task's model. `[catalog] allow = ["*"]` allows every
/// model in the price table.
pub fn catalog(config: &Config) -> Vec<leanlm_validate::CatalogModel> {
    let routes = Routes::new(Arc::new(config.clone()));
    let table = leanlm_cost::PriceTable::active();
    let everything = config.catalog_allow.iter().any(|m| m == "*");
    let mut names: std::collections::BTreeSet<String> = config.models.keys().cloned().collect();
    names.extend(config.catalog_allow.iter().filter(|m| *m != "*").cloned());
    if everything {
        names.extend(table.models().into_iter().map(|(n, _)| n.to_owned()));
    }
    names
        .into_iter()
        .filter_map(|name| {
            let target = routes.resolve(&name).ok()?.into_iter().next()?;
            Some(leanlm_validate::CatalogModel {
                allowed: everything || config.catalog_allow.contains(&name),
                provider: target.provider.name.clone(),
                price: target.price,
                caps: table.lookup(&target.upstream_model).map(|e| e.caps),
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn routes(text: &str) -> Routes {
        Routes::new(Arc::new(
            Config::from_toml("t", text, &Overrides::default(), &|_| None).unwrap(),
        ))
    }

    #[test]
    fn configured_models_come_with_fallbacks_and_prices() {
        let r = routes(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             [models.fast]\nprovider = \"local\"\nupstream = \"llama\"\nfallbacks = [\"claude-haiku-4-5\"]\n\
             price = { input = 1.0, output = 2.0 }\n",
        );
        let chain = r.resolve("fast").unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].upstream_model, "llama");
        assert_eq!(chain[0].provider.name, "local");
        assert_eq!(chain[0].price.unwrap().output, 2.0);
        assert_eq!(chain[1].provider.name, "anthropic");
        assert_eq!(chain[1].price.unwrap().input, 1.0);
    }

    #[test]
    fn provider_slash_model_and_catalogue_names_resolve() {
        let r = routes("");
        let t = &r.resolve("anthropic/claude-x-unknown").unwrap()[0];
        assert_eq!(t.provider.name, "anthropic");
        assert_eq!(t.upstream_model, "claude-x-unknown");
        assert!(t.price.is_none());
        let t = &r.resolve("gemini-2.5-flash").unwrap()[0];
        assert_eq!(t.provider.name, "gemini");
        assert!(t.price.is_some());
        let t = &r.resolve("gpt-4o-mini-2024-07-18").unwrap()[0];
        assert_eq!(t.provider.name, "openai");
    }

    #[test]
    fn a_hosted_model_goes_to_its_host_or_nowhere() {
        // Groq's models speak OpenAI's API but OpenAI does not serve them.
        assert!(routes("").resolve("llama-3.1-8b-instant").is_err());
        let r = routes(
            "[providers.groq]\nkind = \"openai\"\nbase_url = \"https://api.groq.com/openai/v1\"\napi_key = \"k\"\n",
        );
        let t = &r.resolve("llama-3.1-8b-instant").unwrap()[0];
        assert_eq!(t.provider.name, "groq");
        assert!(t.price.is_some());
        // And the catalog names only what this deployment can route to.
        let config = Config::from_toml("t", "", &Overrides::default(), &|_| None).unwrap();
        let everything = Config {
            catalog_allow: vec!["*".into()],
            ..config
        };
        let names: Vec<String> = catalog(&everything).into_iter().map(|m| m.name).collect();
        assert!(names.iter().any(|n| n == "gpt-4o-mini"));
        assert!(
            !names.iter().any(|n| n == "llama-3.1-8b-instant"),
            "no Groq provider configured"
        );
        // Groq's `openai/gpt-oss-120b` is Groq's model, not `provider/model` for OpenAI.
        assert!(names.iter().all(|n| n != "openai/gpt-oss-120b"));
        assert!(routes("").resolve("openai/gpt-oss-120b").is_err());
        assert_eq!(r.resolve("openai/gpt-oss-120b").unwrap()[0].provider.name, "groq");
        // A name the table does not know still reads as `provider/model`.
        assert_eq!(r.resolve("openai/my-fine-tune").unwrap()[0].provider.name, "openai");
    }

    #[test]
    fn unknown_models_say_what_to_do() {
        let e = routes("").resolve("my-model").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message.contains("`my-model`") && e.message.contains("provider/model"),
            "{}",
            e.message
        );
        assert!(routes("").resolve("nope/x").is_err());
    }
}
