//! The shallow rewrite against the value-tree rewrite it replaced (kept here as the reference):
//! for any message, both read back as the same JSON value.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn rules() -> BTreeMap<String, PiiRule> {
    BTreeMap::from([
        ("card".to_string(), PiiRule::Mask),
        ("ssn".to_string(), PiiRule::Drop),
        ("email".to_string(), PiiRule::Hash),
    ])
}

#[test]
fn mask_keeps_the_last_four() {
    assert_eq!(mask("4111111111111111"), "************1111");
    assert_eq!(mask("abc"), "abc");
}

#[test]
fn hash_is_salted_sha256_hex() {
    assert_eq!(hash("", ""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_ne!(hash("a@b.c", "s1"), hash("a@b.c", "s2"));
}

#[test]
fn redact_rewrites_every_image_and_the_schema() {
    let rules = rules();
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

#[test]
fn unruled_parts_are_copied_as_they_arrived() {
    let v = r#"{"before":null,"after":{"id":1,"card":"4111111111111111"},"source":{"lsn": 7, "name":"pg"},"op":"c"}"#;
    let out = redact(v, &rules(), "s").unwrap();
    assert_eq!(
        out,
        r#"{"before":null,"after":{"id":1,"card":"************1111"},"source":{"lsn": 7, "name":"pg"},"op":"c"}"#
    );
}

#[test]
fn a_duplicated_member_is_rewritten_at_every_occurrence() {
    let v = r#"{"op":"c","after":{"card":"4111111111111111","card":"4222222222222222","ssn":"1","ssn":"2"},
               "after":{"email":"a@b.c"}}"#;
    let out = redact(v, &rules(), "s").unwrap();
    for clear in ["4111111111111111", "4222222222222222", "\"ssn\"", "a@b.c"] {
        assert!(!out.contains(clear), "{clear} in {out}");
    }
    // A payload whose last `before` is not an object and that has no `op` is a flattened row.
    let v = r#"{"before":{"card":"4111111111111111"},"before":null,"card":"4333333333333333"}"#;
    let out = redact(v, &rules(), "s").unwrap();
    assert!(!out.contains("4333333333333333") && !out.contains("4111111111111111"), "{out}");
}

/// What the decoder reads as a row must be rewritten as one: a payload without a string `op` is
/// read as a flattened row even when it has `before` or `after` objects (the fuzzer's finding).
#[test]
fn a_payload_the_decoder_reads_as_a_row_is_rewritten_as_one() {
    use crate::decode::connect::FieldValue;
    use crate::decode::debezium::Decoder;
    use crate::decode::sales::MessageMeta;

    let meta = MessageMeta { topic: "t", partition: 0, offset: 1, timestamp_ms: Some(1) };
    for v in [
        r#"{"after":{"id":1},"id":2,"card":"4111111111111111"}"#,
        r#"{"before":{"id":1},"op":null,"id":2,"card":"4111111111111111"}"#,
        r#"{"after":{"id":1},"op":5,"id":2,"card":"4111111111111111"}"#,
    ] {
        let read = |value: &str| Decoder::default().decode(&meta, None, Some(value)).unwrap().unwrap().row;
        assert_eq!(read(v).get("card"), Some(&FieldValue::Str("4111111111111111".into())), "read as a row: {v}");
        let out = redact(v, &rules(), "s").unwrap();
        assert!(!out.contains("4111111111111111"), "{out}");
        assert_eq!(read(&out).get("card"), Some(&FieldValue::Str("************1111".into())), "{out}");
    }
}

#[test]
fn values_without_rows_pass_through() {
    for v in ["null", "[1,2]", "42", r#""text""#, r#"{"payload":null,"schema":null}"#] {
        assert_eq!(redact(v, &rules(), "s").unwrap(), v);
    }
}

// ---- the reference: the value-tree rewrite of earlier versions -------------------------------

fn tree_row(row: &mut Map<String, Value>, rules: &BTreeMap<String, PiiRule>, salt: &str) {
    for (col, rule) in rules {
        let Some(v) = row.get(col) else { continue };
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match rule {
            PiiRule::Drop => drop(row.remove(col)),
            PiiRule::Mask => drop(row.insert(col.clone(), Value::String(mask(&text)))),
            PiiRule::Hash => drop(row.insert(col.clone(), Value::String(hash(&text, salt)))),
        }
    }
}

fn tree_schema(schema: &mut Value, rules: &BTreeMap<String, PiiRule>) {
    let Some(fields) = schema.get_mut("fields").and_then(Value::as_array_mut) else { return };
    fields.retain(|f| f.get("field").and_then(Value::as_str).is_none_or(|n| rules.get(n) != Some(&PiiRule::Drop)));
    for f in fields.iter_mut() {
        let name = f.get("field").and_then(Value::as_str).map(str::to_string);
        if let Some(n) = name {
            if rules.contains_key(&n) {
                *f = json!({"type": "string", "optional": true, "field": n});
            } else if f.get("type").and_then(Value::as_str) == Some("struct") && (n == "before" || n == "after") {
                tree_schema(f, rules);
            }
        }
    }
}

fn tree_redact(value: &str, rules: &BTreeMap<String, PiiRule>, salt: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(value).ok()?;
    let has_envelope = v.get("payload").is_some() && v.get("schema").is_some();
    if has_envelope && let Some(s) = v.get_mut("schema") {
        tree_schema(s, rules);
    }
    let payload = if has_envelope { v.get_mut("payload") } else { Some(&mut v) };
    if let Some(Value::Object(p)) = payload {
        for image in ["before", "after"] {
            if let Some(Value::Object(row)) = p.get_mut(image) {
                tree_row(row, rules, salt);
            }
        }
        // The decoder reads a payload without a string `op` as a row.
        if !p.get("op").is_some_and(Value::is_string) {
            tree_row(p, rules, salt);
        }
    }
    Some(v)
}

// ---- generated messages, duplicates and odd shapes included ---------------------------------

/// JSON text of an object from (name, value text) pairs, names possibly repeated.
fn object(members: Vec<(String, String)>) -> String {
    let body: Vec<String> =
        members.into_iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap())).collect();
    format!("{{{}}}", body.join(", "))
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (-1e6f64..1e6).prop_map(|f| format!("{f}")),
        Just("1.50".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9@.é\"\\\\ ]{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("[1, {\"card\": \"4111\"}]".to_string()),
        Just("{\"card\": \"4111111111111111\"}".to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("card".to_string()),
        Just("ssn".to_string()),
        Just("email".to_string()),
        Just("id".to_string()),
        Just("na\u{e9}me".to_string()),
    ]
}

fn row() -> impl Strategy<Value = String> {
    prop::collection::vec((name(), leaf()), 0..6).prop_map(object)
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![row(), Just("null".to_string()), leaf()]
}

fn payload() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        (Just("before".to_string()), image()),
        (Just("after".to_string()), image()),
        (
            Just("op".to_string()),
            prop_oneof![Just("\"u\"".to_string()), Just("null".to_string()), Just("5".to_string())]
        ),
        (Just("source".to_string()), row()),
        (name(), leaf()),
    ];
    prop::collection::vec(member, 0..7).prop_map(object)
}

fn schema_field(depth: u32) -> BoxedStrategy<String> {
    let plain = (name(), Just("\"string\"".to_string()))
        .prop_map(|(n, t)| object(vec![("type".into(), t), ("field".into(), serde_json::to_string(&n).unwrap())]));
    if depth == 0 {
        return prop_oneof![plain, leaf()].boxed();
    }
    let image = (prop_oneof![Just("before"), Just("after"), Just("source")], schema_fields(depth - 1)).prop_map(
        |(n, fields)| {
            object(vec![
                ("type".into(), "\"struct\"".into()),
                ("fields".into(), fields),
                ("field".into(), format!("\"{n}\"")),
            ])
        },
    );
    prop_oneof![plain, image, leaf()].boxed()
}

fn schema_fields(depth: u32) -> BoxedStrategy<String> {
    prop::collection::vec(schema_field(depth), 0..5).prop_map(|f| format!("[{}]", f.join(","))).boxed()
}

fn message() -> impl Strategy<Value = String> {
    let schema =
        schema_fields(2).prop_map(|f| object(vec![("type".into(), "\"struct\"".into()), ("fields".into(), f)]));
    prop_oneof![
        payload(),
        (schema, payload(), any::<bool>()).prop_map(|(s, p, dup)| {
            let mut m = vec![("schema".to_string(), s), ("payload".to_string(), p)];
            if dup {
                m.push(("payload".to_string(), "{\"card\": \"4999999999999999\"}".to_string()));
            }
            object(m)
        }),
    ]
}

proptest! {
    #[test]
    fn shallow_and_tree_rewrites_read_back_the_same(msg in message()) {
        let shallow = redact(&msg, &rules(), "salt").expect("generated messages are JSON");
        let read: Value = serde_json::from_str(&shallow).expect("the rewrite is JSON");
        prop_assert_eq!(Some(read), tree_redact(&msg, &rules(), "salt"), "message: {}", msg);
    }
}

proptest! {
    #[test]
    fn a_reused_redactor_rewrites_as_a_fresh_one(msgs in prop::collection::vec(message(), 1..6), repeat in 0usize..3) {
        // Repeating messages repeats their schema text, which the redactor reuses.
        let msgs: Vec<&String> = msgs.iter().cycle().take(msgs.len() * (repeat + 1)).collect();
        let rules = rules();
        let mut reused = Redactor::new(&rules, "salt");
        for m in msgs {
            prop_assert_eq!(reused.redact(m), redact(m, &rules, "salt"));
        }
    }
}
