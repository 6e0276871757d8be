//! Adversarial end-to-end cases over loopback (issue 14): each starts the release
//! binary with flags chosen for the case, attacks it with real sockets, and asserts a
//! figure that can fail: descriptors and memory back to baseline, CPU time while out of
//! descriptors, round-trip percentiles, close reasons and close times.
//!
//! Bounded in count and time, and stopping by themselves. The short run is part of
//! `cargo test`; the issue's sizes (20,000 connects, thousands of withheld payloads)
//! run with
//!
//! ```text
//! SWITCHBOARD_ADVERSARIAL=long cargo test --release --test adversarial -- --test-threads=1 --nocapture
//! ```
//!
//! Cases run one at a time either way (they measure their own server's CPU time and
//! latency); `--nocapture` shows each case's figures.

mod common;

#[path = "adversarial/support.rs"]
mod support;

#[path = "adversarial/connections.rs"]
mod connections;

#[path = "adversarial/slow_peers.rs"]
mod slow_peers;

#[path = "adversarial/noise.rs"]
mod noise;
