//! How the CLI shows things: tables that fit the terminal, money to the cent (`leanlm_core::money`).
//!
//! `--json` keeps every field at full precision; these are for people reading a terminal.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
pub use leanlm_core::money::{usd as money, usd_opt as money_opt};

/// A table that wraps its widest columns to the terminal's width (or `$COLUMNS` when set, as shells export
/// it), so a long reason or a model list never pushes a row off screen. Piped to a file with no `$COLUMNS`,
/// rows stay whole for tools that read them.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    if let Some(width) = columns() {
        t.set_width(width);
    }
    t
}

fn columns() -> Option<u16> {
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|w| *w >= 20)
}

/// A span of days as a person says it: "3 hours" under a day, else "4.5 days".
pub fn days(d: f64) -> String {
    if d < 1.0 {
        let h = (d * 24.0).round().max(1.0);
        format!("{h:.0} hour{}", if h == 1.0 { "" } else { "s" })
    } else if d < 10.0 {
        format!("{d:.1} days")
    } else {
        format!("{d:.0} days")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_read_as_hours_under_a_day() {
        assert_eq!(days(0.001), "1 hour");
        assert_eq!(days(0.25), "6 hours");
        assert_eq!(days(2.0), "2.0 days");
        assert_eq!(days(45.2), "45 days");
    }

    #[test]
    fn a_table_wraps_to_the_width_it_is_given() {
        let mut t = table(["task", "why"]);
        t.set_width(40);
        t.add_row(["t1", &"a long reason that goes on ".repeat(10)]);
        let widest = t.to_string().lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 40, "{widest} columns:\n{t}");
    }
}
