//! Record headers as the broker holds them: keys and values as bytes.
//!
//! Kafka's header keys are bytes on the wire, but rdkafka's header types hold a key as `&str`:
//! reading a key that is not UTF-8 panics inside rdkafka (`to_str().unwrap()`), and writing one is
//! impossible. A record with such a key would kill the reader and could not be dead-lettered
//! byte for byte. This module reads and writes headers through librdkafka's C API directly, which
//! takes a key as a pointer and a length. It is the only unsafe code of the runtime.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::ptr;

use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedHeaders};
use rdkafka::types::RDKafkaRespErr;

/// One header as the broker holds it. A value may be null, which is not the same as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The headers of `message`, in order, duplicates included.
pub fn read(message: &BorrowedMessage<'_>) -> Vec<RawHeader> {
    let mut headers: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `message.ptr()` is valid while `message` is borrowed; librdkafka writes a pointer
    // to headers owned by the message (or reports that there are none).
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: `headers` is the message's own, valid while the message is.
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    let mut read = Vec::with_capacity(count);
    for index in 0..count {
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size: usize = 0;
        // SAFETY: `index` is below the count; librdkafka points `name` at a NUL-terminated key
        // and `value` at `size` bytes (or null), both owned by the headers.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: as above; both are copied before the message can go away.
        let key = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec());
        read.push(RawHeader { key, value });
    }
    read
}

/// Headers to produce, built from keys as bytes.
#[derive(Debug)]
pub struct Builder {
    headers: OwnedHeaders,
}

impl Builder {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            headers: OwnedHeaders::new_with_capacity(capacity),
        }
    }

    /// Appends a header; a `None` value is a null value.
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        let (value_ptr, value_len) = match value {
            Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
            None => (ptr::null(), 0),
        };
        let raw = ptr::from_ref::<BorrowedHeaders>(self.headers.as_borrowed())
            .cast_mut()
            .cast::<rdsys::rd_kafka_headers_t>();
        // SAFETY: `raw` is the pointer the `OwnedHeaders` wraps (its borrowed view is that same
        // pointer, cast), which we own and may add to; librdkafka copies key and value.
        let err = unsafe {
            rdsys::rd_kafka_header_add(
                raw,
                key.as_ptr().cast::<c_char>(),
                key.len() as isize,
                value_ptr,
                value_len,
            )
        };
        // Adding fails only on read-only headers, which these never are.
        debug_assert_eq!(err, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    pub fn build(self) -> OwnedHeaders {
        self.headers
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn keys_that_are_not_utf8_and_null_values_are_written_as_given() {
        let mut builder = Builder::with_capacity(3);
        builder.add(b"plain", Some(b"v"));
        builder.add(&[0xff, 0xfe, b'k'], Some(&[0, 159, 146, 150]));
        builder.add(b"null", None);
        builder.add(b"empty", Some(b""));
        let headers = builder.build();
        assert_eq!(headers.count(), 4);
        let raw = ptr::from_ref::<BorrowedHeaders>(headers.as_borrowed())
            .cast_mut()
            .cast::<rdsys::rd_kafka_headers_t>();
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size = 0usize;
        let err =
            unsafe { rdsys::rd_kafka_header_get_all(raw, 1, &mut name, &mut value, &mut size) };
        assert_eq!(err, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_eq!(
            unsafe { CStr::from_ptr(name) }.to_bytes(),
            [0xff, 0xfe, b'k']
        );
        assert_eq!(
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) },
            [0, 159, 146, 150]
        );
        assert_eq!(headers.get(2).value, None, "null stays null");
        assert_eq!(headers.get(3).value, Some(&b""[..]), "empty stays empty");
    }
}
