//! How the CLI shows things: tables that fit the terminal, money to the cent (`leanlm_core::money`).
//!
//! `--json` keeps every field at full precision; these are for people reading a terminal.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
pub use leanlm_core::money::{usd as money, usd_opt as money_opt};

/// A table that wraps its widest columns to the terminal's width (`$COLUMNS` when set), so a long reason or
/// a model list never pushes a row off screen. Piped or redirected, rows stay whole for the tools that read
/// them (`grep`, `awk`); `--json` has every field.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    use std::io::IsTerminal;
    let width = std::io::stdout()
        .is_terminal()
        .then(|| columns().or_else(terminal_width))
        .flatten();
    sized(header, width)
}

fn sized<const N: usize>(header: [&str; N], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    if let Some(w) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic).set_width(w);
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

fn terminal_width() -> Option<u16> {
    Table::new().width()
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
        let long = "a long reason that goes on ".repeat(10);
        let mut t = sized(["task", "why"], Some(40));
        t.add_row(["t1", &long]);
        let widest = t.to_string().lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 40, "{widest} columns:\n{t}");
        // Without a terminal, rows stay whole.
        let mut whole = sized(["task", "why"], None);
        whole.add_row(["t1", &long]);
        assert!(whole.to_string().contains(long.trim()), "{whole}");
    }
}
