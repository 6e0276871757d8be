//! The checks behind the fuzz targets in `fuzz/`: one function per target, taking the
//! fuzzer's raw bytes and panicking when the code under test breaks its contract.
//!
//! The same files are compiled three times: into each fuzz target (`fuzz/fuzz_targets/`,
//! through `#[path]`), into `tests/fuzz_corpus.rs`, which replays the committed corpus
//! and regressions through these checks on every `cargo test`, and into
//! `tests/properties.rs`, which reuses the reference decoders and the reactor-style
//! feeding. So a fuzzer's finding and its regression test run the same assertions.
//!
//! | module | target | what it checks |
//! |---|---|---|
//! | [`length`] | `length_codec` | `LengthCodec` in every configuration against a reference decoder |
//! | [`lines`] | `lines_codec` | `LinesCodec` and its resumable scan against a split on `\n` |
//! | [`chat`] | `chat_parse` | `services::chat::parse` in both `NameMsgForm` modes |
//! | [`feed`] | | the reactor's read path over a codec: append a read, scan, consume, keep the tail |
//! | [`input`] | | reading settings and split points from the front of the fuzzer's bytes |

// Each including crate uses part of these checks.
#![allow(dead_code)]

#[cfg(feature = "chat")]
pub mod chat;
pub mod feed;
pub mod input;
pub mod length;
pub mod lines;
