//! JSON read one level deep: an object's members stay raw text until the decoder asks for one.
//! A Debezium message with its Connect schema is mostly schema (about 1 KB of it in every
//! message) and a `source` block the decoder needs four numbers from; building them as JSON trees
//! was most of the CDC decoder's time. Here they are only scanned, and parsed where used.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// An object's members in their order, each value its raw JSON text.
#[derive(Debug, Default)]
pub struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// What a JSON text is, as far as the decoder cares.
#[derive(Debug)]
pub enum Json<'a> {
    Object(Members<'a>),
    Null,
    /// A scalar or an array, parsed (these are small: keys, malformed images).
    Other(Value),
}

impl<'a> Json<'a> {
    /// Classifies `text`, scanning (not building) an object's member values.
    pub fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map(Json::Object);
        }
        serde_json::from_str::<Value>(text).map(|v| if v.is_null() { Json::Null } else { Json::Other(v) })
    }
}

impl<'a> Members<'a> {
    /// The member `name`; with duplicates the last wins, as in a parsed object.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }
}

/// A raw value's text without surrounding whitespace.
fn text(v: &RawValue) -> &str {
    v.get().trim()
}

pub fn is_null(v: &RawValue) -> bool {
    text(v) == "null"
}

/// An integer, or a string holding one (Debezium writes some positions as strings).
pub fn i64_of(v: Option<&RawValue>) -> Option<i64> {
    let t = text(v?);
    if t.starts_with('"') { str_of(v).and_then(|s| s.parse().ok()) } else { t.parse().ok() }
}

/// A string member's value, borrowed unless it holds escapes.
pub fn str_of<'a>(v: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let t = text(v?);
    if !t.starts_with('"') {
        return None;
    }
    serde_json::from_str::<&str>(t)
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(t).map(Cow::Owned))
        .ok()
}

pub fn bool_of(v: Option<&RawValue>) -> Option<bool> {
    v.and_then(|v| text(v).parse().ok())
}

/// Parses one member value into a tree (row values are small leaves).
pub fn value_of(v: &RawValue) -> serde_json::Result<Value> {
    serde_json::from_str(v.get())
}

/// A member name, borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members<'de>, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((Key(k), v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_raw_and_the_last_duplicate_wins() {
        let Json::Object(m) = Json::parse(r#" {"a": {"deep": [1, 2]}, "b\u0041": "x\"y", "a": 7} "#).unwrap() else {
            panic!("an object")
        };
        assert_eq!(m.get("a").map(RawValue::get), Some("7"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "bA", "a"]);
        assert_eq!(str_of(m.get("bA")).as_deref(), Some("x\"y"));
        assert!(matches!(Json::parse("null").unwrap(), Json::Null));
        assert!(matches!(Json::parse("42").unwrap(), Json::Other(Value::Number(_))));
        assert!(Json::parse(r#"{"a": }"#).is_err());
        assert!(Json::parse(r#"{"a": 1} x"#).is_err(), "trailing text");
    }

    #[test]
    fn numbers_may_arrive_as_strings() {
        let Json::Object(m) = Json::parse(r#"{"n": 24023960, "s": "-12", "f": 1.5, "t": "true", "b": false}"#).unwrap()
        else {
            panic!("an object")
        };
        assert_eq!(i64_of(m.get("n")), Some(24_023_960));
        assert_eq!(i64_of(m.get("s")), Some(-12));
        assert_eq!(i64_of(m.get("f")), None);
        assert_eq!(i64_of(m.get("missing")), None);
        assert_eq!(bool_of(m.get("b")), Some(false));
        assert_eq!(bool_of(m.get("t")), None, "a string is not a bool");
        assert_eq!(str_of(m.get("n")), None);
    }
}
