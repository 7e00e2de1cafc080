//! Any bytes as a message of the sales topic or of one of the four CDC topics, through the same
//! calls the pipeline makes (PII rules, then the topic's decoder): see
//! `orderlake::decode::checks::decode_message` for the input's layout and what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orderlake::decode::checks::decode_message(data));
