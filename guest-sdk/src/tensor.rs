//! Building input tensors and reading output tensors.
//!
//! A tensor's element type is the case of [`TensorData`]; its shape is a plain list of
//! dimensions whose product must equal the number of elements. The builders check that, so a
//! malformed tensor fails inside the plugin with a clear message instead of at the model
//! server. The readers borrow the elements, so reading a response copies nothing.

use crate::{PluginError, Response, Tensor, TensorData};

impl TensorData {
    /// The name of the `tensor-data` case: `f32`, `f64`, `s8` … `u64`, `boolean` or `bytes`.
    pub fn dtype(&self) -> &'static str {
        match self {
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::S8(_) => "s8",
            Self::S16(_) => "s16",
            Self::S32(_) => "s32",
            Self::S64(_) => "s64",
            Self::U8(_) => "u8",
            Self::U16(_) => "u16",
            Self::U32(_) => "u32",
            Self::U64(_) => "u64",
            Self::Boolean(_) => "boolean",
            Self::Bytes(_) => "bytes",
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::S8(v) => v.len(),
            Self::S16(v) => v.len(),
            Self::S32(v) => v.len(),
            Self::S64(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::Boolean(v) => v.len(),
            Self::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Defines one builder and one reader per `tensor-data` case.
macro_rules! typed_access {
    ($($builder:ident, $reader:ident, $case:ident, $elem:ty;)*) => {
        impl Tensor {
            $(
                #[doc = concat!("A `", stringify!($case), "` tensor of `", stringify!($elem),
                    "` elements in row-major order.")]
                ///
                /// # Errors
                /// When the product of `shape` differs from the number of elements, or a
                /// dimension is negative.
                pub fn $builder(
                    name: impl Into<String>,
                    shape: impl Into<Vec<i64>>,
                    data: impl Into<Vec<$elem>>,
                ) -> Result<Self, PluginError> {
                    Self::new(name, shape, TensorData::$case(data.into()))
                }

                #[doc = concat!("The elements, if this is a `", stringify!($case), "` tensor.")]
                ///
                /// # Errors
                /// An [`PluginError::InvalidResponse`] naming the tensor and the element type
                /// it holds instead.
                pub fn $reader(&self) -> Result<&[$elem], PluginError> {
                    match &self.data {
                        TensorData::$case(values) => Ok(values),
                        other => Err(self.wrong_dtype(stringify!($case), other)),
                    }
                }
            )*
        }
    };
}

typed_access! {
    f32, as_f32, F32, f32;
    f64, as_f64, F64, f64;
    i8, as_i8, S8, i8;
    i16, as_i16, S16, i16;
    i32, as_i32, S32, i32;
    i64, as_i64, S64, i64;
    u8, as_u8, U8, u8;
    u16, as_u16, U16, u16;
    u32, as_u32, U32, u32;
    u64, as_u64, U64, u64;
    bool, as_bool, Boolean, bool;
    bytes, as_bytes, Bytes, Vec<u8>;
}

impl Tensor {
    /// A tensor of any element type.
    ///
    /// # Errors
    /// When the product of `shape` differs from the number of elements in `data`, or a
    /// dimension is negative (an error of the plugin, hence [`PluginError::Failed`]).
    pub fn new(
        name: impl Into<String>,
        shape: impl Into<Vec<i64>>,
        data: TensorData,
    ) -> Result<Self, PluginError> {
        let tensor = Self {
            name: name.into(),
            shape: shape.into(),
            data,
        };
        tensor.check_shape().map_err(PluginError::Failed)?;
        Ok(tensor)
    }

    /// The element type: see [`TensorData::dtype`].
    pub fn dtype(&self) -> &'static str {
        self.data.dtype()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Checks that the shape describes exactly the elements present.
    ///
    /// # Errors
    /// A message naming the tensor, its shape and the number of elements.
    pub fn check_shape(&self) -> Result<(), String> {
        let mut expected: usize = 1;
        for &dim in &self.shape {
            let Ok(dim) = usize::try_from(dim) else {
                return Err(format!(
                    "tensor `{}` has a negative dimension in shape {:?}",
                    self.name, self.shape
                ));
            };
            expected = expected.checked_mul(dim).ok_or_else(|| {
                format!(
                    "tensor `{}` has an oversized shape {:?}",
                    self.name, self.shape
                )
            })?;
        }
        let found = self.len();
        if expected == found {
            Ok(())
        } else {
            Err(format!(
                "tensor `{}` has shape {:?} ({expected} elements) but {found} elements",
                self.name, self.shape
            ))
        }
    }

    #[cold]
    fn wrong_dtype(&self, wanted: &str, found: &TensorData) -> PluginError {
        PluginError::InvalidResponse(format!(
            "tensor `{}` holds {} elements, expected {}",
            self.name,
            found.dtype(),
            wanted.to_ascii_lowercase()
        ))
    }
}

impl Response {
    /// A response holding `outputs`, from a model called `test`: for a plugin's unit tests of
    /// `complete`, e.g. `Response::of([Tensor::f32("score", [1, 1], [0.9])?])`.
    pub fn of(outputs: impl IntoIterator<Item = Tensor>) -> Self {
        Self {
            model: crate::ModelInfo {
                name: "test".to_owned(),
                version: None,
            },
            outputs: outputs.into_iter().collect(),
        }
    }

    /// The output tensor called `name`.
    ///
    /// # Errors
    /// An [`PluginError::InvalidResponse`] naming the missing tensor and those present.
    pub fn output(&self, name: &str) -> Result<&Tensor, PluginError> {
        self.outputs
            .iter()
            .find(|tensor| tensor.name == name)
            .ok_or_else(|| self.missing_output(name))
    }

    /// The single number the output `name` holds, as f32: what a scoring model answers for
    /// one record.
    ///
    /// # Errors
    /// An [`PluginError::InvalidResponse`] when the output is missing, not f32, or does not
    /// hold exactly one finite number.
    pub fn scalar_f32(&self, name: &str) -> Result<f32, PluginError> {
        match self.output(name)?.as_f32()? {
            [value] if value.is_finite() => Ok(*value),
            values => Err(PluginError::InvalidResponse(format!(
                "output `{name}` must hold one finite number, got {values:?}"
            ))),
        }
    }

    /// The name of the model that answered.
    pub fn model_name(&self) -> &str {
        &self.model.name
    }

    /// The version of the model that answered, when the backend reports one.
    pub fn model_version(&self) -> Option<&str> {
        self.model.version.as_deref()
    }

    #[cold]
    fn missing_output(&self, name: &str) -> PluginError {
        let present: Vec<&str> = self.outputs.iter().map(|t| t.name.as_str()).collect();
        PluginError::InvalidResponse(format!(
            "model response has no output tensor `{name}` (outputs: [{}])",
            present.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelInfo;

    #[test]
    fn a_scalar_is_one_finite_number_and_anything_else_says_what_came() {
        let scalar = |data: Vec<f32>| {
            let n = data.len() as i64;
            Response::of([Tensor::f32("p", [n, 1], data).expect("shape")]).scalar_f32("p")
        };
        assert_eq!(scalar(vec![0.25]), Ok(0.25));
        for (data, said) in [
            (vec![0.1, 0.2], "got [0.1, 0.2]"),
            (vec![], "got []"),
            (vec![f32::NAN], "got [NaN]"),
        ] {
            match scalar(data) {
                Err(PluginError::InvalidResponse(m)) => {
                    assert!(
                        m.contains("output `p` must hold one finite number") && m.contains(said),
                        "{m}"
                    );
                }
                other => panic!("expected an invalid response, got {other:?}"),
            }
        }
        let missing = Response::of([]).scalar_f32("p");
        assert!(
            matches!(missing, Err(PluginError::InvalidResponse(m)) if m.contains("no output tensor `p`"))
        );
    }

    #[test]
    fn builders_check_the_shape() {
        let tensor = Tensor::f32("x", [2, 2], [1.0, 2.0, 3.0, 4.0]).expect("2x2 holds 4");
        assert_eq!(tensor.shape, [2, 2]);
        assert_eq!(tensor.dtype(), "f32");
        assert_eq!(tensor.len(), 4);

        let scalar = Tensor::i64("n", [], [7]).expect("a scalar holds 1");
        assert_eq!(scalar.as_i64(), Ok(&[7][..]));

        assert_eq!(
            Tensor::f32("x", [1, 3], vec![1.0, 2.0]),
            Err(PluginError::Failed(
                "tensor `x` has shape [1, 3] (3 elements) but 2 elements".to_owned()
            ))
        );
        assert_eq!(
            Tensor::u8("y", [-1, 2], [0, 0]),
            Err(PluginError::Failed(
                "tensor `y` has a negative dimension in shape [-1, 2]".to_owned()
            ))
        );
        assert!(Tensor::bool("z", [i64::MAX, i64::MAX, 4], []).is_err());
    }

    #[test]
    fn every_case_builds_and_reads_back() {
        let b = |t: Result<Tensor, PluginError>| t.expect("valid tensor");
        assert_eq!(b(Tensor::f64("t", [1], [1.5])).as_f64(), Ok(&[1.5][..]));
        assert_eq!(b(Tensor::i8("t", [1], [-1])).as_i8(), Ok(&[-1][..]));
        assert_eq!(b(Tensor::i16("t", [1], [-2])).as_i16(), Ok(&[-2][..]));
        assert_eq!(b(Tensor::i32("t", [1], [-3])).as_i32(), Ok(&[-3][..]));
        assert_eq!(b(Tensor::u8("t", [1], [4])).as_u8(), Ok(&[4][..]));
        assert_eq!(b(Tensor::u16("t", [1], [5])).as_u16(), Ok(&[5][..]));
        assert_eq!(b(Tensor::u32("t", [1], [6])).as_u32(), Ok(&[6][..]));
        assert_eq!(b(Tensor::u64("t", [1], [7])).as_u64(), Ok(&[7][..]));
        assert_eq!(b(Tensor::bool("t", [1], [true])).as_bool(), Ok(&[true][..]));
        let bytes = b(Tensor::bytes("t", [2], [b"a".to_vec(), Vec::new()]));
        assert_eq!(bytes.dtype(), "bytes");
        assert_eq!(bytes.as_bytes().map(<[_]>::len), Ok(2));
    }

    #[test]
    fn reading_the_wrong_dtype_names_tensor_and_types() {
        let tensor = Tensor::f64("score", [1], [0.5]).expect("valid");
        assert_eq!(
            tensor.as_f32(),
            Err(PluginError::InvalidResponse(
                "tensor `score` holds f64 elements, expected f32".to_owned()
            ))
        );
        let flags = Tensor::bool("flags", [1], [true]).expect("valid");
        assert_eq!(
            flags.as_i32(),
            Err(PluginError::InvalidResponse(
                "tensor `flags` holds boolean elements, expected s32".to_owned()
            ))
        );
    }

    #[test]
    fn response_outputs_by_name() {
        let response = Response {
            model: ModelInfo {
                name: "fraud".to_owned(),
                version: Some("3".to_owned()),
            },
            outputs: vec![
                Tensor::f32("a", [1], [1.0]).expect("valid"),
                Tensor::f32("b", [1], [2.0]).expect("valid"),
            ],
        };
        assert_eq!(response.model_name(), "fraud");
        assert_eq!(response.model_version(), Some("3"));
        assert_eq!(
            response.output("b").and_then(Tensor::as_f32),
            Ok(&[2.0][..])
        );
        assert_eq!(
            response.output("c"),
            Err(PluginError::InvalidResponse(
                "model response has no output tensor `c` (outputs: [a, b])".to_owned()
            ))
        );
    }
}
