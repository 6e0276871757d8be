//! Redis over TLS (`rediss://`): what a node trusts, and why a handshake failed, in
//! words.
//!
//! The node dials Redis as for `redis://`, with the reactor's TLS layer on the
//! connection ([`Dial::tls`]): the link writes and reads plaintext, and Redis's
//! certificate must chain to a trusted CA (the system's, and `--tls-ca`'s) and name
//! the URL's host (a DNS name, or an IP address).
//!
//! A handshake that fails closes the connection; the service asks the reactor why
//! (`Context::tls` in `on_close`, rustls's words) and hands the words to the node,
//! which says them as the link's failure ([`failure_words`]): a CA not trusted, a
//! certificate for another name, an alert from Redis (which by default asks for a
//! client certificate).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::TlsClient;
use crate::Dial;

/// What a node checks Redis's certificate against: the CAs it trusts and the name the
/// certificate must carry. Made once, from the settings; each node makes its own
/// `NodeTls` of it.
#[derive(Clone)]
pub struct RedisTls {
    /// The URL's host: a DNS name or an IP address.
    server_name: String,
    /// The system's root certificates, and those of `--tls-ca`.
    roots: Arc<RootCertStore>,
    /// The certificate and key the node presents to a Redis that asks for one
    /// (`--redis-tls-cert`, `--redis-tls-key`; Redis's `tls-auth-clients`).
    client_auth: Option<Arc<ClientAuth>>,
}

/// A client certificate chain and its key.
struct ClientAuth {
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    /// Where they came from, to tell two settings apart.
    files: (std::path::PathBuf, std::path::PathBuf),
}

impl RedisTls {
    /// TLS to `host` (a DNS name or an IP address, as the URL gives it), trusting the
    /// system's root certificates.
    pub fn new(host: &str) -> Result<RedisTls, String> {
        if ServerName::try_from(host).is_err() {
            return Err(format!(
                "{host:?} is neither a DNS name nor an IP address a certificate can name"
            ));
        }
        let roots = crate::tls::system_roots_store();
        Ok(RedisTls {
            server_name: host.to_owned(),
            roots: Arc::new(roots),
            client_auth: None,
        })
    }

    /// Trusts the CA certificates (PEM) in the file at `path` as well.
    pub fn trust(&mut self, path: &Path) -> Result<(), String> {
        let roots = Arc::make_mut(&mut self.roots);
        crate::tls::trust_pem_file(roots, path).map_err(|e| match e {
            // (The caller names the file.)
            crate::tls::TlsError::Pem { problem, .. } => problem,
            other => format!("a certificate in it cannot be trusted: {other}"),
        })
    }

    /// Presents this certificate chain and key (PEM) to Redis, for a Redis that asks
    /// its clients for a certificate (`tls-auth-clients yes`, its default).
    pub fn present(&mut self, cert: &Path, key: &Path) -> Result<(), String> {
        let (chain, key_der) = crate::tls::read_key_pair(cert, key).map_err(|e| e.to_string())?;
        self.client_auth = Some(Arc::new(ClientAuth {
            chain,
            key: key_der,
            files: (cert.to_path_buf(), key.to_path_buf()),
        }));
        Ok(())
    }

    /// No CA is trusted: no certificate of Redis's could be accepted.
    pub fn trusts_nothing(&self) -> bool {
        self.roots.is_empty()
    }

    /// The name Redis's certificate must carry.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// What a node dials with: the client configuration these settings make.
    pub(super) fn for_node(&self) -> Result<NodeTls, String> {
        let builder = ClientConfig::builder().with_root_certificates(self.roots.clone());
        let config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => builder
                .with_client_auth_cert(auth.chain.clone(), auth.key.clone_key())
                .map_err(|e| format!("the client certificate cannot be used: {e}"))?,
        };
        Ok(NodeTls {
            client: TlsClient::from_config(Arc::new(config)),
            server_name: self.server_name.clone(),
        })
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// Alike when they check the same name against the same CAs.
impl PartialEq for RedisTls {
    fn eq(&self, other: &RedisTls) -> bool {
        let files = |tls: &RedisTls| tls.client_auth.as_ref().map(|auth| auth.files.clone());
        self.server_name == other.server_name
            && self.roots.roots == other.roots.roots
            && files(self) == files(other)
    }
}

impl Eq for RedisTls {}

/// One node's TLS to Redis: what its dials trust, and the last refusal of Redis's
/// certificate.
pub(super) struct NodeTls {
    client: TlsClient,
    server_name: String,
}

impl NodeTls {
    /// `dial` over TLS, checking Redis's certificate against the URL's host.
    pub(super) fn dial(&self, dial: Dial) -> Result<Dial, String> {
        dial.tls(&self.client, &self.server_name)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {:?}", self.server_name)
    }
}

/// The link's failure, from why TLS ended its connection (rustls's `words`): a
/// certificate refused, or any other failure with its likely causes.
pub(super) fn failure_words(words: &str) -> String {
    match words.starts_with("invalid peer certificate") {
        true => format!("TLS: Redis's certificate was refused: {words}"),
        false => format!(
            "TLS: the handshake or a record failed: {words} (a port that does not speak \
             TLS, or a Redis that asks for a client certificate: tls-auth-clients)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_and_other_failures_are_told_apart() {
        let why = failure_words("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            why,
            "TLS: Redis's certificate was refused: invalid peer certificate: UnknownIssuer"
        );
        let why = failure_words("received fatal alert: CertificateRequired");
        assert!(
            why.starts_with("TLS: the handshake or a record failed: received fatal alert")
                && why.contains("tls-auth-clients"),
            "{why}"
        );
    }

    #[test]
    fn the_host_must_be_a_name_a_certificate_can_carry() {
        assert!(RedisTls::new("redis.lan").is_ok());
        assert!(RedisTls::new("::1").is_ok());
        let err = RedisTls::new("not a name").unwrap_err();
        assert!(
            err.contains("neither a DNS name nor an IP address"),
            "{err}"
        );
    }
}
