//! Percentiles and markdown tables.

use std::fmt::Write;

/// Nearest-rank percentile of `v` (need not be sorted); NaN when empty.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // A rank between 0 and the sample count (p is a percentage): it fits a usize.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// A number for a table: 3 significant digits, `-` for NaN.
pub fn num(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio `a / b` as `1.23x`.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// A markdown table.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table with a heading and column names.
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// Renders it.
    pub fn render(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            self.header
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n{n}");
        }
        out.push('\n');
        out
    }
}

/// The standard percentile columns.
pub const PCT_HEADER: [&str; 9] = [
    "contender",
    "rounds",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "p50 vs floor",
    "p99 vs floor",
    "notes",
];

/// A row of [`PCT_HEADER`]; `floor` is the floor's samples (or empty).
pub fn pct_row(name: &str, v: &[f64], floor: &[f64], notes: &str) -> Vec<String> {
    vec![
        name.to_string(),
        v.len().to_string(),
        num(pct(v, 50.0)),
        num(pct(v, 90.0)),
        num(pct(v, 99.0)),
        num(pct(v, 100.0)),
        ratio(pct(v, 50.0), pct(floor, 50.0)),
        ratio(pct(v, 99.0), pct(floor, 99.0)),
        notes.to_string(),
    ]
}
