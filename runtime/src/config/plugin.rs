//! The `[plugin]` section: the sandbox's limits, the plugin's own settings, reloading, the
//! compile cache, and what a plugin's outputs may be.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::Section;
use super::{KafkaSettings, Passthrough, defaults};

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

pub(super) fn read_plugin(
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

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, parse, problems};
    use super::super::*;

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
}
