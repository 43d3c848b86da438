//! The guest SDK for streaminfer plugins.
//!
//! A plugin is a WebAssembly component that turns Kafka records into model requests and model
//! responses into Kafka records. With this crate a plugin is one type implementing [`Plugin`]
//! and one [`export_plugin!`] line; the batching, the plugin's lifetime inside the instance and
//! the component ABI stay here.
//!
//! A record flows like this: the host calls `prepare` with a batch of [`Record`]s; for each one
//! the plugin returns a [`Decision`] (call the model with a [`Request`] and a state of its own,
//! emit [`Output`]s at once, or skip) or a [`PluginError`], which sends that record to the
//! dead-letter topic. The host calls the model and hands each [`Response`] back to `complete`
//! with the state and the record's [`Origin`] (its key and position); the plugin returns the
//! records to produce. The state is the plugin's [`Plugin::State`], any serde type: whatever
//! `complete` needs from the record (an id, a few fields), so that the record is parsed once.
//! The SDK encodes it compactly; the host never looks inside.
//!
//! - [`Config`]: typed access to the plugin's settings.
//! - [`Tensor`]: builders that check shapes, readers that check element types.
//! - [`Plugin::fields`] and [`Record::fields`]: name the top-level fields of a JSON record you
//!   read and the host parses each record natively and hands them over typed.
//! - [`Record::json`], [`Output::json`], [`Output::reply_json`], [`Output::with_header`]: JSON
//!   in, JSON out; [`Response::scalar_f32`] reads a score.
//!   [`Record::json`] deserializes into any `#[derive(Deserialize)]` struct, borrowing strings
//!   from the record: parse into the fields you use, not into a `serde_json::Value`.
//! - [`log`]: the host's log inside a component, standard error in native tests.
//!
//! The plugin's logic compiles for the host target as well, so it is unit-tested with a plain
//! `cargo test`: call `configure`, `prepare` and `complete` directly. Build the component with
//! `cargo build --target wasm32-wasip2 --profile plugin`.
//!
//! ```
//! use serde::Deserialize;
//! use streaminfer_sdk::{
//!     export_plugin, Config, Decision, Origin, Output, Plugin, PluginError, Record, Request,
//!     Response, Tensor,
//! };
//!
//! struct Scorer {
//!     threshold: f32,
//! }
//!
//! #[derive(Deserialize)]
//! struct Reading<'a> {
//!     sensor: &'a str,
//!     values: [f32; 4],
//! }
//!
//! impl Plugin for Scorer {
//!     /// What `complete` needs of the record: the sensor's name.
//!     type State = String;
//!
//!     fn configure(config: &Config) -> Result<Self, String> {
//!         Ok(Self { threshold: config.parse_or("threshold", 0.5)? })
//!     }
//!
//!     fn prepare(&self, record: &Record) -> Result<Decision<String>, PluginError> {
//!         let reading: Reading<'_> = record.json()?;
//!         let input = Tensor::f32("x", [1, 4], reading.values)?;
//!         let request = Request::new(vec![input]).with_outputs(["score"]);
//!         Ok(Decision::Infer(request, reading.sensor.to_owned()))
//!     }
//!
//!     fn complete(&self, origin: Origin, sensor: String, response: &Response) -> Result<Vec<Output>, PluginError> {
//!         let score = response.scalar_f32("score")?;
//!         let alert = serde_json::json!({ "sensor": sensor, "alert": score >= self.threshold });
//!         Ok(vec![Output::reply_json(origin, &alert)?.with_header("model", response.model_name())])
//!     }
//! }
//!
//! export_plugin!(Scorer);
//! # fn main() {}
//! ```

mod config;
#[doc(hidden)]
pub mod export;
mod fields;
pub mod log;
mod record;
mod state;
mod tensor;

/// The raw bindings generated from the plugin world in `wit/`. Plugins normally need nothing
/// from here: the types are re-exported at the crate root under friendlier names.
#[allow(
    unsafe_code,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_docs
)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "streaminfer_sdk::bindings",
    });
}

pub use bindings::streaminfer::plugin::types::{
    Dtype, Header, InferenceRequest as Request, InferenceResponse as Response,
    InputRecord as Record, ModelInfo, ModelRequirements, Origin, OutputRecord as Output,
    PluginError, Tensor, TensorData, TensorSpec,
};
pub use config::Config;
pub use fields::{Field, FieldKind, FieldValue, Fields};
pub use state::State;

/// What to do with one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<S> {
    /// Call the model with this request; `complete` gets its response and this state.
    Infer(Request, S),
    /// Produce these records without calling the model.
    Emit(Vec<Output>),
    /// Produce nothing; the record counts as done.
    Skip,
}

/// A plugin that needs nothing of the record in `complete` (its key and position come with the
/// [`Origin`]) asks for the model with `request.into()`.
impl From<Request> for Decision<()> {
    fn from(request: Request) -> Self {
        Self::Infer(request, ())
    }
}

/// A use case: how records become model requests and model responses become records.
///
/// The host builds the plugin once per instance with [`Plugin::configure`] and then calls the
/// other methods once per record. The host may rebuild an instance at any time, so nothing may
/// depend on state kept between calls: what `complete` needs of a record travels with the model
/// call as [`Plugin::State`]. Return errors for bad input; a panic traps the instance (the host
/// discards it and retries the batch's records one by one, so only the guilty one fails).
pub trait Plugin {
    /// What [`Plugin::prepare`] keeps of a record for [`Plugin::complete`]: any serde type,
    /// `()` when nothing. Keep it small: it is encoded, held by the host while the model runs,
    /// and decoded once.
    type State: State;

    /// Builds the plugin from its settings.
    ///
    /// # Errors
    /// A message naming the bad setting; it stops the runtime at start-up.
    fn configure(config: &Config) -> Result<Self, String>
    where
        Self: Sized;

    /// What this plugin sends the model and reads back, for the host to check against the
    /// model before any record flows. The default declares nothing and checks nothing.
    fn requirements(&self) -> ModelRequirements {
        ModelRequirements::default()
    }

    /// The top-level fields of a JSON record value that [`Plugin::prepare`] reads: the host
    /// parses each record natively and [`Record::fields`] hands them over typed, so the plugin
    /// parses nothing. The default declares none: read `record.value` yourself (e.g. with
    /// [`Record::json`]).
    fn fields(&self) -> Vec<Field> {
        Vec::new()
    }

    /// Decides what to do with one record.
    ///
    /// # Errors
    /// Usually [`PluginError::InvalidRecord`]: the record goes to the dead-letter topic.
    fn prepare(&self, record: &Record) -> Result<Decision<Self::State>, PluginError>;

    /// Turns the model's response into the records to produce, given the state `prepare` kept
    /// and where the record came from (`origin.key` is usually the outputs' key;
    /// [`Output::reply_json`] keys a JSON output like the record and points back at it).
    ///
    /// A plugin that never asks for the model (it only emits or skips) need not write it: the
    /// default fails the record, saying that `complete` is missing.
    ///
    /// # Errors
    /// Usually [`PluginError::InvalidResponse`]: the record goes to the dead-letter topic.
    fn complete(
        &self,
        origin: Origin,
        state: Self::State,
        response: &Response,
    ) -> Result<Vec<Output>, PluginError> {
        let _ = (origin, state, response);
        Err(PluginError::Failed(
            "the plugin asked for a model call but does not implement `complete`".to_owned(),
        ))
    }
}

// The type is generated from the WIT, so the derive cannot be written on it.
#[allow(clippy::derivable_impls)]
impl Default for ModelRequirements {
    fn default() -> Self {
        Self {
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

impl ModelRequirements {
    /// Declares an input tensor; `-1` in `shape` stands for any size (the batch dimension).
    #[must_use]
    pub fn input(mut self, name: &str, dtype: Dtype, shape: impl Into<Vec<i64>>) -> Self {
        self.inputs.push(TensorSpec {
            name: name.to_owned(),
            dtype,
            shape: shape.into(),
        });
        self
    }

    /// Declares an output the plugin reads.
    #[must_use]
    pub fn output(mut self, name: &str) -> Self {
        self.outputs.push(name.to_owned());
        self
    }
}

impl PluginError {
    /// The reason, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidRecord(message)
            | Self::InvalidResponse(message)
            | Self::Failed(message) => message,
        }
    }
}

/// Exports a [`Plugin`] implementation as the component's `handler` interface.
///
/// Use it once per plugin crate, at module level: `export_plugin!(MyPlugin);`. It keeps the
/// configured plugin for the life of the instance and answers each batch call with exactly one
/// result per record; a call before a successful `configure` fails every record with
/// `PluginError::Failed("plugin not configured")`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: $crate::export::Slot<$plugin> =
                    const { $crate::export::Slot::new() };
            }

            // Compiled on every target, so a type that does not implement `Plugin` fails in
            // native builds too; only the export functions are wasm-only.
            #[allow(dead_code)]
            struct PluginExport;

            impl $crate::bindings::exports::streaminfer::plugin::handler::Guest for PluginExport {
                fn configure(
                    settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::export::configure(&PLUGIN, settings)
                }

                fn requirements() -> $crate::ModelRequirements {
                    $crate::export::requirements(&PLUGIN)
                }

                fn fields() -> ::std::vec::Vec<$crate::Field> {
                    $crate::export::fields(&PLUGIN)
                }

                fn prepare(
                    records: ::std::vec::Vec<$crate::Record>,
                ) -> ::std::vec::Vec<
                    ::std::result::Result<$crate::export::Decision, $crate::PluginError>,
                > {
                    $crate::export::prepare(&PLUGIN, records)
                }

                fn complete(
                    completions: ::std::vec::Vec<$crate::export::Completion>,
                ) -> ::std::vec::Vec<
                    ::std::result::Result<::std::vec::Vec<$crate::Output>, $crate::PluginError>,
                > {
                    $crate::export::complete(&PLUGIN, completions)
                }
            }

            $crate::__export_component!(PluginExport);
        };
    };
}

/// Emits the component's export functions for the adapter type `$ty`. The SDK is always built
/// for the same target as the plugin, so the choice made here holds for the plugin too.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_component {
    ($ty:ident) => {
        $crate::bindings::__export_plugin_world!($ty with_types_in $crate::bindings);
    };
}

/// Natively (a plugin's unit tests) nothing is exported: the component ABI's symbol names
/// cannot go through a native linker.
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_component {
    ($ty:ident) => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin that only emits, and so writes no `complete`.
    struct Emitter;

    impl Plugin for Emitter {
        type State = ();

        fn configure(_: &Config) -> Result<Self, String> {
            Ok(Self)
        }

        fn prepare(&self, _: &Record) -> Result<Decision<()>, PluginError> {
            Ok(Decision::Skip)
        }
    }

    #[test]
    fn a_plugin_without_complete_fails_a_model_answer_saying_so() {
        let origin = Record::of("{}").origin();
        match Emitter.complete(origin, (), &Response::of([])) {
            Err(PluginError::Failed(m)) => {
                assert!(m.contains("does not implement `complete`"), "{m}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
