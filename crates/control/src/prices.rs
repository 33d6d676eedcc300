//! Prices that stay true: a price list imported into the store (LiteLLM's layout), put over the bundled
//! table by every gateway and command that reads the store.

use leanlm_cost::{PriceEntry, PriceTable};
use leanlm_store::Store;

use crate::ControlError;

/// What an import did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportSummary {
    pub imported: usize,
    /// Of those, models the bundled table did not have.
    pub new: usize,
    /// Of those, models whose price differs from the bundled table's.
    pub changed: usize,
    /// Entries of providers or modes LeanLM does not serve.
    pub skipped: usize,
    pub as_of: String,
}

/// Reads a LiteLLM price list and keeps its entries in the store, dated `as_of` (`YYYY-MM-DD`).
pub fn import_litellm(store: &mut Store, text: &str, as_of: &str, source: &str) -> Result<ImportSummary, ControlError> {
    if leanlm_cost::days_since_epoch(as_of).is_none() {
        return Err(ControlError::Invalid(format!(
            "the price list's date must read YYYY-MM-DD, not `{as_of}`"
        )));
    }
    let list = leanlm_cost::litellm::parse(text).map_err(|e| ControlError::Invalid(e.to_string()))?;
    if list.models.is_empty() {
        return Err(ControlError::Invalid(format!(
            "the price list has no model LeanLM serves ({} entries of other providers or modes)",
            list.skipped
        )));
    }
    let bundled = PriceTable::bundled();
    let (mut new, mut changed) = (0, 0);
    let mut rows = Vec::with_capacity(list.models.len());
    for (name, entry) in &list.models {
        match bundled.lookup(name) {
            None => new += 1,
            Some(b) if b.price != entry.price => changed += 1,
            Some(_) => {}
        }
        let json = serde_json::to_string(entry).map_err(|e| ControlError::Invalid(format!("`{name}`: {e}")))?;
        rows.push((name.clone(), json));
    }
    store.save_prices(&rows, as_of, source)?;
    Ok(ImportSummary {
        imported: rows.len(),
        new,
        changed,
        skipped: list.skipped,
        as_of: as_of.to_owned(),
    })
}

/// The bundled table with the store's imported prices over it. An entry the store holds that does not read
/// as one (written by a newer version) is left out.
pub fn table(store: &Store) -> Result<PriceTable, ControlError> {
    let entries: Vec<(String, PriceEntry, String)> = store
        .prices()?
        .into_iter()
        .filter_map(|(model, json, as_of)| Some((model, serde_json::from_str(&json).ok()?, as_of)))
        .collect();
    Ok(PriceTable::bundled().with_imported(&entries))
}

/// Puts the store's imported prices over the bundled table for this process (once; see
/// [`PriceTable::install`]).
pub fn install(store: &Store) -> Result<(), ControlError> {
    PriceTable::install(table(store)?);
    Ok(())
}

/// A warning for a start when the newest price is older than [`leanlm_cost::STALE_AFTER_DAYS`].
pub fn staleness(table: &PriceTable) -> Option<String> {
    let age = leanlm_cost::age_days(table)?;
    (age > leanlm_cost::STALE_AFTER_DAYS).then(|| {
        format!(
            "prices are dated {} ({age} days ago) and may have changed: import a current list with `leanlm prices \
             --import model_prices_and_context_window.json` (LiteLLM's layout), or set [models.NAME] price in the config",
            table.newest()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
        "gpt-4o-mini": {"max_input_tokens": 128000, "input_cost_per_token": 1e-07, "output_cost_per_token": 5e-07,
            "litellm_provider": "openai", "mode": "chat", "supports_function_calling": true},
        "brand-new-model": {"max_input_tokens": 32000, "input_cost_per_token": 2e-07, "output_cost_per_token": 4e-07,
            "litellm_provider": "openai", "mode": "chat"},
        "bedrock/x": {"input_cost_per_token": 1e-07, "output_cost_per_token": 1e-07, "litellm_provider": "bedrock", "mode": "chat"}
    }"#;

    #[test]
    fn an_import_is_kept_in_the_store_and_read_over_the_bundled_table() {
        let mut store = Store::open("sqlite::memory:").unwrap();
        let s = import_litellm(&mut store, LIST, "2026-12-01", "test.json").unwrap();
        assert_eq!((s.imported, s.new, s.changed, s.skipped), (2, 1, 1, 1));
        let t = table(&store).unwrap();
        assert!((t.lookup("gpt-4o-mini").unwrap().price.input - 0.1).abs() < 1e-9);
        assert_eq!(t.dated("gpt-4o-mini"), "2026-12-01");
        assert!(t.lookup("brand-new-model").is_some());
        assert_eq!(
            t.dated("gpt-4o"),
            PriceTable::bundled().as_of,
            "models not in the list keep the bundled price"
        );
        // A later import replaces the earlier one's entries.
        import_litellm(&mut store, &LIST.replace("1e-07", "3e-07"), "2026-12-05", "b.json").unwrap();
        let t = table(&store).unwrap();
        assert!((t.lookup("gpt-4o-mini").unwrap().price.input - 0.3).abs() < 1e-9);
        assert_eq!(t.newest(), "2026-12-05");
    }

    #[test]
    fn bad_lists_and_dates_are_refused_and_change_nothing() {
        let mut store = Store::open("sqlite::memory:").unwrap();
        for (text, date, says) in [
            (LIST, "Dec 1", "YYYY-MM-DD"),
            ("not json", "2026-12-01", "not a LiteLLM price list"),
            (r#"{"bedrock/x": {}}"#, "2026-12-01", "no model LeanLM serves"),
        ] {
            let e = import_litellm(&mut store, text, date, "x").unwrap_err();
            assert!(matches!(e, ControlError::Invalid(_)));
            assert!(e.to_string().contains(says), "{e}");
        }
        assert!(store.prices().unwrap().is_empty());
    }

    #[test]
    fn an_old_table_warns_and_a_fresh_import_quiets_it() {
        let old = PriceTable::bundled().with_imported(&[]);
        let mut aged = old.clone();
        aged.as_of = "2020-01-01".into();
        assert!(staleness(&aged).unwrap().contains("--import"));
        let fresh = aged.with_imported(&[(
            "gpt-4o".into(),
            *PriceTable::bundled().lookup("gpt-4o").unwrap(),
            leanlm_cost::today(),
        )]);
        assert!(staleness(&fresh).is_none());
    }
}
