//! Debezium change events (JSON converter): envelopes with `schema`+`payload` or payload only,
//! records flattened by `ExtractNewRecordState`, tombstones, Postgres and MySQL `source` blocks,
//! ops `c u d r t`. Produces a [`CdcChange`] of typed source columns; mapping them onto the
//! canonical tables is `decode::mapping`'s job.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::connect::{FieldSchema, FieldValue, decode_field};
use super::sales::MessageMeta;
use crate::model::SourcePos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdcOp {
    /// `c`, `u`, `r` (snapshot read).
    Upsert,
    /// `d`, or a flattened record with `__deleted = true`.
    Delete,
    /// `t`: the whole table was truncated.
    Truncate,
}

/// One decoded change: the row image (after for upserts, before — possibly only the key — for
/// deletes), the Kafka key's fields, and where the change sits in the source's log.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcChange {
    pub op: CdcOp,
    pub row: BTreeMap<String, FieldValue>,
    pub key: BTreeMap<String, FieldValue>,
    pub pos: SourcePos,
    /// When the change happened at the source (ms), if known.
    pub source_ts_ms: Option<i64>,
}

fn parse_json(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// Splits `{"schema":…, "payload":…}` from a payload-only message.
fn unwrap_envelope(v: Value) -> (Option<Value>, Value) {
    match v {
        Value::Object(mut o) if o.contains_key("payload") && o.contains_key("schema") => {
            let payload = o.remove("payload").unwrap_or(Value::Null);
            (o.remove("schema"), payload)
        }
        other => (None, other),
    }
}

/// Field schemas of a struct schema, by field name.
fn struct_fields(schema: Option<&Value>) -> BTreeMap<String, FieldSchema> {
    schema
        .and_then(|s| s.get("fields"))
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| Some((f.get("field")?.as_str()?.to_string(), FieldSchema::from_json(f))))
                .collect()
        })
        .unwrap_or_default()
}

/// The schema of envelope field `name` (`after` / `before`).
fn envelope_field<'a>(schema: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    schema?.get("fields")?.as_array()?.iter().find(|f| f.get("field").and_then(Value::as_str) == Some(name))
}

fn decode_row(
    obj: &Map<String, Value>,
    schemas: &BTreeMap<String, FieldSchema>,
) -> Result<BTreeMap<String, FieldValue>, String> {
    obj.iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, v)| decode_field(v, schemas.get(k)).map(|fv| (k.clone(), fv)).map_err(|e| format!("column {k}: {e}")))
        .collect()
}

/// `mysql-bin.000003` → 3.
fn binlog_number(file: &str) -> i64 {
    file.rsplit('.').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Position in the source's log: Postgres LSN; MySQL binlog (file, pos) then row; otherwise the
/// source timestamp. Ties fall back to Kafka partition and offset.
fn position(
    meta: &MessageMeta<'_>,
    lsn: Option<i64>,
    file: Option<&str>,
    pos: Option<i64>,
    row: Option<i64>,
    ts_ms: Option<i64>,
) -> SourcePos {
    let (primary, secondary) = match (lsn, file, pos) {
        (Some(lsn), _, _) => (lsn, 0),
        (None, Some(f), Some(p)) => ((binlog_number(f) << 40) | (p & 0xff_ffff_ffff), row.unwrap_or(0)),
        _ => (ts_ms.or(meta.timestamp_ms).unwrap_or(0), 0),
    };
    SourcePos { primary, secondary, partition: meta.partition, offset: meta.offset }
}

fn i64_of(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}

/// Decodes one message. `Ok(None)` is a tombstone (null value): it changes nothing.
pub fn decode(meta: &MessageMeta<'_>, key: Option<&str>, value: Option<&str>) -> Result<Option<CdcChange>, String> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    let key_fields = match key.filter(|k| !k.trim().is_empty()) {
        // A key that is not JSON (a StringConverter key) is the key value itself.
        Some(k) if serde_json::from_str::<Value>(k).is_err() => {
            BTreeMap::from([(String::new(), FieldValue::Str(k.to_string()))])
        }
        Some(k) => {
            let (schema, payload) = unwrap_envelope(parse_json("key", k)?);
            match payload {
                Value::Object(o) => decode_row(&o, &struct_fields(schema.as_ref()))?,
                Value::Null => BTreeMap::new(),
                // A primitive key (`"42"` or `42`): the column name is unknown, keep it under "".
                other => BTreeMap::from([(String::new(), decode_field(&other, None)?)]),
            }
        }
        None => BTreeMap::new(),
    };
    let (schema, payload) = unwrap_envelope(parse_json("value", value)?);
    let Value::Object(p) = payload else {
        return if payload.is_null() { Ok(None) } else { Err(format!("payload is not an object: {payload}")) };
    };

    if let Some(op) = p.get("op").and_then(Value::as_str) {
        // The standard envelope.
        let source = p.get("source").and_then(Value::as_object).cloned().unwrap_or_default();
        let ts_ms = i64_of(source.get("ts_ms")).or_else(|| i64_of(p.get("ts_ms")));
        let pos = position(
            meta,
            i64_of(source.get("lsn")),
            source.get("file").and_then(Value::as_str),
            i64_of(source.get("pos")),
            i64_of(source.get("row")),
            ts_ms,
        );
        let (op, image) = match op {
            "c" | "u" | "r" => (CdcOp::Upsert, "after"),
            "d" => (CdcOp::Delete, "before"),
            "t" => (CdcOp::Truncate, "before"),
            other => return Err(format!("unknown Debezium op '{other}'")),
        };
        let row = match p.get(image) {
            Some(Value::Object(o)) => decode_row(o, &struct_fields(envelope_field(schema.as_ref(), image)))?,
            Some(Value::Null) | None if op != CdcOp::Upsert => BTreeMap::new(),
            Some(other) => return Err(format!("'{image}' is not an object: {other}")),
            None => return Err(format!("op '{}' without '{image}'", p["op"])),
        };
        return Ok(Some(CdcChange { op, row, key: key_fields, pos, source_ts_ms: ts_ms }));
    }

    // A record flattened by ExtractNewRecordState: the row itself plus `__` metadata fields.
    let deleted = match p.get("__deleted") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let op = match p.get("__op").and_then(Value::as_str) {
        Some("d") => CdcOp::Delete,
        Some("t") => CdcOp::Truncate,
        Some("c" | "u" | "r") | None => {
            if deleted {
                CdcOp::Delete
            } else {
                CdcOp::Upsert
            }
        }
        Some(other) => return Err(format!("unknown Debezium op '{other}' in __op")),
    };
    if p.keys().all(|k| k.starts_with("__")) && op == CdcOp::Upsert {
        return Err("flattened record has no columns".into());
    }
    let ts_ms = i64_of(p.get("__source_ts_ms")).or_else(|| i64_of(p.get("__ts_ms")));
    let pos = position(
        meta,
        i64_of(p.get("__lsn")).or_else(|| i64_of(p.get("__source_lsn"))),
        p.get("__file").or_else(|| p.get("__source_file")).and_then(Value::as_str),
        i64_of(p.get("__pos")).or_else(|| i64_of(p.get("__source_pos"))),
        i64_of(p.get("__row")).or_else(|| i64_of(p.get("__source_row"))),
        ts_ms,
    );
    let row = decode_row(&p, &struct_fields(schema.as_ref()))?;
    Ok(Some(CdcChange { op, row, key: key_fields, pos, source_ts_ms: ts_ms }))
}

#[cfg(test)]
#[path = "debezium_tests.rs"]
mod tests;
