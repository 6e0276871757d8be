//! Replays the fuzz corpus through the fuzz targets' own checks, so every `cargo test`
//! exercises what the fuzzers found without a fuzzer: each file under
//! `fuzz/corpus/<target>/` (the minimized corpus) and `fuzz/regressions/<target>/`
//! (inputs that once failed) goes through `tests/fuzz_checks/`, the code the target
//! in `fuzz/fuzz_targets/` runs. `fuzz/README.md` says how to add a regression.

mod fuzz_checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted, or none if the folder is missing.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus and regression file of `target` through `check`, and fails
/// naming each file whose check panicked. The corpus must not be empty: a replay of
/// nothing would pass for ever.
#[track_caller]
fn replay(target: &str, check: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty or missing"
    );
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let bytes = fs::read(path).unwrap();
        if panic::catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} input(s) of {target} fail their check (reproduce one with \
         `cargo +nightly fuzz run {target} <file>` in fuzz/):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn length_codec_corpus() {
    replay("length_codec", fuzz_checks::length::check);
}

#[test]
fn lines_codec_corpus() {
    replay("lines_codec", fuzz_checks::lines::check);
}

#[cfg(feature = "chat")]
#[test]
fn chat_parse_corpus() {
    replay("chat_parse", fuzz_checks::chat::check);
}
