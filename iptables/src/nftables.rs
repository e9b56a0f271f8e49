//! Istio's native nftables tables (`inet istio-proxy-*`): applying a transaction, reading
//! which of our tables exist, deleting them.

use crate::command::Cmd;
use crate::exec_error::CaptureError;
use crate::state::mark_value;

/// The tables `istio-nftables` creates; everything in them is ours.
pub(crate) const OUR_TABLES: [&str; 3] =
    ["istio-proxy-nat", "istio-proxy-mangle", "istio-proxy-raw"];
const FAMILY: &str = "inet";
/// The table holding the TPROXY rules, where our mark can be read back.
const MANGLE_TABLE: &str = "istio-proxy-mangle";
/// See `ownership::OUTBOUND_MARK`: set on the proxy's own connections, not routed.
const OUTBOUND_MARK: u32 = 1338;

/// Which of [`OUR_TABLES`] exist; `None` when `nft` is not installed.
pub(crate) fn our_tables() -> Result<Option<Vec<String>>, CaptureError> {
    let out = match Cmd::new("nft").args(["list", "tables"]).run_ok() {
        Ok(out) => out,
        Err(CaptureError::MissingBinary { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut found: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("table"), Some(FAMILY), Some(name), None) if OUR_TABLES.contains(&name) => {
                    Some(name.to_string())
                }
                _ => None,
            }
        })
        .collect();
    found.sort();
    Ok(Some(found))
}

/// The tables a transaction creates (`add table inet NAME` / `create table inet NAME`).
pub(crate) fn tables_in(transaction: &str) -> Vec<String> {
    let mut v: Vec<String> = transaction
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["add" | "create", "table", FAMILY, name, ..] => {
                    Some(name.trim_end_matches(';').to_string())
                }
                _ => None,
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The stateless listing (`nft -s`, no counters) of `tables`, for comparing before and after.
pub(crate) fn listing(tables: &[String]) -> Result<String, CaptureError> {
    let mut out = String::new();
    for t in tables {
        out.push_str(
            &Cmd::new("nft")
                .args(["-s", "list", "table", FAMILY, t])
                .run_ok()?,
        );
    }
    Ok(out)
}

/// Runs a transaction with `nft -f -`: all of it or nothing.
pub(crate) fn run_transaction(text: &str) -> Result<(), CaptureError> {
    Cmd::new("nft")
        .args(["-f", "-"])
        .stdin(text)
        .run_ok()
        .map(drop)
}

/// Deletes `tables` in one transaction.
pub(crate) fn delete_tables(tables: &[String]) -> Result<(), CaptureError> {
    if tables.is_empty() {
        return Ok(());
    }
    let text: String = tables
        .iter()
        .map(|t| format!("delete table {FAMILY} {t}\n"))
        .collect();
    run_transaction(&text)
}

/// TPROXY marks our mangle table sets (`meta mark set 0x00000539`), when it exists.
pub(crate) fn marks(present: &[String]) -> Result<Vec<u32>, CaptureError> {
    if !present.iter().any(|t| t == MANGLE_TABLE) {
        return Ok(Vec::new());
    }
    let text = listing(&[MANGLE_TABLE.to_string()])?;
    Ok(marks_in(&text))
}

fn marks_in(listing: &str) -> Vec<u32> {
    let words: Vec<&str> = listing.split_whitespace().collect();
    let mut marks: Vec<u32> = words
        .windows(3)
        .filter(|w| w[0] == "mark" && w[1] == "set")
        .filter_map(|w| mark_value(w[2]))
        .filter(|m| *m != OUTBOUND_MARK)
        .collect();
    marks.sort_unstable();
    marks.dedup();
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_a_transaction() {
        let t = "add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\nadd chain inet istio-proxy-nat output { type nat hook output priority -100 ; }\nadd table inet istio-proxy-raw\n";
        assert_eq!(tables_in(t), ["istio-proxy-nat", "istio-proxy-raw"]);
    }

    #[test]
    fn marks_of_the_mangle_listing() {
        let l = "table inet istio-proxy-mangle {\n chain istio-divert {\n  meta mark set 0x00000539\n  accept\n }\n chain output {\n  oifname \"lo\" skuid 1337 meta mark set 0x0000053a\n  ct mark 0x00000539 meta mark set ct mark\n }\n}\n";
        assert_eq!(marks_in(l), [1337]);
    }
}
