//! Kafka Connect / Debezium value encodings: turns a JSON field (with its Connect schema when the
//! converter sends one) into a typed value. Decimals arrive as base64 bytes with a scale, as
//! `VariableScaleDecimal` structs, as strings or as doubles; times as days, ms, µs or ns since
//! the epoch, or ISO strings. Everything money-like keeps its exact digits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate};
use serde_json::Value;

/// The Connect schema of one field (only what decoding needs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSchema {
    pub type_: String,
    pub name: Option<String>,
    pub scale: Option<u32>,
}

impl FieldSchema {
    pub fn from_json(v: &Value) -> FieldSchema {
        FieldSchema {
            type_: v.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
            name: v.get("name").and_then(Value::as_str).map(str::to_string),
            scale: v
                .get("parameters")
                .and_then(|p| p.get("scale"))
                .and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or(s.as_u64().map(|u| u as u32))),
        }
    }
}

/// A decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Int(i64),
    /// A JSON number kept as its literal text (doubles, or integers too large for i64).
    Number(String),
    Str(String),
    Decimal {
        unscaled: i128,
        scale: u32,
    },
    /// Days since the epoch.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Anything structured, as JSON text.
    Json(String),
}

/// Days since the epoch → a date within years 1900–2200, the range orderlake accepts.
fn checked_date(days: i64) -> Result<NaiveDate, String> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    chrono::TimeDelta::try_days(days)
        .and_then(|d| epoch.checked_add_signed(d))
        .filter(|d| (1900..=2200).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| format!("date of {days} days since 1970-01-01 is out of range (years 1900-2200)"))
}

/// `v × by`, or an error naming `what` when it does not fit (say nanoseconds in a `ts_ms` field,
/// turned into microseconds): never a wrapped value.
pub(crate) fn mul(v: i64, by: i64, what: &str) -> Result<i64, String> {
    v.checked_mul(by).ok_or_else(|| format!("{what} {v} is out of range"))
}

fn b64_decimal(s: &str, scale: u32) -> Result<FieldValue, String> {
    if scale > 38 {
        return Err(format!("decimal scale {scale} is larger than 38"));
    }
    let bytes = STANDARD.decode(s).map_err(|e| format!("decimal bytes '{s}' are not base64: {e}"))?;
    if bytes.len() > 16 {
        return Err(format!("decimal of {} bytes does not fit 128 bits", bytes.len()));
    }
    // Big-endian two's complement, sign-extended to 128 bits.
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(FieldValue::Decimal { unscaled: i128::from_be_bytes(buf), scale })
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64().ok_or_else(|| format!("{what}: expected an integer, got {v}"))
}

/// Decodes `v` using the field's schema when there is one.
pub fn decode_field(v: &Value, schema: Option<&FieldSchema>) -> Result<FieldValue, String> {
    if v.is_null() {
        return Ok(FieldValue::Null);
    }
    let name = schema.and_then(|s| s.name.as_deref()).unwrap_or("");
    match name {
        "org.apache.kafka.connect.data.Decimal" => {
            let scale = schema.and_then(|s| s.scale).unwrap_or(0);
            return match v {
                Value::String(s) => b64_decimal(s, scale),
                Value::Number(n) => Ok(FieldValue::Number(n.to_string())),
                _ => Err(format!("Decimal: expected base64 bytes, got {v}")),
            };
        }
        "io.debezium.data.VariableScaleDecimal" => return variable_scale(v),
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
            return Ok(FieldValue::Date(int(v, name)? as i32));
        }
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            return Ok(FieldValue::Time(mul(int(v, name)?, 1000, name)?));
        }
        "io.debezium.time.MicroTime" => return Ok(FieldValue::Time(int(v, name)?)),
        "io.debezium.time.NanoTime" => return Ok(FieldValue::Time(int(v, name)? / 1000)),
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            return Ok(FieldValue::Timestamp(mul(int(v, name)?, 1000, name)?));
        }
        "io.debezium.time.MicroTimestamp" => return Ok(FieldValue::Timestamp(int(v, name)?)),
        "io.debezium.time.NanoTimestamp" => return Ok(FieldValue::Timestamp(int(v, name)? / 1000)),
        "io.debezium.time.ZonedTimestamp" => {
            let s = v.as_str().ok_or_else(|| format!("ZonedTimestamp: expected a string, got {v}"))?;
            return parse_timestamp(s).map(FieldValue::Timestamp);
        }
        "io.debezium.time.ZonedTime" => return Ok(FieldValue::Str(v.as_str().unwrap_or_default().to_string())),
        _ => {}
    }
    Ok(match v {
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !n.to_string().contains(['.', 'e', 'E']) => FieldValue::Int(i),
            _ => FieldValue::Number(n.to_string()),
        },
        Value::String(s) => FieldValue::Str(s.clone()),
        Value::Object(o) if o.contains_key("scale") && o.contains_key("value") => variable_scale(v)?,
        other => FieldValue::Json(other.to_string()),
    })
}

fn variable_scale(v: &Value) -> Result<FieldValue, String> {
    let scale = v.get("scale").and_then(Value::as_u64).ok_or("VariableScaleDecimal without scale")?;
    let scale = u32::try_from(scale).map_err(|_| format!("decimal scale {scale} is larger than 38"))?;
    let bytes = v.get("value").and_then(Value::as_str).ok_or("VariableScaleDecimal without value")?;
    b64_decimal(bytes, scale)
}

/// ISO-8601 timestamp (`2024-05-01T10:00:00Z`, with offset, or without zone = UTC) → µs since epoch.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    Err(format!("'{s}' is not an ISO-8601 timestamp"))
}

impl FieldValue {
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    /// Text form, used for keys, names and the extra (unmapped) columns kept in silver.
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            FieldValue::Null => return None,
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::Int(i) => i.to_string(),
            FieldValue::Number(s) | FieldValue::Str(s) | FieldValue::Json(s) => s.clone(),
            FieldValue::Decimal { unscaled, scale } => format_decimal(*unscaled, *scale),
            FieldValue::Date(d) => {
                checked_date(*d as i64).map_or_else(|_| d.to_string(), |d| d.format("%Y-%m-%d").to_string())
            }
            FieldValue::Timestamp(us) => DateTime::from_timestamp_micros(*us)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                .unwrap_or_default(),
            FieldValue::Time(us) => format!(
                "{:02}:{:02}:{:02}.{:06}",
                us / 3_600_000_000,
                us / 60_000_000 % 60,
                us / 1_000_000 % 60,
                us % 1_000_000
            ),
        })
    }

    /// Money in hundredths. Exact decimals must not lose digits; doubles (an inexact encoding by
    /// nature, `decimal.handling.mode=double`) are rounded half away from zero.
    pub fn to_cents(&self) -> Result<Option<i64>, String> {
        match self {
            FieldValue::Null => Ok(None),
            FieldValue::Int(i) => i
                .checked_mul(100)
                .filter(|c| c.unsigned_abs() < 1_000_000_000_000_000_000)
                .map(Some)
                .ok_or_else(|| format!("amount {i} does not fit decimal(18,2)")),
            FieldValue::Decimal { unscaled, scale } => decimal_to_cents(*unscaled, *scale).map(Some),
            FieldValue::Str(s) => crate::decode::decimal::parse_cents(s).map(Some),
            FieldValue::Number(s) => {
                crate::decode::decimal::parse_cents(s).or_else(|_| round_double_cents(s)).map(Some)
            }
            other => Err(format!("expected an amount, got {other:?}")),
        }
    }

    pub fn to_i64(&self) -> Result<Option<i64>, String> {
        match self {
            FieldValue::Null => Ok(None),
            FieldValue::Int(i) => Ok(Some(*i)),
            FieldValue::Str(s) | FieldValue::Number(s) => {
                s.trim().trim_end_matches(".0").parse().map(Some).map_err(|_| format!("'{s}' is not an integer"))
            }
            FieldValue::Decimal { unscaled, scale } if *scale == 0 => {
                i64::try_from(*unscaled).map(Some).map_err(|e| e.to_string())
            }
            other => Err(format!("expected an integer, got {other:?}")),
        }
    }

    /// A date: Connect days, an ISO date (or the date part of a timestamp), or a timestamp's day.
    pub fn to_date(&self) -> Result<Option<NaiveDate>, String> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        match self {
            FieldValue::Null => Ok(None),
            FieldValue::Date(d) => checked_date(*d as i64).map(Some),
            // Schemaless io.debezium.time.Date: days since the epoch.
            FieldValue::Int(d) => checked_date(*d).map(Some),
            FieldValue::Timestamp(us) => {
                let d = DateTime::from_timestamp_micros(*us).map(|t| t.date_naive()).ok_or("timestamp out of range")?;
                checked_date((d - epoch).num_days()).map(Some)
            }
            FieldValue::Str(s) => NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
                .map_err(|_| format!("'{s}' is not a date (YYYY-MM-DD)"))
                .and_then(|d| checked_date((d - epoch).num_days()))
                .map(Some),
            other => Err(format!("expected a date, got {other:?}")),
        }
    }

    /// A timestamp in µs. Schemaless integers are read by magnitude: ns, µs or ms since the epoch.
    pub fn to_timestamp_us(&self) -> Result<Option<i64>, String> {
        match self {
            FieldValue::Null => Ok(None),
            FieldValue::Timestamp(us) => Ok(Some(*us)),
            FieldValue::Date(d) => mul(*d as i64, 86_400_000_000, "date").map(Some),
            FieldValue::Int(i) => Ok(Some(match i.unsigned_abs() {
                n if n >= 100_000_000_000_000_000 => i / 1000,
                n if n >= 100_000_000_000_000 => *i,
                _ => i * 1000,
            })),
            FieldValue::Str(s) => parse_timestamp(s).map(Some),
            other => Err(format!("expected a timestamp, got {other:?}")),
        }
    }
}

fn format_decimal(unscaled: i128, scale: u32) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let neg = unscaled < 0;
    let digits = format!("{:0>width$}", unscaled.unsigned_abs(), width = scale as usize + 1);
    let (i, f) = digits.split_at(digits.len() - scale as usize);
    format!("{}{i}.{f}", if neg { "-" } else { "" })
}

fn decimal_to_cents(unscaled: i128, scale: u32) -> Result<i64, String> {
    if scale > 38 {
        return Err(format!("decimal scale {scale} is larger than 38"));
    }
    let cents = if scale <= 2 {
        unscaled.checked_mul(10i128.pow(2 - scale))
    } else {
        let div = 10i128.pow(scale - 2);
        if unscaled % div != 0 {
            return Err(format!("amount {} has more than 2 decimal places", format_decimal(unscaled, scale)));
        }
        Some(unscaled / div)
    };
    cents
        .and_then(|c| i64::try_from(c).ok())
        .ok_or_else(|| format!("amount {} does not fit decimal(18,2)", format_decimal(unscaled, scale)))
}

/// Rounds the literal text of a double to hundredths, half away from zero, on its digits.
fn round_double_cents(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.contains(['e', 'E']) {
        // Exponent forms only appear for very small or large doubles: no cents survive either way.
        let f: f64 = t.parse().map_err(|_| format!("'{s}' is not a number"))?;
        return if f.abs() < 0.005 { Ok(0) } else { Err(format!("amount {s} does not fit decimal(18,2)")) };
    }
    let (neg, body) = t.strip_prefix('-').map_or((false, t), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let frac3: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    let whole = format!("{int}.{}", &frac3[..2]);
    let mut c = crate::decode::decimal::parse_cents(&whole)?;
    if frac3.as_bytes()[2] >= b'5' {
        c += 1;
    }
    Ok(if neg { -c } else { c })
}
