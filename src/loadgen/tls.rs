//! `--tls`: the run's connections dial over TLS ([`crate::Dial::tls`]). What they
//! trust is the system's roots plus `--tls-ca`; the name each server's certificate
//! must be for is `--tls-name`, or the server's IP address written out.
//!
//! Session resumption is off: a resumed handshake skips the certificate and its
//! signature, so a run that resumed some handshakes and not others would time two
//! different things as one. Every handshake of a run is a full one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::Resumption;

use super::bench::Bench;
use super::{LoadError, Options};
use crate::tls::TlsClient;
use crate::{ConnId, Context, Dial};

/// What a run's TLS dials trust and check.
#[derive(Debug)]
pub struct TlsDials {
    client: TlsClient,
    /// `--tls-name`, if given; else each server's IP address.
    name: Option<String>,
}

impl TlsDials {
    /// The dials `options` ask for (`None` without `--tls`); reads `--tls-ca`, and
    /// checks that each server's name is one a certificate can hold.
    pub fn new(options: &Options) -> Result<Option<TlsDials>, LoadError> {
        let Some(tls) = &options.tls else {
            return Ok(None);
        };
        let trust = TlsClient::new(true, tls.ca.as_deref())
            .map_err(|e| LoadError::Options(format!("--tls-ca: {e}")))?;
        let mut config = (*trust.config()).clone();
        config.resumption = Resumption::disabled();
        let dials = TlsDials {
            client: TlsClient::from_config(Arc::new(config)),
            name: tls.name.clone(),
        };
        for server in options.servers() {
            let name = dials.name_for(server);
            Dial::tcp(server)
                .tls(&dials.client, &name)
                .map_err(|e| LoadError::Options(format!("--tls-name: {e}")))?;
        }
        Ok(Some(dials))
    }

    /// The name `server`'s certificate is checked against.
    fn name_for(&self, server: SocketAddr) -> String {
        self.name.clone().unwrap_or_else(|| server.ip().to_string())
    }

    /// `dial` to `server`, over TLS.
    pub fn dial(&self, dial: Dial, server: SocketAddr) -> io::Result<Dial> {
        dial.tls(&self.client, &self.name_for(server))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// The protocol version and cipher suite `conn` agreed on, once its handshake is
    /// done.
    pub fn agreed(ctx: &Context<'_, Bench>, conn: ConnId) -> Option<(String, String)> {
        let info = ctx.tls(conn)?;
        Some((info.protocol?, info.cipher_suite?))
    }
}
