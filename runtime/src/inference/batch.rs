//! Micro-batching: requests of one pipeline batch whose tensors agree on everything but their
//! leading (batch) dimension are stacked along dimension 0 into one call, and the response is
//! split back by dimension 0, so each record still gets its own rows, in order. A request that
//! cannot stack with any other (a scalar input, inputs of unequal leading sizes, a different
//! signature) goes alone.

use super::tensor::data_len;
use crate::contract::{InferenceRequest, InferenceResponse, Tensor, TensorData};

/// Applies `$body` to the element vector of any `TensorData` case, rebuilding the same case.
macro_rules! map_data {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::S8($v) => TensorData::S8($body),
            TensorData::S16($v) => TensorData::S16($body),
            TensorData::S32($v) => TensorData::S32($body),
            TensorData::S64($v) => TensorData::S64($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::Boolean($v) => TensorData::Boolean($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

/// Appends `src` to `dst` when both hold the same element type.
fn append(dst: &mut TensorData, src: &TensorData) -> bool {
    macro_rules! same {
        ($($case:ident),*) => {
            match (dst, src) {
                $((TensorData::$case(d), TensorData::$case(s)) => {
                    d.extend_from_slice(s);
                    true
                })*
                _ => false,
            }
        };
    }
    same!(
        F32, F64, S8, S16, S32, S64, U8, U16, U32, U64, Boolean, Bytes
    )
}

/// What must be equal for two requests to share a call.
#[derive(Debug, PartialEq)]
struct StackKey<'a> {
    signature: Option<&'a str>,
    output_filter: &'a [String],
    /// Per input: name, element type, and the shape after the leading dimension.
    inputs: Vec<(&'a str, std::mem::Discriminant<TensorData>, &'a [i64])>,
}

/// The leading size shared by every input of `request`, when it can be stacked at all.
pub(crate) fn rows(request: &InferenceRequest) -> Option<usize> {
    let first = *request.inputs.first()?.shape.first()?;
    let all_agree = request
        .inputs
        .iter()
        .all(|t| t.shape.first() == Some(&first));
    (all_agree && first > 0)
        .then(|| usize::try_from(first).ok())
        .flatten()
}

fn key(request: &InferenceRequest) -> StackKey<'_> {
    StackKey {
        signature: request.signature.as_deref(),
        output_filter: &request.output_filter,
        inputs: request
            .inputs
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    std::mem::discriminant(&t.data),
                    &t.shape[1..],
                )
            })
            .collect(),
    }
}

/// Groups request indices into calls of at most `max_rows` rows, in order of first appearance.
pub(crate) fn plan(requests: &[&InferenceRequest], max_rows: usize) -> Vec<Vec<usize>> {
    let mut open: Vec<(StackKey<'_>, Vec<usize>, usize)> = Vec::new();
    let mut calls = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let Some(n) = rows(request).filter(|&n| n < max_rows) else {
            calls.push(vec![i]);
            continue;
        };
        let k = key(request);
        match open.iter_mut().find(|(existing, _, _)| *existing == k) {
            Some((_, group, total)) if *total + n <= max_rows => {
                group.push(i);
                *total += n;
            }
            Some(slot) => {
                calls.push(std::mem::replace(&mut slot.1, vec![i]));
                slot.2 = n;
            }
            None => open.push((k, vec![i], n)),
        }
    }
    calls.extend(open.into_iter().map(|(_, group, _)| group));
    calls.sort_by_key(|group| group[0]);
    calls
}

/// One request holding the inputs of `group`, stacked along dimension 0.
pub(crate) fn stack(requests: &[&InferenceRequest], group: &[usize]) -> InferenceRequest {
    let first = requests[group[0]];
    // Each stacked tensor is allocated once, at its final size.
    let mut inputs: Vec<Tensor> = first
        .inputs
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let total = group
                .iter()
                .map(|&i| requests[i].inputs.get(n).map_or(0, |t| data_len(&t.data)))
                .sum();
            Tensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: map_data!(&t.data, |v| {
                    let mut all = Vec::with_capacity(total);
                    all.extend_from_slice(v);
                    all
                }),
            }
        })
        .collect();
    for &i in &group[1..] {
        for (acc, t) in inputs.iter_mut().zip(&requests[i].inputs) {
            // The plan only groups requests whose inputs agree in name, type and inner shape.
            let stacked = append(&mut acc.data, &t.data);
            debug_assert!(stacked, "plan grouped tensors of different element types");
            acc.shape[0] += t.shape[0];
        }
    }
    InferenceRequest {
        inputs,
        signature: first.signature.clone(),
        output_filter: first.output_filter.clone(),
    }
}

/// Splits a stacked response into one response per request, `rows[i]` rows each.
///
/// # Errors
/// A message when an output's leading dimension is not the sum of the rows (the model does not
/// keep its batch dimension), so the caller can send the requests one by one instead.
pub(crate) fn split(
    response: InferenceResponse,
    rows: &[usize],
) -> Result<Vec<InferenceResponse>, String> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<InferenceResponse> = rows
        .iter()
        .map(|_| InferenceResponse {
            model: response.model.clone(),
            outputs: Vec::with_capacity(response.outputs.len()),
        })
        .collect();
    for output in response.outputs {
        let leading = output
            .shape
            .first()
            .copied()
            .and_then(|d| usize::try_from(d).ok());
        if leading != Some(total) {
            return Err(format!(
                "output {:?} has shape {:?}; a batch of {total} rows needs {total} as its first dimension",
                output.name, output.shape
            ));
        }
        let per_row: usize = output.shape[1..]
            .iter()
            .map(|&d| d.max(0) as usize)
            .product();
        let mut start = 0;
        for (part, &n) in parts.iter_mut().zip(rows) {
            let len = n * per_row;
            let mut shape = output.shape.clone();
            shape[0] = n as i64;
            let data = map_data!(&output.data, |v| v[start..start + len].to_vec());
            part.outputs.push(Tensor {
                name: output.name.clone(),
                shape,
                data,
            });
            start += len;
        }
    }
    Ok(parts)
}

/// Leading rows of each request in `group`; only called for groups the plan stacked.
pub(crate) fn rows_of(requests: &[&InferenceRequest], group: &[usize]) -> Vec<usize> {
    group
        .iter()
        .map(|&i| rows(requests[i]).unwrap_or(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ModelInfo;

    fn request(values: &[f32]) -> InferenceRequest {
        InferenceRequest {
            inputs: vec![Tensor {
                name: "features".into(),
                shape: vec![1, values.len() as i64],
                data: TensorData::F32(values.to_vec()),
            }],
            signature: None,
            output_filter: vec!["p".into()],
        }
    }

    #[test]
    fn compatible_requests_stack_up_to_the_row_limit() {
        let a = request(&[1.0, 2.0]);
        let b = request(&[3.0, 4.0]);
        let c = request(&[5.0, 6.0]);
        let mut odd = request(&[7.0, 8.0, 9.0]);
        let requests = [&a, &b, &odd.clone(), &c];
        assert_eq!(plan(&requests, 2), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(plan(&requests, 64), vec![vec![0, 1, 3], vec![2]]);
        odd.signature = Some("other".into());
        let requests = [&a, &odd, &b];
        assert_eq!(plan(&requests, 64), vec![vec![0, 2], vec![1]]);
        assert_eq!(
            plan(&requests, 1),
            vec![vec![0], vec![1], vec![2]],
            "batching off"
        );
    }

    #[test]
    fn scalars_and_ragged_requests_go_alone() {
        let mut scalar = request(&[1.0]);
        scalar.inputs[0].shape = vec![];
        let mut ragged = request(&[1.0, 2.0]);
        ragged.inputs.push(Tensor {
            name: "x".into(),
            shape: vec![2],
            data: TensorData::S32(vec![1, 2]),
        });
        let a = request(&[1.0, 2.0]);
        let requests = [&scalar, &ragged, &a];
        assert_eq!(plan(&requests, 64), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn stacking_concatenates_rows_and_splitting_hands_each_its_own() {
        let a = request(&[1.0, 2.0]);
        let b = request(&[3.0, 4.0]);
        let requests = [&a, &b];
        let stacked = stack(&requests, &[0, 1]);
        assert_eq!(stacked.inputs[0].shape, [2, 2]);
        assert_eq!(
            stacked.inputs[0].data,
            TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
        );

        let response = InferenceResponse {
            model: ModelInfo {
                name: "m".into(),
                version: Some("3".into()),
            },
            outputs: vec![Tensor {
                name: "p".into(),
                shape: vec![2, 1],
                data: TensorData::F32(vec![0.1, 0.9]),
            }],
        };
        let parts = split(response, &rows_of(&requests, &[0, 1])).expect("splits");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].outputs[0].shape, [1, 1]);
        assert_eq!(parts[0].outputs[0].data, TensorData::F32(vec![0.1]));
        assert_eq!(parts[1].outputs[0].data, TensorData::F32(vec![0.9]));
        assert_eq!(parts[1].model.version.as_deref(), Some("3"));
    }

    #[test]
    fn an_output_without_the_batch_dimension_cannot_be_split() {
        let response = InferenceResponse {
            model: ModelInfo {
                name: "m".into(),
                version: None,
            },
            outputs: vec![Tensor {
                name: "p".into(),
                shape: vec![1],
                data: TensorData::F32(vec![0.5]),
            }],
        };
        let err = split(response, &[1, 1]).expect_err("cannot split");
        assert!(err.contains("first dimension"), "{err}");
    }
}
