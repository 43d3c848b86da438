//! The glue behind [`export_plugin!`](crate::export_plugin): keeps the configured plugin and
//! maps the host's batch calls onto the per-record [`Plugin`] methods.
//!
//! Invariant: every batch call returns exactly one result per input, in order, whatever state
//! the plugin is in. A call before a successful `configure` fails each record with
//! `PluginError::Failed("plugin not configured")`; it never panics.

use std::cell::RefCell;
use std::thread::LocalKey;

pub use crate::bindings::streaminfer::plugin::types::{Completion, Decision, ModelCall};
use crate::{Config, ModelRequirements, Output, Plugin, PluginError, Record, state};

/// Where `export_plugin!` keeps the configured plugin. A component instance runs on a single
/// thread, so a thread-local cell is the whole of the synchronization it needs.
#[derive(Debug)]
pub struct Slot<P>(RefCell<Option<P>>);

impl<P> Slot<P> {
    /// An empty slot: the plugin is not configured yet.
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }
}

impl<P> Default for Slot<P> {
    fn default() -> Self {
        Self::new()
    }
}

const NOT_CONFIGURED: &str = "plugin not configured";
const BUSY: &str = "plugin called while a previous call is still running";

/// Builds the plugin from `settings`, replacing any earlier one. A failed configure leaves the
/// plugin unconfigured, so that records fail rather than run with stale settings.
pub fn configure<P: Plugin + 'static>(
    slot: &'static LocalKey<Slot<P>>,
    settings: Vec<(String, String)>,
) -> Result<(), String> {
    report_panics();
    let config = Config::new(settings);
    slot.with(|slot| {
        let mut current = slot.0.try_borrow_mut().map_err(|_| BUSY.to_owned())?;
        *current = None;
        *current = Some(P::configure(&config)?);
        Ok(())
    })
}

/// The line a panic is reported with; the host puts it in the record's dead letter.
pub const PANIC_PREFIX: &str = "panicked at ";

/// Sends every panic's message and place to the host's log, which the host also puts in the
/// record's dead letter: the trap alone says only where in the compiled code it happened.
fn report_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            let place = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            crate::log::error(&format!("{PANIC_PREFIX}{place}: {message}"));
        }));
    });
}

/// The configured plugin's [`Plugin::requirements`]; nothing before a successful configure.
pub fn requirements<P: Plugin + 'static>(slot: &'static LocalKey<Slot<P>>) -> ModelRequirements {
    slot.with(|slot| match slot.0.try_borrow() {
        Ok(current) => current
            .as_ref()
            .map(Plugin::requirements)
            .unwrap_or_default(),
        Err(_) => ModelRequirements::default(),
    })
}

/// The configured plugin's [`Plugin::fields`]; nothing before a successful configure.
pub fn fields<P: Plugin + 'static>(slot: &'static LocalKey<Slot<P>>) -> Vec<crate::Field> {
    let declared = slot.with(|slot| match slot.0.try_borrow() {
        Ok(current) => current.as_ref().map(Plugin::fields).unwrap_or_default(),
        Err(_) => Vec::new(),
    });
    crate::fields::declare(&declared);
    declared
}

/// One [`Plugin::prepare`] result per record.
pub fn prepare<P: Plugin + 'static>(
    slot: &'static LocalKey<Slot<P>>,
    records: Vec<Record>,
) -> Vec<Result<Decision, PluginError>> {
    with_plugin(slot, records.len(), |plugin| {
        prepare_batch(plugin, &records)
    })
}

/// One [`Plugin::complete`] result per completion.
pub fn complete<P: Plugin + 'static>(
    slot: &'static LocalKey<Slot<P>>,
    completions: Vec<Completion>,
) -> Vec<Result<Vec<Output>, PluginError>> {
    with_plugin(slot, completions.len(), |plugin| {
        complete_batch(plugin, completions)
    })
}

/// What the component's `prepare` export does with a configured plugin: each decision in the
/// contract's terms, the state encoded. Public so that the same glue runs natively (the
/// benchmark that weighs the cost of WebAssembly calls it directly).
pub fn prepare_batch<P: Plugin>(
    plugin: &P,
    records: &[Record],
) -> Vec<Result<Decision, PluginError>> {
    records
        .iter()
        .map(|record| match plugin.prepare(record)? {
            crate::Decision::Infer(request, kept) => Ok(Decision::Infer(ModelCall {
                request,
                state: state::encode(&kept)?,
            })),
            crate::Decision::Emit(outputs) => Ok(Decision::Emit(outputs)),
            crate::Decision::Skip => Ok(Decision::Skip),
        })
        .collect()
}

/// What the component's `complete` export does with a configured plugin: decodes each state and
/// hands it over with the origin and the response.
pub fn complete_batch<P: Plugin>(
    plugin: &P,
    completions: Vec<Completion>,
) -> Vec<Result<Vec<Output>, PluginError>> {
    completions
        .into_iter()
        .map(|completion| {
            let kept = state::decode(&completion.state)?;
            plugin.complete(completion.origin, kept, &completion.response)
        })
        .collect()
}

fn with_plugin<P: 'static, T>(
    slot: &'static LocalKey<Slot<P>>,
    count: usize,
    run: impl FnOnce(&P) -> Vec<Result<T, PluginError>>,
) -> Vec<Result<T, PluginError>> {
    slot.with(|slot| {
        let reason = match slot.0.try_borrow() {
            Ok(current) => match current.as_ref() {
                Some(plugin) => return run(plugin),
                None => NOT_CONFIGURED,
            },
            Err(_) => BUSY,
        };
        (0..count)
            .map(|_| Err(PluginError::Failed(reason.to_owned())))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelInfo, Origin, Request, Response, Tensor};

    /// Emits the `tag` setting for records with a value `emit`, asks the model (keeping the
    /// value's length) for others, and fails records without a value.
    #[derive(Debug)]
    struct Echo {
        tag: String,
    }

    impl Plugin for Echo {
        type State = u32;

        fn configure(config: &Config) -> Result<Self, String> {
            Ok(Self {
                tag: config.require("tag")?.to_owned(),
            })
        }

        fn prepare(&self, record: &Record) -> Result<crate::Decision<u32>, PluginError> {
            match record.value.as_deref() {
                None => Err(PluginError::InvalidRecord("no value".to_owned())),
                Some(b"emit") => Ok(crate::Decision::Emit(vec![Output::new(
                    None,
                    Some(self.tag.clone().into_bytes()),
                )])),
                Some(value) => {
                    let input = Tensor::f32("x", [1], [0.0])?;
                    Ok(crate::Decision::Infer(
                        Request::new(vec![input]),
                        value.len() as u32,
                    ))
                }
            }
        }

        fn complete(
            &self,
            origin: Origin,
            length: u32,
            response: &Response,
        ) -> Result<Vec<Output>, PluginError> {
            response.output("y")?;
            Ok(vec![Output::new(
                origin.key,
                Some(length.to_string().into_bytes()),
            )])
        }
    }

    thread_local! {
        static ECHO: Slot<Echo> = const { Slot::new() };
    }

    fn record(value: Option<&[u8]>) -> Record {
        Record {
            topic: "t".to_owned(),
            partition: 0,
            offset: 1,
            timestamp: None,
            key: None,
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
            fields: Ok(Vec::new()),
        }
    }

    fn settings(tag: &str) -> Vec<(String, String)> {
        vec![("tag".to_owned(), tag.to_owned())]
    }

    fn completion(state: Vec<u8>) -> Completion {
        Completion {
            origin: Origin {
                topic: "t".to_owned(),
                partition: 0,
                offset: 1,
                timestamp: None,
                key: Some(b"k".to_vec()),
            },
            state,
            response: Response {
                model: ModelInfo {
                    name: "m".to_owned(),
                    version: None,
                },
                outputs: vec![Tensor::f32("y", [1], [0.0]).expect("valid")],
            },
        }
    }

    #[test]
    fn lifecycle() {
        // Before configure: one failure per record, no panic.
        let results = prepare(&ECHO, vec![record(Some(b"emit")), record(None)]);
        assert_eq!(
            results,
            vec![
                Err(PluginError::Failed("plugin not configured".to_owned())),
                Err(PluginError::Failed("plugin not configured".to_owned())),
            ]
        );
        assert_eq!(complete(&ECHO, Vec::new()), Vec::new());
        assert_eq!(
            complete(&ECHO, vec![completion(vec![3])]),
            vec![Err(PluginError::Failed("plugin not configured".to_owned()))]
        );

        // Configured: one result per record, in order.
        configure(&ECHO, settings("a")).expect("valid settings");
        let Some(Ok(Decision::Infer(call))) = prepare(&ECHO, vec![record(Some(b"abc"))]).pop()
        else {
            panic!("expected a model call");
        };
        let completed = complete(&ECHO, vec![completion(call.state)]);
        assert!(
            matches!(&completed[..], [Ok(out)] if out[0].value.as_deref() == Some(b"3")),
            "{completed:?}"
        );
        let results = prepare(&ECHO, vec![record(Some(b"emit")), record(None)]);
        assert_eq!(results.len(), 2);
        assert!(
            matches!(&results[0], Ok(Decision::Emit(out)) if out[0].value.as_deref() == Some(b"a"))
        );
        assert_eq!(
            results[1],
            Err(PluginError::InvalidRecord("no value".to_owned()))
        );

        // Configuring again replaces the plugin.
        configure(&ECHO, settings("b")).expect("valid settings");
        let results = prepare(&ECHO, vec![record(Some(b"emit"))]);
        assert!(
            matches!(&results[0], Ok(Decision::Emit(out)) if out[0].value.as_deref() == Some(b"b"))
        );

        // A failed configure leaves it unconfigured.
        assert_eq!(
            configure(&ECHO, Vec::new()),
            Err("missing required setting `tag`".to_owned())
        );
        assert_eq!(
            prepare(&ECHO, vec![record(Some(b"emit"))]),
            vec![Err(PluginError::Failed("plugin not configured".to_owned()))]
        );
    }

    #[test]
    fn the_state_prepare_keeps_reaches_complete() {
        let echo = Echo {
            tag: "t".to_owned(),
        };
        let mut decisions = prepare_batch(&echo, &[record(Some(b"hello"))]);
        let Some(Ok(Decision::Infer(call))) = decisions.pop() else {
            panic!("expected a model call, got {decisions:?}");
        };
        let outputs = complete_batch(&echo, vec![completion(call.state)]);
        let [Ok(outputs)] = outputs.as_slice() else {
            panic!("expected one result, got {outputs:?}");
        };
        assert_eq!(outputs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(outputs[0].value.as_deref(), Some(&b"5"[..]));
    }

    #[test]
    fn a_state_that_does_not_decode_fails_its_record_only() {
        let echo = Echo {
            tag: "t".to_owned(),
        };
        let good = prepare_batch(&echo, &[record(Some(b"hi"))]);
        let Some(Ok(Decision::Infer(call))) = good.into_iter().next() else {
            panic!("expected a model call");
        };
        let results = complete_batch(
            &echo,
            vec![completion(vec![0xff; 6]), completion(call.state)],
        );
        assert!(
            matches!(&results[0], Err(PluginError::Failed(m)) if m.contains("cannot decode the record's state")),
            "{results:?}"
        );
        assert!(results[1].is_ok(), "{results:?}");
    }
}
