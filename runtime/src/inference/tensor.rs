//! Conversion between the contract's backend-neutral tensors and TensorFlow's `TensorProto`.
//! Numeric tensors travel as little-endian `tensor_content` (one copy, no per-element framing);
//! answers are read from `tensor_content` or from the typed `*_val` fields, whichever the server
//! used, including TensorFlow's rule that a single value fills the whole shape.

use streaminfer_proto::tensorflow::tensor_shape_proto::Dim;
use streaminfer_proto::tensorflow::{DataType, TensorProto, TensorShapeProto};

use crate::contract::{Tensor, TensorData};

/// Why a tensor could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor {name:?}: shape {shape:?} holds {expected} elements but {found} were given")]
    ShapeMismatch {
        name: String,
        shape: Vec<i64>,
        expected: u64,
        found: usize,
    },
    #[error("tensor {name:?}: invalid shape {shape:?}")]
    BadShape { name: String, shape: Vec<i64> },
    #[error("tensor {name:?}: dtype {dtype} is not supported")]
    UnsupportedDtype { name: String, dtype: String },
    #[error(
        "tensor {name:?}: the answer declares shape {shape:?}, {elements} elements, more than \
         the {most} the request can be answered with"
    )]
    TooLarge {
        name: String,
        shape: Vec<i64>,
        elements: u64,
        most: u64,
    },
    #[error("tensor {name:?}: {found} bytes of content do not make {expected} elements of {dtype}")]
    ContentLength {
        name: String,
        dtype: String,
        expected: u64,
        found: usize,
    },
}

pub(super) fn element_count(name: &str, shape: &[i64]) -> Result<u64, TensorError> {
    shape.iter().try_fold(1u64, |n, &d| {
        u64::try_from(d)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .ok_or_else(|| TensorError::BadShape {
                name: name.to_owned(),
                shape: shape.to_vec(),
            })
    })
}

pub(super) fn data_len(data: &TensorData) -> usize {
    data.len()
}

pub(super) fn le<T: Copy, const N: usize>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&to_bytes(v));
    }
    out
}

pub(super) fn from_le<T, const N: usize>(bytes: &[u8], from_bytes: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from_bytes(a)
        })
        .collect()
}

/// Builds a `TensorProto` from a plugin's tensor.
///
/// # Errors
/// [`TensorError`] when the shape and the data disagree.
pub fn to_proto(tensor: &Tensor) -> Result<TensorProto, TensorError> {
    let expected = element_count(&tensor.name, &tensor.shape)?;
    let found = data_len(&tensor.data);
    if expected != found as u64 {
        return Err(TensorError::ShapeMismatch {
            name: tensor.name.clone(),
            shape: tensor.shape.clone(),
            expected,
            found,
        });
    }
    let shape = TensorShapeProto {
        dim: tensor
            .shape
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    };
    let mut proto = TensorProto {
        tensor_shape: Some(shape),
        ..Default::default()
    };
    let (dtype, content) = match &tensor.data {
        TensorData::F32(v) => (DataType::DtFloat, le(v, f32::to_le_bytes)),
        TensorData::F64(v) => (DataType::DtDouble, le(v, f64::to_le_bytes)),
        TensorData::S8(v) => (DataType::DtInt8, le(v, i8::to_le_bytes)),
        TensorData::S16(v) => (DataType::DtInt16, le(v, i16::to_le_bytes)),
        TensorData::S32(v) => (DataType::DtInt32, le(v, i32::to_le_bytes)),
        TensorData::S64(v) => (DataType::DtInt64, le(v, i64::to_le_bytes)),
        TensorData::U8(v) => (DataType::DtUint8, v.clone()),
        TensorData::U16(v) => (DataType::DtUint16, le(v, u16::to_le_bytes)),
        TensorData::U32(v) => (DataType::DtUint32, le(v, u32::to_le_bytes)),
        TensorData::U64(v) => (DataType::DtUint64, le(v, u64::to_le_bytes)),
        TensorData::Boolean(v) => (DataType::DtBool, v.iter().map(|&b| u8::from(b)).collect()),
        TensorData::Bytes(v) => {
            proto.string_val.clone_from(v);
            (DataType::DtString, Vec::new())
        }
    };
    proto.dtype = dtype as i32;
    proto.tensor_content = content;
    Ok(proto)
}

/// Refuses a decoded tensor of `elements` above `most`, before anything is allocated for it.
pub(super) fn within(
    name: &str,
    shape: &[i64],
    elements: u64,
    most: u64,
) -> Result<(), TensorError> {
    if elements > most {
        return Err(TensorError::TooLarge {
            name: name.to_owned(),
            shape: shape.to_vec(),
            elements,
            most,
        });
    }
    Ok(())
}

/// Reads a server's `TensorProto` into a plugin tensor named `name`, of at most `most`
/// elements (see [`super::ModelDescription::most_elements`]).
///
/// # Errors
/// [`TensorError`] for an unsupported dtype, content that does not fill the shape or a shape
/// of more than `most` elements.
pub fn from_proto(name: &str, proto: &TensorProto, most: u64) -> Result<Tensor, TensorError> {
    let shape: Vec<i64> = proto
        .tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default();
    let n = element_count(name, &shape)?;
    within(name, &shape, n, most)?;
    let dtype = DataType::try_from(proto.dtype).unwrap_or(DataType::DtInvalid);
    let content = proto.tensor_content.as_slice();
    let width = match dtype {
        DataType::DtFloat | DataType::DtInt32 | DataType::DtUint32 => 4,
        DataType::DtDouble | DataType::DtInt64 | DataType::DtUint64 => 8,
        DataType::DtInt16 | DataType::DtUint16 => 2,
        _ => 1,
    };
    if !content.is_empty() && content.len() as u64 != n * width {
        return Err(TensorError::ContentLength {
            name: name.to_owned(),
            dtype: dtype.as_str_name().to_owned(),
            expected: n,
            found: content.len(),
        });
    }
    let raw = !content.is_empty();
    let fill = |len: usize| -> Result<(), TensorError> {
        // TensorFlow lets a single typed value stand for every element.
        if len as u64 == n || (len == 1 && n > 1) {
            Ok(())
        } else {
            Err(TensorError::ShapeMismatch {
                name: name.to_owned(),
                shape: shape.clone(),
                expected: n,
                found: len,
            })
        }
    };
    fn expand<T: Clone>(mut v: Vec<T>, n: u64) -> Vec<T> {
        if v.len() == 1 && n > 1 {
            v = vec![v[0].clone(); n as usize];
        }
        v
    }
    let data = match dtype {
        DataType::DtFloat if raw => TensorData::F32(from_le(content, f32::from_le_bytes)),
        DataType::DtFloat => {
            fill(proto.float_val.len())?;
            TensorData::F32(expand(proto.float_val.clone(), n))
        }
        DataType::DtDouble if raw => TensorData::F64(from_le(content, f64::from_le_bytes)),
        DataType::DtDouble => {
            fill(proto.double_val.len())?;
            TensorData::F64(expand(proto.double_val.clone(), n))
        }
        DataType::DtInt32 if raw => TensorData::S32(from_le(content, i32::from_le_bytes)),
        DataType::DtInt32 => {
            fill(proto.int_val.len())?;
            TensorData::S32(expand(proto.int_val.clone(), n))
        }
        DataType::DtInt64 if raw => TensorData::S64(from_le(content, i64::from_le_bytes)),
        DataType::DtInt64 => {
            fill(proto.int64_val.len())?;
            TensorData::S64(expand(proto.int64_val.clone(), n))
        }
        DataType::DtInt8 if raw => TensorData::S8(from_le(content, i8::from_le_bytes)),
        DataType::DtInt8 => {
            fill(proto.int_val.len())?;
            TensorData::S8(expand(proto.int_val.iter().map(|&v| v as i8).collect(), n))
        }
        DataType::DtInt16 if raw => TensorData::S16(from_le(content, i16::from_le_bytes)),
        DataType::DtInt16 => {
            fill(proto.int_val.len())?;
            TensorData::S16(expand(proto.int_val.iter().map(|&v| v as i16).collect(), n))
        }
        DataType::DtUint8 if raw => TensorData::U8(content.to_vec()),
        DataType::DtUint8 => {
            fill(proto.int_val.len())?;
            TensorData::U8(expand(proto.int_val.iter().map(|&v| v as u8).collect(), n))
        }
        DataType::DtUint16 if raw => TensorData::U16(from_le(content, u16::from_le_bytes)),
        DataType::DtUint16 => {
            fill(proto.int_val.len())?;
            TensorData::U16(expand(proto.int_val.iter().map(|&v| v as u16).collect(), n))
        }
        DataType::DtUint32 if raw => TensorData::U32(from_le(content, u32::from_le_bytes)),
        DataType::DtUint32 => {
            fill(proto.uint32_val.len())?;
            TensorData::U32(expand(proto.uint32_val.clone(), n))
        }
        DataType::DtUint64 if raw => TensorData::U64(from_le(content, u64::from_le_bytes)),
        DataType::DtUint64 => {
            fill(proto.uint64_val.len())?;
            TensorData::U64(expand(proto.uint64_val.clone(), n))
        }
        DataType::DtBool if raw => TensorData::Boolean(content.iter().map(|&b| b != 0).collect()),
        DataType::DtBool => {
            fill(proto.bool_val.len())?;
            TensorData::Boolean(expand(proto.bool_val.clone(), n))
        }
        DataType::DtString => {
            fill(proto.string_val.len())?;
            TensorData::Bytes(expand(proto.string_val.clone(), n))
        }
        other => {
            return Err(TensorError::UnsupportedDtype {
                name: name.to_owned(),
                dtype: other.as_str_name().to_owned(),
            });
        }
    };
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[i64], data: TensorData) -> Tensor {
        Tensor {
            name: "x".into(),
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn every_dtype_round_trips() {
        let cases = [
            TensorData::F32(vec![1.5, -2.25]),
            TensorData::F64(vec![1e-300, 3.0]),
            TensorData::S8(vec![-8, 7]),
            TensorData::S16(vec![-300, 300]),
            TensorData::S32(vec![i32::MIN, i32::MAX]),
            TensorData::S64(vec![i64::MIN, 1]),
            TensorData::U8(vec![0, 255]),
            TensorData::U16(vec![0, 65535]),
            TensorData::U32(vec![0, u32::MAX]),
            TensorData::U64(vec![0, u64::MAX]),
            TensorData::Boolean(vec![true, false]),
            TensorData::Bytes(vec![b"a".to_vec(), Vec::new()]),
        ];
        for data in cases {
            let t = tensor(&[1, 2], data);
            let proto = to_proto(&t).expect("encodes");
            let back = from_proto("x", &proto, 2).expect("decodes");
            assert_eq!(back, t);
        }
    }

    #[test]
    fn shape_and_data_must_agree() {
        let err =
            to_proto(&tensor(&[1, 30], TensorData::F32(vec![0.0; 29]))).expect_err("mismatch");
        assert!(
            err.to_string().contains("holds 30 elements but 29"),
            "{err}"
        );
        assert!(to_proto(&tensor(&[-1, 2], TensorData::F32(vec![0.0; 2]))).is_err());
    }

    #[test]
    fn typed_values_are_read_and_a_single_value_fills_the_shape() {
        let proto = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![
                    Dim {
                        size: 2,
                        name: String::new(),
                    },
                    Dim {
                        size: 2,
                        name: String::new(),
                    },
                ],
                unknown_rank: false,
            }),
            float_val: vec![0.25],
            ..Default::default()
        };
        let t = from_proto("p", &proto, 4).expect("decodes");
        assert_eq!(t.data, TensorData::F32(vec![0.25; 4]));
        let short = TensorProto {
            float_val: vec![0.25, 0.5],
            ..proto
        };
        assert!(from_proto("p", &short, 4).is_err());
    }

    #[test]
    fn a_single_value_fills_no_more_than_was_asked() {
        // 20-odd bytes on the wire that declare 2^36 floats.
        let lie = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: 1 << 36,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            float_val: vec![0.5],
            ..Default::default()
        };
        let err = from_proto("p", &lie, 500).expect_err("more than asked");
        assert!(
            matches!(err, TensorError::TooLarge { elements, most: 500, .. } if elements == 1 << 36),
            "{err}"
        );
        assert!(err.to_string().contains("68719476736 elements"), "{err}");
    }

    #[test]
    fn truncated_content_is_refused() {
        let mut proto =
            to_proto(&tensor(&[3], TensorData::F32(vec![1.0, 2.0, 3.0]))).expect("encodes");
        proto.tensor_content.pop();
        let err = from_proto("x", &proto, 3).expect_err("truncated");
        assert!(matches!(err, TensorError::ContentLength { .. }), "{err}");
    }
}
