//! Reading input records and building output records and inference requests.
//!
//! Everything here borrows from the record where it can: [`Record::json`] deserializes
//! straight from the value bytes (borrowed `&str` fields work), and header lookups return
//! slices of the record.

use serde::{Deserialize, Serialize};

use crate::{Header, Origin, Output, PluginError, Record, Request, Tensor};

/// A header from its key and value.
fn header(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
    Header {
        key: key.into(),
        value: value.into(),
    }
}

impl Record {
    /// A record holding `value`, read from partition 0 of topic `test` at offset 0, with no key
    /// and no headers: for a plugin's unit tests, e.g.
    /// `plugin.prepare(&Record::of(r#"{"id": 1}"#))`. Add a key or headers with
    /// [`Record::with_key`] and [`Record::with_header`].
    pub fn of(value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: "test".to_owned(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            fields: Ok(Vec::new()),
        }
    }

    /// The record with `key`.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The record with one more header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(header(key, value));
        self
    }

    /// Where the record came from, as `complete` is told: for a plugin's unit tests of
    /// `complete`.
    pub fn origin(&self) -> Origin {
        Origin {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.clone(),
        }
    }

    /// Deserializes the record's value as JSON.
    ///
    /// For speed, deserialize into a `#[derive(Deserialize)]` struct of the fields you use,
    /// borrowing strings (`&'a str`) where you can: fields you do not name are skipped without
    /// being built, and numbers go straight into `f32` or `i64` fields. Floats are parsed with
    /// serde_json's fast path: an `f64` may differ from an exact parse in its last bit; the `f32`
    /// agreed with an exact parse on every value the SDK's test samples (a last-bit `f64`
    /// difference can in principle still flip an `f32` rounding).
    ///
    /// # Errors
    /// An [`PluginError::InvalidRecord`] saying what is wrong: `record has no value`,
    /// `value is not valid JSON: …` (a syntax error, with line and column) or
    /// `value does not match the expected fields: …` (e.g. `missing field `id``).
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, PluginError> {
        let value = self
            .value
            .as_deref()
            .ok_or_else(|| PluginError::InvalidRecord("record has no value".to_owned()))?;
        serde_json::from_slice(value).map_err(|error| {
            let what = if error.is_data() {
                "value does not match the expected fields"
            } else {
                "value is not valid JSON"
            };
            PluginError::InvalidRecord(format!("{what}: {error}"))
        })
    }

    /// The value of the header `name` (the last one if it repeats).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The value of the header `name` as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

impl Output {
    /// An output record with this key and value, no headers, to the configured output topic.
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Self {
        Self {
            key,
            value,
            headers: Vec::new(),
            topic: None,
        }
    }

    /// An output record whose value is `value` serialized as JSON.
    ///
    /// # Errors
    /// A [`PluginError::Failed`] when `value` cannot be serialized (e.g. a map with
    /// non-string keys).
    pub fn json<T: Serialize + ?Sized>(
        key: Option<Vec<u8>>,
        value: &T,
    ) -> Result<Self, PluginError> {
        let value = serde_json::to_vec(value).map_err(|error| {
            PluginError::Failed(format!(
                "cannot serialize the output value as JSON: {error}"
            ))
        })?;
        Ok(Self::new(key, Some(value)))
    }

    /// The reply to the record at `origin`: keyed like it, `value` serialized as JSON, with
    /// the headers [`Output::with_source`] adds.
    ///
    /// # Errors
    /// As [`Output::json`].
    pub fn reply_json<T: Serialize + ?Sized>(
        origin: Origin,
        value: &T,
    ) -> Result<Self, PluginError> {
        // The origin is the caller's to give away: its topic and key move, nothing is copied.
        let Origin {
            topic,
            partition,
            offset,
            key,
            ..
        } = origin;
        Ok(Self::json(key, value)?.with_source_of(topic, partition, offset))
    }

    /// Adds the headers that point back at the input record: `source-topic`,
    /// `source-partition` and `source-offset` (decimal text).
    #[must_use]
    pub fn with_source(self, origin: &Origin) -> Self {
        self.with_source_of(origin.topic.as_str(), origin.partition, origin.offset)
    }

    fn with_source_of(self, topic: impl Into<Vec<u8>>, partition: i32, offset: i64) -> Self {
        self.with_header("source-topic", topic)
            .with_header("source-partition", partition.to_string())
            .with_header("source-offset", offset.to_string())
    }

    /// Adds a header; text converts with `.to_string()` or directly from `&str`/`String`.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(header(key, value));
        self
    }

    /// Sends this record to `topic` instead of the configured output topic.
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The value of the header `name` (the last one if it repeats).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The value of the header `name` as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

impl Request {
    /// A request for every output of the backend's default signature.
    pub fn new(inputs: Vec<Tensor>) -> Self {
        Self {
            inputs,
            signature: None,
            output_filter: Vec::new(),
        }
    }

    /// Calls the signature `name` instead of the backend's default one.
    #[must_use]
    pub fn with_signature(mut self, name: impl Into<String>) -> Self {
        self.signature = Some(name.into());
        self
    }

    /// Asks for these outputs only.
    #[must_use]
    pub fn with_outputs<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.output_filter = names.into_iter().map(Into::into).collect();
        self
    }
}

fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|header| header.key == name)
        .map(|header| header.value.as_slice())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::Decision;

    #[test]
    fn a_reply_is_keyed_like_its_record_and_points_back_at_it() {
        let origin = Origin {
            topic: "in".to_owned(),
            partition: 3,
            offset: 1234,
            timestamp: None,
            key: Some(b"k".to_vec()),
        };
        let reply = Output::reply_json(origin, &serde_json::json!({"a": 1})).expect("JSON");
        assert_eq!(reply.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(reply.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(reply.header_str("source-topic"), Some("in"));
        assert_eq!(reply.header_str("source-partition"), Some("3"));
        assert_eq!(reply.header_str("source-offset"), Some("1234"));
        assert_eq!(reply.topic, None, "to the configured output topic");
    }

    fn record(value: Option<&str>) -> Record {
        Record {
            topic: "in".to_owned(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![
                Header {
                    key: "trace".to_owned(),
                    value: b"one".to_vec(),
                },
                Header {
                    key: "trace".to_owned(),
                    value: b"two".to_vec(),
                },
                Header {
                    key: "raw".to_owned(),
                    value: vec![0xff],
                },
            ],
            fields: Ok(Vec::new()),
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Txn<'a> {
        id: u64,
        merchant: &'a str,
    }

    #[test]
    fn json_borrows_from_the_value() {
        let record = record(Some(r#"{"id": 7, "merchant": "acme"}"#));
        assert_eq!(
            record.json::<Txn<'_>>(),
            Ok(Txn {
                id: 7,
                merchant: "acme"
            })
        );
    }

    #[test]
    fn json_errors_say_what_is_wrong() {
        let err = |value| record(value).json::<Txn<'_>>().map(|_| ());
        assert_eq!(
            err(None),
            Err(PluginError::InvalidRecord("record has no value".to_owned()))
        );
        assert_eq!(
            err(Some("hello")),
            Err(PluginError::InvalidRecord(
                "value is not valid JSON: expected value at line 1 column 1".to_owned()
            ))
        );
        assert_eq!(
            err(Some(r#"{"id": 7"#)),
            Err(PluginError::InvalidRecord(
                "value is not valid JSON: EOF while parsing an object at line 1 column 8"
                    .to_owned()
            ))
        );
        assert_eq!(
            err(Some(r#"{"id": 7}"#)),
            Err(PluginError::InvalidRecord(
                "value does not match the expected fields: missing field `merchant` at line 1 column 9"
                    .to_owned()
            ))
        );
    }

    /// The SDK parses floats with serde_json's fast path (no `float_roundtrip`): an `f64` may be
    /// off in its last bit, but the `f32` a plugin reads must be the one an exact parse gives.
    #[test]
    fn floats_read_as_f32_equal_an_exact_parse() {
        #[derive(Deserialize)]
        struct Field {
            x: f32,
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in 0..100_000 {
            // Numbers as a JSON encoder writes them: shortest round-trip form, in the ranges of
            // the fraud data (components around zero, times, amounts), and 17 digits.
            let value = match n % 3 {
                0 => (next() - 0.5) * 6.0,
                1 => (next() * 172_792.0).floor() + next(),
                _ => next() * 25_000.0,
            };
            for text in [format!("{value:?}"), format!("{value:.17e}")] {
                let exact = text.parse::<f64>().expect("a float") as f32;
                let record = record(Some(&format!("{{\"x\": {text}}}")));
                let parsed = record.json::<Field>().map(|f| f.x);
                assert_eq!(parsed, Ok(exact), "{text}");
            }
        }
    }

    #[test]
    fn headers_by_name() {
        let record = record(None);
        assert_eq!(record.header("trace"), Some(&b"two"[..]));
        assert_eq!(record.header_str("trace"), Some("two"));
        assert_eq!(record.header("raw"), Some(&[0xff][..]));
        assert_eq!(record.header_str("raw"), None);
        assert_eq!(record.header("absent"), None);
    }

    #[test]
    fn output_json_with_headers_and_topic() {
        let output = Output::json(Some(b"k".to_vec()), &serde_json::json!({"a": 1}))
            .expect("serializable")
            .with_header("offset", 42.to_string())
            .with_header("kind", "score")
            .with_topic("alerts");
        assert_eq!(output.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(output.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(output.header_str("offset"), Some("42"));
        assert_eq!(output.header_str("kind"), Some("score"));
        assert_eq!(output.topic.as_deref(), Some("alerts"));
    }

    #[test]
    fn output_json_reports_unserializable_values() {
        let map = std::collections::BTreeMap::from([((1, 2), "x")]);
        assert!(matches!(
            Output::json(None, &map),
            Err(PluginError::Failed(_))
        ));
    }

    #[test]
    fn request_builder() {
        let tensor = Tensor::f32("x", [1], [1.0]).expect("valid");
        let decision: Decision<()> = Request::new(vec![tensor])
            .with_signature("serving_default")
            .with_outputs(["p"])
            .into();
        let Decision::Infer(request, ()) = decision else {
            panic!("expected an inference request");
        };
        assert_eq!(request.signature.as_deref(), Some("serving_default"));
        assert_eq!(request.output_filter, ["p"]);
        assert_eq!(request.inputs.len(), 1);
    }
}
