//! A walker over a parsed TOML table that reads typed values and collects every problem it meets,
//! each with its full key path, instead of stopping at the first one. Whatever keys are left in a
//! table once its section has been read are reported as unknown.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::Guard;

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `model.timeout`.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Reads the keys of one table; `problems` is shared by all sections of one configuration.
pub(crate) struct Section<'p> {
    path: String,
    table: Table,
    problems: &'p mut Vec<Problem>,
}

impl<'p> Section<'p> {
    pub(crate) fn new(path: &str, table: Table, problems: &'p mut Vec<Problem>) -> Self {
        Self {
            path: path.to_owned(),
            table,
            problems,
        }
    }

    fn key_path(&self, key: &str) -> String {
        join_key(&self.path, key)
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key_path(key);
        self.problems.push(Problem {
            key,
            message: message.into(),
        });
    }

    /// Takes a value out of the table; `None` when absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    /// Reads a sub-table, which is empty when absent.
    pub(crate) fn section(&mut self, key: &str) -> Section<'_> {
        let path = self.key_path(key);
        let table = match self.take(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.problem(key, format!("expected a table, found {}", describe(&other)));
                Table::new()
            }
        };
        Section {
            path,
            table,
            problems: self.problems,
        }
    }

    /// Reads a required non-empty string.
    pub(crate) fn string(&mut self, key: &str) -> String {
        if !self.table.contains_key(key) {
            self.problem(key, "required, not set");
            return String::new();
        }
        self.optional_string(key).unwrap_or_default()
    }

    pub(crate) fn optional_string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            Value::String(_) => {
                self.problem(key, "must not be empty");
                None
            }
            other => {
                self.problem(
                    key,
                    format!("expected a string, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// One of the words `choices` names, as its value; `default` when absent. Any other word is
    /// a problem that lists the choices.
    pub(crate) fn one_of<T: Copy>(&mut self, key: &str, choices: &[(&str, T)], default: T) -> T {
        let Some(given) = self.optional_string(key) else {
            return default;
        };
        if let Some((_, value)) = choices.iter().find(|(word, _)| *word == given) {
            return *value;
        }
        let words: Vec<String> = choices.iter().map(|(w, _)| format!("{w:?}")).collect();
        let expected = match words.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::from("nothing"),
        };
        self.problem(key, format!("expected {expected}, found {given:?}"));
        default
    }

    /// A list of non-empty strings, `None` when absent.
    pub(crate) fn optional_string_list(&mut self, key: &str) -> Option<Vec<String>> {
        match self.take(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => out.push(s),
                        other => self.problem(
                            key,
                            format!(
                                "item {i}: expected a non-empty string, found {}",
                                describe(&other)
                            ),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.problem(
                    key,
                    format!("expected a list of strings, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// Whether `key` holds a string, without taking it.
    pub(crate) fn optional_string_peek(&self, key: &str) -> Option<&str> {
        self.table.get(key).and_then(toml::Value::as_str)
    }

    pub(crate) fn optional_bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Boolean(b) => Some(b),
            other => {
                self.problem(
                    key,
                    format!("expected true or false, found {}", describe(&other)),
                );
                None
            }
        }
    }

    pub(crate) fn optional_integer(&mut self, key: &str) -> Option<i64> {
        match self.take(key)? {
            Value::Integer(i) => Some(i),
            other => {
                self.problem(
                    key,
                    format!("expected an integer, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// Reads a positive integer no larger than `max`, `default` when absent.
    pub(crate) fn count(&mut self, key: &str, default: usize, max: usize) -> usize {
        match self.optional_integer(key) {
            None => default,
            Some(i) if i >= 1 && usize::try_from(i).is_ok_and(|n| n <= max) => i as usize,
            Some(i) => {
                self.problem(
                    key,
                    format!("expected an integer from 1 to {max}, found {i}"),
                );
                default
            }
        }
    }

    /// Reads a duration written like `"250ms"` or `"2s"`, `default` when absent.
    pub(crate) fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.take(key) {
            None => default,
            Some(Value::String(s)) => match humantime::parse_duration(s.trim()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.problem(key, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.problem(
                        key,
                        format!("expected a duration like \"250ms\" or \"2s\", found {s:?} ({e})"),
                    );
                    default
                }
            },
            Some(other) => {
                self.problem(
                    key,
                    format!(
                        "expected a duration like \"250ms\" or \"2s\", found {}",
                        describe(&other)
                    ),
                );
                default
            }
        }
    }

    /// Reads a byte size written like `"64MiB"`, `"512KiB"` or a plain integer of bytes.
    pub(crate) fn bytes(&mut self, key: &str, default: u64) -> u64 {
        let expected = "expected a size like \"64MiB\", \"512KiB\" or a number of bytes";
        match self.take(key) {
            None => default,
            Some(Value::Integer(i)) if i > 0 => i as u64,
            Some(Value::String(s)) => match parse_size(&s) {
                Some(n) if n > 0 => n,
                _ => {
                    self.problem(key, format!("{expected}, found {s:?}"));
                    default
                }
            },
            Some(other) => {
                self.problem(key, format!("{expected}, found {}", describe(&other)));
                default
            }
        }
    }

    /// Reads every entry of this section as a string (numbers and booleans are written out as
    /// TOML spells them), for maps passed on as they are. A key a guard owns, or set to a value its
    /// guard does not allow, is reported with the guard's reason.
    ///
    /// A value may instead be read from elsewhere, so that secrets stay out of the file:
    /// `{ env = "NAME" }` takes an environment variable, `{ file = "path" }` a file's contents
    /// (relative to `dir`, the config file's directory; one trailing newline dropped).
    pub(crate) fn string_map(mut self, guards: &[Guard], dir: &Path) -> Vec<(String, String)> {
        let table = std::mem::take(&mut self.table);
        let mut out = Vec::with_capacity(table.len());
        for (key, value) in table {
            let guard = guards.iter().find(|g| g.key == key);
            if let Some(g) = guard.filter(|g| g.allows("").is_none()) {
                let problem = if g.why.is_empty() {
                    "is set by the runtime and cannot be set here".to_owned()
                } else {
                    format!("is set by the runtime and cannot be set here: {}", g.why)
                };
                self.problem(&key, problem);
                continue;
            }
            let text = match value {
                Value::String(s) => s,
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Boolean(b) => b.to_string(),
                Value::Table(source) => match from_elsewhere(&source, dir) {
                    Ok(text) => text,
                    Err(message) => {
                        self.problem(&key, message);
                        continue;
                    }
                },
                other => {
                    self.problem(
                        &key,
                        format!(
                            "expected a string, number, boolean, {{ env = \"NAME\" }} or {{ file = \"path\" }}, found {}",
                            describe(&other)
                        ),
                    );
                    continue;
                }
            };
            if let Some(g) = guard.filter(|g| g.allows(&text) == Some(false)) {
                self.problem(
                    &key,
                    format!("= {text:?} is refused: {}; allowed: {}", g.why, g.allowed()),
                );
                continue;
            }
            out.push((key, text));
        }
        out
    }
}

/// A value named by `{ env = "NAME" }` or `{ file = "path" }`.
fn from_elsewhere(source: &Table, dir: &Path) -> Result<String, String> {
    let one = |what: &str| -> Result<&str, String> {
        match source.get(what) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(format!("{what} must be a non-empty string")),
        }
    };
    match (
        source.len(),
        source.contains_key("env"),
        source.contains_key("file"),
    ) {
        (1, true, false) => {
            let name = one("env")?;
            std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    format!("names the environment variable {name}, which is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("names the environment variable {name}, which is not UTF-8")
                }
            })
        }
        (1, false, true) => {
            let path = dir.join(one("file")?);
            let mut text = std::fs::read_to_string(&path)
                .map_err(|e| format!("names {}, which cannot be read: {e}", path.display()))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(text)
        }
        _ => Err("expected { env = \"NAME\" } or { file = \"path\" }, one key alone".to_owned()),
    }
}

impl Drop for Section<'_> {
    /// Whatever was not read is unknown to the runtime.
    fn drop(&mut self) {
        let unknown: Vec<String> = self.table.keys().cloned().collect();
        for key in unknown {
            self.problem(&key, "unknown key");
        }
    }
}

/// Joins a table path and a key, quoting keys that contain dots.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let key = if key.contains('.') {
        format!("\"{key}\"")
    } else {
        key.to_owned()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(src: &str) -> Table {
        src.parse().expect("test TOML parses")
    }

    #[test]
    fn values_come_from_the_environment_or_a_file() {
        let dir = std::env::temp_dir().join(format!("streaminfer-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("password"), "s3cret\n").expect("write");
        let path = std::env::var("PATH").expect("PATH is set");
        let mut problems = Vec::new();
        let map = Section::new(
            "kafka.consumer",
            table(
                r#"
                "sasl.password" = { file = "password" }
                "client.id" = { env = "PATH" }
                "a" = { env = "STREAMINFER_TEST_NEVER_SET" }
                "b" = { file = "missing" }
                "c" = { env = "PATH", file = "password" }
                "#,
            ),
            &mut problems,
        )
        .string_map(&[], &dir);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            map.contains(&("sasl.password".into(), "s3cret".into())),
            "{map:?}"
        );
        assert!(map.contains(&("client.id".into(), path)), "{map:?}");
        assert_eq!(map.len(), 2);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["kafka.consumer.a", "kafka.consumer.b", "kafka.consumer.c"],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .message
                .contains("STREAMINFER_TEST_NEVER_SET, which is not set")
        );
        assert!(problems[1].message.contains("cannot be read"));
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("MiB"), None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut problems = Vec::new();
        {
            let mut root = Section::new(
                "",
                table("[model]\ntimeout = 5\nname = \"\"\nextra = 1\n"),
                &mut problems,
            );
            let mut model = root.section("model");
            model.duration("timeout", Duration::from_secs(1));
            model.string("name");
            model.string("endpoint");
        }
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "model.timeout",
                "model.name",
                "model.endpoint",
                "model.extra"
            ]
        );
        assert!(problems[0].message.contains("duration"), "{}", problems[0]);
        assert!(problems[3].message.contains("unknown key"));
    }

    #[test]
    fn a_word_outside_the_choices_is_a_problem_that_lists_them() {
        let mut problems = Vec::new();
        let picked = {
            let mut s = Section::new(
                "pipeline",
                table("order = \"key\"\nother = \"sideways\"\n"),
                &mut problems,
            );
            let choices = [("partition", 0), ("key", 1), ("none", 2)];
            [
                s.one_of("order", &choices, 0),
                s.one_of("other", &choices, 0),
                s.one_of("absent", &choices, 2),
            ]
        };
        assert_eq!(picked, [1, 0, 2]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "pipeline.other");
        assert_eq!(
            problems[0].message,
            r#"expected "partition", "key" or "none", found "sideways""#
        );
    }

    #[test]
    fn counts_are_bounded() {
        let mut problems = Vec::new();
        {
            let mut s = Section::new("pipeline", table("a = 0\nb = 7\n"), &mut problems);
            assert_eq!(s.count("a", 3, 10), 3);
            assert_eq!(s.count("b", 3, 10), 7);
            assert_eq!(s.count("c", 3, 10), 3);
        }
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "pipeline.a");
    }

    #[test]
    fn dotted_keys_are_quoted_in_paths() {
        assert_eq!(
            join_key("kafka.consumer", "session.timeout.ms"),
            "kafka.consumer.\"session.timeout.ms\""
        );
        assert_eq!(join_key("", "model"), "model");
    }
}
