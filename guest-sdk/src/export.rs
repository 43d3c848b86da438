//! The glue behind [`export_plugin!`](crate::export_plugin): keeps the configured plugin and
//! maps the host's batch calls onto the per-record [`Plugin`] methods.
//!
//! Invariant: every batch call returns exactly one result per input, in order, whatever state
//! the plugin is in. A call before a successful `configure` fails each record with
//! `PluginError::Failed("plugin not configured")`; it never panics.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::{Completion, Config, Decision, ModelRequirements, Output, Plugin, PluginError, Record};

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
    let config = Config::new(settings);
    slot.with(|slot| {
        let mut current = slot.0.try_borrow_mut().map_err(|_| BUSY.to_owned())?;
        *current = None;
        *current = Some(P::configure(&config)?);
        Ok(())
    })
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

/// One [`Plugin::prepare`] result per record.
pub fn prepare<P: Plugin + 'static>(
    slot: &'static LocalKey<Slot<P>>,
    records: Vec<Record>,
) -> Vec<Result<Decision, PluginError>> {
    with_plugin(slot, records.len(), |plugin| {
        records
            .iter()
            .map(|record| plugin.prepare(record))
            .collect()
    })
}

/// One [`Plugin::complete`] result per completion.
pub fn complete<P: Plugin + 'static>(
    slot: &'static LocalKey<Slot<P>>,
    completions: Vec<Completion>,
) -> Vec<Result<Vec<Output>, PluginError>> {
    with_plugin(slot, completions.len(), |plugin| {
        completions
            .iter()
            .map(|completion| plugin.complete(&completion.record, &completion.response))
            .collect()
    })
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
    use crate::{ModelInfo, Response, Tensor};

    /// Echoes the `tag` setting; fails records without a value.
    #[derive(Debug)]
    struct Echo {
        tag: String,
    }

    impl Plugin for Echo {
        fn configure(config: &Config) -> Result<Self, String> {
            Ok(Self {
                tag: config.require("tag")?.to_owned(),
            })
        }

        fn prepare(&self, record: &Record) -> Result<Decision, PluginError> {
            if record.value.is_none() {
                return Err(PluginError::InvalidRecord("no value".to_owned()));
            }
            Ok(Decision::Emit(vec![Output::new(
                None,
                Some(self.tag.clone().into_bytes()),
            )]))
        }

        fn complete(&self, _: &Record, response: &Response) -> Result<Vec<Output>, PluginError> {
            response.output("y")?;
            Ok(Vec::new())
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
        }
    }

    fn settings(tag: &str) -> Vec<(String, String)> {
        vec![("tag".to_owned(), tag.to_owned())]
    }

    #[test]
    fn lifecycle() {
        // Before configure: one failure per record, no panic.
        let results = prepare(&ECHO, vec![record(Some(b"x")), record(None)]);
        assert_eq!(
            results,
            vec![
                Err(PluginError::Failed("plugin not configured".to_owned())),
                Err(PluginError::Failed("plugin not configured".to_owned())),
            ]
        );
        assert_eq!(complete(&ECHO, Vec::new()), Vec::new());

        // Configured: one result per record, in order.
        configure(&ECHO, settings("a")).expect("valid settings");
        let results = prepare(&ECHO, vec![record(Some(b"x")), record(None)]);
        assert_eq!(results.len(), 2);
        assert!(
            matches!(&results[0], Ok(Decision::Emit(out)) if out[0].value.as_deref() == Some(b"a"))
        );
        assert_eq!(
            results[1],
            Err(PluginError::InvalidRecord("no value".to_owned()))
        );

        let completion = Completion {
            record: record(Some(b"x")),
            response: Response {
                model: ModelInfo {
                    name: "m".to_owned(),
                    version: None,
                },
                outputs: vec![Tensor::f32("y", [1], [0.0]).expect("valid")],
            },
        };
        assert_eq!(complete(&ECHO, vec![completion]), vec![Ok(Vec::new())]);

        // Configuring again replaces the plugin.
        configure(&ECHO, settings("b")).expect("valid settings");
        let results = prepare(&ECHO, vec![record(Some(b"x"))]);
        assert!(
            matches!(&results[0], Ok(Decision::Emit(out)) if out[0].value.as_deref() == Some(b"b"))
        );

        // A failed configure leaves it unconfigured.
        assert_eq!(
            configure(&ECHO, Vec::new()),
            Err("missing required setting `tag`".to_owned())
        );
        assert_eq!(
            prepare(&ECHO, vec![record(Some(b"x"))]),
            vec![Err(PluginError::Failed("plugin not configured".to_owned()))]
        );
    }
}
