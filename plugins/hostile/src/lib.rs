//! A plugin that misbehaves on request, for the sandbox tests: each record's value names what
//! to do with it. Built by the test set-up from this source; never shipped.
//!
//! | value | what the plugin does |
//! | --- | --- |
//! | `ok` | emits one record `ok` |
//! | `loop` | spins forever |
//! | `sleep` | sleeps 60 s (a blocking WASI clock wait), then emits `slept` |
//! | `nap` | sleeps 10 ms, then emits `napped` |
//! | `doze` | sleeps 300 ms, then emits `dozed` |
//! | `say-<text>` | emits one record `<text>` |
//! | `memory` | allocates until allocation fails |
//! | `recurse` | recurses until the stack runs out |
//! | `panic` | panics |
//! | `huge-output` | emits one record of 2 MiB (over Kafka's default 1 MB limit) |
//! | `open-file` | tries to read `/etc/passwd` |
//! | `connect` | tries to open a TCP connection to 127.0.0.1:9 |
//! | `env` | reports how many environment variables and arguments it sees |
//! | `many-outputs` | emits 10,000 records |
//! | `wide-outputs` | emits 3 records of 1 MiB |
//! | `small-then-huge` | emits a small record, then one of 1.5 MB (over Kafka's default limit) |
//! | `topic-input` | emits one record to the topic its input came from |
//! | `topic-empty`, `topic-invalid` | emits one record to `""`, to `"no such/topic"` |
//! | `bad-shape` | asks the model with a shape that does not match its data |
//! | `negative-dim` | asks the model with a dimension below zero |
//! | `duplicate-input` | asks the model with one input twice |
//! | `extra-result`, `missing-result` | returns one result too many, or too few, for its batch |
//! | `log-flood` | logs 10,000 lines of 10 kB, then emits `logged` |
//! | `log-forge` | logs a message that would read as a line of the host's own, then emits `logged` |
//! | `then-<command>` | asks the model (fraud's `features`, f32 [1, 30]), then runs `<command>` in `complete` |
//!
//! `extra-result` and `missing-result` go through the export glue below, which stands in for a
//! plugin written straight on `wit/plugin.wit` that miscounts.

use std::hint::black_box;

use streaminfer_sdk::{
    Config, Decision, Origin, Output, Plugin, PluginError, Record, Request, Response, Tensor,
    TensorData, log,
};

/// The misbehaving plugin; it has no settings.
#[derive(Debug)]
pub struct Hostile;

fn emit(value: impl Into<Vec<u8>>) -> Decision<String> {
    Decision::Emit(vec![output(value, None)])
}

fn output(value: impl Into<Vec<u8>>, topic: Option<&str>) -> Output {
    Output {
        key: None,
        value: Some(value.into()),
        headers: Vec::new(),
        topic: topic.map(str::to_owned),
    }
}

fn ask(inputs: Vec<Tensor>) -> Decision<String> {
    Decision::Infer(Request::new(inputs), String::new())
}

fn tensor(name: &str, shape: &[i64], values: usize) -> Tensor {
    Tensor {
        name: name.to_owned(),
        shape: shape.to_vec(),
        data: TensorData::F32(vec![0.0; values]),
    }
}

/// What the commands that abuse outputs, topics and the log make, in `prepare` or `complete`;
/// `None` for other commands.
fn abuse(command: &[u8], input_topic: &str) -> Option<Vec<Output>> {
    Some(match command {
        b"many-outputs" => (0..10_000).map(|_| output("o", None)).collect(),
        b"wide-outputs" => (0..3).map(|_| output(vec![b'w'; 1 << 20], None)).collect(),
        b"small-then-huge" => vec![output("small", None), output(vec![b'h'; 1_500_000], None)],
        b"topic-input" => vec![output("x", Some(input_topic))],
        b"topic-empty" => vec![output("x", Some(""))],
        b"topic-invalid" => vec![output("x", Some("no such/topic"))],
        b"log-flood" => {
            let line = "f".repeat(10_000);
            for _ in 0..10_000 {
                log::info(&line);
            }
            vec![output("logged", None)]
        }
        say if say.starts_with(b"say-") => vec![output(&say[4..], None)],
        b"log-forge" => {
            log::info("done\n2026-12-02T00:00:00.000000Z  INFO streaminfer: forged by the plugin");
            vec![output("logged", None)]
        }
        _ => return None,
    })
}

#[allow(unconditional_recursion, reason = "running out of stack is the point")]
fn recurse(depth: u64) -> u64 {
    // black_box keeps the compiler from turning the recursion into a loop.
    black_box(depth) + recurse(black_box(depth + 1))
}

impl Plugin for Hostile {
    type State = String;

    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn prepare(&self, record: &Record) -> Result<Decision<String>, PluginError> {
        let command = record.value.as_deref().unwrap_or_default();
        if let Some(outputs) = abuse(command, &record.topic) {
            return Ok(Decision::Emit(outputs));
        }
        if let Some(then) = command.strip_prefix(b"then-") {
            let features = tensor("features", &[1, 30], 30);
            return Ok(Decision::Infer(
                Request::new(vec![features]),
                String::from_utf8_lossy(then).into_owned(),
            ));
        }
        match command {
            b"ok" => Ok(emit("ok")),
            b"bad-shape" => Ok(ask(vec![tensor("features", &[1, 30], 29)])),
            b"negative-dim" => Ok(ask(vec![tensor("features", &[-1, 30], 30)])),
            b"duplicate-input" => Ok(ask(vec![
                tensor("features", &[1, 30], 30),
                tensor("features", &[1, 30], 30),
            ])),
            // Counted by the export glue below; alone, a plain record.
            b"extra-result" | b"missing-result" => Ok(emit("miscounted")),
            b"loop" => loop {
                black_box(());
            },
            b"sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(emit("slept"))
            }
            b"nap" => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                Ok(emit("napped"))
            }
            b"doze" => {
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(emit("dozed"))
            }
            b"memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            b"recurse" => Ok(emit(recurse(0).to_string())),
            b"panic" => panic!("asked to panic"),
            b"huge-output" => Ok(emit(vec![b'x'; 2 << 20])),
            b"open-file" => match std::fs::read("/etc/passwd") {
                Ok(content) => Ok(emit(content)),
                Err(e) => Err(PluginError::Failed(format!("open-file denied: {e}"))),
            },
            b"connect" => match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => Ok(emit("connected")),
                Err(e) => Err(PluginError::Failed(format!("connect denied: {e}"))),
            },
            b"env" => {
                let seen = serde_json::json!({
                    "vars": std::env::vars_os().count(),
                    "args": std::env::args_os().count(),
                });
                Ok(emit(seen.to_string()))
            }
            other => Err(PluginError::InvalidRecord(format!(
                "unknown command {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn complete(
        &self,
        origin: Origin,
        command: String,
        _: &Response,
    ) -> Result<Vec<Output>, PluginError> {
        abuse(command.as_bytes(), &origin.topic).ok_or_else(|| {
            PluginError::InvalidRecord(format!("unknown command for complete {command:?}"))
        })
    }
}

/// The export glue, as `streaminfer_sdk::export_plugin!` writes it, except that a batch holding
/// `extra-result` gets one result too many and one holding `missing-result` one too few: the
/// contract violation a plugin written without the SDK can commit.
mod export {
    use streaminfer_sdk::bindings::exports::streaminfer::plugin::handler::Guest;
    use streaminfer_sdk::export::{self, Completion, Decision, Slot};
    use streaminfer_sdk::{Field, ModelRequirements, Output, PluginError, Record};

    use super::Hostile;

    std::thread_local! {
        static PLUGIN: Slot<Hostile> = const { Slot::new() };
    }

    #[allow(dead_code, reason = "only the wasm build exports it")]
    struct Export;

    impl Guest for Export {
        fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
            export::configure(&PLUGIN, settings)
        }

        fn requirements() -> ModelRequirements {
            export::requirements(&PLUGIN)
        }

        fn fields() -> Vec<Field> {
            export::fields(&PLUGIN)
        }

        fn prepare(records: Vec<Record>) -> Vec<Result<Decision, PluginError>> {
            let said = |command: &[u8]| records.iter().any(|r| r.value.as_deref() == Some(command));
            let (extra, missing) = (said(b"extra-result"), said(b"missing-result"));
            let mut results = export::prepare(&PLUGIN, records);
            if extra {
                results.push(Ok(Decision::Skip));
            }
            if missing {
                results.pop();
            }
            results
        }

        fn complete(completions: Vec<Completion>) -> Vec<Result<Vec<Output>, PluginError>> {
            export::complete(&PLUGIN, completions)
        }
    }

    streaminfer_sdk::__export_component!(Export);
}
