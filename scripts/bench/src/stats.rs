//! Figures from runs taken in turns: the samples of each run by label and field, their medians
//! and ratios, and the tables the sections print.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The median of `values`; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// `a / b`, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// `value` with `decimals` decimals, or `n/a`.
pub fn fmt(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".to_string(),
    }
}

/// One value per run of every field, by the label of what ran ("flowctl", "compose", ...).
#[derive(Debug, Default)]
pub struct Samples {
    values: BTreeMap<(String, String), Vec<f64>>,
}

impl Samples {
    /// Adds one run's `value` of `field` to what ran as `label`.
    pub fn push(&mut self, label: &str, field: &str, value: f64) {
        self.values
            .entry((label.to_string(), field.to_string()))
            .or_default()
            .push(value);
    }

    /// Every run's value of `field` for `label`, in run order.
    pub fn values(&self, label: &str, field: &str) -> &[f64] {
        self.values
            .get(&(label.to_string(), field.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn median(&self, label: &str, field: &str) -> Option<f64> {
        median(self.values(label, field))
    }

    pub fn max(&self, label: &str, field: &str) -> Option<f64> {
        self.values(label, field).iter().copied().reduce(f64::max)
    }

    /// The values of `field` for `label`, as the run-by-run line of a section prints them.
    pub fn listed(&self, label: &str, field: &str) -> String {
        let values: Vec<String> = self
            .values(label, field)
            .iter()
            .map(|v| format!("{v}"))
            .collect();
        values.join(" ")
    }
}

/// A table as the sections print it: a label column and three value columns.
#[derive(Debug, Default)]
pub struct Table {
    text: String,
}

impl Table {
    /// A table whose first row is `header` (the label column first).
    pub fn new(header: [&str; 4]) -> Table {
        let mut table = Table::default();
        table.row(header);
        table
    }

    pub fn row(&mut self, cells: [&str; 4]) -> &mut Table {
        let [label, a, b, c] = cells;
        let _ = writeln!(self.text, "  {label:<44} {a:>12} {b:>12} {c:>9}");
        self
    }

    /// A row of `a`, `b` and their ratio, with `decimals` decimals for the values.
    pub fn compare(
        &mut self,
        label: &str,
        a: Option<f64>,
        b: Option<f64>,
        decimals: usize,
    ) -> &mut Table {
        self.row([
            label,
            &fmt(a, decimals),
            &fmt(b, decimals),
            &fmt(ratio(a, b), 2),
        ])
    }

    pub fn print(&self) {
        print!("{}", self.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn ratio_needs_both_and_a_divisor() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(fmt(None, 2), "n/a");
        assert_eq!(fmt(Some(0.456), 2), "0.46");
    }

    #[test]
    fn samples_keep_runs_by_label_and_field() {
        let mut s = Samples::default();
        s.push("a", "ms", 3.0);
        s.push("a", "ms", 1.0);
        s.push("b", "ms", 7.0);
        assert_eq!(s.values("a", "ms"), &[3.0, 1.0]);
        assert_eq!(s.median("a", "ms"), Some(2.0));
        assert_eq!(s.max("a", "ms"), Some(3.0));
        assert_eq!(s.median("a", "other"), None);
        assert_eq!(s.listed("b", "ms"), "7");
    }
}
