//! Declared fields: the host reads the top-level fields a plugin names from each record's JSON
//! value, natively and in one pass, and hands them over typed, so the plugin parses nothing.
//!
//! Keys the plugin did not declare are skipped without being built; a declared key found twice
//! makes the record invalid (which of the two would the model see?). Numbers are parsed by serde_json, with
//! the same algorithm a plugin built on the SDK used before: `value as f32` of a `number` equals
//! serde's own `f32` parse of the text.

use std::collections::HashMap;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::contract::{FieldKind, FieldSpec, FieldValue, Fields, NO_FIELDS};

/// What one plugin declared, ready to read records with.
#[derive(Debug, Clone, Default)]
pub struct FieldReader {
    kinds: Vec<FieldKind>,
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl FieldReader {
    /// A reader of `specs`, in their order.
    ///
    /// # Errors
    /// Every name declared more than once, or empty.
    pub fn new(specs: &[FieldSpec]) -> Result<Self, String> {
        let mut index = HashMap::with_capacity(specs.len());
        let mut problems = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.name.is_empty() {
                problems.push(format!("field {} has an empty name", i + 1));
            } else if index.insert(spec.name.clone(), i).is_some() {
                problems.push(format!("field `{}` is declared twice", spec.name));
            }
        }
        if problems.is_empty() {
            Ok(Self {
                kinds: specs.iter().map(|s| s.kind).collect(),
                names: specs.iter().map(|s| s.name.clone()).collect(),
                index,
            })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Whether nothing is declared: records are then handed over unread.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The declared fields of one record's value.
    pub fn read(&self, value: Option<&[u8]>) -> Fields {
        if self.is_empty() {
            return NO_FIELDS;
        }
        let Some(bytes) = value else {
            return Err("the record has no value".to_owned());
        };
        let mut values = vec![FieldValue::Absent; self.kinds.len()];
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        reader
            .deserialize_any(Object {
                reader: self,
                values: &mut values,
            })
            .and_then(|()| reader.end())
            .map_err(|e| describe(&e))?;
        Ok(values)
    }
}

fn describe(error: &serde_json::Error) -> String {
    if error.is_syntax() || error.is_eof() {
        format!("the value is not valid JSON: {error}")
    } else if error.to_string().contains(OBJECT) {
        format!("the value is not {OBJECT}: {error}")
    } else {
        format!("the value does not fit the declared fields: {error}")
    }
}

const OBJECT: &str = "a JSON object";

/// The top level: an object whose declared keys fill `values`.
struct Object<'a> {
    reader: &'a FieldReader,
    values: &'a mut [FieldValue],
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(OBJECT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::new(self.values.len());
        // Records of a stream are mostly written alike: the declared field after the last one
        // found is tried first, before the map.
        let mut next = 0;
        while let Some(slot) = map.next_key_seed(Key {
            reader: self.reader,
            guess: next,
        })? {
            if let Some(i) = slot {
                next = i + 1;
            }
            match slot {
                Some(i) if seen.again(i) => {
                    return Err(de::Error::custom(format!(
                        "field `{}` appears twice",
                        self.reader.names[i]
                    )));
                }
                Some(i) => {
                    self.values[i] = map.next_value_seed(Value(self.reader.kinds[i]))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Which declared fields a record named already: bits of a word up to 64 of them (no
/// allocation per record), a vector beyond.
enum Seen {
    Few(u64),
    Many(Vec<bool>),
}

impl Seen {
    fn new(fields: usize) -> Self {
        if fields <= 64 {
            Self::Few(0)
        } else {
            Self::Many(vec![false; fields])
        }
    }

    /// Notes field `i`; whether it was named before.
    fn again(&mut self, i: usize) -> bool {
        match self {
            Self::Few(bits) => {
                let bit = 1u64 << i;
                let before = *bits & bit != 0;
                *bits |= bit;
                before
            }
            Self::Many(flags) => std::mem::replace(&mut flags[i], true),
        }
    }
}

/// A key: the index of its declaration, if any, found without building the key; `guess` is
/// the declaration tried first.
struct Key<'a> {
    reader: &'a FieldReader,
    guess: usize,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        if self.reader.names.get(self.guess).is_some_and(|n| n == key) {
            return Ok(Some(self.guess));
        }
        Ok(self.reader.index.get(key).copied())
    }
}

/// A declared field's value, read as its kind says.
struct Value(FieldKind);

impl<'de> DeserializeSeed<'de> for Value {
    type Value = FieldValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        match self.0 {
            FieldKind::Json => {
                let raw: &RawValue = serde::Deserialize::deserialize(d)?;
                Ok(match raw.get() {
                    "null" => FieldValue::Absent,
                    text => FieldValue::Json(text.to_owned()),
                })
            }
            kind => d.deserialize_any(Typed(kind)),
        }
    }
}

/// Any JSON value, turned into the declared kind or a mismatch saying what it is.
struct Typed(FieldKind);

fn mismatch(found: &str) -> FieldValue {
    FieldValue::Mismatch(found.to_owned())
}

impl<'de> Visitor<'de> for Typed {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Absent)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(match self.0 {
            FieldKind::Boolean => FieldValue::Boolean(v),
            _ => mismatch("a boolean"),
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(match self.0 {
            FieldKind::Integer => FieldValue::Integer(v),
            FieldKind::Number => FieldValue::Number(v as f64),
            _ => mismatch("a number"),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(match (self.0, i64::try_from(v)) {
            (FieldKind::Integer, Ok(v)) => FieldValue::Integer(v),
            (FieldKind::Integer, Err(_)) => mismatch("an integer beyond 64 bits"),
            (FieldKind::Number, _) => FieldValue::Number(v as f64),
            _ => mismatch("a number"),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(match self.0 {
            FieldKind::Number => FieldValue::Number(v),
            FieldKind::Integer => mismatch("a number with a fraction or an exponent"),
            _ => mismatch("a number"),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(match self.0 {
            FieldKind::Text => FieldValue::Text(v.to_owned()),
            _ => mismatch("a string"),
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(match self.0 {
            FieldKind::Text => FieldValue::Text(v),
            _ => mismatch("a string"),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(mismatch("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(mismatch("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: FieldKind) -> FieldSpec {
        FieldSpec {
            name: name.to_owned(),
            kind,
        }
    }

    fn reader() -> FieldReader {
        FieldReader::new(&[
            spec("id", FieldKind::Integer),
            spec("amount", FieldKind::Number),
            spec("card", FieldKind::Text),
            spec("online", FieldKind::Boolean),
            spec("extra", FieldKind::Json),
        ])
        .expect("distinct names")
    }

    #[test]
    fn declared_fields_come_typed_in_declaration_order_and_others_are_skipped() {
        let json = br#"{"online": true, "skip": {"deep": [1, 2, {"x": "y"}]}, "amount": 12.5,
            "card": "4\u00e9", "id": 42, "extra": {"a": [1, 2]}}"#;
        assert_eq!(
            reader().read(Some(json)),
            Ok(vec![
                FieldValue::Integer(42),
                FieldValue::Number(12.5),
                FieldValue::Text("4é".to_owned()),
                FieldValue::Boolean(true),
                FieldValue::Json(r#"{"a": [1, 2]}"#.to_owned()),
            ])
        );
    }

    #[test]
    fn missing_or_null_fields_are_absent_and_wrong_types_say_what_they_are() {
        let json = br#"{"id": 1.5, "amount": "12", "card": null, "online": [true]}"#;
        assert_eq!(
            reader().read(Some(json)),
            Ok(vec![
                FieldValue::Mismatch("a number with a fraction or an exponent".to_owned()),
                FieldValue::Mismatch("a string".to_owned()),
                FieldValue::Absent,
                FieldValue::Mismatch("an array".to_owned()),
                FieldValue::Absent,
            ])
        );
        let big = br#"{"id": 18446744073709551615, "amount": 18446744073709551615}"#;
        let values = reader().read(Some(big)).expect("an object");
        assert_eq!(
            values[0],
            FieldValue::Mismatch("an integer beyond 64 bits".to_owned())
        );
        assert_eq!(values[1], FieldValue::Number(18_446_744_073_709_551_615.0));
    }

    #[test]
    fn a_value_that_is_no_json_object_is_an_error_saying_why_and_where() {
        let r = reader();
        assert_eq!(r.read(None), Err("the record has no value".to_owned()));
        let broken = r
            .read(Some(b"{\"id\": 1,\n \"amount\": }"))
            .expect_err("not JSON");
        assert!(
            broken.starts_with("the value is not valid JSON"),
            "{broken}"
        );
        assert!(broken.contains("line 2"), "{broken}");
        let array = r.read(Some(b"[1, 2]")).expect_err("an array");
        assert!(
            array.starts_with("the value is not a JSON object"),
            "{array}"
        );
        let trailing = r.read(Some(b"{\"id\": 1} x")).expect_err("trailing data");
        assert!(trailing.contains("trailing"), "{trailing}");
    }

    #[test]
    fn a_declared_key_given_twice_is_refused_and_nothing_declared_reads_nothing() {
        let twice = reader()
            .read(Some(br#"{"id": 1, "skip": 0, "skip": 1, "id": 2}"#))
            .expect_err("ambiguous");
        assert!(
            twice.starts_with(
                "the value does not fit the declared fields: field `id` appears twice"
            ),
            "{twice}"
        );
        let none = FieldReader::new(&[]).expect("empty");
        assert_eq!(none.read(Some(b"not json at all")), Ok(Vec::new()));
    }

    #[test]
    fn more_than_64_fields_are_read_and_checked_alike() {
        let specs: Vec<FieldSpec> = (0..70)
            .map(|i| spec(&format!("f{i}"), FieldKind::Integer))
            .collect();
        let r = FieldReader::new(&specs).expect("distinct names");
        let json = format!(
            "{{{}}}",
            (0..70)
                .map(|i| format!(r#""f{i}": {i}"#))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let values = r.read(Some(json.as_bytes())).expect("an object");
        assert_eq!(values[69], FieldValue::Integer(69));
        let twice = r
            .read(Some(br#"{"f68": 1, "f68": 2}"#))
            .expect_err("f68 twice");
        assert!(twice.contains("field `f68` appears twice"), "{twice}");
    }

    #[test]
    fn names_must_be_distinct_and_not_empty() {
        let problems = FieldReader::new(&[
            spec("a", FieldKind::Number),
            spec("", FieldKind::Text),
            spec("a", FieldKind::Integer),
        ])
        .expect_err("two problems");
        assert_eq!(
            problems,
            "field 2 has an empty name; field `a` is declared twice"
        );
    }

    #[test]
    fn numbers_agree_with_an_f32_parse_of_the_text() {
        let r = FieldReader::new(&[spec("v", FieldKind::Number)]).expect("one field");
        for text in [
            "-1.3598071336738",
            "0.0000001",
            "149.62",
            "1e-7",
            "3.4028235e38",
            "-0",
        ] {
            let json = format!(r#"{{"v": {text}}}"#);
            let Ok(values) = r.read(Some(json.as_bytes())) else {
                panic!("{json} is an object");
            };
            let FieldValue::Number(v) = values[0] else {
                panic!("{json}: {values:?}");
            };
            let direct: f32 = serde_json::from_str(text).expect("a number");
            assert_eq!((v as f32).to_bits(), direct.to_bits(), "{text}");
        }
    }
}
