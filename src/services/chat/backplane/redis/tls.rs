//! Redis over TLS (`rediss://`): what a node trusts, and why a handshake failed, in
//! words.
//!
//! The node dials Redis as for `redis://`, with the reactor's TLS layer on the
//! connection ([`Dial::tls`]): the link writes and reads plaintext, and Redis's
//! certificate must chain to a trusted CA (the system's, and `--tls-ca`'s) and name
//! the URL's host (a DNS name, or an IP address).
//!
//! A handshake that fails closes the connection with an I/O error of kind
//! `InvalidData`; the reactor keeps rustls's words for its debug log. So that the node
//! can say at its default level why Redis is unreachable, each node checks Redis's
//! certificate with webpki behind a [`Witness`] that keeps the last refusal: a CA not
//! trusted, a certificate for another name, one expired come back in rustls's words.
//! Any other TLS failure (a server answering in plain text, an alert from Redis, which
//! by default asks for a client certificate) is named as TLS's, with its likely
//! causes.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error, SignatureScheme};

use crate::tls::TlsClient;
use crate::{CloseReason, Dial};

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

    /// One node's TLS: a client configuration of its own, whose certificate check
    /// keeps its refusals for this node. An error when nothing is trusted.
    pub(super) fn for_node(&self) -> Result<NodeTls, String> {
        let verifier = WebPkiServerVerifier::builder(self.roots.clone())
            .build()
            .map_err(|e| format!("no CA to check Redis's certificate against: {e}"))?;
        let refusal = Arc::new(Mutex::new(None));
        let witness = Witness {
            verifier,
            refusal: refusal.clone(),
        };
        // "Dangerous" only in that rustls cannot see what the verifier does: it is
        // webpki's, and the witness changes none of its verdicts.
        let builder = ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(witness));
        let config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => builder
                .with_client_auth_cert(auth.chain.clone(), auth.key.clone_key())
                .map_err(|e| format!("the client certificate cannot be used: {e}"))?,
        };
        Ok(NodeTls {
            client: TlsClient::from_config(Arc::new(config)),
            server_name: self.server_name.clone(),
            refusal,
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
    /// Set by the [`Witness`] when it refuses a certificate; taken when the connection
    /// closes, and forgotten at each dial.
    refusal: Arc<Mutex<Option<Error>>>,
}

impl NodeTls {
    /// `dial` over TLS. What an earlier connection was refused is forgotten.
    pub(super) fn dial(&self, dial: Dial) -> Result<Dial, String> {
        self.take_refusal();
        dial.tls(&self.client, &self.server_name)
            .map_err(|e| e.to_string())
    }

    /// Why the connection closed with `reason`, in words that say it was TLS, when TLS
    /// ended it; `None` when it did not.
    pub(super) fn failure(&self, reason: &CloseReason) -> Option<String> {
        if let Some(refused) = self.take_refusal() {
            return Some(format!("TLS: Redis's certificate was refused: {refused}"));
        }
        // The TLS layer's errors, and only they, close a Redis connection with
        // InvalidData: RESP the node cannot read is closed by the node itself.
        (*reason == CloseReason::Error(io::ErrorKind::InvalidData)).then(|| {
            "TLS: the handshake or a record failed (a port that does not speak TLS, \
             or a Redis that asks for a client certificate: tls-auth-clients; the \
             debug log has rustls's words)"
                .to_owned()
        })
    }

    fn take_refusal(&self) -> Option<Error> {
        self.refusal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {:?}", self.server_name)
    }
}

/// webpki's check of Redis's certificate, and a note of why it refused one. Every
/// verdict is webpki's.
#[derive(Debug)]
struct Witness {
    verifier: Arc<WebPkiServerVerifier>,
    refusal: Arc<Mutex<Option<Error>>>,
}

impl ServerCertVerifier for Witness {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict = self.verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(refused) = &verdict {
            *self
                .refusal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(refused.clone());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.verifier.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    /// A CA called `ca_name`, and a certificate it signed for `name`.
    fn issued(ca_name: &str, name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.der().clone(), leaf.der().clone())
    }

    /// A node's TLS trusting `ca` alone, and the witness of its certificate checks.
    fn trusting(ca: &CertificateDer<'static>) -> (NodeTls, Witness) {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let tls = RedisTls {
            server_name: "redis.lan".into(),
            roots: Arc::new(roots),
            client_auth: None,
        };
        let node = tls.for_node().unwrap();
        let witness = Witness {
            verifier: WebPkiServerVerifier::builder(tls.roots.clone())
                .build()
                .unwrap(),
            refusal: node.refusal.clone(),
        };
        (node, witness)
    }

    /// What the witness says of `leaf` for `name`, as a handshake would ask it.
    fn check(witness: &Witness, leaf: &CertificateDer<'_>, name: &str) -> bool {
        let name = ServerName::try_from(name.to_string()).unwrap();
        witness
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_refused_certificate_is_named_at_the_close_in_rustls_words() {
        let (ca, leaf) = issued("our CA", "redis.lan");
        let (node, witness) = trusting(&ca);
        let invalid = CloseReason::Error(io::ErrorKind::InvalidData);

        assert!(check(&witness, &leaf, "redis.lan"));
        assert_eq!(node.failure(&CloseReason::PeerClosed), None);

        assert!(!check(&witness, &leaf, "10.0.0.7"));
        let why = node.failure(&invalid).unwrap();
        assert!(
            why.starts_with("TLS: Redis's certificate was refused: invalid peer certificate: ")
                && why.contains("not valid for name \"10.0.0.7\""),
            "{why}"
        );

        let (_, stranger) = issued("another CA", "redis.lan");
        assert!(!check(&witness, &stranger, "redis.lan"));
        let why = node.failure(&CloseReason::Reset).unwrap();
        assert!(why.ends_with("UnknownIssuer"), "{why}");

        // Said once: the next close is judged on its own.
        assert_eq!(node.failure(&CloseReason::PeerClosed), None);
        let why = node.failure(&invalid).unwrap();
        assert!(
            why.starts_with("TLS: the handshake or a record failed"),
            "{why}"
        );
        // A dial forgets what was refused before it.
        assert!(!check(&witness, &stranger, "redis.lan"));
        let _ = node
            .dial(Dial::tcp("127.0.0.1:6379".parse().unwrap()))
            .unwrap();
        assert_eq!(node.failure(&CloseReason::PeerClosed), None);
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
