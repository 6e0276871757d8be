//! Fuzzes `LengthCodec` in every configuration: any bytes, any split into reads.
//! Run with `cargo +nightly fuzz run length_codec`. The check lives in
//! `tests/fuzz_checks/length.rs`, shared with the corpus replay in the main crate's tests.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::length::check(data));
