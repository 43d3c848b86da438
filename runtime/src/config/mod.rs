//! Configuration: a TOML file, then `key=value` overrides from the environment and the command
//! line, read into typed [`Settings`]. Reading never stops at the first problem: every unknown
//! key, missing key and ill-typed value is reported at once, each with its key path. Defaults
//! live in [`defaults`] and nowhere else.

mod overrides;
mod reader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use overrides::{ENV_PREFIX, Override};
pub use reader::Problem;

use crate::inference::RetryPolicy;
use reader::Section;

pub mod defaults;

mod guards;
mod kafka;
pub(crate) use guards::Guard;
use kafka::read_kafka;
pub use kafka::{Delivery, KafkaSettings};

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

/// Where predictions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A TensorFlow Serving-compatible gRPC server at `http://host:port`.
    TfServing { endpoint: String },
    /// A KServe v2 (Open Inference Protocol) gRPC server at `http://host:port`.
    KServe { endpoint: String },
    /// An ONNX model run in process.
    Onnx { path: PathBuf },
}

/// Which outputs keep the order of their inputs (`pipeline.order`). In every mode the committed
/// offset of a partition only passes records that are finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// A partition's outputs come in its order; batches of other partitions may pass a slow
    /// one. Each partition's records go to one plugin instance.
    #[default]
    Partition,
    /// The outputs of one key come in its order; others may pass them, and a partition's
    /// records are spread over the plugin instances by key. Records without a key keep their
    /// partition's order among themselves.
    Key,
    /// No order: a batch's outputs are produced as soon as it is processed (records within one
    /// batch keep theirs).
    Unordered,
}

/// How tensors travel to a KServe v2 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorEncoding {
    /// Little-endian bytes in `raw_input_contents`: one copy, no per-element framing.
    Raw,
    /// Typed `contents` fields.
    Typed,
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub backend: Backend,
    /// How tensors travel (KServe v2 only).
    pub tensor_encoding: TensorEncoding,
    pub name: String,
    /// A fixed model version; the server's latest when `None`.
    pub version: Option<i64>,
    /// The signature to call when the plugin names none; the server's default when `None`.
    pub signature: Option<String>,
    /// Deadline of one call.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Calls in flight at once: the adaptive limit stays within these bounds.
    pub min_in_flight: usize,
    pub max_in_flight: usize,
    /// HTTP/2 connections to the server, used in turn.
    pub connections: usize,
    /// Rows stacked into one call at most; 1 sends every request alone.
    pub max_batch_size: usize,
    /// Retries of a call that may succeed later, while the server is up.
    pub retry: RetryPolicy,
    /// Consecutive failed calls that make the breaker hold every call back.
    pub breaker_failures: u32,
    /// First wait of the breaker before it probes the server; doubles while probes fail.
    pub breaker_cooldown: Duration,
    /// TLS to the model server (`https://` endpoints); the system's roots when `None`.
    pub tls: Option<TlsSettings>,
}

/// What the model client trusts and shows for TLS, read from PEM files at start-up.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// Certificates of the authorities the server's certificate must chain to; the system's
    /// roots when `None`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for servers that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; the endpoint's host when `None`.
    pub domain: Option<String>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

#[derive(Clone)]
pub struct PluginSettings {
    pub path: PathBuf,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_limit: u64,
    /// Wall-clock limit of one call into the plugin.
    pub call_timeout: Duration,
    /// Threads running plugin instances.
    pub workers: usize,
    /// Handed to the plugin's `configure`.
    pub settings: Vec<(String, String)>,
    /// How often the plugin file is checked for a new version; `None`: never (SIGHUP still
    /// reloads only when this is set).
    pub reload: Option<Duration>,
    /// What one input record's outputs may be.
    pub outputs: OutputLimits,
    /// Where compiled plugins are kept between runs; `None`: compiled at every start.
    pub cache_dir: Option<PathBuf>,
}

impl fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The settings may hold secrets read from the environment or a file.
        let settings = Passthrough(self.settings.clone());
        f.debug_struct("PluginSettings")
            .field("path", &self.path)
            .field("memory_limit", &self.memory_limit)
            .field("call_timeout", &self.call_timeout)
            .field("workers", &self.workers)
            .field("settings", &settings)
            .field("reload", &self.reload)
            .field("outputs", &self.outputs)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// What the host accepts of the outputs a plugin makes from one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLimits {
    /// Records at most.
    pub max_records: usize,
    /// Bytes at most: keys, values, header keys and values, topic names.
    pub max_bytes: u64,
    /// Topics a plugin may name for a record; a record naming none goes to the output topic.
    pub topics: Vec<String>,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_records: defaults::PLUGIN_MAX_OUTPUTS,
            max_bytes: defaults::PLUGIN_MAX_OUTPUT_BYTES,
            topics: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Records handed to the plugin in one call.
    pub batch_size: usize,
    /// Which outputs keep the order of their inputs.
    pub order: Order,
    /// How long a partial batch may wait for more records while earlier batches are processed.
    pub linger: Duration,
    /// Records consumed but not yet finished; consumption pauses at this bound.
    pub max_pending: usize,
    /// Batches being processed at once.
    pub max_batches_in_flight: usize,
    /// How long shutdown may take to drain in-flight records.
    pub shutdown_timeout: Duration,
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

fn read_model(mut s: Section<'_>, config_dir: &Path) -> ModelSettings {
    let backend = read_backend(&mut s, config_dir);
    let name = match &backend {
        Some(Backend::Onnx { path }) if s.optional_string_peek("name").is_none() => path
            .file_stem()
            .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned()),
        _ => s.string("name"),
    };
    let version = match s.optional_integer("version") {
        Some(v) if v < 0 => {
            s.problem("version", format!("must not be negative, found {v}"));
            None
        }
        v => v,
    };
    let min_in_flight = s.count("min-in-flight", defaults::MODEL_MIN_IN_FLIGHT, 4096);
    let max_in_flight = s.count("max-in-flight", defaults::MODEL_MAX_IN_FLIGHT, 4096);
    if min_in_flight > max_in_flight {
        s.problem(
            "min-in-flight",
            format!("must not exceed max-in-flight ({max_in_flight}), found {min_in_flight}"),
        );
    }
    let https = matches!(
        &backend,
        Some(Backend::TfServing { endpoint } | Backend::KServe { endpoint })
            if endpoint.starts_with("https://")
    );
    let tls = read_tls(s.section("tls"), config_dir, https);
    let tensor_encoding = s.one_of(
        "tensor-encoding",
        &[
            ("raw", TensorEncoding::Raw),
            ("typed", TensorEncoding::Typed),
        ],
        TensorEncoding::Raw,
    );
    ModelSettings {
        backend: backend.unwrap_or(Backend::Onnx {
            path: PathBuf::new(),
        }),
        tensor_encoding,
        name,
        version,
        signature: s.optional_string("signature"),
        timeout: s.duration("timeout", defaults::MODEL_TIMEOUT),
        connect_timeout: s.duration("connect-timeout", defaults::MODEL_CONNECT_TIMEOUT),
        min_in_flight,
        max_in_flight,
        connections: s.count("connections", defaults::MODEL_CONNECTIONS, 64),
        max_batch_size: s.count("max-batch-size", defaults::MODEL_MAX_BATCH_SIZE, 65_536),
        retry: RetryPolicy {
            attempts: s.count("retry-attempts", defaults::RETRY_ATTEMPTS, 100) as u32,
            base: s.duration("retry-backoff", defaults::RETRY_BACKOFF),
            max: s.duration("retry-backoff-max", defaults::RETRY_BACKOFF_MAX),
        },
        breaker_failures: s.count("breaker-failures", defaults::BREAKER_FAILURES, 10_000) as u32,
        breaker_cooldown: s.duration("breaker-cooldown", defaults::BREAKER_COOLDOWN),
        tls,
    }
}

/// `model.tls`: PEM files relative to the config file, for an `https://` endpoint.
fn read_tls(mut s: Section<'_>, config_dir: &Path, https: bool) -> Option<TlsSettings> {
    let given = ["ca", "cert", "key", "domain"].map(|k| s.optional_string(k));
    let [ca, cert, key, domain] = given;
    if ca.is_none() && cert.is_none() && key.is_none() && domain.is_none() {
        return None;
    }
    if !https {
        s.problem(
            "ca",
            "model.tls applies to a model server reached over TLS: write the endpoint https://…",
        );
    }
    let pem = |s: &mut Section<'_>, key: &str, path: Option<String>| {
        let path = config_dir.join(path?);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Some(bytes),
            Ok(_) => {
                s.problem(key, format!("{} holds no PEM block", path.display()));
                None
            }
            Err(e) => {
                s.problem(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    };
    let ca = pem(&mut s, "ca", ca);
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            pem(&mut s, "cert", Some(cert)).zip(pem(&mut s, "key", Some(key)))
        }
        (None, None) => None,
        (Some(_), None) => {
            s.problem(
                "key",
                "required with cert (the client certificate's private key)",
            );
            None
        }
        (None, Some(_)) => {
            s.problem("cert", "required with key (the client certificate)");
            None
        }
    };
    Some(TlsSettings {
        ca,
        identity,
        domain,
    })
}

/// `model.endpoint` names a server, `model.path` an ONNX file (relative to the config file);
/// `model.backend` chooses when both are set.
fn read_backend(s: &mut Section<'_>, config_dir: &Path) -> Option<Backend> {
    let kind = s.optional_string("backend");
    let endpoint = s.optional_string("endpoint");
    let path = s.optional_string("path");
    let url = |s: &mut Section<'_>, endpoint: String| {
        let is_url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !is_url {
            s.problem(
                "endpoint",
                format!("expected a URL like \"http://127.0.0.1:8500\", found {endpoint:?}"),
            );
        }
        is_url.then_some(endpoint)
    };
    match (kind.as_deref(), endpoint, path) {
        (Some("tf-serving") | None, Some(endpoint), None)
        | (Some("tf-serving"), Some(endpoint), Some(_)) => {
            url(s, endpoint).map(|endpoint| Backend::TfServing { endpoint })
        }
        (Some("kserve"), Some(endpoint), _) => {
            url(s, endpoint).map(|endpoint| Backend::KServe { endpoint })
        }
        (Some("onnx") | None, None, Some(path)) | (Some("onnx"), Some(_), Some(path)) => {
            Some(Backend::Onnx {
                path: config_dir.join(path),
            })
        }
        (Some(kind @ ("tf-serving" | "kserve")), None, _) => {
            s.problem("endpoint", format!("required with backend {kind:?}"));
            None
        }
        (Some("onnx"), _, None) => {
            s.problem("path", "required with backend \"onnx\"");
            None
        }
        (Some(other), _, _) => {
            s.problem(
                "backend",
                format!("expected \"tf-serving\", \"kserve\" or \"onnx\", found {other:?}"),
            );
            None
        }
        (None, Some(_), Some(_)) => {
            s.problem(
                "backend",
                "both endpoint and path are set: choose with backend = \"tf-serving\", \"kserve\" or \"onnx\"",
            );
            None
        }
        (None, None, None) => {
            s.problem(
                "endpoint",
                "set endpoint (a TensorFlow Serving-compatible server) or path (an ONNX model run in process)",
            );
            None
        }
    }
}

fn read_plugin(
    mut s: Section<'_>,
    path: &Path,
    kafka: &KafkaSettings,
    config_dir: &Path,
) -> PluginSettings {
    let memory_limit = s.bytes("memory-limit", defaults::PLUGIN_MEMORY_LIMIT);
    if memory_limit < 1 << 20 {
        s.problem(
            "memory-limit",
            format!("must be at least 1MiB, found {memory_limit} bytes"),
        );
    }
    PluginSettings {
        path: path.to_owned(),
        memory_limit,
        call_timeout: s.duration("call-timeout", defaults::PLUGIN_CALL_TIMEOUT),
        workers: s.count("workers", defaults::plugin_workers(), 64),
        reload: {
            // Read either way: with reloading off, the interval is unused, not unknown.
            let interval = s.duration("reload-interval", defaults::PLUGIN_RELOAD_INTERVAL);
            match s.optional_bool("reload") {
                Some(false) => None,
                _ => Some(interval),
            }
        },
        settings: s.section("settings").string_map(&[], config_dir),
        outputs: read_output_limits(&mut s, kafka),
        cache_dir: read_cache_dir(&mut s),
    }
}

/// `compile-cache` (default true) and `cache-dir` (default the user's cache directory,
/// `$XDG_CACHE_HOME` or `~/.cache`, under `streaminfer/plugins`).
fn read_cache_dir(s: &mut Section<'_>) -> Option<PathBuf> {
    let dir = s.optional_string("cache-dir").map(PathBuf::from);
    if s.optional_bool("compile-cache") == Some(false) {
        return None;
    }
    dir.or_else(defaults::plugin_cache_dir)
}

/// `max-outputs`, `max-output-bytes` and `allowed-topics` (the output topic when absent; never
/// the input topic).
fn read_output_limits(s: &mut Section<'_>, kafka: &KafkaSettings) -> OutputLimits {
    let max_records = s.count("max-outputs", defaults::PLUGIN_MAX_OUTPUTS, 1_000_000);
    let max_bytes = s.bytes("max-output-bytes", defaults::PLUGIN_MAX_OUTPUT_BYTES);
    let topics = match s.optional_string_list("allowed-topics") {
        Some(topics) => {
            for topic in &topics {
                if let Some(why) = crate::kafka::invalid_topic_name(topic) {
                    s.problem("allowed-topics", format!("{topic:?} {why}"));
                } else if *topic == kafka.input_topic {
                    s.problem(
                        "allowed-topics",
                        format!("{topic:?} is the input topic: a plugin may not write to it"),
                    );
                } else if *topic == kafka.dead_letter_topic {
                    s.problem(
                        "allowed-topics",
                        format!(
                            "{topic:?} is the dead-letter topic: a plugin may not write dead letters"
                        ),
                    );
                }
            }
            topics
        }
        None if kafka.output_topic.is_empty() => Vec::new(),
        None => vec![kafka.output_topic.clone()],
    };
    OutputLimits {
        max_records,
        max_bytes,
        topics,
    }
}

fn read_pipeline(mut s: Section<'_>, delivery: &Delivery) -> PipelineSettings {
    let order = s.one_of(
        "order",
        &[
            ("partition", Order::Partition),
            ("key", Order::Key),
            ("none", Order::Unordered),
        ],
        Order::Partition,
    );
    if order != Order::Partition && matches!(delivery, Delivery::ExactlyOnce { .. }) {
        // A transaction commits each partition's offset after its last record in it, so the
        // records of a partition must enter it in their order.
        s.problem(
            "order",
            "exactly-once delivery needs \"partition\": a transaction commits each partition's input offset up to its last record, so a partition's records must reach it in order",
        );
    }
    let batch_size = s.count("batch-size", defaults::BATCH_SIZE, 65_536);
    let max_pending = s.count("max-pending", defaults::MAX_PENDING, 10_000_000);
    if max_pending < batch_size {
        s.problem(
            "max-pending",
            format!("must be at least batch-size ({batch_size}), found {max_pending}"),
        );
    }
    PipelineSettings {
        batch_size,
        order,
        linger: s.duration("linger", defaults::LINGER),
        max_pending,
        max_batches_in_flight: s.count(
            "max-batches-in-flight",
            defaults::MAX_BATCHES_IN_FLIGHT,
            1024,
        ),
        shutdown_timeout: s.duration("shutdown-timeout", defaults::SHUTDOWN_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
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

    fn parse(text: &str, args: &[&str]) -> Result<Settings, ConfigError> {
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

    fn problems(err: ConfigError) -> Vec<String> {
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
    fn a_reload_interval_with_reloading_off_is_accepted_and_unused() {
        let text = format!("{MINIMAL}\n[plugin]\nreload = false\nreload-interval = \"5s\"\n");
        let s = parse(&text, &[]).expect("both keys are known");
        assert_eq!(s.plugin.reload, None);
        let text = format!("{MINIMAL}\n[plugin]\nreload-interval = \"5s\"\n");
        let s = parse(&text, &[]).expect("valid");
        assert_eq!(s.plugin.reload, Some(std::time::Duration::from_secs(5)));
        let text = format!("{MINIMAL}\n[plugin]\nreload = false\nreload-interval = \"soon\"\n");
        let bad = problems(parse(&text, &[]).expect_err("a bad interval is still refused"));
        assert!(
            bad.iter().any(|p| p.contains("plugin.reload-interval")),
            "{bad:?}"
        );
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
    fn the_backend_follows_endpoint_or_path_and_onnx_paths_are_relative_to_the_config() {
        let onnx = "[kafka]\nbrokers = \"b\"\ngroup-id = \"g\"\ninput-topic = \"i\"\noutput-topic = \"o\"\ndead-letter-topic = \"d\"\n[model]\npath = \"../models/m.onnx\"\n";
        let ovs: Vec<Override> = Vec::new();
        let s = from_str(
            onnx,
            Path::new("/etc/app/config.toml"),
            Mode::Stream,
            Path::new("p.wasm"),
            &ovs,
        )
        .expect("valid");
        assert_eq!(
            s.model.backend,
            Backend::Onnx {
                path: PathBuf::from("/etc/app/../models/m.onnx")
            }
        );
        assert_eq!(
            s.model.name, "m",
            "an embedded model is named after its file"
        );

        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(
            s.model.backend,
            Backend::TfServing {
                endpoint: "http://127.0.0.1:8500".into()
            }
        );

        let both = problems(parse(MINIMAL, &["model.path=m.onnx"]).expect_err("ambiguous"));
        assert!(
            both.iter().any(|p| p.starts_with("model.backend: both")),
            "{both:?}"
        );
        let s = parse(MINIMAL, &["model.path=m.onnx", "model.backend=onnx"]).expect("chosen");
        assert!(matches!(s.model.backend, Backend::Onnx { .. }));
        let bad = problems(parse(MINIMAL, &["model.backend=triton"]).expect_err("unknown"));
        assert!(
            bad.iter().any(|p| p.contains("\"kserve\" or \"onnx\"")),
            "{bad:?}"
        );
        let s = parse(MINIMAL, &["model.backend=kserve"]).expect("kserve");
        assert_eq!(
            s.model.backend,
            Backend::KServe {
                endpoint: "http://127.0.0.1:8500".into()
            }
        );
        assert_eq!(s.model.tensor_encoding, TensorEncoding::Raw);
        let s = parse(
            MINIMAL,
            &["model.backend=kserve", "model.tensor-encoding=typed"],
        )
        .expect("typed");
        assert_eq!(s.model.tensor_encoding, TensorEncoding::Typed);
    }

    #[test]
    fn runtime_owned_kafka_properties_are_refused() {
        let text = format!("{MINIMAL}\n[kafka.consumer]\n\"enable.auto.offset.store\" = true\n");
        let found = problems(parse(&text, &[]).expect_err("invalid"));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("kafka.consumer.\"enable.auto.offset.store\""),
            "{found:?}"
        );
    }

    #[test]
    fn settings_that_weaken_the_guarantee_are_refused_with_the_reason() {
        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = false\n\
             \"auto.commit.interval.ms\" = 0\n\
             [kafka.producer]\nacks = \"1\"\n\"enable.idempotence\" = false\n\
             \"request.required.acks\" = 0\n"
        );
        let found = problems(parse(&text, &[]).expect_err("invalid"));
        assert_eq!(found.len(), 5, "{found:?}");
        let about = |key: &str| {
            found
                .iter()
                .find(|p| p.starts_with(key))
                .unwrap_or_else(|| panic!("no problem for {key}: {found:?}"))
                .clone()
        };
        assert!(
            about("kafka.consumer.\"enable.auto.commit\"").contains("committed only at shutdown")
        );
        // The commit cadence is the runtime's setting (librdkafka takes 0 for auto-commit off).
        let interval = about("kafka.consumer.\"auto.commit.interval.ms\"");
        assert!(
            interval.contains("set by the runtime") && interval.contains("kafka.commit-interval"),
            "{interval}"
        );
        let acks = about("kafka.producer.acks");
        assert!(
            acks.contains("\"1\"") && acks.contains("can be lost") && acks.contains("all"),
            "{acks}"
        );
        assert!(about("kafka.producer.\"enable.idempotence\"").contains("duplicate"));
        assert!(about("kafka.producer.\"request.required.acks\"").contains("can be lost"));

        // The values that keep the guarantee are fine, in any case.
        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = true\n\
             [kafka.producer]\nacks = \"ALL\"\n\"enable.idempotence\" = true\n"
        );
        assert!(parse(&text, &[]).is_ok());
    }

    #[test]
    fn the_commit_interval_belongs_to_at_least_once_mode() {
        let s = parse(MINIMAL, &["kafka.commit-interval=\"250ms\""]).expect("valid");
        assert_eq!(
            s.kafka.delivery,
            Delivery::AtLeastOnce {
                commit_interval: Duration::from_millis(250)
            }
        );
        let found = problems(
            parse(
                MINIMAL,
                &[
                    "kafka.delivery=\"exactly-once\"",
                    "kafka.commit-interval=\"1s\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("kafka.commit-interval") && found[0].contains("at-least-once"),
            "{found:?}"
        );
        // Below a millisecond librdkafka would get 0, which it reads as "never commit".
        let found =
            problems(parse(MINIMAL, &["kafka.commit-interval=\"500us\""]).expect_err("invalid"));
        assert!(found[0].contains("at least 1ms"), "{found:?}");
    }

    #[test]
    fn delivery_is_at_least_once_unless_exactly_once_is_asked_for() {
        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(s.kafka.delivery, Delivery::default());
        let s = parse(
            MINIMAL,
            &[
                "kafka.delivery=\"exactly-once\"",
                "kafka.transaction-interval=\"250ms\"",
                "kafka.transactional-id=\"scorer-3\"",
            ],
        )
        .expect("valid");
        assert_eq!(
            s.kafka.delivery,
            Delivery::ExactlyOnce {
                interval: Duration::from_millis(250),
                transactional_id: "scorer-3".into()
            }
        );
        let s = parse(MINIMAL, &["kafka.delivery=\"exactly-once\""]).expect("valid");
        let Delivery::ExactlyOnce {
            interval,
            transactional_id,
        } = s.kafka.delivery
        else {
            panic!("exactly-once asked for");
        };
        assert_eq!(interval, defaults::TRANSACTION_INTERVAL);
        assert!(
            transactional_id.starts_with("g-")
                && transactional_id.ends_with(&std::process::id().to_string()),
            "by default the group, the host and the process: {transactional_id}"
        );
    }

    #[test]
    fn order_is_by_partition_unless_told_and_exactly_once_needs_it() {
        assert_eq!(
            parse(MINIMAL, &[]).expect("valid").pipeline.order,
            Order::Partition
        );
        for (word, order) in [("key", Order::Key), ("none", Order::Unordered)] {
            let given = format!("pipeline.order=\"{word}\"");
            let s = parse(MINIMAL, &[given.as_str()]).expect("valid at least once");
            assert_eq!(s.pipeline.order, order);
            let found = problems(
                parse(
                    MINIMAL,
                    &[given.as_str(), "kafka.delivery=\"exactly-once\""],
                )
                .expect_err("not with exactly-once"),
            );
            assert!(
                found.len() == 1
                    && found[0].contains("pipeline.order")
                    && found[0].contains("exactly-once delivery needs \"partition\""),
                "{found:?}"
            );
        }
        let found = problems(parse(MINIMAL, &["pipeline.order=\"offset\""]).expect_err("bad"));
        assert!(
            found.len() == 1 && found[0].contains(r#"expected "partition", "key" or "none""#),
            "{found:?}"
        );
    }

    #[test]
    fn exactly_once_settings_are_checked_together() {
        let found = problems(
            parse(
                MINIMAL,
                &[
                    "kafka.transaction-interval=\"1s\"",
                    "kafka.transactional-id=\"x\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().all(|p| p.contains("only with delivery")),
            "{found:?}"
        );
        let found =
            problems(parse(MINIMAL, &["kafka.delivery=\"at-most-once\""]).expect_err("invalid"));
        assert!(
            found.len() == 1 && found[0].contains("\"exactly-once\""),
            "{found:?}"
        );

        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = true\n\
             \"isolation.level\" = \"read_uncommitted\"\n\
             [kafka.producer]\n\"transactional.id\" = \"mine\"\n"
        );
        let found = problems(
            parse(
                &text,
                &[
                    "kafka.delivery=\"exactly-once\"",
                    "kafka.transaction-interval=\"0s\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 4, "{found:?}");
        for (key, says) in [
            ("kafka.transaction-interval", "longer than zero"),
            (
                "kafka.consumer.\"enable.auto.commit\"",
                "set by the runtime",
            ),
            ("kafka.consumer.\"isolation.level\"", "aborted upstream"),
            ("kafka.producer.\"transactional.id\"", "set by the runtime"),
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key) && p.contains(says)),
                "{key}: {found:?}"
            );
        }
    }

    #[test]
    fn a_plugin_may_name_the_output_topic_unless_told_otherwise_never_the_input() {
        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(s.plugin.outputs.topics, ["out"]);
        assert_eq!(s.plugin.outputs.max_records, defaults::PLUGIN_MAX_OUTPUTS);
        let s = parse(
            MINIMAL,
            &[
                "plugin.allowed-topics=[\"out\", \"audit\"]",
                "plugin.max-outputs=3",
                "plugin.max-output-bytes=\"2KiB\"",
            ],
        )
        .expect("valid");
        assert_eq!(s.plugin.outputs.topics, ["out", "audit"]);
        assert_eq!(
            (s.plugin.outputs.max_records, s.plugin.outputs.max_bytes),
            (3, 2048)
        );
        let found = problems(
            parse(
                MINIMAL,
                &["plugin.allowed-topics=[\"in\", \"no/such\", \"dlq\"]"],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("input topic"), "{found:?}");
        assert!(found[1].contains("characters other than"), "{found:?}");
        assert!(found[2].contains("dead-letter topic"), "{found:?}");
    }

    #[test]
    fn compiled_plugins_are_cached_unless_told_not_to() {
        let s = parse(MINIMAL, &["plugin.cache-dir=\"/var/cache/si\""]).expect("valid");
        assert_eq!(s.plugin.cache_dir, Some(PathBuf::from("/var/cache/si")));
        let s = parse(
            MINIMAL,
            &[
                "plugin.cache-dir=\"/var/cache/si\"",
                "plugin.compile-cache=false",
            ],
        )
        .expect("valid");
        assert_eq!(s.plugin.cache_dir, None);
        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(s.plugin.cache_dir, defaults::plugin_cache_dir());
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
