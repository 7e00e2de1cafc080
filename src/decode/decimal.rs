//! Exact money parsing from the literal text of a JSON number or string. Prices never pass
//! through `f64`, so `0.1 + 0.2` style drift cannot reach the lake.

use crate::model::Cents;

/// Parses `"12"`, `"12.5"`, `"-0.07"`, `"1,234.50"`-free plain decimals into hundredths.
/// Extra fractional digits are accepted only when they are zeros: rounding money silently is a bug.
pub fn parse_cents(text: &str) -> Result<Cents, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty amount".into());
    }
    let (neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body.contains(['e', 'E']) {
        return Err(format!("amount '{t}' uses an exponent; write it as a plain decimal"));
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(format!("amount '{t}' has no digits"));
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("amount '{t}' is not a decimal number"));
    }
    let (cents_part, rest) = frac.split_at(frac.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return Err(format!("amount '{t}' has more than 2 decimal places"));
    }
    let int_digits = int.trim_start_matches('0');
    // decimal(18,2) holds 16 integer digits.
    if int_digits.len() > 16 {
        return Err(format!("amount '{t}' does not fit decimal(18,2)"));
    }
    let whole: i64 =
        if int_digits.is_empty() { 0 } else { int_digits.parse().map_err(|e| format!("amount '{t}': {e}"))? };
    let mut c: i64 = if cents_part.is_empty() { 0 } else { cents_part.parse().unwrap_or(0) };
    if cents_part.len() == 1 {
        c *= 10;
    }
    let v = whole * 100 + c;
    Ok(if neg { -v } else { v })
}

/// Renders hundredths back as a plain decimal string (`-1234.50`).
pub fn format_cents(c: Cents) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_cents("12"), Ok(1200));
        assert_eq!(parse_cents("12.5"), Ok(1250));
        assert_eq!(parse_cents("12.34"), Ok(1234));
        assert_eq!(parse_cents("0.07"), Ok(7));
        assert_eq!(parse_cents(".5"), Ok(50));
        assert_eq!(parse_cents("-6.19"), Ok(-619));
        assert_eq!(parse_cents(" 6.190000 "), Ok(619));
        assert_eq!(parse_cents("9999999999999999.99"), Ok(999_999_999_999_999_999));
    }

    #[test]
    fn rejects_what_would_need_rounding_or_is_not_a_number() {
        assert!(parse_cents("6.195").unwrap_err().contains("more than 2 decimal places"));
        assert!(parse_cents("1e3").unwrap_err().contains("exponent"));
        assert!(parse_cents("abc").is_err());
        assert!(parse_cents("").is_err());
        assert!(parse_cents("-").is_err());
        assert!(parse_cents("1.2.3").is_err());
        assert!(parse_cents("12345678901234567890").unwrap_err().contains("decimal(18,2)"));
    }

    #[test]
    fn formats_round_trip() {
        for c in [0, 7, -7, 1250, -123456, 100] {
            assert_eq!(parse_cents(&format_cents(c)), Ok(c));
        }
        assert_eq!(format_cents(-1250), "-12.50");
    }
}
