//! Without the `tls` feature: `rediss://` is refused when the settings are made, so
//! no node speaks TLS. The names of `tls.rs`, with no values behind them.

use std::path::Path;

use crate::Dial;

/// TLS to Redis cannot be had without the `tls` feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTls {}

impl RedisTls {
    /// Always an error: this build has no TLS.
    pub fn new(_host: &str) -> Result<RedisTls, String> {
        Err("rediss:// (Redis over TLS) needs switchboard built with the tls feature".into())
    }

    /// (Never called: there is no value.)
    pub fn trust(&mut self, _path: &Path) -> Result<(), String> {
        match *self {}
    }

    /// (Never called: there is no value.)
    pub fn trusts_nothing(&self) -> bool {
        match *self {}
    }

    /// (Never called: there is no value.)
    pub fn server_name(&self) -> &str {
        match *self {}
    }

    pub(super) fn for_node(&self) -> Result<NodeTls, String> {
        match *self {}
    }
}

/// No node has TLS.
#[derive(Debug)]
pub(super) enum NodeTls {}

impl NodeTls {
    pub(super) fn dial(&self, _dial: Dial) -> Result<Dial, String> {
        match *self {}
    }
}

/// (Never called: no connection has TLS.)
pub(super) fn failure_words(words: &str) -> String {
    words.to_owned()
}
