//! Any text as a Debezium value through the PII rules: see
//! `orderlake::decode::checks::redact_value` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orderlake::decode::checks::redact_value(data));
