//! Without the `tls` feature: `--tls` is refused when the options are checked, so no
//! run has TLS dials (the type has no values) and every call below is a branch the
//! compiler removes.

use std::io;
use std::net::SocketAddr;

use super::bench::Bench;
use super::{LoadError, Options};
use crate::{ConnId, Context, Dial};

/// TLS dials cannot exist without the `tls` feature.
#[derive(Debug)]
pub enum TlsDials {}

impl TlsDials {
    /// Always `None` (the options were checked before).
    pub fn new(_: &Options) -> Result<Option<TlsDials>, LoadError> {
        Ok(None)
    }

    pub fn dial(&self, _: Dial, _: SocketAddr) -> io::Result<Dial> {
        match *self {}
    }

    pub fn agreed(_: &Context<'_, Bench>, _: ConnId) -> Option<(String, String)> {
        None
    }
}
