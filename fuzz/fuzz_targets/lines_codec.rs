//! Fuzzes `LinesCodec` and its resumable scan: any bytes, any split into reads.
//! Run with `cargo +nightly fuzz run lines_codec`. The check lives in
//! `tests/fuzz_checks/lines.rs`, shared with the corpus replay in the main crate's tests.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::lines::check(data));
