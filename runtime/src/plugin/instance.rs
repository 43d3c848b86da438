//! One plugin instance in its own `Store`, with the sandbox limits applied to every call, and
//! the rule that keeps one bad record from failing its neighbours: when a batch call traps or
//! hits a limit, the instance is rebuilt and the records of that batch are retried one by one,
//! so that only the record that fails alone is dead-lettered.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::Plugin as Bindings;
use super::bindings::exports::streaminfer::plugin::handler::Guest;
use super::clocks::PluginClock;
use super::fields::FieldReader;
use super::limits::Limits;
use super::{Export, LoadedPlugin, PluginError, Scope, StoreState, guard};
use crate::contract::{
    Completion, Decision, InputRecord, ModelRequirements, NO_FIELDS, OutputRecord,
    PluginError as GuestError,
};
use crate::failure::{Failure, Reason};

/// Characters of a plugin's own message (a refused configuration, a trap) kept for the log and
/// the dead letter.
const MESSAGE_AT_MOST: usize = 2_000;

/// Why a call into the plugin failed as a whole. Every such failure throws the instance away.
#[derive(Debug, Clone)]
enum CallError {
    Timeout,
    Memory,
    Trap(String),
}

impl CallError {
    /// What a failed call was; `panic` is what the plugin's SDK said of a panic in it.
    fn classify(error: wasmtime::Error, memory_hit: bool, panic: Option<String>) -> Self {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout,
            _ if memory_hit => CallError::Memory,
            _ => CallError::Trap(panic.unwrap_or_else(|| format!("{error:#}"))),
        }
    }

    fn failure(&self, plugin: &LoadedPlugin) -> Failure {
        match self {
            CallError::Timeout => Failure::new(
                Reason::PluginTimeout,
                format!(
                    "plugin call exceeded its wall-clock limit of {:?}",
                    plugin.call_timeout
                ),
            ),
            CallError::Memory => Failure::new(
                Reason::PluginMemory,
                format!(
                    "plugin exceeded its memory limit of {} bytes",
                    plugin.memory_limit
                ),
            ),
            CallError::Trap(message) => {
                let message = guard::shortened(message, MESSAGE_AT_MOST);
                Failure::new(Reason::PluginTrap, format!("plugin trapped: {message}"))
            }
        }
    }
}

/// Maps an error the plugin returned for one record to a dead-letter failure.
pub(super) fn guest_failure(error: GuestError) -> Failure {
    match error {
        GuestError::InvalidRecord(m) => Failure::new(Reason::InvalidRecord, m),
        GuestError::InvalidResponse(m) => Failure::new(Reason::InvalidResponse, m),
        GuestError::Failed(m) => Failure::new(Reason::PluginError, m),
    }
}

/// One export of the handler, called on a batch of items.
type BatchCall<'a, I, O> = &'a dyn Fn(
    &Guest,
    &mut Store<StoreState>,
    &[I],
) -> wasmtime::Result<Vec<Result<O, GuestError>>>;

pub(super) struct Instance {
    plugin: Arc<LoadedPlugin>,
    store: Store<StoreState>,
    bindings: Bindings,
    /// What the configured plugin declared it sends the model; its requests are checked
    /// against it.
    declared: ModelRequirements,
    /// The fields it declared it reads from each record's value.
    fields: FieldReader,
}

impl Instance {
    /// Instantiates the plugin in a fresh store and runs its `configure`.
    pub(super) fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        let clock_origin = std::time::Instant::now();
        let state = StoreState {
            // Nothing granted: no preopened directories, no environment, no arguments, no
            // network. Standard output and error go nowhere. The clock's waits end at the
            // call's deadline (`clocks`).
            wasi: WasiCtxBuilder::new()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .monotonic_clock(PluginClock {
                    origin: clock_origin,
                })
                .build(),
            table: ResourceTable::new(),
            limiter: Limits::new(plugin.memory_limit),
            plugin: plugin.name.clone(),
            log: super::log::LogGate::new(std::time::Instant::now()),
            panic: None,
            // Instantiation runs under the call limit too (the epoch deadline set below).
            call_deadline: Some(clock_origin + plugin.call_timeout),
            clock_origin,
        };
        let mut store = Store::new(&plugin.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(plugin.deadline_ticks);
        let instantiate_error = |e: wasmtime::Error| PluginError::Instantiate {
            path: plugin.path.clone(),
            message: format!("{e:#}"),
        };
        let bindings = plugin
            .pre
            .instantiate(&mut store)
            .map_err(instantiate_error)?;
        let mut instance = Self {
            plugin: plugin.clone(),
            store,
            bindings,
            declared: ModelRequirements::default(),
            fields: FieldReader::default(),
        };
        let settings = instance.plugin.settings.clone();
        let configured = instance.call(|guest, store| guest.call_configure(store, &settings));
        match configured {
            Ok(Ok(())) => {
                instance.declared = instance.requirements()?;
                instance.fields = instance.fields()?;
                Ok(instance)
            }
            Ok(Err(message)) => Err(PluginError::Configure {
                path: plugin.path.clone(),
                message: guard::shortened(&message, MESSAGE_AT_MOST),
            }),
            Err(e) => Err(PluginError::Configure {
                path: plugin.path.clone(),
                message: e.failure(&plugin).message,
            }),
        }
    }

    /// Runs one call with a fresh wall-clock deadline and a cleared memory flag.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Guest, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.plugin.deadline_ticks);
        self.store.data_mut().limiter.hit = false;
        self.store.data_mut().panic = None;
        self.store.data_mut().call_deadline =
            Some(std::time::Instant::now() + self.plugin.call_timeout);
        let guest = self.bindings.streaminfer_plugin_handler();
        f(guest, &mut self.store).map_err(|e| {
            let state = self.store.data_mut();
            CallError::classify(e, state.limiter.hit, state.panic.take())
        })
    }

    /// A fresh instance in place of this one; the log's rate limit carries over, so that a
    /// plugin cannot win a fresh burst by trapping.
    fn rebuild(&mut self) -> Result<(), PluginError> {
        let gate = std::mem::replace(
            &mut self.store.data_mut().log,
            super::log::LogGate::new(std::time::Instant::now()),
        );
        *self = Self::new(self.plugin.clone())?;
        self.store.data_mut().log = gate;
        self.plugin.stats.rebuilt();
        Ok(())
    }

    /// What the configured plugin declared it sends the model and reads back.
    pub(super) fn declared(&self) -> &ModelRequirements {
        &self.declared
    }

    /// Asks the configured plugin what it sends the model and reads back, checked to be sane.
    fn requirements(&mut self) -> Result<ModelRequirements, PluginError> {
        let path = self.plugin.path.clone();
        let refused = |message: String| PluginError::Configure {
            path: path.clone(),
            message: format!("describing its model requirements: {message}"),
        };
        let declared = self
            .call(|guest, store| guest.call_requirements(store))
            .map_err(|e| refused(e.failure(&self.plugin).message))?;
        guard::requirements(&declared).map_err(refused)?;
        Ok(declared)
    }

    /// Asks the configured plugin which fields it reads from each record.
    fn fields(&mut self) -> Result<FieldReader, PluginError> {
        let path = self.plugin.path.clone();
        let refused = |message: String| PluginError::Configure {
            path: path.clone(),
            message: format!("declaring the fields it reads: {message}"),
        };
        let specs = self
            .call(|guest, store| guest.call_fields(store))
            .map_err(|e| refused(e.failure(&self.plugin).message))?;
        FieldReader::new(&specs).map_err(refused)
    }

    /// The host's checks on one decision: a request no model can take, or outputs past the
    /// limits, fail the record.
    fn checked(&self, decision: Decision) -> Result<Decision, Failure> {
        let checked = match &decision {
            Decision::Infer(call) => guard::request(&call.request, &self.declared),
            Decision::Emit(outputs) => guard::outputs(outputs, &self.plugin.outputs),
            Decision::Skip => Ok(()),
        };
        self.refused_if_err(checked)?;
        Ok(decision)
    }

    /// Counts a result the host refused.
    fn refused_if_err(&self, checked: Result<(), Failure>) -> Result<(), Failure> {
        if let Err(failure) = &checked {
            self.plugin.stats.fault(Scope::Record, failure.reason);
        }
        checked
    }

    /// Asks the plugin what to do with each record; one result per record, in order.
    ///
    /// # Errors
    /// Only when the instance cannot be rebuilt after a failed call.
    pub(super) fn prepare(
        &mut self,
        records: &mut [InputRecord],
    ) -> Result<Vec<Result<Decision, Failure>>, PluginError> {
        if !self.fields.is_empty() {
            for r in records.iter_mut() {
                r.fields = self.fields.read(r.value.as_deref());
            }
        }
        let decided = self.isolating(Export::Prepare, records, &|guest, store, items| {
            guest.call_prepare(store, items)
        });
        if !self.fields.is_empty() {
            // Read for this call only: the records wait for the model and their outputs
            // without them.
            for r in records.iter_mut() {
                r.fields = NO_FIELDS;
            }
        }
        let decided = decided?;
        Ok(decided
            .into_iter()
            .map(|d| d.and_then(|d| self.checked(d)))
            .collect())
    }

    /// Turns responses into output records; one result per completion, in order.
    ///
    /// # Errors
    /// As [`Instance::prepare`].
    pub(super) fn complete(
        &mut self,
        completions: &[Completion],
    ) -> Result<Vec<Result<Vec<OutputRecord>, Failure>>, PluginError> {
        let completed = self.isolating(Export::Complete, completions, &|guest, store, items| {
            guest.call_complete(store, items)
        })?;
        Ok(completed
            .into_iter()
            .map(|r| {
                r.and_then(|outputs| {
                    self.refused_if_err(guard::outputs(&outputs, &self.plugin.outputs))?;
                    Ok(outputs)
                })
            })
            .collect())
    }

    /// Calls `f` on the whole batch; if the call fails as a whole, rebuilds the instance and
    /// calls it on each item alone.
    fn isolating<I, O>(
        &mut self,
        export: Export,
        items: &[I],
        f: BatchCall<'_, I, O>,
    ) -> Result<Vec<Result<O, Failure>>, PluginError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let called = self.call(|guest, store| f(guest, store, items));
        self.plugin.stats.called(export, started.elapsed());
        match called {
            Ok(results) if results.len() == items.len() => Ok(results
                .into_iter()
                .map(|r| r.map_err(guest_failure))
                .collect()),
            Ok(results) => {
                let failure = Failure::new(
                    Reason::PluginContract,
                    format!(
                        "plugin returned {} results for {} inputs",
                        results.len(),
                        items.len()
                    ),
                );
                self.plugin
                    .stats
                    .fault(Scope::of(items.len()), Reason::PluginContract);
                // Which record made it miscount is unknown: each is asked alone, and only one
                // that miscounts alone fails.
                if items.len() == 1 {
                    return Ok(vec![Err(failure)]);
                }
                tracing::warn!(
                    plugin = &*self.plugin.name,
                    batch = items.len(),
                    error = %failure.message,
                    "plugin broke the contract; asking record by record"
                );
                self.one_by_one(export, items, f, &failure)
            }
            Err(error) => {
                let failure = error.failure(&self.plugin);
                self.plugin
                    .stats
                    .fault(Scope::of(items.len()), failure.reason);
                tracing::warn!(
                    plugin = &*self.plugin.name,
                    batch = items.len(),
                    reason = failure.reason.code(),
                    error = %failure.message,
                    "plugin call failed; rebuilding the instance"
                );
                self.rebuild()?;
                if items.len() == 1 {
                    return Ok(vec![Err(failure)]);
                }
                self.one_by_one(export, items, f, &failure)
            }
        }
    }

    /// Calls `f` on each item alone; `failure` stands for an item that gets no result.
    fn one_by_one<I, O>(
        &mut self,
        export: Export,
        items: &[I],
        f: BatchCall<'_, I, O>,
        failure: &Failure,
    ) -> Result<Vec<Result<O, Failure>>, PluginError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let mut one = self.isolating(export, std::slice::from_ref(item), f)?;
            out.push(one.pop().unwrap_or_else(|| Err(failure.clone())));
        }
        Ok(out)
    }
}
