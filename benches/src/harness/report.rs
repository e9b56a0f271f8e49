//! The results as a table on stdout and as JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::harness::error::Error;
use crate::harness::pending::NOT_YET_MEASURABLE;
use crate::harness::proxies::PathKind;
use crate::harness::results::{Kind, Results, Row};

const BASES: [PathKind; 3] = [PathKind::Direct, PathKind::Haproxy, PathKind::Nginx];

/// The table: one line per row; values are medians over repetitions, latencies with the
/// amount added over direct, then vm-proxy's ratio to each other path.
pub fn table(r: &Results) -> String {
    let mut head = vec!["row".to_string(), "unit".to_string()];
    head.extend(PathKind::ALL.iter().map(|p| p.name().to_string()));
    head.extend(BASES.iter().map(|b| format!("vm/{}", b.name())));
    let mut lines = vec![head];
    for row in &r.rows {
        let mut l = vec![row.label.clone(), row.unit.to_string()];
        for p in PathKind::ALL {
            l.push(cell(row, p));
        }
        for b in BASES {
            l.push(
                row.ratio(PathKind::VmProxy, b)
                    .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
            );
        }
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        for (c, v) in l.iter().enumerate() {
            let pad = widths[c] - v.chars().count();
            if c < 2 {
                let _ = write!(s, "{v}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{}{v}  ", " ".repeat(pad));
            }
        }
        s = s.trim_end().to_string();
        s.push('\n');
        if i == 0 {
            s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len()));
            s.push('\n');
        }
    }
    s.push_str("\nnot yet measurable:\n");
    for (row, why) in NOT_YET_MEASURABLE {
        let _ = writeln!(s, "  {row}: not yet measurable: {why}");
    }
    if !r.noisy.is_empty() {
        let _ = writeln!(s, "\nrows run while other processes used the CPU:");
        for n in &r.noisy {
            let _ = writeln!(s, "  rep {} {} {}: {}", n.rep, n.path.name(), n.row, n.text);
        }
    }
    if !r.errors.is_empty() {
        let _ = writeln!(s, "\nerrors:");
        for n in &r.errors {
            let _ = writeln!(s, "  rep {} {} {}: {}", n.rep, n.path.name(), n.row, n.text);
        }
    }
    s
}

fn cell(row: &Row, p: PathKind) -> String {
    if !row.applies_to(p) {
        return "n/a".into();
    }
    let Some(v) = row.median(p) else {
        return "MISSING".into();
    };
    let v_s = fmt(v);
    match row.added(p) {
        Some(a) => format!("{v_s} ({}{})", if a >= 0.0 { "+" } else { "" }, fmt(a)),
        None => v_s,
    }
}

fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The JSON document: run conditions, every row with per-repetition values, medians, the
/// latency added over direct and ratios of every path to direct, haproxy and nginx.
pub fn json(r: &Results, run: Value) -> Value {
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            let mut paths = serde_json::Map::new();
            for p in PathKind::ALL {
                if !row.applies_to(p) {
                    continue;
                }
                let mut ratios = serde_json::Map::new();
                for b in BASES.into_iter().filter(|b| *b != p) {
                    ratios.insert(format!("vs_{}", b.name()), json!(row.ratio(p, b)));
                }
                paths.insert(
                    p.name().into(),
                    json!({
                        "median": row.median(p),
                        "reps": row.values.get(&p).cloned().unwrap_or_default(),
                        "added_over_direct": row.added(p),
                        "ratios": ratios,
                    }),
                );
            }
            json!({
                "id": row.id,
                "label": row.label,
                "unit": row.unit,
                "kind": match row.kind {
                    Kind::Latency => "latency",
                    Kind::Path => "path",
                    Kind::PerProxy => "per_proxy",
                    Kind::Meta => "conditions",
                },
                "paths": paths,
            })
        })
        .collect();
    let notes = |v: &[crate::harness::results::Note]| -> Vec<Value> {
        v.iter()
            .map(|n| json!({"path": n.path.name(), "rep": n.rep, "row": n.row, "text": n.text}))
            .collect()
    };
    json!({
        "run": run,
        "rows": rows,
        "not_yet_measurable": NOT_YET_MEASURABLE
            .iter()
            .map(|(row, why)| json!({"row": row, "why": why}))
            .collect::<Vec<_>>(),
        "noisy_rows": notes(&r.noisy),
        "errors": notes(&r.errors),
    })
}

/// Writes `doc` to `path`, creating its directory.
pub fn write_json(path: &Path, doc: &Value) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n").map_err(Error::io(path))
}
