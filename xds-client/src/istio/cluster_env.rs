//! `cluster.env` and `sidecar.env`: shell assignments, read the way `istio-start.sh` sources
//! them with bash (`set -a; . FILE`), without running a shell.
//!
//! Accepted: `NAME=value` with unquoted, `'single'`- and `"double"`-quoted parts (concatenated,
//! so istioctl's `'it'"'"'s'` escape works), backslash escapes, an `export` prefix, several
//! assignments on one line or separated by `;`, comments, blank lines, quoted values spanning
//! lines, and `export NAME` / `export` alone (no effect: every variable is exported anyway).
//! Later assignments win.
//!
//! Anything that would make bash run code or expand something (`$VAR`, `$(...)`, backticks,
//! a leading `~`, pipes, redirections, commands) is refused with the file and line: istioctl
//! never writes them (its values are always single-quoted), and taking them literally would
//! silently differ from what Istio's start script does.

use std::path::{Path, PathBuf};

/// One assignment, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A shell env file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> Result<Vec<Assignment>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses the text of an env file; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Assignment>, EnvFileError> {
    Parser {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
    }
    .statements()
    .map_err(|(line, message)| EnvFileError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    })
}

type Fail = (usize, String);

struct Parser {
    chars: Vec<char>,
    at: usize,
    line: usize,
}

/// Characters that end an unquoted word.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, Fail> {
        Err((self.line, message.into()))
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn statements(mut self) -> Result<Vec<Assignment>, Fail> {
        let mut out = Vec::new();
        // Whether the next word starts a command (line start, after `;`): only there may
        // `export` appear.
        let mut command_start = true;
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(out),
                Some('\n') => {
                    self.bump();
                    command_start = true;
                }
                Some(';') => {
                    self.bump();
                    command_start = true;
                }
                Some('#') => self.skip_comment(),
                Some(_) => {
                    let line = self.line;
                    let word_start = self.at;
                    let name = self.name();
                    if name.is_empty() || self.peek() != Some('=') {
                        self.at = word_start;
                        if command_start && self.keyword("export") {
                            self.export_names()?;
                            command_start = false;
                            continue;
                        }
                        let word: String = self.chars[word_start..]
                            .iter()
                            .take_while(|c| !c.is_whitespace())
                            .collect();
                        return self.fail(format!(
                            "{word:?} is not a NAME=value assignment (only assignments are read, nothing is run)"
                        ));
                    }
                    self.bump(); // '='
                    let value = self.value()?;
                    out.push(Assignment { name, value, line });
                    command_start = false;
                    match self.peek() {
                        None | Some('\n' | ';' | ' ' | '\t') => {}
                        Some(c) => return self.fail(format!("unexpected {c:?} after a value")),
                    }
                }
            }
        }
    }

    /// A shell name at the cursor (possibly empty); the cursor moves past it.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            let ok =
                c == '_' || c.is_ascii_alphabetic() || (!name.is_empty() && c.is_ascii_digit());
            if !ok {
                break;
            }
            name.push(c);
            self.bump();
        }
        name
    }

    /// `word` followed by a blank or the end of the statement.
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.at + word.len();
        let matches = self.chars.len() >= end
            && self.chars[self.at..end].iter().copied().eq(word.chars())
            && self
                .chars
                .get(end)
                .is_none_or(|&c| is_blank(c) || c == '\n' || c == ';');
        if matches {
            self.at = end;
        }
        matches
    }

    /// After `export`: assignments are handled by the main loop; bare names are accepted and
    /// change nothing.
    fn export_names(&mut self) -> Result<(), Fail> {
        loop {
            self.skip_blanks();
            let start = self.at;
            let name = self.name();
            if name.is_empty() {
                return Ok(());
            }
            if self.peek() == Some('=') {
                self.at = start;
                return Ok(());
            }
            match self.peek() {
                None | Some(' ' | '\t' | '\n' | ';' | '#') => {}
                Some(c) => return self.fail(format!("unexpected {c:?} in an export")),
            }
        }
    }

    /// One shell word after `=`: the concatenation of its unquoted, single- and double-quoted
    /// parts.
    fn value(&mut self) -> Result<String, Fail> {
        let mut value = String::new();
        let mut first = true;
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' => break,
                '\'' => {
                    self.bump();
                    self.single_quoted(&mut value)?;
                }
                '"' => {
                    self.bump();
                    self.double_quoted(&mut value)?;
                }
                '\\' => {
                    self.bump();
                    match self.bump() {
                        // A line continuation joins the lines.
                        Some('\n') => {}
                        Some(escaped) => value.push(escaped),
                        None => return self.fail("a backslash ends the file"),
                    }
                }
                '$' => {
                    return self
                        .fail("variable expansion ($) is not supported: single-quote the value");
                }
                '`' => return self.fail("command substitution (`) is not supported"),
                '~' if first => {
                    return self.fail("tilde expansion is not supported: quote the value");
                }
                '|' | '&' | '<' | '>' | '(' | ')' => {
                    return self.fail(format!(
                        "{c:?} outside quotes: only plain assignments are read"
                    ));
                }
                _ => {
                    value.push(c);
                    self.bump();
                }
            }
            first = false;
        }
        Ok(value)
    }

    fn single_quoted(&mut self, value: &mut String) -> Result<(), Fail> {
        let start = self.line;
        loop {
            match self.bump() {
                Some('\'') => return Ok(()),
                Some(c) => value.push(c),
                None => return Err((start, "unterminated single quote".into())),
            }
        }
    }

    fn double_quoted(&mut self, value: &mut String) -> Result<(), Fail> {
        let start = self.line;
        loop {
            match self.bump() {
                Some('"') => return Ok(()),
                Some('\\') => match self.bump() {
                    Some('\n') => {}
                    Some(c @ ('$' | '`' | '"' | '\\')) => value.push(c),
                    // Inside double quotes other backslashes are literal.
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err((start, "unterminated double quote".into())),
                },
                Some('$') => {
                    return self.fail(
                        "variable expansion ($) inside double quotes is not supported: escape it as \\$ or single-quote the value",
                    );
                }
                Some('`') => return self.fail("command substitution (`) is not supported"),
                Some(c) => value.push(c),
                None => return Err((start, "unterminated double quote".into())),
            }
        }
    }
}
