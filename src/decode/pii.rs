//! PII rules applied to the raw message before anything is written, bronze included: the value is
//! rewritten, so a masked column's clear value never lands in the lake, the dead letters or MongoDB.
//!
//! The rewrite reads the message one level at a time (`shallow`): only the envelope, the row
//! images and the schema's field lists are split into members; everything else (the `source`
//! block, unruled columns, the schema's other parts) is copied as the text it arrived as. A
//! member name that appears twice is rewritten at every occurrence, so whichever one a later
//! reader keeps, it never holds a clear value.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::shallow::{Json, Members, is_null, str_of};
use crate::cdc_config::PiiRule;

pub fn mask(s: &str) -> String {
    let n = s.chars().count();
    s.chars().enumerate().map(|(i, c)| if i + 4 < n { '*' } else { c }).collect()
}

pub fn hash(s: &str, salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What becomes of one member of an object being rewritten.
enum Edit {
    Keep,
    Drop,
    /// The member's new value, as JSON text.
    Replace(String),
}

/// Writes the object `m` with each member passed through `edit`, keeping the members' order.
fn write_object<'a>(out: &mut String, m: &Members<'a>, mut edit: impl FnMut(&str, &'a RawValue) -> Edit) {
    out.push('{');
    let mut first = true;
    for (k, v) in m.iter() {
        let new = match edit(k, v) {
            Edit::Drop => continue,
            Edit::Keep => None,
            Edit::Replace(text) => Some(text),
        };
        if !first {
            out.push(',');
        }
        first = false;
        push_string(out, k);
        out.push(':');
        out.push_str(new.as_deref().unwrap_or_else(|| v.get()));
    }
    out.push('}');
}

fn push_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

/// A member that holds an object, split into its members; anything else is left as it is.
fn object_of(v: &RawValue) -> Option<Members<'_>> {
    match Json::parse(v.get()) {
        Ok(Json::Object(m)) => Some(m),
        _ => None,
    }
}

/// A masked or hashed column's new value. A null stays null. A value that is not a string is
/// rewritten from its JSON text as a parsed value prints it, so hashes stay what earlier versions
/// wrote.
fn redacted(v: &RawValue, rule: PiiRule, salt: &str) -> Edit {
    let text = match str_of(Some(v)) {
        Some(s) => s.into_owned(),
        None => match serde_json::from_str::<Value>(v.get()) {
            Ok(Value::Null) => return Edit::Keep,
            Ok(other) => other.to_string(),
            // Valid JSON a value tree refuses (a number beyond f64): its own text.
            Err(_) => v.get().trim().to_string(),
        },
    };
    let new = if rule == PiiRule::Mask { mask(&text) } else { hash(&text, salt) };
    let mut out = String::with_capacity(new.len() + 2);
    push_string(&mut out, &new);
    Edit::Replace(out)
}

/// One ruled column of `row`. A dropped column whose value (the last of a duplicated name) is
/// null stays null; any other occurrence goes.
fn column(row: &Members<'_>, k: &str, v: &RawValue, rule: PiiRule, salt: &str) -> Edit {
    match rule {
        PiiRule::Drop if row.get(k).is_some_and(is_null) && is_null(v) => Edit::Keep,
        PiiRule::Drop => Edit::Drop,
        _ => redacted(v, rule, salt),
    }
}

fn write_row(out: &mut String, row: &Members<'_>, rules: &BTreeMap<String, PiiRule>, salt: &str) {
    write_object(out, row, |k, v| rules.get(k).map_or(Edit::Keep, |r| column(row, k, v, *r, salt)));
}

/// A Debezium payload: its `before`/`after` images, and its own members too when it is a
/// flattened row. Every image that is an object is rewritten, even one a reader would not keep.
fn write_payload(out: &mut String, p: &Members<'_>, rules: &BTreeMap<String, PiiRule>, salt: &str) {
    let is_image = |k: &str| k == "before" || k == "after";
    // Exactly the decoder's test (`debezium::Decoder::decode`), on the `op` a reader keeps (the
    // last of a duplicated name): a payload without a string `op` is read as a row, whatever its
    // `before` and `after` hold. Deciding it here on the images as well left a ruled column of
    // such a row in the clear (found by `fuzz/`'s redact target).
    let flat = str_of(p.get("op")).is_none();
    write_object(out, p, |k, v| {
        if flat && let Some(r) = rules.get(k) {
            return column(p, k, v, *r, salt);
        }
        match object_of(v).filter(|_| is_image(k)) {
            Some(row) => {
                let mut text = String::with_capacity(v.get().len());
                write_row(&mut text, &row, rules, salt);
                Edit::Replace(text)
            }
            None => Edit::Keep,
        }
    });
}

/// A Connect struct schema kept consistent with the rewritten rows: dropped fields go, masked and
/// hashed ones become optional strings, and the `before`/`after` structs get the same treatment.
fn write_schema(out: &mut String, s: &Members<'_>, rules: &BTreeMap<String, PiiRule>) {
    write_object(out, s, |k, v| {
        if k != "fields" {
            return Edit::Keep;
        }
        let Ok(fields) = serde_json::from_str::<Vec<&RawValue>>(v.get()) else { return Edit::Keep };
        let mut text = String::with_capacity(v.get().len());
        text.push('[');
        for f in fields {
            let field = object_of(f);
            let name = field.as_ref().and_then(|m| str_of(m.get("field")));
            let edited = match (&field, name.as_deref()) {
                (Some(_), Some(n)) if rules.get(n) == Some(&PiiRule::Drop) => continue,
                (Some(_), Some(n)) if rules.contains_key(n) => {
                    let mut t = String::from(r#"{"type":"string","optional":true,"field":"#);
                    push_string(&mut t, n);
                    t.push('}');
                    Some(t)
                }
                (Some(m), Some("before" | "after")) if str_of(m.get("type")).as_deref() == Some("struct") => {
                    let mut t = String::with_capacity(f.get().len());
                    write_schema(&mut t, m, rules);
                    Some(t)
                }
                _ => None,
            };
            if !text.ends_with('[') {
                text.push(',');
            }
            text.push_str(edited.as_deref().unwrap_or_else(|| f.get()));
        }
        text.push(']');
        Edit::Replace(text)
    });
}

/// Rewrites the values of one topic. A topic's messages carry the same Connect schema over and
/// over (about 1 KB of a `customers` change), so the last schema's rewrite is kept and reused
/// when the next message's schema is the same text.
pub struct Redactor<'r> {
    rules: &'r BTreeMap<String, PiiRule>,
    salt: &'r str,
    /// The last schema's text and its rewrite.
    schema: Option<(String, String)>,
}

impl<'r> Redactor<'r> {
    pub fn new(rules: &'r BTreeMap<String, PiiRule>, salt: &'r str) -> Redactor<'r> {
        Redactor { rules, salt, schema: None }
    }

    /// Rewrites a Debezium value (any envelope shape) with the PII rules applied. An unparseable
    /// value cannot be checked, so it is withheld entirely: `Err` carries the replacement text.
    pub fn redact(&mut self, value: &str) -> Result<String, String> {
        let (rules, salt) = (self.rules, self.salt);
        let top = match Json::parse(value) {
            Ok(Json::Object(m)) => m,
            // null, a scalar or an array: no row to rewrite.
            Ok(_) => return Ok(value.trim().to_string()),
            Err(e) => {
                let len = value.len();
                return Err(format!("{{\"withheld\":\"value is not JSON ({len} bytes) and may hold PII: {e}\"}}"));
            }
        };
        let mut out = String::with_capacity(value.len() + 64);
        if top.get("payload").is_none() || top.get("schema").is_none() {
            write_payload(&mut out, &top, rules, salt);
            return Ok(out);
        }
        write_object(&mut out, &top, |k, v| {
            if k == "schema"
                && let Some((text, rewritten)) = &self.schema
                && text == v.get()
            {
                return Edit::Replace(rewritten.clone());
            }
            let Some(m) = object_of(v).filter(|_| k == "schema" || k == "payload") else { return Edit::Keep };
            let mut text = String::with_capacity(v.get().len());
            if k == "schema" {
                write_schema(&mut text, &m, rules);
                self.schema = Some((v.get().to_string(), text.clone()));
            } else {
                write_payload(&mut text, &m, rules, salt);
            }
            Edit::Replace(text)
        });
        Ok(out)
    }
}

/// One value rewritten on its own (see [`Redactor::redact`]).
pub fn redact(value: &str, rules: &BTreeMap<String, PiiRule>, salt: &str) -> Result<String, String> {
    Redactor::new(rules, salt).redact(value)
}

#[cfg(test)]
#[path = "pii_tests.rs"]
mod tests;
