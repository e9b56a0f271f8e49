//! Figures collected during a run, their medians over repetitions, and their ratios to the
//! other paths measured in the same run.

use std::collections::BTreeMap;

use crate::harness::proxies::PathKind;

/// How a figure compares across paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Measured on every path; latencies also get "added over direct".
    Latency,
    /// Measured on every path (throughput).
    Path,
    /// A property of the proxy process; direct has none.
    PerProxy,
    /// Conditions of the run (not a result): no ratios.
    Meta,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub unit: &'static str,
    pub kind: Kind,
    /// Every repetition's value, per path.
    pub values: BTreeMap<PathKind, Vec<f64>>,
}

impl Row {
    /// Median over repetitions (mean of the middle two for an even count).
    pub fn median(&self, p: PathKind) -> Option<f64> {
        let mut v = self.values.get(&p)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// `p`'s median over `base`'s, when both exist and `base` is not zero.
    pub fn ratio(&self, p: PathKind, base: PathKind) -> Option<f64> {
        let (a, b) = (self.median(p)?, self.median(base)?);
        (b != 0.0 && self.kind != Kind::Meta).then(|| a / b)
    }

    /// Latency added over direct by path `p`.
    pub fn added(&self, p: PathKind) -> Option<f64> {
        (self.kind == Kind::Latency && p != PathKind::Direct)
            .then(|| Some(self.median(p)? - self.median(PathKind::Direct)?))
            .flatten()
    }

    /// Whether path `p` is expected to have a value in this row.
    pub fn applies_to(&self, p: PathKind) -> bool {
        !(self.kind == Kind::PerProxy && p == PathKind::Direct)
    }
}

/// A row that did not produce its figure, or ran under disturbance.
#[derive(Debug, Clone)]
pub struct Note {
    pub path: PathKind,
    pub rep: u32,
    pub row: String,
    pub text: String,
}

/// Everything measured in one run, rows in first-measured order.
#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub errors: Vec<Note>,
    pub noisy: Vec<Note>,
}

impl Results {
    pub fn put(
        &mut self,
        id: &str,
        label: &str,
        unit: &'static str,
        kind: Kind,
        path: PathKind,
        value: f64,
    ) {
        let i = match self.rows.iter().position(|r| r.id == id) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    id: id.to_string(),
                    label: label.to_string(),
                    unit,
                    kind,
                    values: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[i].values.entry(path).or_default().push(value);
    }

    pub fn error(&mut self, path: PathKind, rep: u32, row: &str, text: impl Into<String>) {
        let text = text.into();
        tracing::error!(path = path.name(), rep, row, "{text}");
        self.errors.push(Note {
            path,
            rep,
            row: row.to_string(),
            text,
        });
    }

    /// Rows (by label) where a path that should have a figure has none.
    pub fn missing(&self, paths: &[PathKind]) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rows {
            for p in paths {
                if r.applies_to(*p) && r.median(*p).is_none_or(|v| !v.is_finite()) {
                    out.push(format!("{} ({})", r.label, p.name()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_added_latency() {
        let mut r = Results::default();
        for (p, v) in [
            (PathKind::Direct, 100.0),
            (PathKind::Direct, 120.0),
            (PathKind::VmProxy, 150.0),
            (PathKind::Haproxy, 200.0),
        ] {
            r.put("lat", "p50", "us", Kind::Latency, p, v);
        }
        let row = &r.rows[0];
        assert_eq!(row.median(PathKind::Direct), Some(110.0));
        assert_eq!(row.added(PathKind::VmProxy), Some(40.0));
        assert_eq!(row.ratio(PathKind::VmProxy, PathKind::Haproxy), Some(0.75));
        assert_eq!(row.ratio(PathKind::VmProxy, PathKind::Nginx), None);
        assert_eq!(r.missing(&PathKind::ALL), vec!["p50 (nginx)".to_string()]);
    }

    #[test]
    fn direct_has_no_proxy_figures() {
        let mut r = Results::default();
        r.put("rss", "RSS", "MB", Kind::PerProxy, PathKind::VmProxy, 5.0);
        assert!(!r.rows[0].applies_to(PathKind::Direct));
        assert_eq!(
            r.missing(&[PathKind::Direct, PathKind::VmProxy]),
            Vec::<String>::new()
        );
    }
}
