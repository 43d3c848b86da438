//! Declared fields: a plugin names the top-level fields of the JSON record value it reads
//! ([`Plugin::fields`](crate::Plugin::fields)), the host parses each record natively and hands
//! them over typed, and [`Record::fields`] reads them by position. The plugin parses nothing.
//!
//! ```ignore
//! fn fields(&self) -> Vec<Field> {
//!     vec![Field::integer("id"), Field::number("amount")]
//! }
//!
//! fn prepare(&self, record: &Record) -> Result<Decision<i64>, PluginError> {
//!     let fields = record.fields()?;
//!     let (id, amount) = (fields.integer(0)?, fields.number(1)?);
//!     // ...
//! }
//! ```

use std::cell::RefCell;
use std::ops::Range;

pub use crate::bindings::streaminfer::plugin::types::{FieldKind, FieldSpec as Field, FieldValue};
use crate::{PluginError, Record};

std::thread_local! {
    /// The names the plugin declared, for messages that say which field is wrong. An instance
    /// runs on one thread; natively, each test thread declares its own.
    static DECLARED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Remembers the declared names, for error messages.
pub(crate) fn declare(fields: &[Field]) {
    DECLARED.with(|d| *d.borrow_mut() = fields.iter().map(|f| f.name.clone()).collect());
}

fn name_of(i: usize) -> String {
    DECLARED.with(|d| match d.borrow().get(i) {
        Some(name) => format!("field `{name}`"),
        None => format!("declared field {}", i + 1),
    })
}

impl Field {
    fn of(name: &str, kind: FieldKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
        }
    }

    /// A JSON number, read as `f64`.
    pub fn number(name: &str) -> Self {
        Self::of(name, FieldKind::Number)
    }

    /// A JSON number without fraction or exponent, read as `i64`.
    pub fn integer(name: &str) -> Self {
        Self::of(name, FieldKind::Integer)
    }

    /// A JSON string.
    pub fn text(name: &str) -> Self {
        Self::of(name, FieldKind::Text)
    }

    /// `true` or `false`.
    pub fn boolean(name: &str) -> Self {
        Self::of(name, FieldKind::Boolean)
    }

    /// Any JSON value, as its text (parse it yourself: objects, arrays).
    pub fn json(name: &str) -> Self {
        Self::of(name, FieldKind::Json)
    }

    /// Numbers named `names`, in that order: e.g. a model's feature columns.
    pub fn numbers<'a>(names: impl IntoIterator<Item = &'a str>) -> impl Iterator<Item = Self> {
        names.into_iter().map(Self::number)
    }
}

/// The declared fields of one record, by position in the declaration.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    values: &'a [FieldValue],
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Number => "a number",
        FieldKind::Integer => "an integer",
        FieldKind::Text => "a string",
        FieldKind::Boolean => "a boolean",
        FieldKind::Json => "a JSON value",
    }
}

impl<'a> Fields<'a> {
    /// Every value, in declaration order.
    pub fn values(&self) -> &'a [FieldValue] {
        self.values
    }

    /// The value at `i`; `None` when absent (missing or `null`).
    ///
    /// # Errors
    /// [`PluginError::InvalidRecord`] when it has another type than declared.
    pub fn get(&self, i: usize) -> Result<Option<&'a FieldValue>, PluginError> {
        match self.values.get(i) {
            None | Some(FieldValue::Absent) => Ok(None),
            Some(FieldValue::Mismatch(found)) => Err(PluginError::InvalidRecord(format!(
                "{} is {found}, not of its declared type",
                name_of(i)
            ))),
            Some(value) => Ok(Some(value)),
        }
    }

    fn required(&self, i: usize, kind: FieldKind) -> Result<&'a FieldValue, PluginError> {
        match self.values.get(i) {
            None | Some(FieldValue::Absent) => Err(PluginError::InvalidRecord(format!(
                "{} is missing",
                name_of(i)
            ))),
            Some(FieldValue::Mismatch(found)) => Err(PluginError::InvalidRecord(format!(
                "{} is {found}, expected {}",
                name_of(i),
                kind_name(kind)
            ))),
            Some(value) => Ok(value),
        }
    }

    fn declared_otherwise(i: usize, kind: FieldKind) -> PluginError {
        PluginError::Failed(format!(
            "{} is read as {} but declared as another kind",
            name_of(i),
            kind_name(kind)
        ))
    }

    /// The number at `i`.
    ///
    /// # Errors
    /// [`PluginError::InvalidRecord`] naming the field when it is missing or not a number;
    /// [`PluginError::Failed`] when it was declared as another kind.
    pub fn number(&self, i: usize) -> Result<f64, PluginError> {
        match self.required(i, FieldKind::Number)? {
            FieldValue::Number(v) => Ok(*v),
            _ => Err(Self::declared_otherwise(i, FieldKind::Number)),
        }
    }

    /// The integer at `i`.
    ///
    /// # Errors
    /// As [`Fields::number`].
    pub fn integer(&self, i: usize) -> Result<i64, PluginError> {
        match self.required(i, FieldKind::Integer)? {
            FieldValue::Integer(v) => Ok(*v),
            _ => Err(Self::declared_otherwise(i, FieldKind::Integer)),
        }
    }

    /// The string at `i`.
    ///
    /// # Errors
    /// As [`Fields::number`].
    pub fn text(&self, i: usize) -> Result<&'a str, PluginError> {
        match self.required(i, FieldKind::Text)? {
            FieldValue::Text(v) => Ok(v),
            _ => Err(Self::declared_otherwise(i, FieldKind::Text)),
        }
    }

    /// The boolean at `i`.
    ///
    /// # Errors
    /// As [`Fields::number`].
    pub fn boolean(&self, i: usize) -> Result<bool, PluginError> {
        match self.required(i, FieldKind::Boolean)? {
            FieldValue::Boolean(v) => Ok(*v),
            _ => Err(Self::declared_otherwise(i, FieldKind::Boolean)),
        }
    }

    /// The JSON text at `i`.
    ///
    /// # Errors
    /// As [`Fields::number`].
    pub fn json(&self, i: usize) -> Result<&'a str, PluginError> {
        match self.required(i, FieldKind::Json)? {
            FieldValue::Json(v) => Ok(v),
            _ => Err(Self::declared_otherwise(i, FieldKind::Json)),
        }
    }

    /// The numbers at `range`, as `f32`: e.g. a model's feature row.
    ///
    /// # Errors
    /// As [`Fields::number`], for the first field that is wrong.
    pub fn f32s(&self, range: Range<usize>) -> Result<Vec<f32>, PluginError> {
        range.map(|i| self.number(i).map(|v| v as f32)).collect()
    }
}

impl Record {
    /// The fields the plugin declared, read by the host from the value.
    ///
    /// # Errors
    /// [`PluginError::InvalidRecord`] when the value is not a JSON object (none, not JSON,
    /// another JSON value), with the host's reason.
    pub fn fields(&self) -> Result<Fields<'_>, PluginError> {
        match &self.fields {
            Ok(values) => Ok(Fields { values }),
            Err(reason) => Err(PluginError::InvalidRecord(reason.clone())),
        }
    }

    /// The record with `declared` read from its value as the host reads them: for a plugin's
    /// unit tests, e.g. `plugin.prepare(&Record::of(json).with_fields(&plugin.fields()))`.
    /// It parses with `serde_json::Value`, slowly; the host's reader is its own and fast.
    #[must_use]
    pub fn with_fields(mut self, declared: &[Field]) -> Self {
        declare(declared);
        self.fields = read(self.value.as_deref(), declared);
        self
    }
}

/// The fields of `value`, as the host gives them.
fn read(value: Option<&[u8]>, declared: &[Field]) -> Result<Vec<FieldValue>, String> {
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = value.ok_or_else(|| "the record has no value".to_owned())?;
    let parsed: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the value is not valid JSON: {e}"))?;
    let serde_json::Value::Object(object) = parsed else {
        return Err("the value is not a JSON object".to_owned());
    };
    Ok(declared
        .iter()
        .map(|field| match object.get(&field.name) {
            None | Some(serde_json::Value::Null) => FieldValue::Absent,
            Some(value) => typed(value, field.kind),
        })
        .collect())
}

fn typed(value: &serde_json::Value, kind: FieldKind) -> FieldValue {
    use serde_json::Value as J;
    let found = match value {
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
        J::Null => return FieldValue::Absent,
    };
    match (kind, value) {
        (FieldKind::Json, v) => FieldValue::Json(v.to_string()),
        (FieldKind::Number, J::Number(n)) => n.as_f64().map_or_else(
            || FieldValue::Mismatch(found.to_owned()),
            FieldValue::Number,
        ),
        (FieldKind::Integer, J::Number(n)) => match n.as_i64() {
            Some(v) => FieldValue::Integer(v),
            None if n.is_f64() => {
                FieldValue::Mismatch("a number with a fraction or an exponent".to_owned())
            }
            None => FieldValue::Mismatch("an integer beyond 64 bits".to_owned()),
        },
        (FieldKind::Text, J::String(s)) => FieldValue::Text(s.clone()),
        (FieldKind::Boolean, &J::Bool(b)) => FieldValue::Boolean(b),
        _ => FieldValue::Mismatch(found.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Field> {
        vec![
            Field::integer("id"),
            Field::number("amount"),
            Field::text("card"),
            Field::boolean("online"),
        ]
    }

    #[test]
    fn fields_read_by_position_with_their_types() {
        let record = Record::of(r#"{"amount": 2.5, "id": 7, "card": "x", "online": false}"#)
            .with_fields(&declared());
        let f = record.fields().expect("an object");
        assert_eq!(f.integer(0), Ok(7));
        assert_eq!(f.number(1), Ok(2.5));
        assert_eq!(f.text(2), Ok("x"));
        assert_eq!(f.boolean(3), Ok(false));
        assert_eq!(f.f32s(1..2), Ok(vec![2.5_f32]));
    }

    #[test]
    fn errors_name_the_field_and_what_is_wrong() {
        let record = Record::of(r#"{"id": "7", "card": null}"#).with_fields(&declared());
        let f = record.fields().expect("an object");
        assert_eq!(
            f.integer(0),
            Err(PluginError::InvalidRecord(
                "field `id` is a string, expected an integer".to_owned()
            ))
        );
        assert_eq!(
            f.number(1),
            Err(PluginError::InvalidRecord(
                "field `amount` is missing".to_owned()
            ))
        );
        assert_eq!(f.get(2), Ok(None), "null is absent");
        assert!(matches!(f.text(1), Err(PluginError::InvalidRecord(_))));
        let not_json = Record::of("{").with_fields(&declared());
        assert!(
            matches!(not_json.fields(), Err(PluginError::InvalidRecord(m)) if m.contains("not valid JSON"))
        );
    }

    #[test]
    fn reading_a_field_as_another_kind_than_declared_is_the_plugins_fault() {
        let record = Record::of(r#"{"id": 7}"#).with_fields(&declared());
        let f = record.fields().expect("an object");
        assert!(matches!(f.number(0), Err(PluginError::Failed(_))));
    }
}
