//! A plugin that misbehaves on request, for the sandbox tests: each record's value names what
//! to do with it. Built by the test set-up from this source; never shipped.
//!
//! | value | what the plugin does |
//! | --- | --- |
//! | `ok` | emits one record `ok` |
//! | `loop` | spins forever |
//! | `memory` | allocates until allocation fails |
//! | `recurse` | recurses until the stack runs out |
//! | `panic` | panics |
//! | `huge-output` | emits one record of 2 MiB (over Kafka's default 1 MB limit) |
//! | `open-file` | tries to read `/etc/passwd` |
//! | `connect` | tries to open a TCP connection to 127.0.0.1:9 |
//! | `env` | reports how many environment variables and arguments it sees |

use std::hint::black_box;

use streaminfer_sdk::{Config, Decision, Origin, Output, Plugin, PluginError, Record, Response};

/// The misbehaving plugin; it has no settings.
#[derive(Debug)]
pub struct Hostile;

fn emit(value: impl Into<Vec<u8>>) -> Decision<()> {
    Decision::Emit(vec![Output {
        key: None,
        value: Some(value.into()),
        headers: Vec::new(),
        topic: None,
    }])
}

#[allow(unconditional_recursion, reason = "running out of stack is the point")]
fn recurse(depth: u64) -> u64 {
    // black_box keeps the compiler from turning the recursion into a loop.
    black_box(depth) + recurse(black_box(depth + 1))
}

impl Plugin for Hostile {
    type State = ();

    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn prepare(&self, record: &Record) -> Result<Decision<()>, PluginError> {
        let command = record.value.as_deref().unwrap_or_default();
        match command {
            b"ok" => Ok(emit("ok")),
            b"loop" => loop {
                black_box(());
            },
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

    fn complete(&self, _: Origin, (): (), _: &Response) -> Result<Vec<Output>, PluginError> {
        Err(PluginError::Failed(
            "the hostile plugin never asks the model".into(),
        ))
    }
}

streaminfer_sdk::export_plugin!(Hostile);
