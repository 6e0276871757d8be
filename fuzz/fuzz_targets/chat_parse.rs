//! Fuzzes the chat request parser in both `Legacy` modes: any bytes.
//! Run with `cargo +nightly fuzz run chat_parse`. The check lives in
//! `tests/fuzz_checks/chat.rs`, shared with the corpus replay in the main crate's tests.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::chat::check(data));
