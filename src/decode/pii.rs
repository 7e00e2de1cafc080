//! PII rules applied to the raw message before anything is written, bronze included: the value is
//! rewritten, so a masked column's clear value never lands in the lake, the dead letters or MongoDB.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::cdc_config::PiiRule;
use std::collections::BTreeMap;

pub fn mask(s: &str) -> String {
    let n = s.chars().count();
    s.chars().enumerate().map(|(i, c)| if i + 4 < n { '*' } else { c }).collect()
}

pub fn hash(s: &str, salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(s.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn apply_row(row: &mut Map<String, Value>, rules: &BTreeMap<String, PiiRule>, salt: &str) {
    for (col, rule) in rules {
        let Some(v) = row.get(col) else { continue };
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match rule {
            PiiRule::Drop => {
                row.remove(col);
            }
            PiiRule::Mask => {
                row.insert(col.clone(), Value::String(mask(&text)));
            }
            PiiRule::Hash => {
                row.insert(col.clone(), Value::String(hash(&text, salt)));
            }
        }
    }
}

/// Keeps a struct schema consistent with the rewritten rows: dropped fields go, masked and hashed
/// ones become optional strings.
fn apply_schema(schema: &mut Value, rules: &BTreeMap<String, PiiRule>) {
    let Some(fields) = schema.get_mut("fields").and_then(Value::as_array_mut) else { return };
    fields.retain(|f| f.get("field").and_then(Value::as_str).is_none_or(|n| rules.get(n) != Some(&PiiRule::Drop)));
    for f in fields.iter_mut() {
        let name = f.get("field").and_then(Value::as_str).map(str::to_string);
        if let Some(n) = name {
            if rules.contains_key(&n) {
                *f = serde_json::json!({"type": "string", "optional": true, "field": n});
            } else if f.get("type").and_then(Value::as_str) == Some("struct") && (n == "before" || n == "after") {
                apply_schema(f, rules);
            }
        }
    }
}

/// Rewrites a Debezium value (any envelope shape) with the PII rules applied. An unparseable value
/// cannot be checked, so it is withheld entirely: `Err` carries the replacement text.
pub fn redact(value: &str, rules: &BTreeMap<String, PiiRule>, salt: &str) -> Result<String, String> {
    let mut v: Value = serde_json::from_str(value)
        .map_err(|e| format!("{{\"withheld\":\"value is not JSON ({} bytes) and may hold PII: {e}\"}}", value.len()))?;
    let has_envelope = v.get("payload").is_some() && v.get("schema").is_some();
    if has_envelope && let Some(s) = v.get_mut("schema") {
        apply_schema(s, rules);
    }
    let payload = if has_envelope { v.get_mut("payload") } else { Some(&mut v) };
    if let Some(Value::Object(p)) = payload {
        let mut nested = false;
        for image in ["before", "after"] {
            if let Some(Value::Object(row)) = p.get_mut(image) {
                apply_row(row, rules, salt);
                nested = true;
            }
        }
        if !nested && !p.contains_key("op") {
            apply_row(p, rules, salt);
        }
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_the_last_four() {
        assert_eq!(mask("4111111111111111"), "************1111");
        assert_eq!(mask("abc"), "abc");
    }

    #[test]
    fn redact_rewrites_every_image_and_the_schema() {
        let rules = BTreeMap::from([
            ("card".to_string(), PiiRule::Mask),
            ("ssn".to_string(), PiiRule::Drop),
            ("email".to_string(), PiiRule::Hash),
        ]);
        let v = r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"string","field":"card"},{"type":"string","field":"ssn"},{"type":"string","field":"email"}]}]},
                   "payload":{"op":"u","before":{"card":"4111111111111111","ssn":"123","email":"a@b.c"},"after":{"card":"4111111111112222","ssn":"456","email":"a@b.c"}}}"#;
        let out = redact(v, &rules, "pepper-salt").unwrap();
        assert!(!out.contains("4111111111111111") && !out.contains("4111111111112222"), "{out}");
        assert!(out.contains("************2222"));
        assert!(!out.contains("\"ssn\""), "dropped from rows and schema: {out}");
        assert!(!out.contains("a@b.c"));
        assert!(out.contains(&hash("a@b.c", "pepper-salt")));
        let flat = redact(r#"{"card":"4111111111111111","__op":"c"}"#, &rules, "s").unwrap();
        assert!(flat.contains("************1111"));
        assert!(redact("not json 4111111111111111", &rules, "s").unwrap_err().contains("withheld"));
        assert!(!redact("not json 4111111111111111", &rules, "s").unwrap_err().contains("4111"));
    }
}
