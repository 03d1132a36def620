//! Reading the fields of a JSON object into typed Rust for rules that decide in their own
//! order: how the ingest modules take a field from what a client sent.
//!
//! A struct of [`Slot`]s is derived with serde. A slot keeps whatever JSON its field held,
//! its strings borrowed from the text where they can be, and reading one never fails, so
//! the rules that follow decide in their own order and word their own refusals, whatever
//! order the fields came in. Read from a message's text, the derived struct refuses what
//! it cannot hold (a key it does not name, a key given twice, text that is not a JSON
//! object); then the message is read as a JSON tree and the same struct filled from it
//! ([`fill`]), the keys it does not name kept in [`Unknown`], and the same rules decide.
//! So the common message is read without a tree, and the odd one as it always was.
//!
//! Pure: no IO, no state.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

use crate::error::HubError;

/// Words a refusal about a field: `invalid_event` naming it for an event's fields,
/// `bad_request` for a frame's.
pub(crate) type Refuse = fn(&str, String) -> HubError;

/// One field of an object as it arrived: absent, `null`, or its JSON value.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Slot<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Value>),
    Object(Map<String, Value>),
}

impl<'a> Slot<'a> {
    /// The slot's value, leaving the field absent: a rule takes its field, so that what is
    /// left at the end is what no rule took.
    pub(crate) fn take(&mut self) -> Slot<'a> {
        std::mem::take(self)
    }

    /// Whether the object had the field at all (`null` included).
    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Slot::Absent)
    }

    /// Whether the field is absent or `null`, which most fields take to mean "not given".
    pub(crate) fn is_absent_or_null(&self) -> bool {
        matches!(self, Slot::Absent | Slot::Null)
    }

    /// The number, when the field holds a non-negative integer.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Slot::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The number, when the field holds an integer that fits an `i64`.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Slot::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The field's value as a JSON tree, or None when it is absent.
    pub(crate) fn into_value(self) -> Option<Value> {
        Some(match self {
            Slot::Absent => return None,
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(b),
            Slot::Number(n) => Value::Number(n),
            Slot::Str(s) => Value::String(s.into_owned()),
            Slot::Array(items) => Value::Array(items),
            Slot::Object(fields) => Value::Object(fields),
        })
    }

    /// A string, or None when the field is absent or `null`.
    pub(crate) fn optional_str(
        self,
        field: &str,
        refuse: Refuse,
    ) -> Result<Option<Cow<'a, str>>, HubError> {
        match self {
            Slot::Absent | Slot::Null => Ok(None),
            Slot::Str(text) => Ok(Some(text)),
            _ => Err(refuse(field, format!("`{field}` must be a string"))),
        }
    }

    /// An object, or None when the field is absent or `null`.
    pub(crate) fn optional_object(
        self,
        field: &str,
        refuse: Refuse,
    ) -> Result<Option<Map<String, Value>>, HubError> {
        match self {
            Slot::Absent | Slot::Null => Ok(None),
            Slot::Object(object) => Ok(Some(object)),
            _ => Err(refuse(field, format!("`{field}` must be an object"))),
        }
    }

    /// A boolean, false when the field is absent or `null`.
    pub(crate) fn optional_bool(self, field: &str, refuse: Refuse) -> Result<bool, HubError> {
        match self {
            Slot::Absent | Slot::Null => Ok(false),
            Slot::Bool(b) => Ok(b),
            _ => Err(refuse(field, format!("`{field}` must be true or false"))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Slot<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Slot<'a>, D::Error> {
        deserializer.deserialize_any(SlotVisitor(PhantomData))
    }
}

struct SlotVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for SlotVisitor<'a> {
    type Value = Slot<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Slot<'a>, E> {
        Ok(Slot::Null)
    }

    fn visit_none<E>(self) -> Result<Slot<'a>, E> {
        Ok(Slot::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Slot<'a>, D::Error> {
        Slot::deserialize(deserializer)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Slot<'a>, E> {
        Ok(Slot::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Slot<'a>, E> {
        Ok(Slot::Number(n.into()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Slot<'a>, E> {
        Ok(Slot::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Slot<'a>, E> {
        // JSON has no infinities or NaN, so every number it holds is a `Number`.
        Ok(Number::from_f64(n).map_or(Slot::Null, Slot::Number))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Slot<'a>, E> {
        Ok(Slot::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Slot<'a>, E> {
        Ok(Slot::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Slot<'a>, E> {
        Ok(Slot::Str(Cow::Owned(text)))
    }

    // Arrays and objects are read as a JSON tree reads them, so that they hold exactly what
    // the tree would.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot<'a>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Slot::from)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot<'a>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Slot::from)
    }
}

impl From<Value> for Slot<'_> {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Slot::Null,
            Value::Bool(b) => Slot::Bool(b),
            Value::Number(n) => Slot::Number(n),
            Value::String(s) => Slot::Str(Cow::Owned(s)),
            Value::Array(items) => Slot::Array(items),
            Value::Object(fields) => Slot::Object(fields),
        }
    }
}

/// A field (or a whole message) that holds an object of fields `T`, read as its struct;
/// `Other` when it holds anything else, for the rules to refuse. (Read directly, a derived
/// struct would also take an array, by position.)
#[derive(Debug, Default)]
pub(crate) enum Nested<T> {
    #[default]
    Absent,
    /// Boxed: a struct of slots is large, and moving it up through serde's layers cost
    /// more than the allocation.
    Object(Box<T>),
    Other,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Nested<T>, D::Error> {
        deserializer.deserialize_any(NestedVisitor(PhantomData))
    }
}

struct NestedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for NestedVisitor<T> {
    type Value = Nested<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| Nested::Object(Box::new(t)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Nested<T>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(Nested::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Nested<T>, D::Error> {
        Nested::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_none<E>(self) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }
}

/// The keys of a JSON tree's object that no field of its struct names.
#[derive(Debug, Default)]
pub(crate) struct Unknown(Vec<String>);

impl Unknown {
    /// The first key, in the sorted order a JSON tree keeps its keys in, of these and of
    /// `also` (fields of the struct that no rule took).
    pub(crate) fn first(&self, also: impl IntoIterator<Item = &'static str>) -> Option<&str> {
        let unknown = self.0.iter().map(String::as_str).min();
        [unknown, also.into_iter().min()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A slot of a struct with the name of its field, as the struct's serde derive reads it.
pub(crate) type Named<'s, 'a> = (&'static str, &'s mut Slot<'a>);

/// Fills a struct's slots from a JSON tree's object, moving each value into the slot of its
/// name, and keeps the keys no slot names. (Serde would read the tree's values once more,
/// and serde_json does not always read a tree back as the tree it is: an object whose first
/// key is its raw-value token is read as that raw value.)
pub(crate) fn fill(object: Map<String, Value>, slots: &mut [Named<'_, '_>], unknown: &mut Unknown) {
    for (key, value) in object {
        match slots.iter_mut().find(|(name, _)| *name == key) {
            Some((_, slot)) => **slot = Slot::from(value),
            None => unknown.0.push(key),
        }
    }
}

/// The names of the fields still present: once the rules took theirs, what is left is
/// unknown (see [`Unknown::first`]).
pub(crate) fn left<'k, 's, 'a>(
    slots: &'k [Named<'s, 'a>],
) -> impl Iterator<Item = &'static str> + use<'k, 's, 'a> {
    slots
        .iter()
        .filter(|(_, slot)| slot.is_present())
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields, bound(deserialize = "'de: 'a"))]
    struct Pair<'a> {
        a: Slot<'a>,
        b: Nested<Inner<'a>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields, bound(deserialize = "'de: 'a"))]
    struct Inner<'a> {
        a: Slot<'a>,
    }

    #[test]
    fn a_slot_keeps_what_the_field_held_borrowed_from_the_text() {
        let text = r#"{"a":"plain","b":{"a":"es\"caped"}}"#;
        let pair: Pair = serde_json::from_str(text).unwrap();
        assert!(matches!(pair.a, Slot::Str(Cow::Borrowed("plain"))));
        let Nested::Object(inner) = pair.b else {
            panic!("b is an object")
        };
        assert!(matches!(inner.a, Slot::Str(Cow::Owned(ref s)) if s == "es\"caped"));
        for value in [
            json!(null),
            json!(true),
            json!(-3),
            json!(u64::MAX),
            json!(2.5),
            json!("x"),
            json!([1, {"k": null}]),
            json!({"k": [true]}),
        ] {
            let text = json!({ "a": value, "b": {"a": value} }).to_string();
            let pair: Pair = serde_json::from_str(&text).unwrap();
            assert_eq!(pair.a.into_value(), Some(value.clone()));
            let Nested::Object(inner) = pair.b else {
                panic!("b is an object")
            };
            assert_eq!(inner.a.into_value(), Some(value.clone()));
            // Filled from a tree, a slot holds the tree's value as it is.
            let mut slot = Slot::Absent;
            let mut unknown = Unknown::default();
            let object = json!({ "a": value, "z": 1, "y": 2 });
            fill(
                object.as_object().unwrap().clone(),
                &mut [("a", &mut slot)],
                &mut unknown,
            );
            assert_eq!(slot.into_value(), Some(value.clone()));
            assert_eq!(unknown.first([]), Some("y"));
            assert_eq!(unknown.first(["x"]), Some("x"));
        }
        assert_eq!(Pair::default().a.into_value(), None);
    }

    #[test]
    fn what_the_derive_cannot_hold_it_refuses_for_the_tree_to_decide() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"q":2}"#,
            r#"{"b":{"q":1}}"#,
            "{",
        ] {
            assert!(
                serde_json::from_str::<Nested<Pair>>(text).is_err(),
                "{text}"
            );
        }
        // Read through `Nested`, a message that is not an object is not read as a struct
        // (serde reads a struct from an array too, by position).
        for text in ["[1]", "1", "null", r#""a""#] {
            let read = serde_json::from_str::<Nested<Pair>>(text);
            assert!(matches!(read, Ok(Nested::Other)), "{text}");
        }
        // A repeat inside a slot's object is the tree's own affair: the last counts.
        let pair: Pair = serde_json::from_str(r#"{"a":{"k":1,"k":2}}"#).unwrap();
        assert_eq!(pair.a.into_value(), Some(json!({"k": 2})));
    }
}
