//! `runtime --plugin PLUGIN.wasm CONFIG.toml [key=value ...]`: parses arguments, loads the
//! configuration, installs logging and signal handling, and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Streaming model inference from Kafka to Kafka, extensible with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "runtime", version)]
struct Args {
    /// The plugin: a WebAssembly component implementing streaminfer:plugin/plugin@0.1.0.
    #[arg(long, value_name = "PLUGIN.wasm")]
    plugin: PathBuf,
    /// The configuration file (TOML).
    #[arg(value_name = "CONFIG.toml")]
    config: PathBuf,
    /// Overrides of configuration keys, e.g. `model.version=2` or
    /// `kafka.consumer."session.timeout.ms"=6000`.
    #[arg(value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let settings = match streaminfer::config::load(
        &args.config,
        &args.plugin,
        &args.overrides,
        std::env::vars(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(streaminfer::run(settings, shutdown_signal())) {
        Ok(summary) => {
            tracing::info!(
                consumed = summary.consumed,
                produced = summary.produced,
                dead_lettered = summary.dead_lettered,
                skipped = summary.skipped,
                model_calls = summary.model_calls,
                model_failures = summary.model_failures,
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
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
