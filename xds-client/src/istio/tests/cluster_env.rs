//! cluster.env syntax: every case against what bash itself makes of the same file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::Scratch;
use crate::istio::cluster_env::{EnvFileError, parse};

/// Each case as a file line and the value bash gives `V`.
const CASES: &[(&str, &str)] = &[
    ("V=plain", "plain"),
    ("V='single quoted with spaces'", "single quoted with spaces"),
    ("V=\"double quoted\"", "double quoted"),
    ("V=''", ""),
    ("V=", ""),
    ("V='it'\"'\"'s'", "it's"),
    ("export V='exported'", "exported"),
    ("  export   V=spaced  ", "spaced"),
    ("V='a'b\"c\"", "abc"),
    ("V=a\\ b", "a b"),
    (
        "V=\"esc \\\" \\\\ \\$ \\` kept \\n\"",
        "esc \" \\ $ ` kept \\n",
    ),
    ("V='no $expansion `here` \\n'", "no $expansion `here` \\n"),
    ("V=a#b", "a#b"),
    ("V=value # comment", "value"),
    ("V=first; V=second", "second"),
    (
        "V='{\"app\":\"cart\",\"v\":\"1\"}'",
        "{\"app\":\"cart\",\"v\":\"1\"}",
    ),
    ("V='*'", "*"),
    ("V=*", "*"),
    ("V='line one\nline two'", "line one\nline two"),
    ("V=con\\\ntinued", "continued"),
    ("V=x=y", "x=y"),
];

fn bash_value(file: &Path) -> String {
    let out = Command::new("bash")
        .args(["-c", "set -a; . \"$1\"; printf %s \"$V\"", "bash"])
        .arg(file)
        .env_clear()
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "bash: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn parsed(text: &str) -> BTreeMap<String, String> {
    parse(text, Path::new("cluster.env"))
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .into_iter()
        .map(|a| (a.name, a.value))
        .collect()
}

#[test]
fn every_syntax_case_reads_as_bash_sources_it() {
    let dir = Scratch::new("syntax");
    for (i, (line, expected)) in CASES.iter().enumerate() {
        let text = format!("# case {i}\n\n{line}\n");
        let file = dir.write(&format!("case{i}.env"), &text);
        assert_eq!(
            bash_value(&file),
            *expected,
            "bash disagrees with the table: {line}"
        );
        assert_eq!(
            parsed(&text).get("V").map(String::as_str),
            Some(*expected),
            "{line}"
        );
    }
}

#[test]
fn later_assignments_win_and_lines_are_counted() {
    let text = "# written by istioctl\nA='1'\n\nB='2' C=3\nexport A='again'\nexport B\n";
    let all = parse(text, Path::new("cluster.env")).unwrap();
    let summary: Vec<(&str, &str, usize)> = all
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str(), a.line))
        .collect();
    assert_eq!(
        summary,
        [
            ("A", "1", 2),
            ("B", "2", 4),
            ("C", "3", 4),
            ("A", "again", 5)
        ]
    );
    let map = parsed(text);
    assert_eq!(map["A"], "again");
}

#[test]
fn the_istioctl_fixture_reads_as_bash_sources_it() {
    let file = super::fixtures().join("cluster.env");
    let ours = parsed(&std::fs::read_to_string(&file).unwrap());
    let out = Command::new("bash")
        .args(["-c", "set -a; . \"$1\"; set +a; for n in $(compgen -e); do printf '%s\\0%s\\0' \"$n\" \"${!n}\"; done", "bash"])
        .arg(&file)
        .env_clear()
        .output()
        .unwrap();
    let fields: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .map(String::from)
        .collect();
    let bash: BTreeMap<String, String> = fields
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .filter(|(k, _)| ours.contains_key(k))
        .collect();
    assert_eq!(ours.len(), 20);
    assert_eq!(bash, ours);
}

fn error(text: &str) -> (usize, String) {
    match parse(text, Path::new("/var/lib/istio/envoy/cluster.env")) {
        Err(EnvFileError::Syntax {
            path,
            line,
            message,
        }) => {
            let shown = EnvFileError::Syntax {
                path: path.clone(),
                line,
                message: message.clone(),
            }
            .to_string();
            assert!(
                shown.starts_with(&format!("/var/lib/istio/envoy/cluster.env:{line}: ")),
                "{shown}"
            );
            (line, message)
        }
        other => panic!("{text:?}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn what_bash_would_run_or_expand_is_refused_with_its_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("A=1\nB=$HOME\n", 2, "variable expansion"),
        ("A=1\n\nB=\"x${Y}\"\n", 3, "inside double quotes"),
        ("B=`id`\n", 1, "command substitution"),
        ("B=\"`id`\"\n", 1, "command substitution"),
        ("A=1\nB=~/x\n", 2, "tilde"),
        ("A=1|tee\n", 1, "'|'"),
        ("A=1 | tee\n", 1, "\"|\" is not a NAME=value"),
        ("A=1\necho hi\n", 2, "\"echo\" is not a NAME=value"),
        ("A=1\nB='open\n\n", 2, "unterminated single quote"),
        ("B=\"open\nmore\n", 1, "unterminated double quote"),
        ("1A=x\n", 1, "not a NAME=value"),
        ("A=(1 2)\n", 1, "'('"),
        ("A='x'y'\n", 1, "unterminated single quote"),
    ];
    for (text, line, part) in cases {
        let (at, message) = error(text);
        assert_eq!(at, *line, "{text:?}: {message}");
        assert!(
            message.contains(part),
            "{text:?}: {message:?} lacks {part:?}"
        );
    }
}

#[test]
fn an_unreadable_file_is_named() {
    let missing = Path::new("/nonexistent/vm-proxy/cluster.env");
    let e = crate::istio::cluster_env::read(missing)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("reading /nonexistent/vm-proxy/cluster.env: "),
        "{e}"
    );
}
