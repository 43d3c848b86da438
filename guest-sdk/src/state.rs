//! The state a plugin keeps of a record between `prepare` and `complete`.
//!
//! The host treats it as opaque bytes and hands them back unchanged with the model's response,
//! so the record itself is neither parsed again nor sent into the plugin twice. Here it is a
//! typed value: the SDK encodes it with postcard (compact, no field names, varint integers), so
//! an id costs a few bytes and `()` costs none.
//!
//! Invariant: the same plugin build decodes what it encoded (the host completes a batch with the
//! instance generation that prepared it, also across a hot reload), so a decoding failure is a
//! bug in the plugin and is reported as [`PluginError::Failed`], never as a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;

/// What a plugin may keep of a record for `complete`: any type serde can write and read back.
/// Implemented for every such type; there is nothing to implement by hand.
pub trait State: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> State for T {}

/// The bytes that travel with the model call.
pub(crate) fn encode<S: State>(state: &S) -> Result<Vec<u8>, PluginError> {
    postcard::to_allocvec(state)
        .map_err(|error| PluginError::Failed(format!("cannot encode the record's state: {error}")))
}

/// The state back from the bytes `encode` made.
pub(crate) fn decode<S: State>(bytes: &[u8]) -> Result<S, PluginError> {
    postcard::from_bytes(bytes).map_err(|error| {
        PluginError::Failed(format!(
            "cannot decode the record's state ({} bytes) kept by prepare: {error}",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Kept {
        id: i64,
        name: String,
        score: Option<f32>,
    }

    #[test]
    fn states_round_trip_compactly() {
        assert_eq!(encode(&()).expect("encodes"), Vec::<u8>::new());
        let id = encode(&42_i64).expect("encodes");
        assert!(id.len() <= 2, "an id is a varint: {id:?}");
        assert_eq!(decode::<i64>(&id), Ok(42));
        let kept = Kept {
            id: -7,
            name: "card-7".to_owned(),
            score: Some(0.25),
        };
        let bytes = encode(&kept).expect("encodes");
        assert_eq!(decode::<Kept>(&bytes), Ok(kept));
    }

    #[test]
    fn bytes_of_another_type_are_an_error_not_a_panic() {
        let bytes = encode(&1_u8).expect("encodes");
        let error = decode::<Kept>(&bytes).expect_err("too short for Kept");
        assert!(
            matches!(&error, PluginError::Failed(m) if m.contains("cannot decode the record's state (1 bytes)")),
            "{error:?}"
        );
    }
}
