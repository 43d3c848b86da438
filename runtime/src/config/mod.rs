//! Configuration: a TOML file, then `key=value` overrides from the environment and the command
//! line, read into typed [`Settings`]. Reading never stops at the first problem: every unknown
//! key, missing key and ill-typed value is reported at once, each with its key path. Defaults
//! live in [`defaults`] and nowhere else.

pub mod defaults;
mod guards;
mod kafka;
mod model;
mod overrides;
mod pipeline;
mod plugin;
mod reader;

use std::fmt;
use std::path::{Path, PathBuf};

pub(crate) use guards::Guard;
use kafka::read_kafka;
pub use kafka::{Delivery, KafkaSettings};
use model::read_model;
pub use model::{Backend, ModelSettings, RetryPolicy, TensorEncoding, TlsSettings};
pub use overrides::{ENV_PREFIX, Override};
use pipeline::read_pipeline;
pub use pipeline::{Order, PipelineSettings};
use plugin::read_plugin;
pub use plugin::{OutputLimits, PluginSettings};
pub use reader::Problem;
use reader::Section;

/// The validated configuration of one runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub model: ModelSettings,
    pub plugin: PluginSettings,
    pub pipeline: PipelineSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: nowhere.
    pub metrics: Option<MetricsSettings>,
    pub log: LogFormat,
}

/// The HTTP endpoint of metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: std::net::SocketAddr,
    /// Whether the address was configured: one that cannot be bound then stops start-up; the
    /// default one only earns a warning (another runtime on this host may hold it).
    pub configured: bool,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, fields as `key=value`.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// librdkafka properties; values of keys that look secret are hidden from `Debug`.
#[derive(Clone, Default)]
pub struct Passthrough(pub Vec<(String, String)>);

impl fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            let secret = ["password", "secret", "token", "key"]
                .iter()
                .any(|s| k.contains(s));
            map.entry(k, if secret { &"<redacted>" } else { v });
        }
        map.finish()
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("bad override: {0}")]
    Override(String),
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads `path`, applies environment then command-line overrides, and validates the result.
///
/// # Errors
/// [`ConfigError`] naming the file, the override, or every invalid key.
pub fn load(
    path: &Path,
    mode: Mode,
    plugin: &Path,
    args: &[String],
    env: impl Iterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut overrides = overrides::from_env(env);
    for arg in args {
        overrides.push(overrides::parse(arg).map_err(ConfigError::Override)?);
    }
    from_str(&text, path, mode, plugin, &overrides)
}

/// What the configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Streaming from Kafka to Kafka: the `[kafka]` section is required.
    Stream,
    /// Records from a file (`replay`): `[kafka]` may be left out; if present it is checked.
    Offline,
}

/// Parses and validates configuration text; `path` is used in messages only.
///
/// # Errors
/// As [`load`].
pub fn from_str(
    text: &str,
    path: &Path,
    mode: Mode,
    plugin: &Path,
    overrides: &[Override],
) -> Result<Settings, ConfigError> {
    let mut root: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    for ov in overrides {
        overrides::apply(&mut root, ov).map_err(ConfigError::Override)?;
    }
    let mut problems = Vec::new();
    let config_dir = path.parent().unwrap_or(Path::new("."));
    let settings = read(root, config_dir, mode, plugin, &mut problems);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

fn read(
    root: toml::Table,
    config_dir: &Path,
    mode: Mode,
    plugin: &Path,
    problems: &mut Vec<Problem>,
) -> Settings {
    let kafka_given = root.contains_key("kafka");
    let mut root = Section::new("", root, problems);
    let kafka = if mode == Mode::Offline && !kafka_given {
        KafkaSettings::default()
    } else {
        read_kafka(root.section("kafka"), config_dir)
    };
    let model = read_model(root.section("model"), config_dir);
    let plugin = read_plugin(root.section("plugin"), plugin, &kafka, config_dir);
    let pipeline = read_pipeline(root.section("pipeline"), &kafka.delivery);
    let metrics = read_metrics(root.section("metrics"), mode);
    let log = read_log(root.section("log"));
    Settings {
        kafka,
        model,
        plugin,
        pipeline,
        metrics,
        log,
    }
}

/// `metrics.listen`: an address, or `"off"`. Streaming serves on the default address unless
/// told otherwise; `replay` and `check` never serve.
fn read_metrics(mut s: Section<'_>, mode: Mode) -> Option<MetricsSettings> {
    let listen = s.optional_string("listen");
    let (listen, configured) = match listen.as_deref() {
        None if mode == Mode::Stream => (defaults::METRICS_LISTEN, false),
        None | Some("off") => return None,
        Some(given) => (given, true),
    };
    match listen.parse() {
        Ok(listen) if mode == Mode::Stream => Some(MetricsSettings { listen, configured }),
        Ok(_) => None,
        Err(_) => {
            s.problem(
                "listen",
                format!(
                    "expected an address like \"0.0.0.0:9898\" (port 0 picks a free one) or \"off\", found {listen:?}"
                ),
            );
            None
        }
    }
}

/// `log.format`: `"text"` or `"json"`.
fn read_log(mut s: Section<'_>) -> LogFormat {
    s.one_of(
        "format",
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        LogFormat::Text,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    pub(super) const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        group-id = "g"
        input-topic = "in"
        output-topic = "out"
        dead-letter-topic = "dlq"
        [model]
        endpoint = "http://127.0.0.1:8500"
        name = "fraud"
    "#;

    pub(super) fn parse(text: &str, args: &[&str]) -> Result<Settings, ConfigError> {
        let ovs: Vec<Override> = args
            .iter()
            .map(|a| overrides::parse(a).expect("valid override"))
            .collect();
        from_str(
            text,
            Path::new("test.toml"),
            Mode::Stream,
            Path::new("p.wasm"),
            &ovs,
        )
    }

    pub(super) fn problems(err: ConfigError) -> Vec<String> {
        match err {
            ConfigError::Invalid { problems, .. } => {
                problems.into_iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(s.model.timeout, defaults::MODEL_TIMEOUT);
        assert_eq!(s.pipeline.batch_size, defaults::BATCH_SIZE);
        assert_eq!(s.plugin.memory_limit, defaults::PLUGIN_MEMORY_LIMIT);
        assert_eq!(s.model.version, None);
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../../config/fraud.toml");
        let s = parse(text, &[]).expect("config/fraud.toml is valid");
        assert_eq!(
            s.plugin.settings,
            [("threshold".to_owned(), "0.5".to_owned())]
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let s = parse(
            MINIMAL,
            &[
                "model.version=2",
                "kafka.brokers=10.0.0.1:9093",
                "model.timeout=\"250ms\"",
            ],
        )
        .expect("valid");
        assert_eq!(s.model.version, Some(2));
        assert_eq!(s.kafka.brokers, "10.0.0.1:9093");
        assert_eq!(s.model.timeout, Duration::from_millis(250));
    }

    #[test]
    fn all_problems_are_listed_together() {
        let text =
            format!("{MINIMAL}\nbogus = 1\n[pipeline]\nbatch-size = \"many\"\nlinger = \"soon\"\n");
        let found = problems(parse(&text, &["model.version=-1"]).expect_err("invalid"));
        let joined = found.join("\n");
        for key in [
            "model.version",
            "pipeline.batch-size",
            "pipeline.linger",
            "bogus",
        ] {
            assert!(
                joined.contains(&format!("{key}:")),
                "missing {key} in:\n{joined}"
            );
        }
    }

    #[test]
    fn offline_use_needs_no_kafka_section() {
        let text = "[model]\npath = \"m.onnx\"\n";
        let path = Path::new("c.toml");
        let plugin = Path::new("p.wasm");
        assert!(from_str(text, path, Mode::Offline, plugin, &[]).is_ok());
        let found =
            problems(from_str(text, path, Mode::Stream, plugin, &[]).expect_err("kafka needed"));
        assert!(
            found.iter().any(|p| p.starts_with("kafka.brokers")),
            "{found:?}"
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let found = problems(parse("[kafka]\n[model]\n", &[]).expect_err("invalid"));
        assert!(
            found.contains(&"kafka.brokers: required, not set".to_owned()),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("model.endpoint: set endpoint")),
            "{found:?}"
        );
    }

    #[test]
    fn secrets_are_hidden_from_debug() {
        let p = Passthrough(vec![
            ("sasl.password".into(), "hunter2".into()),
            ("linger.ms".into(), "5".into()),
        ]);
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("linger.ms"), "{shown}");
    }
}
