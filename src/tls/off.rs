//! Without the `tls` feature: the layer's names with nothing behind them. No
//! connection has a layer (the type has no values), so every call below is a branch
//! the compiler removes.

use std::io::{self, IoSlice};

use crate::connection::{ConnId, Stream};

/// A TLS layer cannot exist without the `tls` feature.
pub(crate) enum TlsLayer {}

impl TlsLayer {
    pub(crate) fn read(&mut self, _: &mut Stream, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn write(&mut self, _: &mut Stream, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn write_vectored(
        &mut self,
        _: &mut Stream,
        _: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn flush(&mut self, _: &mut Stream) -> io::Result<bool> {
        match *self {}
    }

    pub(crate) fn has_pending(&self) -> bool {
        match *self {}
    }

    pub(crate) fn close_notify(&mut self, _: &mut Stream) -> io::Result<bool> {
        match *self {}
    }

    pub(crate) fn take_handshake_finished(&mut self) -> bool {
        match *self {}
    }

    pub(crate) fn is_established(&self) -> bool {
        match *self {}
    }

    pub(crate) fn charge_kib(&self) -> u64 {
        match *self {}
    }

    pub(crate) fn recount(&mut self) -> (u64, u64) {
        match *self {}
    }
}

/// No connection has a layer.
#[derive(Default)]
pub(crate) struct TlsTable;

impl TlsTable {
    #[inline(always)]
    pub(crate) fn get_mut(&mut self, _: ConnId) -> Option<&mut TlsLayer> {
        None
    }

    #[inline(always)]
    pub(crate) fn get(&self, _: ConnId) -> Option<&TlsLayer> {
        None
    }

    #[inline(always)]
    pub(crate) fn remove(&mut self, _: ConnId) -> Option<Box<TlsLayer>> {
        None
    }

    #[inline(always)]
    pub(crate) fn keep_while_closing(&mut self, _: ConnId, _: Option<Box<TlsLayer>>) {}
}
