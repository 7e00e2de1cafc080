//! Debezium change events (JSON converter): envelopes with `schema`+`payload` or payload only,
//! records flattened by `ExtractNewRecordState`, tombstones, Postgres and MySQL `source` blocks,
//! ops `c u d r t`. Produces a [`CdcChange`] of typed source columns; mapping them onto the
//! canonical tables is `decode::mapping`'s job.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::connect::{FieldSchema, FieldValue, decode_field};
use super::sales::MessageMeta;
use super::shallow::{self, Json, Members, i64_of, str_of};
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

/// Field schemas of one Connect struct, by field name.
type Fields = BTreeMap<String, FieldSchema>;

/// What a message's Connect schema says about each part the decoder reads.
#[derive(Debug, Default)]
struct Schemas {
    after: Fields,
    before: Fields,
    /// The schema's own fields: a key's, or a flattened record's.
    whole: Fields,
}

/// The last schema seen, parsed once. A converter sends the same schema text with every message
/// of a table until the table changes, so one entry per topic and batch is a hit nearly always.
#[derive(Debug, Default)]
struct SchemaCache {
    text: String,
    schemas: Schemas,
}

impl SchemaCache {
    fn get(&mut self, raw: Option<&RawValue>) -> &Schemas {
        let text = raw.map_or("", RawValue::get);
        if text != self.text {
            let v: Option<Value> = serde_json::from_str(text).ok();
            self.schemas = Schemas {
                after: struct_fields(envelope_field(v.as_ref(), "after")),
                before: struct_fields(envelope_field(v.as_ref(), "before")),
                whole: struct_fields(v.as_ref()),
            };
            self.text = text.to_string();
        }
        &self.schemas
    }
}

/// Splits `{"schema":…, "payload":…}` into the schema's raw text and the payload; any other
/// message is its own payload.
fn unwrap_envelope(top: Json<'_>) -> Result<(Option<&RawValue>, Json<'_>), String> {
    match top {
        Json::Object(m) => match (m.get("schema"), m.get("payload")) {
            (Some(schema), Some(payload)) => {
                Ok((Some(schema), Json::parse(payload.get()).map_err(|e| format!("payload: {e}"))?))
            }
            _ => Ok((None, Json::Object(m))),
        },
        other => Ok((None, other)),
    }
}

/// Field schemas of a struct schema, by field name.
fn struct_fields(schema: Option<&Value>) -> Fields {
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

fn decode_row(obj: &Members<'_>, schemas: &Fields) -> Result<BTreeMap<String, FieldValue>, String> {
    obj.iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, raw)| {
            let v = shallow::value_of(raw).map_err(|e| format!("column {k}: {e}"))?;
            decode_field(&v, schemas.get(k)).map(|fv| (k.to_string(), fv)).map_err(|e| format!("column {k}: {e}"))
        })
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

/// Decodes the change events of one topic, remembering the last Connect schema it parsed.
#[derive(Debug, Default)]
pub struct Decoder {
    key_schema: SchemaCache,
    value_schema: SchemaCache,
}

impl Decoder {
    /// Decodes one message. `Ok(None)` is a tombstone (null value): it changes nothing.
    pub fn decode(
        &mut self,
        meta: &MessageMeta<'_>,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Result<Option<CdcChange>, String> {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else { return Ok(None) };
        let key = self.key(key)?;
        let top = Json::parse(value).map_err(|e| format!("value is not valid JSON: {e}"))?;
        let (schema, payload) = unwrap_envelope(top)?;
        let p = match payload {
            Json::Object(p) => p,
            Json::Null => return Ok(None),
            Json::Other(v) => return Err(format!("payload is not an object: {v}")),
        };
        let schemas = self.value_schema.get(schema);
        match str_of(p.get("op")) {
            Some(op) => envelope(meta, &p, &op, schemas, key),
            None => flattened(meta, &p, schemas, key),
        }
    }

    /// The Kafka key's fields.
    fn key(&mut self, key: Option<&str>) -> Result<BTreeMap<String, FieldValue>, String> {
        let Some(k) = key.filter(|k| !k.trim().is_empty()) else { return Ok(BTreeMap::new()) };
        // A key that is not JSON (a StringConverter key) is the key value itself.
        let Ok(top) = Json::parse(k) else {
            return Ok(BTreeMap::from([(String::new(), FieldValue::Str(k.to_string()))]));
        };
        let (schema, payload) = unwrap_envelope(top)?;
        match payload {
            Json::Object(o) => decode_row(&o, &self.key_schema.get(schema).whole),
            Json::Null => Ok(BTreeMap::new()),
            // A primitive key (`"42"` or `42`): the column name is unknown, keep it under "".
            Json::Other(v) => Ok(BTreeMap::from([(String::new(), decode_field(&v, None)?)])),
        }
    }
}

/// The standard envelope: `op`, `before`, `after`, `source`.
fn envelope(
    meta: &MessageMeta<'_>,
    p: &Members<'_>,
    op: &str,
    schemas: &Schemas,
    key: BTreeMap<String, FieldValue>,
) -> Result<Option<CdcChange>, String> {
    let source = match p.get("source").map(|s| Json::parse(s.get())) {
        Some(Ok(Json::Object(m))) => m,
        _ => Members::default(),
    };
    let ts_ms = i64_of(source.get("ts_ms")).or_else(|| i64_of(p.get("ts_ms")));
    let pos = position(
        meta,
        i64_of(source.get("lsn")),
        str_of(source.get("file")).as_deref(),
        i64_of(source.get("pos")),
        i64_of(source.get("row")),
        ts_ms,
    );
    let (op, image, fields) = match op {
        "c" | "u" | "r" => (CdcOp::Upsert, "after", &schemas.after),
        "d" => (CdcOp::Delete, "before", &schemas.before),
        "t" => (CdcOp::Truncate, "before", &schemas.before),
        other => return Err(format!("unknown Debezium op '{other}'")),
    };
    let parsed = p.get(image).map(|raw| Json::parse(raw.get()).map_err(|e| format!("'{image}': {e}"))).transpose()?;
    let row = match parsed {
        Some(Json::Object(o)) => decode_row(&o, fields)?,
        Some(Json::Null) | None if op != CdcOp::Upsert => BTreeMap::new(),
        Some(Json::Null) => return Err(format!("'{image}' is not an object: null")),
        Some(Json::Other(v)) => return Err(format!("'{image}' is not an object: {v}")),
        None => return Err(format!("op '{}' without '{image}'", str_of(p.get("op")).unwrap_or_default())),
    };
    Ok(Some(CdcChange { op, row, key, pos, source_ts_ms: ts_ms }))
}

/// A record flattened by ExtractNewRecordState: the row itself plus `__` metadata fields.
fn flattened(
    meta: &MessageMeta<'_>,
    p: &Members<'_>,
    schemas: &Schemas,
    key: BTreeMap<String, FieldValue>,
) -> Result<Option<CdcChange>, String> {
    let deleted = p
        .get("__deleted")
        .is_some_and(|d| shallow::bool_of(Some(d)).or_else(|| str_of(Some(d)).map(|s| s == "true")).unwrap_or(false));
    let op = match str_of(p.get("__op")).as_deref() {
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
    let int = |a: &str, b: &str| i64_of(p.get(a)).or_else(|| i64_of(p.get(b)));
    let ts_ms = int("__source_ts_ms", "__ts_ms");
    let pos = position(
        meta,
        int("__lsn", "__source_lsn"),
        str_of(p.get("__file").or_else(|| p.get("__source_file"))).as_deref(),
        int("__pos", "__source_pos"),
        int("__row", "__source_row"),
        ts_ms,
    );
    let row = decode_row(p, &schemas.whole)?;
    Ok(Some(CdcChange { op, row, key, pos, source_ts_ms: ts_ms }))
}

#[cfg(test)]
#[path = "debezium_tests.rs"]
mod tests;
