//! The data types of the plugin contract (`wit/plugin.wit`, package `streaminfer:plugin`), in a
//! module of their own: the pipeline, the model backends and the plugin host all speak them, and
//! none of them has to import another to do so. The WebAssembly host maps the WIT interface
//! `types` onto these definitions (bindgen's `with:`), so a value crosses into a plugin straight
//! from here, with no conversion copy.
//!
//! Invariant: each type has the WIT type's shape, field for field and case for case, in the same
//! order (the derives below check names and types when a plugin is loaded). Where the Rust type
//! differs from what bindgen would write, it is to share instead of copy: a record's topic is an
//! `Arc<str>` shared by every record of its partition.

use std::sync::Arc;

use wasmtime::component::{ComponentType, Lift, Lower};

/// A Kafka header. Values are raw bytes, as on the wire.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

/// How a declared field's value is handed over.
#[derive(ComponentType, Lift, Lower, Debug, Clone, Copy, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum FieldKind {
    #[component(name = "number")]
    Number,
    #[component(name = "integer")]
    Integer,
    #[component(name = "text")]
    Text,
    #[component(name = "boolean")]
    Boolean,
    #[component(name = "json")]
    Json,
}

/// A top-level field of a record's JSON value that a plugin reads.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq, Eq)]
#[component(record)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
}

/// One declared field of one record.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(variant)]
pub enum FieldValue {
    /// Not in the record, or `null`.
    #[component(name = "absent")]
    Absent,
    #[component(name = "number")]
    Number(f64),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "text")]
    Text(String),
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "json")]
    Json(String),
    /// In the record with another type than declared: what it is.
    #[component(name = "mismatch")]
    Mismatch(String),
}

/// The declared fields of a record: one value per declaration, or why the value is not a JSON
/// object.
pub type Fields = Result<Vec<FieldValue>, String>;

/// The fields of a record before any are read, or when the plugin declares none.
pub const NO_FIELDS: Fields = Ok(Vec::new());

/// One consumed record, as read from the broker.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct InputRecord {
    /// Shared by the records of a partition: one allocation per assignment, not per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the broker reported one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// What the plugin declared it reads from the value, filled just before `prepare`.
    pub fields: Fields,
}

/// The elements of a tensor, in row-major order. The case names the element type.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(variant)]
pub enum TensorData {
    #[component(name = "f32")]
    F32(Vec<f32>),
    #[component(name = "f64")]
    F64(Vec<f64>),
    #[component(name = "s8")]
    S8(Vec<i8>),
    #[component(name = "s16")]
    S16(Vec<i16>),
    #[component(name = "s32")]
    S32(Vec<i32>),
    #[component(name = "s64")]
    S64(Vec<i64>),
    #[component(name = "u8")]
    U8(Vec<u8>),
    #[component(name = "u16")]
    U16(Vec<u16>),
    #[component(name = "u32")]
    U32(Vec<u32>),
    #[component(name = "u64")]
    U64(Vec<u64>),
    #[component(name = "boolean")]
    Boolean(Vec<bool>),
    /// Byte strings (TensorFlow's DT_STRING, KServe's BYTES).
    #[component(name = "bytes")]
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// How many elements it holds.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::S8(v) => v.len(),
            TensorData::S16(v) => v.len(),
            TensorData::S32(v) => v.len(),
            TensorData::S64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::U16(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::U64(v) => v.len(),
            TensorData::Boolean(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its element type.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F64(_) => Dtype::F64,
            TensorData::S8(_) => Dtype::S8,
            TensorData::S16(_) => Dtype::S16,
            TensorData::S32(_) => Dtype::S32,
            TensorData::S64(_) => Dtype::S64,
            TensorData::U8(_) => Dtype::U8,
            TensorData::U16(_) => Dtype::U16,
            TensorData::U32(_) => Dtype::U32,
            TensorData::U64(_) => Dtype::U64,
            TensorData::Boolean(_) => Dtype::Boolean,
            TensorData::Bytes(_) => Dtype::Bytes,
        }
    }
}

/// An element type, as the cases of [`TensorData`] name them.
#[derive(ComponentType, Lift, Lower, Debug, Clone, Copy, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum Dtype {
    #[component(name = "f32")]
    F32,
    #[component(name = "f64")]
    F64,
    #[component(name = "s8")]
    S8,
    #[component(name = "s16")]
    S16,
    #[component(name = "s32")]
    S32,
    #[component(name = "s64")]
    S64,
    #[component(name = "u8")]
    U8,
    #[component(name = "u16")]
    U16,
    #[component(name = "u32")]
    U32,
    #[component(name = "u64")]
    U64,
    #[component(name = "boolean")]
    Boolean,
    #[component(name = "bytes")]
    Bytes,
}

/// A tensor's name, element type and shape, without data; -1 stands for any size.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<i64>,
}

/// What a plugin sends the model and reads from its answers; empty lists check nothing.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq, Default)]
#[component(record)]
pub struct ModelRequirements {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<String>,
}

/// A named tensor. The product of `shape` equals the number of elements in `data`.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// What a plugin asks of the model for one record.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct InferenceRequest {
    pub inputs: Vec<Tensor>,
    /// A model signature to call; the backend's default when absent.
    pub signature: Option<String>,
    /// Output tensor names to return; every output when empty.
    #[component(name = "output-filter")]
    pub output_filter: Vec<String>,
}

/// Which model answered. Shared: every record a stacked call answers carries the same one.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct ModelInfo {
    pub name: Arc<str>,
    pub version: Option<Arc<str>>,
}

/// The model's answer for one record.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct InferenceResponse {
    pub model: ModelInfo,
    pub outputs: Vec<Tensor>,
}

/// A record a plugin wants produced.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct OutputRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// The topic to produce to; the configured output topic when absent.
    pub topic: Option<String>,
}

/// A model call a plugin asks for, and the opaque state it wants back with the answer.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct ModelCall {
    pub request: InferenceRequest,
    pub state: Vec<u8>,
}

/// What to do with one input record.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(variant)]
pub enum Decision {
    /// Call the model, then `complete` with its response and the call's state.
    #[component(name = "infer")]
    Infer(ModelCall),
    /// Produce these records without calling the model.
    #[component(name = "emit")]
    Emit(Vec<OutputRecord>),
    /// Produce nothing; the record counts as done.
    #[component(name = "skip")]
    Skip,
}

/// A record a plugin cannot handle, and why.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(variant)]
pub enum PluginError {
    /// The record itself is bad.
    #[component(name = "invalid-record")]
    InvalidRecord(String),
    /// The model's response is not what the plugin expects.
    #[component(name = "invalid-response")]
    InvalidResponse(String),
    /// Anything else.
    #[component(name = "failed")]
    Failed(String),
}

/// Where a record came from: its place in the input and its key.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
}

impl Origin {
    /// The origin of `record`; shares its topic and copies its key.
    pub fn of(record: &InputRecord) -> Self {
        Self {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.clone(),
        }
    }
}

/// A response handed back with the state its model call carried and the record's origin.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq)]
#[component(record)]
pub struct Completion {
    pub origin: Origin,
    pub state: Vec<u8>,
    pub response: InferenceResponse,
}
