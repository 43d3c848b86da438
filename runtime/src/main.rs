//! The `runtime` command: parses arguments, loads the configuration, installs logging and
//! signal handling, and calls the library.
//!
//! - `runtime --plugin PLUGIN.wasm CONFIG.toml [key=value ...]` streams from Kafka to Kafka;
//! - `runtime check --plugin PLUGIN.wasm [CONFIG.toml] [--input records.jsonl]` checks a plugin;
//! - `runtime replay --plugin PLUGIN.wasm CONFIG.toml --input records.jsonl [--output out.jsonl]`
//!   runs records from a file through the plugin and the model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streaminfer::config::{
    self, LogFormat, Mode, OutputLimits, PluginSettings, Settings, defaults,
};
use streaminfer::metrics::millis;
use streaminfer::offline::RecordFile;
use streaminfer::scaffold::Sdk;

/// Streaming model inference from Kafka to Kafka, extensible with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(
    name = "runtime",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The plugin: a WebAssembly component implementing streaminfer:plugin/plugin@0.3.0.
    #[arg(long, value_name = "PLUGIN.wasm", required = true)]
    plugin: Option<PathBuf>,
    /// The configuration file (TOML).
    #[arg(value_name = "CONFIG.toml", required = true)]
    config: Option<PathBuf>,
    /// Overrides of configuration keys, e.g. `model.version=2` or
    /// `kafka.consumer."session.timeout.ms"=6000`.
    #[arg(value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a plugin against the contract and its settings; with --input, shows what it would
    /// do with each record (no broker, no model).
    Check {
        #[arg(long, value_name = "PLUGIN.wasm")]
        plugin: PathBuf,
        /// A configuration whose [plugin] section to use.
        #[arg(value_name = "CONFIG.toml")]
        config: Option<PathBuf>,
        /// Records, one value per line.
        #[arg(long, value_name = "records.jsonl")]
        input: Option<PathBuf>,
        #[arg(value_name = "KEY=VALUE", requires = "config")]
        overrides: Vec<String>,
    },
    /// Writes a new plugin crate, standing on its own, into DIR (default: ./NAME).
    NewPlugin {
        /// The crate's name, e.g. `my-scorer`.
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The SDK crate's directory (default: the SDK beside this runtime's sources).
        #[arg(long, value_name = "DIR", conflicts_with = "sdk_git")]
        sdk: Option<PathBuf>,
        /// A git repository holding the SDK instead, e.g. a fork of this one.
        #[arg(long, value_name = "URL")]
        sdk_git: Option<String>,
    },
    /// Runs records from a file through the plugin and the configured model (no broker).
    Replay {
        #[arg(long, value_name = "PLUGIN.wasm")]
        plugin: PathBuf,
        #[arg(value_name = "CONFIG.toml")]
        config: PathBuf,
        /// Records, one value per line.
        #[arg(long, value_name = "records.jsonl")]
        input: PathBuf,
        /// Where output records go, one JSON document per line; standard output if absent.
        #[arg(long, value_name = "out.jsonl")]
        output: Option<PathBuf>,
        /// Where dead letters go, one JSON document per line; standard error if absent.
        #[arg(long, value_name = "dead.jsonl")]
        dead_letters: Option<PathBuf>,
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// Exit status of a configuration that cannot be used.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        None => {
            let (Some(plugin), Some(config)) = (cli.run.plugin, cli.run.config) else {
                return fail("--plugin and CONFIG.toml are required");
            };
            let settings = match load(&config, Mode::Stream, &plugin, &cli.run.overrides) {
                Ok(s) => s,
                Err(code) => return code,
            };
            init_logging(settings.log);
            let code = stream(&runtime, settings);
            // Work that cannot end (a librdkafka call waiting on a broker that is gone) must not
            // hold the exit past the shutdown's own deadline.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
        Some(Command::Check {
            plugin,
            config,
            input,
            overrides,
        }) => {
            let settings = match &config {
                Some(config) => match load(config, Mode::Offline, &plugin, &overrides) {
                    Ok(s) => {
                        init_logging(s.log);
                        s.plugin
                    }
                    Err(code) => return code,
                },
                None => PluginSettings {
                    path: plugin,
                    memory_limit: defaults::PLUGIN_MEMORY_LIMIT,
                    call_timeout: defaults::PLUGIN_CALL_TIMEOUT,
                    workers: 1,
                    reload: None,
                    settings: Vec::new(),
                    outputs: OutputLimits::default(),
                    cache_dir: defaults::plugin_cache_dir(),
                },
            };
            if config.is_none() {
                init_logging(LogFormat::Text);
            }
            let records = match input.as_deref().map(read_all).transpose() {
                Ok(r) => r.unwrap_or_default(),
                Err(code) => return code,
            };
            let mut out = std::io::stdout().lock();
            match runtime.block_on(streaminfer::offline::check(&settings, records, &mut out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::NewPlugin {
            name,
            dir,
            sdk,
            sdk_git,
        }) => {
            let sdk = match (sdk, sdk_git) {
                (Some(path), _) => match path.join("Cargo.toml").canonicalize() {
                    Ok(manifest) => Sdk::Path(manifest.parent().unwrap_or(&path).to_owned()),
                    Err(_) => {
                        return fail(&format!(
                            "{} holds no Cargo.toml: --sdk names the SDK crate's directory (guest-sdk)",
                            path.display()
                        ));
                    }
                },
                (None, Some(url)) => Sdk::Git(url),
                (None, None) => match Sdk::beside_sources() {
                    Some(sdk) => sdk,
                    None => {
                        return fail(
                            "no SDK beside this runtime's sources: say where it is with --sdk DIR or --sdk-git URL",
                        );
                    }
                },
            };
            init_logging(LogFormat::Text);
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            match streaminfer::scaffold::new_plugin(&name, &dir, &sdk) {
                Ok(files) => {
                    for file in files {
                        println!("wrote {}", file.display());
                    }
                    println!(
                        "next: cd {} && cargo test && cargo build --target wasm32-wasip2 --profile plugin",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::Replay {
            plugin,
            config,
            input,
            output,
            dead_letters,
            overrides,
        }) => {
            let settings = match load(&config, Mode::Offline, &plugin, &overrides) {
                Ok(s) => s,
                Err(code) => return code,
            };
            init_logging(settings.log);
            let records = match RecordFile::open(&input) {
                Ok(r) => r,
                Err(e) => {
                    return fail(&format!(
                        "cannot read records from {}: {e}",
                        input.display()
                    ));
                }
            };
            let (mut out, mut dead) = match (
                writer(output.as_deref(), false),
                writer(dead_letters.as_deref(), true),
            ) {
                (Ok(o), Ok(d)) => (o, d),
                (Err(e), _) | (_, Err(e)) => return fail(&e),
            };
            let result = runtime.block_on(streaminfer::offline::replay(
                settings, records, &mut out, &mut dead,
            ));
            let flushed = out.flush().and_then(|()| dead.flush());
            match (result, flushed) {
                (Ok(summary), Ok(())) => {
                    eprintln!(
                        "replayed {} record(s): {} output record(s), {} dead letter(s); {} blank line(s) held no record",
                        summary.records, summary.outputs, summary.dead_letters, summary.blank_lines
                    );
                    ExitCode::SUCCESS
                }
                (Err(e), _) => fail(&e.to_string()),
                (_, Err(e)) => fail(&format!("cannot write the results: {e}")),
            }
        }
    }
}

/// Installs the log writer: standard error, filtered by `RUST_LOG` (default `info`), as text or
/// one JSON object per line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    LOGGING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the log writer is installed: from then on, errors go through it (as JSON when the
/// config says so); before (a config that cannot be read), plainly to standard error.
static LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fail(message: &str) -> ExitCode {
    if LOGGING.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(error = %message, "stopped");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::FAILURE
}

fn load(
    config: &Path,
    mode: Mode,
    plugin: &Path,
    overrides: &[String],
) -> Result<Settings, ExitCode> {
    config::load(config, mode, plugin, overrides, std::env::vars()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(BAD_CONFIG)
    })
}

fn read_all(path: &Path) -> Result<Vec<streaminfer::contract::InputRecord>, ExitCode> {
    RecordFile::open(path)
        .and_then(Iterator::collect)
        .map_err(|e| fail(&format!("cannot read records from {}: {e}", path.display())))
}

fn writer(path: Option<&Path>, stderr: bool) -> Result<Box<dyn Write>, String> {
    match path {
        Some(p) => File::create(p)
            .map(|f| Box::new(BufWriter::new(f)) as Box<dyn Write>)
            .map_err(|e| format!("cannot create {}: {e}", p.display())),
        None if stderr => Ok(Box::new(std::io::stderr())),
        None => Ok(Box::new(BufWriter::new(std::io::stdout()))),
    }
}

fn stream(runtime: &tokio::runtime::Runtime, settings: Settings) -> ExitCode {
    match runtime.block_on(streaminfer::run(settings, shutdown_signal())) {
        Ok(summary) => {
            tracing::info!(
                consumed = summary.consumed,
                produced = summary.produced,
                dead_lettered = summary.dead_lettered,
                skipped = summary.skipped,
                model_calls = summary.model_calls,
                model_failures = summary.model_failures,
                transactions = summary.transactions,
                aborted = summary.aborted,
                produce_p50_ms = millis(summary.to_produce.p50),
                produce_p99_ms = millis(summary.to_produce.p99),
                produce_max_ms = millis(summary.to_produce.max),
                ack_p50_ms = millis(summary.to_acknowledge.p50),
                ack_p99_ms = millis(summary.to_acknowledge.p99),
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Resolves on the first SIGINT or SIGTERM, and from then on exits the process at once on the
/// second: an operator who asks twice does not wait for the drain (unfinished records are read
/// again after the restart, as after a crash).
async fn shutdown_signal() {
    signalled().await;
    tokio::spawn(async {
        signalled().await;
        tracing::warn!("second signal: exiting at once without finishing the records in flight");
        std::process::exit(130);
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn signalled() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the runtime");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
