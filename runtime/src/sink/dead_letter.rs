//! Dead letters that always fit. A dead letter carries its input's key, value and headers
//! byte for byte, plus headers saying why and where from; an input near the size limit plus
//! those headers would be refused by the broker client, and a runtime that stops on it stops
//! again after every restart. So a dead letter that would not fit is cut to fit: first the
//! value is truncated, then the input's headers are dropped, then the key, each cut said in a
//! header with the size and SHA-256 of what was cut, so the original can be recognised and
//! fetched from the input topic (its partition and offset are in the headers too).
//!
//! Should the broker refuse even that (its own limit may be lower than the client's), the
//! dead letter is sent again in its [`Form::Minimal`] form: the reason, the origin and the
//! digests only.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::contract::InputRecord;
use crate::failure::Failure;
use crate::kafka::headers::RawHeader;

/// What a header costs beyond its key and value on the wire, rounded up.
const HEADER_OVERHEAD: usize = 16;
/// Room left for the record's own framing within `message.max.bytes`.
const MARGIN: usize = 1024;
/// The longest `dead-letter-message` kept; a plugin's error may be of any length.
pub(super) const MESSAGE_CAP: usize = 4096;

/// How much of its input a dead letter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Key, value and headers, cut only as much as the size limit needs.
    Full,
    /// No key, value or input headers: what the broker always takes.
    Minimal,
}

/// A dead letter ready to produce.
#[derive(Debug)]
pub(super) struct Letter<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) value: Option<&'a [u8]>,
    pub(super) headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// The runtime's own headers, after the input's.
    pub(super) notes: Vec<(&'static str, Vec<u8>)>,
}

impl Letter<'_> {
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + HEADER_OVERHEAD)
            .sum();
        let notes: usize = self
            .notes
            .iter()
            .map(|(k, v)| k.len() + v.len() + HEADER_OVERHEAD)
            .sum();
        self.key.map_or(0, <[u8]>::len) + self.value.map_or(0, <[u8]>::len) + headers + notes
    }
}

/// The dead letter of `input`, cut to fit within `limit` bytes (`message.max.bytes`).
pub(super) fn shape<'a>(
    input: &'a InputRecord,
    exact: Option<&'a [RawHeader]>,
    failure: &Failure,
    plugin_digest: &str,
    limit: usize,
    form: Form,
) -> Letter<'a> {
    let headers: Vec<(&[u8], Option<&[u8]>)> = match exact {
        Some(raw) => raw
            .iter()
            .map(|h| (h.key.as_slice(), h.value.as_deref()))
            .collect(),
        None => input
            .headers
            .iter()
            .map(|h| (h.key.as_bytes(), Some(h.value.as_slice())))
            .collect(),
    };
    let mut letter = Letter {
        key: input.key.as_deref(),
        value: input.value.as_deref(),
        headers,
        notes: vec![
            (
                "dead-letter-reason",
                failure.reason.code().as_bytes().to_vec(),
            ),
            ("dead-letter-message", capped(&failure.message).into_bytes()),
            (
                "dead-letter-fault",
                failure.fault().as_str().as_bytes().to_vec(),
            ),
            ("source-topic", input.topic.as_bytes().to_vec()),
            ("source-partition", input.partition.to_string().into_bytes()),
            ("source-offset", input.offset.to_string().into_bytes()),
            (
                super::PLUGIN_DIGEST_HEADER,
                plugin_digest.as_bytes().to_vec(),
            ),
        ],
    };
    let budget = limit.saturating_sub(MARGIN);
    if form == Form::Full && letter.size() <= budget {
        return letter;
    }
    let mut cuts = Vec::new();
    if let Some(value) = letter.value {
        letter
            .notes
            .push(("dead-letter-value-sha256", sha256(value)));
    }
    let headers = letter.headers.len();
    if form == Form::Minimal || without_value(&letter) > budget {
        letter.headers.clear();
        if headers > 0 {
            cuts.push(format!("{headers} input headers dropped"));
        }
    }
    if let Some(key) = letter.key
        && (form == Form::Minimal || without_value(&letter) > budget)
    {
        letter.notes.push(("dead-letter-key-sha256", sha256(key)));
        letter.key = None;
        cuts.push(format!("key of {} bytes dropped", key.len()));
    }
    let why = match form {
        Form::Full => format!("over the {limit}-byte limit"),
        Form::Minimal => "the broker refused the full dead letter".to_owned(),
    };
    let said = |kept: Option<(usize, usize)>| {
        let value = kept.map(|(kept, of)| format!("value: {kept} of {of} bytes kept"));
        let parts: Vec<&str> = value
            .iter()
            .chain(&cuts)
            .chain([&why])
            .map(String::as_str)
            .collect();
        parts.join("; ").into_bytes()
    };
    let whole = letter.value.map(<[u8]>::len);
    // Said with the whole length first: the kept length has no more digits, so measuring with
    // this note in place leaves room for the final one.
    letter
        .notes
        .push(("dead-letter-truncated", said(whole.map(|n| (n, n)))));
    if let Some(value) = letter.value {
        let room = match form {
            Form::Full => budget.saturating_sub(without_value(&letter)),
            Form::Minimal => 0,
        };
        let kept = room.min(value.len());
        letter.value = Some(&value[..kept]);
        if let Some(note) = letter.notes.last_mut() {
            note.1 = said(Some((kept, value.len())));
        }
    }
    letter
}

fn without_value(letter: &Letter<'_>) -> usize {
    letter.size() - letter.value.map_or(0, <[u8]>::len)
}

fn capped(message: &str) -> String {
    if message.len() <= MESSAGE_CAP {
        return message.to_owned();
    }
    let mut end = MESSAGE_CAP;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &message[..end], message.len())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::contract::Header;
    use crate::failure::Reason;

    fn input(key: usize, value: usize, headers: usize) -> InputRecord {
        InputRecord {
            topic: Arc::from("in"),
            partition: 2,
            offset: 40,
            timestamp: None,
            key: Some(vec![b'k'; key]),
            value: Some(vec![b'v'; value]),
            headers: (0..headers)
                .map(|i| Header {
                    key: format!("h{i}"),
                    value: vec![b'x'; 100],
                })
                .collect(),

            fields: crate::contract::NO_FIELDS,
        }
    }

    fn failure() -> Failure {
        Failure::new(Reason::InvalidRecord, "not JSON")
    }

    fn note<'a>(letter: &'a Letter<'_>, key: &str) -> Option<&'a str> {
        letter
            .notes
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    #[test]
    fn a_letter_that_fits_is_the_input_byte_for_byte_with_no_cut() {
        let record = input(3, 1000, 2);
        let letter = shape(
            &record,
            None,
            &failure(),
            "sha256:ab",
            1_000_000,
            Form::Full,
        );
        assert_eq!(letter.value, record.value.as_deref());
        assert_eq!(letter.key, record.key.as_deref());
        assert_eq!(letter.headers.len(), 2);
        assert_eq!(note(&letter, "dead-letter-truncated"), None);
        assert_eq!(note(&letter, "source-offset"), Some("40"));
    }

    #[test]
    fn a_value_at_the_limit_is_truncated_to_fit_with_its_digest() {
        let record = input(3, 1_000_000, 2);
        let letter = shape(
            &record,
            None,
            &failure(),
            "sha256:ab",
            1_000_000,
            Form::Full,
        );
        assert!(letter.size() <= 1_000_000 - MARGIN, "{}", letter.size());
        let kept = letter.value.map_or(0, <[u8]>::len);
        assert!(kept > 990_000, "only {kept} bytes kept");
        assert_eq!(
            letter.headers.len(),
            2,
            "headers kept when the value alone is cut"
        );
        let truncated = note(&letter, "dead-letter-truncated").expect("said");
        assert!(
            truncated.starts_with(&format!("value: {kept} of 1000000 bytes kept")),
            "{truncated}"
        );
        assert_eq!(
            note(&letter, "dead-letter-value-sha256"),
            std::str::from_utf8(&sha256(&vec![b'v'; 1_000_000])).ok()
        );
    }

    #[test]
    fn huge_headers_and_key_are_dropped_and_said() {
        let record = input(600_000, 10, 6_000);
        let letter = shape(&record, None, &failure(), "d", 500_000, Form::Full);
        assert!(letter.size() <= 500_000 - MARGIN);
        assert!(letter.headers.is_empty() && letter.key.is_none());
        let truncated = note(&letter, "dead-letter-truncated").expect("said");
        assert!(
            truncated.contains("6000 input headers dropped"),
            "{truncated}"
        );
        assert!(
            truncated.contains("key of 600000 bytes dropped"),
            "{truncated}"
        );
        assert!(note(&letter, "dead-letter-key-sha256").is_some());
    }

    #[test]
    fn the_minimal_form_keeps_only_reason_origin_and_digests() {
        let record = input(3, 50, 1);
        let letter = shape(&record, None, &failure(), "d", 1_000_000, Form::Minimal);
        assert_eq!(letter.value.map(<[u8]>::len), Some(0));
        assert!(letter.key.is_none() && letter.headers.is_empty());
        assert_eq!(note(&letter, "dead-letter-reason"), Some("invalid-record"));
        assert!(
            note(&letter, "dead-letter-truncated").is_some_and(|t| t.contains("broker refused"))
        );
    }

    #[test]
    fn a_long_message_is_capped_on_a_character_boundary() {
        let long = "é".repeat(MESSAGE_CAP);
        let capped = capped(&long);
        assert!(capped.len() < MESSAGE_CAP + 40);
        assert!(capped.ends_with(&format!("({} bytes in all)", long.len())));
    }
}
