//! The guest SDK for streaminfer plugins.
//!
//! A plugin is a WebAssembly component that turns Kafka records into model requests and model
//! responses into Kafka records. With this crate a plugin is one type implementing [`Plugin`]
//! and one [`export_plugin!`] line; the batching, the plugin's lifetime inside the instance and
//! the component ABI stay here.
//!
//! A record flows like this: the host calls `prepare` with a batch of [`Record`]s; for each one
//! the plugin returns a [`Decision`] (call the model with a [`Request`], emit [`Output`]s at
//! once, or skip) or a [`PluginError`], which sends that record to the dead-letter topic. The
//! host calls the model and hands each [`Response`] back to `complete` with its record; the
//! plugin returns the records to produce.
//!
//! - [`Config`]: typed access to the plugin's settings.
//! - [`Tensor`]: builders that check shapes, readers that check element types.
//! - [`Record::json`], [`Output::json`], [`Output::with_header`]: JSON in, JSON out.
//! - [`log`]: the host's log inside a component, standard error in native tests.
//!
//! The plugin's logic compiles for the host target as well, so it is unit-tested with a plain
//! `cargo test`: call `configure`, `prepare` and `complete` directly. Build the component with
//! `cargo build --target wasm32-wasip2 --release`.
//!
//! ```
//! use serde::Deserialize;
//! use streaminfer_sdk::{
//!     export_plugin, Config, Decision, Output, Plugin, PluginError, Record, Request, Response,
//!     Tensor,
//! };
//!
//! struct Scorer {
//!     threshold: f32,
//! }
//!
//! #[derive(Deserialize)]
//! struct Reading {
//!     sensor: String,
//!     values: [f32; 4],
//! }
//!
//! impl Plugin for Scorer {
//!     fn configure(config: &Config) -> Result<Self, String> {
//!         Ok(Self { threshold: config.parse_or("threshold", 0.5)? })
//!     }
//!
//!     fn prepare(&self, record: &Record) -> Result<Decision, PluginError> {
//!         let reading: Reading = record.json()?;
//!         let input = Tensor::f32("x", [1, 4], reading.values)?;
//!         Ok(Request::new(vec![input]).with_outputs(["score"]).into())
//!     }
//!
//!     fn complete(&self, record: &Record, response: &Response) -> Result<Vec<Output>, PluginError> {
//!         let reading: Reading = record.json()?;
//!         let score = response.output("score")?.as_f32()?.first().copied().unwrap_or(0.0);
//!         let alert = serde_json::json!({ "sensor": reading.sensor, "alert": score >= self.threshold });
//!         Ok(vec![Output::json(record.key.clone(), &alert)?.with_header("model", response.model_name())])
//!     }
//! }
//!
//! export_plugin!(Scorer);
//! # fn main() {}
//! ```

mod config;
#[doc(hidden)]
pub mod export;
pub mod log;
mod record;
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
        path: "../wit",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "streaminfer_sdk::bindings",
    });
}

pub use bindings::streaminfer::plugin::types::{
    Completion, Decision, Dtype, Header, InferenceRequest as Request,
    InferenceResponse as Response, InputRecord as Record, ModelInfo, ModelRequirements,
    OutputRecord as Output, PluginError, Tensor, TensorData, TensorSpec,
};
pub use config::Config;

/// A use case: how records become model requests and model responses become records.
///
/// The host builds the plugin once per instance with [`Plugin::configure`] and then calls the
/// other methods once per record. The host may rebuild an instance at any time, so nothing may
/// depend on state kept between calls. Return errors for bad input; a panic traps the instance
/// (the host discards it and dead-letters the batch's records).
pub trait Plugin {
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

    /// Decides what to do with one record.
    ///
    /// # Errors
    /// Usually [`PluginError::InvalidRecord`]: the record goes to the dead-letter topic.
    fn prepare(&self, record: &Record) -> Result<Decision, PluginError>;

    /// Turns the model's response to `record` into the records to produce.
    ///
    /// # Errors
    /// Usually [`PluginError::InvalidResponse`]: the record goes to the dead-letter topic.
    fn complete(&self, record: &Record, response: &Response) -> Result<Vec<Output>, PluginError>;
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

                fn prepare(
                    records: ::std::vec::Vec<$crate::Record>,
                ) -> ::std::vec::Vec<::std::result::Result<$crate::Decision, $crate::PluginError>>
                {
                    $crate::export::prepare(&PLUGIN, records)
                }

                fn complete(
                    completions: ::std::vec::Vec<$crate::Completion>,
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
