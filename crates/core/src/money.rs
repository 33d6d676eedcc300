//! Money as people read it (to the cent, or to four significant digits below a cent), and the one rule that
//! projects a window of traffic to a month.

/// Dollars: to the cent from a cent up, and to four significant digits below (a call's price is often a
/// fraction of a cent, and "$0.00" would hide it). Thousands are grouped.
pub fn usd(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a == 0.0 {
        return "$0.00".into();
    }
    if a >= 0.01 {
        // Rounded to the cent first, so 999.999 groups as 1,000.00.
        let cents = (a * 100.0).round() as u128;
        let (whole, frac) = (cents / 100, cents % 100);
        return format!("{sign}${}.{frac:02}", grouped(whole));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(2, 10) as usize;
    let s = format!("{a:.decimals$}");
    match s.trim_end_matches('0') {
        // Below a ten-billionth of a dollar there is nothing worth showing.
        "0." => "$0.00".into(),
        s => format!("{sign}${s}"),
    }
}

/// [`usd`] for a figure that may be unknown ("-").
pub fn usd_opt(v: Option<f64>) -> String {
    v.map(usd).unwrap_or_else(|| "-".into())
}

fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A day and a 30-day month, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
pub const MONTH_MS: i64 = 30 * DAY_MS;

/// How a window of logged traffic scales to a month: the one rule behind every "per month" figure (a task's
/// savings potential, a candidate's projected cost, a validation's projected savings), so they agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Monthly {
    /// Days of traffic the figure extrapolates from: from the first call in the window to now.
    pub basis_days: f64,
    /// What to multiply the window's figure by. A log younger than a day counts as a whole day, so an hour
    /// of traffic is not multiplied by 720.
    pub factor: f64,
}

impl Monthly {
    /// The scale for traffic whose first call was at `first_ms`, seen at `now_ms`.
    pub fn since(first_ms: i64, now_ms: i64) -> Monthly {
        let observed = (now_ms - first_ms).max(0);
        Monthly {
            basis_days: observed as f64 / DAY_MS as f64,
            factor: MONTH_MS as f64 / observed.max(DAY_MS) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_scaled_to_a_month_counting_at_least_a_day() {
        let now = 100 * DAY_MS;
        let m = Monthly::since(now - 3 * DAY_MS, now);
        assert_eq!((m.basis_days, m.factor), (3.0, 10.0));
        let hour = Monthly::since(now - DAY_MS / 24, now);
        assert_eq!(hour.factor, 30.0, "an hour counts as a day");
        assert!((hour.basis_days - 1.0 / 24.0).abs() < 1e-12);
        let quarter = Monthly::since(now - 90 * DAY_MS, now);
        assert_eq!(quarter.basis_days, 90.0);
        assert!((quarter.factor - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            Monthly::since(now + 5, now).factor,
            30.0,
            "a clock that went back is a day"
        );
    }

    #[test]
    fn money_is_to_the_cent_or_four_significant_digits_below_it() {
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(12.3456), "$12.35");
        assert_eq!(usd(0.01), "$0.01");
        assert_eq!(usd(1234567.891), "$1,234,567.89");
        assert_eq!(usd(999.999), "$1,000.00");
        assert_eq!(usd(0.000123456), "$0.0001235");
        assert_eq!(usd(0.0012), "$0.0012");
        assert_eq!(usd(0.00999), "$0.00999");
        assert_eq!(usd(-3.5), "-$3.50");
        assert_eq!(usd(-0.0005), "-$0.0005");
        assert_eq!(usd(f64::NAN), "-");
        assert_eq!(usd_opt(None), "-");
        assert_eq!(usd(1e-15), "$0.00");
        assert_eq!(usd(2.5e-9), "$0.0000000025");
    }
}
