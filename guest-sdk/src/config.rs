//! Typed access to a plugin's settings (the `[plugin.settings]` table of the runtime config).
//!
//! Settings arrive as strings; the accessors here parse them and, when a value is unusable,
//! produce an error that names the key and the value, so that the runtime's start-up failure
//! tells the operator exactly what to fix.

use std::any::type_name;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A plugin's settings, as handed to [`Plugin::configure`](crate::Plugin::configure).
///
/// When a key is given more than once, the last value wins. `Debug` lists the keys only, so a
/// setting that holds a secret never reaches a log through it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Config {
    settings: BTreeMap<String, String>,
}

impl Config {
    /// Builds settings from key/value pairs, e.g. `Config::new([("threshold", "0.7")])`.
    pub fn new<K, V>(settings: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            settings: settings
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// The raw value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The raw value of `key`.
    ///
    /// # Errors
    /// When `key` is not set.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing required setting `{key}`"))
    }

    /// The value of `key` parsed as a `T` (surrounding whitespace ignored), or `None` when it
    /// is not set.
    ///
    /// # Errors
    /// When the value does not parse; the message names the key, the value and the type.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        raw.trim().parse().map(Some).map_err(|error| {
            format!(
                "setting `{key}` = {raw:?} is not a valid {}: {error}",
                short_type_name::<T>()
            )
        })
    }

    /// The value of `key` parsed as a `T`, or `default` when it is not set.
    ///
    /// # Errors
    /// As [`Config::parse`].
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The value of `key` parsed as a `T`.
    ///
    /// # Errors
    /// When `key` is not set or its value does not parse.
    pub fn parse_required<T>(&self, key: &str) -> Result<T, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse(key)?
            .ok_or_else(|| format!("missing required setting `{key}`"))
    }

    /// Every setting, ordered by key; lets a plugin reject keys it does not know.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.settings
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The number of settings.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    /// Whether there are no settings at all.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::new(iter)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("keys", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `f64` rather than `core::primitive::f64`; full paths are kept for generic types.
fn short_type_name<T>() -> &'static str {
    let name = type_name::<T>();
    if name.contains('<') {
        name
    } else {
        name.rsplit("::").next().unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new([
            ("threshold", "0.75"),
            ("padded", " 3 "),
            ("bad", "abc"),
            ("token", "s3cret"),
        ])
    }

    #[test]
    fn get_and_defaults() {
        let config = config();
        assert_eq!(config.get("threshold"), Some("0.75"));
        assert_eq!(config.get("missing"), None);
        assert_eq!(config.get_or("missing", "dflt"), "dflt");
        assert_eq!(config.get_or("threshold", "dflt"), "0.75");
        assert_eq!(config.require("threshold"), Ok("0.75"));
        assert_eq!(
            config.require("missing"),
            Err("missing required setting `missing`".to_owned())
        );
    }

    #[test]
    fn parse_typed_values() {
        let config = config();
        assert_eq!(config.parse::<f64>("threshold"), Ok(Some(0.75)));
        assert_eq!(config.parse::<u32>("padded"), Ok(Some(3)));
        assert_eq!(config.parse::<u32>("missing"), Ok(None));
        assert_eq!(config.parse_or::<u32>("missing", 9), Ok(9));
        assert_eq!(config.parse_required::<u32>("padded"), Ok(3));
        assert_eq!(
            config.parse_required::<u32>("missing"),
            Err("missing required setting `missing`".to_owned())
        );
    }

    #[test]
    fn parse_errors_name_key_value_and_type() {
        let config = config();
        assert_eq!(
            config.parse::<f64>("bad"),
            Err("setting `bad` = \"abc\" is not a valid f64: invalid float literal".to_owned())
        );
        let error = config
            .parse::<u8>("threshold")
            .expect_err("0.75 is not a u8");
        assert!(error.starts_with("setting `threshold` = \"0.75\" is not a valid u8"));
    }

    #[test]
    fn last_value_wins_and_debug_hides_values() {
        let config: Config = [("k", "1"), ("k", "2")].into_iter().collect();
        assert_eq!(config.get("k"), Some("2"));
        assert_eq!(config.len(), 1);

        let shown = format!("{:?}", self::config());
        assert!(shown.contains("token"));
        assert!(!shown.contains("s3cret"));
    }
}
