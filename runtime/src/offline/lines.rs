//! The JSON lines `replay` writes: an output record or a dead letter per line, losing nothing
//! (values and keys that are not UTF-8 in base64, every header in order).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::contract::{InputRecord, OutputRecord};
use crate::failure::Failure;

/// Bytes as they go into a JSON line: the document itself when they hold one, written verbatim
/// (numbers print exactly as the plugin wrote them) when it is on one line, re-written compactly
/// when it spans several (a line holds one record); else the text, else null.
#[derive(Serialize)]
#[serde(untagged)]
enum Embedded {
    Document(Box<RawValue>),
    Reformatted(serde_json::Value),
    Text(String),
    Null,
}

fn bytes_json(bytes: Option<&[u8]>) -> Embedded {
    let Some(bytes) = bytes else {
        return Embedded::Null;
    };
    match std::str::from_utf8(bytes) {
        Ok(text) if text.trim().contains(['\n', '\r']) => serde_json::from_str(text)
            .map_or_else(|_| Embedded::Text(text.to_owned()), Embedded::Reformatted),
        Ok(text) => RawValue::from_string(text.trim().to_owned())
            .map_or_else(|_| Embedded::Text(text.to_owned()), Embedded::Document),
        Err(_) => Embedded::Text(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// One JSON line; the line types hold only strings, numbers and string-keyed maps, which always
/// serialize, but a failure still yields a line that says so rather than a panic.
fn json_line(line: &impl Serialize) -> String {
    serde_json::to_string(line).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// Bytes as a line shows them without loss: `Shown` (JSON or text, under the field's own
/// name) when they are UTF-8, else base64 under `<name>_base64`.
enum Lossless {
    Shown(Embedded),
    Base64(String),
}

fn lossless(bytes: Option<&[u8]>) -> Lossless {
    match bytes {
        Some(b) if std::str::from_utf8(b).is_err() => Lossless::Base64(base64(b)),
        other => Lossless::Shown(bytes_json(other)),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A header of an output record, in order, duplicates kept; a value that is not UTF-8 in
/// base64.
#[derive(Serialize)]
struct HeaderLine<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

impl<'a> HeaderLine<'a> {
    fn of(key: &'a str, value: &'a [u8]) -> Self {
        match std::str::from_utf8(value) {
            Ok(text) => Self {
                key,
                value: Some(text),
                value_base64: None,
            },
            Err(_) => Self {
                key,
                value: None,
                value_base64: Some(base64(value)),
            },
        }
    }
}

/// One output record of a replay, as a JSON line: the key and value as they are (JSON embedded
/// when it is JSON, text as a string, anything else in base64 under `key_base64` or
/// `value_base64`), and every header in order, the `plugin-digest` the stream adds last.
#[derive(Serialize)]
struct OutputLine<'a> {
    line: i64,
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    headers: Vec<HeaderLine<'a>>,
}

/// One dead letter of a replay, as a JSON line; the value as [`OutputLine`] has it.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    line: i64,
    reason: &'a str,
    fault: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// The field and its `_base64` twin, one of them set.
fn fields(bytes: Option<&[u8]>) -> (Option<Embedded>, Option<String>) {
    match lossless(bytes) {
        Lossless::Shown(shown) => (Some(shown), None),
        Lossless::Base64(encoded) => (None, Some(encoded)),
    }
}

pub(super) fn output_line(
    input: &InputRecord,
    output: &OutputRecord,
    plugin_digest: &str,
) -> String {
    let (key, key_base64) = match output.key.as_deref() {
        // A key is shown as text, not as JSON: keys are rarely documents.
        Some(k) => match std::str::from_utf8(k) {
            Ok(text) => (Some(Embedded::Text(text.to_owned())), None),
            Err(_) => (None, Some(base64(k))),
        },
        None => (Some(Embedded::Null), None),
    };
    let (value, value_base64) = fields(output.value.as_deref());
    let mut headers: Vec<HeaderLine<'_>> = output
        .headers
        .iter()
        .map(|h| HeaderLine::of(&h.key, &h.value))
        .collect();
    headers.push(HeaderLine::of(
        crate::sink::PLUGIN_DIGEST_HEADER,
        plugin_digest.as_bytes(),
    ));
    let line = OutputLine {
        line: input.offset,
        topic: output.topic.as_deref(),
        key,
        key_base64,
        value,
        value_base64,
        headers,
    };
    json_line(&line)
}

pub(super) fn dead_letter_line(input: &InputRecord, failure: &Failure) -> String {
    let (value, value_base64) = fields(input.value.as_deref());
    let line = DeadLetterLine {
        line: input.offset,
        reason: failure.reason.code(),
        fault: failure.fault().as_str(),
        message: &failure.message,
        value,
        value_base64,
    };
    json_line(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(bytes: &[u8]) -> String {
        json_line(&bytes_json(Some(bytes)))
    }

    #[test]
    fn a_document_on_one_line_is_kept_verbatim_and_one_on_several_is_made_one_line() {
        assert_eq!(
            embedded(br#" {"score":0.10000000149}"#),
            r#"{"score":0.10000000149}"#
        );
        let pretty = embedded(b"{\n  \"id\": 7,\r\n  \"ok\": true\n}\n");
        assert_eq!(pretty, r#"{"id":7,"ok":true}"#);
        assert!(!pretty.contains('\n'));
    }

    #[test]
    fn text_that_is_not_json_stays_text() {
        assert_eq!(embedded(b"not json\nat all"), r#""not json\nat all""#);
        assert_eq!(json_line(&bytes_json(None)), "null");
    }

    fn input(value: &[u8]) -> InputRecord {
        InputRecord {
            topic: "file:in".into(),
            partition: 0,
            offset: 3,
            timestamp: None,
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
            fields: crate::contract::NO_FIELDS,
        }
    }

    #[test]
    fn an_output_line_loses_nothing() {
        let output = OutputRecord {
            key: Some(vec![0xff, 0x00]),
            value: Some(vec![0xfe, b'a']),
            headers: vec![
                crate::contract::Header {
                    key: "h".into(),
                    value: b"1".to_vec(),
                },
                crate::contract::Header {
                    key: "h".into(),
                    value: vec![0x80],
                },
            ],
            topic: None,
        };
        let line: serde_json::Value =
            serde_json::from_str(&output_line(&input(b"x"), &output, "sha256:ab")).expect("JSON");
        assert_eq!(line["key_base64"], "/wA=");
        assert_eq!(line["value_base64"], "/mE=");
        assert!(line.get("value").is_none() && line.get("key").is_none());
        assert_eq!(
            line["headers"],
            serde_json::json!([
                {"key": "h", "value": "1"},
                {"key": "h", "value_base64": "gA=="},
                {"key": "plugin-digest", "value": "sha256:ab"},
            ]),
            "in order, duplicates kept, the digest last"
        );
        let text = OutputRecord {
            key: Some(b"k".to_vec()),
            value: Some(br#"{"score": 0.5}"#.to_vec()),
            headers: Vec::new(),
            topic: Some("audit".into()),
        };
        let line: serde_json::Value =
            serde_json::from_str(&output_line(&input(b"x"), &text, "d")).expect("JSON");
        assert_eq!(
            (&line["key"], &line["value"]["score"]),
            (&"k".into(), &0.5.into())
        );
    }

    #[test]
    fn a_dead_letter_line_keeps_a_binary_value() {
        let failure = Failure::new(crate::failure::Reason::InvalidRecord, "not JSON");
        let line: serde_json::Value =
            serde_json::from_str(&dead_letter_line(&input(&[0xff]), &failure)).expect("JSON");
        assert_eq!(line["value_base64"], "/w==");
        assert_eq!(line["reason"], "invalid-record");
    }
}
