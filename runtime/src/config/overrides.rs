//! `key=value` overrides, given after the config path on the command line
//! (`runtime --plugin fraud.wasm config.toml model.version=2`) or as `STREAMINFER__*` environment
//! variables. They are applied to the parsed TOML tree before it is read, so an override is
//! checked exactly like the same key written in the file.

use toml::{Table, Value};

/// Prefix of environment overrides: `STREAMINFER__MODEL__TIMEOUT=5s` sets `model.timeout`.
pub const ENV_PREFIX: &str = "STREAMINFER__";

/// One parsed `path=value` override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub path: Vec<String>,
    pub value: Value,
    /// Where it came from, for error messages.
    pub origin: String,
}

/// Parses `a.b."c.d"=value`. The value is read as a TOML value when it is one (`2`, `true`,
/// `"text"`, `0.5`) and taken as a plain string otherwise (`127.0.0.1:9092`).
///
/// # Errors
/// A message naming the override when it has no `=` or its key is malformed.
pub(crate) fn parse(arg: &str) -> Result<Override, String> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("override {arg:?}: expected key=value, e.g. model.version=2"))?;
    let path = parse_path(key.trim()).map_err(|e| format!("override {arg:?}: {e}"))?;
    Ok(Override {
        path,
        value: parse_value(raw.trim()),
        origin: format!("command line {arg:?}"),
    })
}

/// Collects overrides from environment variables starting with [`ENV_PREFIX`]; `__` separates
/// levels and `_` stands for `-` (`STREAMINFER__PIPELINE__BATCH_SIZE=64`).
pub(crate) fn from_env(vars: impl Iterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            let path = rest
                .split("__")
                .map(|p| p.to_ascii_lowercase().replace('_', "-"))
                .collect();
            Some(Override {
                path,
                value: parse_value(raw.trim()),
                origin: format!("environment {name}"),
            })
        })
        .collect();
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    out
}

/// Sets the override's value in `root`, creating tables on the way.
///
/// # Errors
/// A message when a non-table value stands where the path needs a table.
pub(crate) fn apply(root: &mut Table, ov: &Override) -> Result<(), String> {
    let (last, parents) = ov
        .path
        .split_last()
        .ok_or_else(|| format!("{}: empty key", ov.origin))?;
    let mut table = root;
    for (depth, part) in parents.iter().enumerate() {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "{}: {} is not a table",
                    ov.origin,
                    ov.path[..=depth].join(".")
                ));
            }
        };
    }
    table.insert(last.clone(), ov.value.clone());
    Ok(())
}

fn parse_path(key: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut rest = key;
    loop {
        let (part, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quote in key")?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if part.is_empty() {
            return Err("empty key segment".into());
        }
        parts.push(part.to_owned());
        match tail.strip_prefix('.') {
            Some(next) => rest = next,
            None if tail.is_empty() => return Ok(parts),
            None => return Err(format!("unexpected {tail:?} after a quoted key")),
        }
    }
}

fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_when_they_are_toml() {
        assert_eq!(
            parse("model.version=2").map(|o| o.value),
            Ok(Value::Integer(2))
        );
        assert_eq!(parse("a.b=0.5").map(|o| o.value), Ok(Value::Float(0.5)));
        assert_eq!(
            parse("a.b=\"2\"").map(|o| o.value),
            Ok(Value::String("2".into()))
        );
        assert_eq!(
            parse("kafka.brokers=127.0.0.1:9092").map(|o| o.value),
            Ok(Value::String("127.0.0.1:9092".into()))
        );
    }

    #[test]
    fn quoted_segments_keep_their_dots() {
        let ov = parse("kafka.consumer.\"session.timeout.ms\"=6000").expect("valid override");
        assert_eq!(ov.path, ["kafka", "consumer", "session.timeout.ms"]);
    }

    #[test]
    fn malformed_overrides_are_refused() {
        assert!(parse("model.version").is_err());
        assert!(parse("model..version=1").is_err());
        assert!(parse("a.\"b=1").is_err());
    }

    #[test]
    fn apply_creates_tables_and_refuses_to_descend_into_values() {
        let mut root: Table = "[model]\nname = \"fraud\"\n".parse().expect("test TOML");
        apply(&mut root, &parse("model.version=3").expect("valid")).expect("applies");
        apply(
            &mut root,
            &parse("plugin.settings.threshold=0.7").expect("valid"),
        )
        .expect("applies");
        assert_eq!(root["model"]["version"], Value::Integer(3));
        assert_eq!(root["plugin"]["settings"]["threshold"], Value::Float(0.7));
        let err = apply(&mut root, &parse("model.name.x=1").expect("valid")).expect_err("refused");
        assert!(err.contains("model.name is not a table"), "{err}");
    }

    #[test]
    fn environment_overrides_map_underscores_to_dashes() {
        let vars = vec![
            (
                "STREAMINFER__PIPELINE__BATCH_SIZE".to_owned(),
                "64".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let ovs = from_env(vars.into_iter());
        assert_eq!(ovs.len(), 1);
        assert_eq!(ovs[0].path, ["pipeline", "batch-size"]);
        assert_eq!(ovs[0].value, Value::Integer(64));
    }
}
