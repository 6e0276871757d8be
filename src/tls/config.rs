//! What a TLS endpoint serves and what a TLS dial trusts: certificates and keys read
//! from PEM files into rustls configurations.
//!
//! A listener's configuration sits behind a lock that each new connection reads once
//! (an `Arc` clone), so [`TlsServer::reload`] swaps in a new certificate while the
//! connections made with the old one carry on undisturbed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::layer::record_server_name;

/// Why a TLS configuration could not be made.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of what was asked of it.
    Pem {
        /// The file.
        path: PathBuf,
        /// What it lacks, or what reading it said.
        problem: String,
    },
    /// rustls refused the certificate and key (a key that does not match, say).
    Rustls(rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    Verifier(String),
    /// The name a dial wants the server's certificate checked against is not a valid
    /// DNS name or IP address.
    ServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, problem } => write!(f, "{}: {problem}", path.display()),
            TlsError::Rustls(e) => write!(f, "TLS: {e}"),
            TlsError::Verifier(e) => write!(f, "client certificate verifier: {e}"),
            TlsError::ServerName(name) => write!(f, "not a DNS name or IP address: {name:?}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The certificate chain and key a listener serves, and optionally the CAs its
/// clients' certificates must chain to. Cheap to clone: clones share one current
/// configuration, so a reload reaches every loop at once.
#[derive(Clone)]
pub struct TlsServer {
    shared: Arc<ServerShared>,
}

struct ServerShared {
    /// Where the configuration was read from, to read it again on reload (`None` when
    /// it was handed over already made).
    files: Option<ServerFiles>,
    current: RwLock<Arc<ServerConfig>>,
}

#[derive(Debug, Clone)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.shared.files)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Reads the certificate chain (PEM, leaf first) and the private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1); with `client_ca`, clients must present a certificate that
    /// chains to one of its CAs.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsServer, TlsError> {
        let files = ServerFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
        };
        let config = server_config(&files)?;
        Ok(TlsServer {
            shared: Arc::new(ServerShared {
                files: Some(files),
                current: RwLock::new(config),
            }),
        })
    }

    /// Serves a rustls configuration made by the caller (its own verifier, ALPN,
    /// session cache...). [`TlsServer::reload`] then has nothing to read again.
    pub fn from_config(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer {
            shared: Arc::new(ServerShared {
                files: None,
                current: RwLock::new(record_server_name(config)),
            }),
        }
    }

    /// Reads the files again: handshakes from now on use what they hold; connections
    /// made before keep theirs. On an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some(files) = &self.shared.files else {
            return Ok(());
        };
        let config = server_config(files)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// The configuration new connections get now.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or
/// SEC1), as a server or a client presents them.
pub(crate) fn read_key_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        problem: format!("no private key read: {e}"),
    })?;
    Ok((chain, key))
}

fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = read_key_pair(&files.cert, &files.key)?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = Arc::new(root_store(&read_certificates(path)?)?);
            let verifier = WebPkiClientVerifier::builder(roots)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Rustls)?;
    Ok(record_server_name(Arc::new(config)))
}

/// What a dial over TLS trusts: the system's roots, and any CAs from PEM files.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the operating system's roots (when `system_roots`) plus the certificates
    /// in `extra_ca` (PEM), if given.
    pub fn new(system_roots: bool, extra_ca: Option<&Path>) -> Result<TlsClient, TlsError> {
        let mut roots = match system_roots {
            true => system_roots_store(),
            false => RootCertStore::empty(),
        };
        if let Some(path) = extra_ca {
            trust_pem_file(&mut roots, path)?;
        }
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Uses a rustls configuration made by the caller (client certificates, its own
    /// verifier...).
    pub fn from_config(config: Arc<ClientConfig>) -> TlsClient {
        TlsClient { config }
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// A dial's TLS: what it trusts and the name it checks the server's certificate
/// against.
#[derive(Clone)]
pub(crate) struct DialTls {
    pub(crate) client: TlsClient,
    pub(crate) server_name: ServerName<'static>,
}

impl DialTls {
    pub(crate) fn new(client: &TlsClient, name: &str) -> Result<DialTls, TlsError> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::ServerName(name.to_string()))?;
        Ok(DialTls {
            client: client.clone(),
            server_name,
        })
    }
}

impl fmt::Debug for DialTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {:?}", self.server_name)
    }
}

/// Two dials are alike when they check the same name with the same trust.
impl PartialEq for DialTls {
    fn eq(&self, other: &DialTls) -> bool {
        self.server_name == other.server_name
            && Arc::ptr_eq(&self.client.config, &other.client.config)
    }
}

impl Eq for DialTls {}

/// The operating system's root certificates (those it cannot parse are skipped, and
/// said at debug level).
pub(crate) fn system_roots_store() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        log::debug!("system root certificates: {error}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    log::debug!("system root certificates: {added} trusted, {ignored} unparsable");
    roots
}

/// Adds the CA certificates of a PEM file to `roots`: an error when the file cannot
/// be read, holds no certificate, or holds one that cannot be a root.
pub(crate) fn trust_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(TlsError::Rustls)?;
    }
    Ok(())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("cannot read it: {e}")))?;
    if certs.is_empty() {
        return Err(problem("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(TlsError::Rustls)?;
    }
    Ok(roots)
}

/// What a service may learn of a connection's TLS ([`crate::Context::tls`]).
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// Still handshaking: the rest is not known yet.
    pub handshaking: bool,
    /// The name the client asked for (SNI), on an accepted connection.
    pub server_name: Option<String>,
    /// The peer's certificate chain (DER, leaf first), if it presented one.
    pub peer_certificates: Vec<Vec<u8>>,
    /// The protocol version agreed, as `TLSv1_3`.
    pub protocol: Option<String>,
    /// The cipher suite agreed, as `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: Option<String>,
    /// Why TLS ended the connection, in rustls's words (as `invalid peer certificate:
    /// UnknownIssuer`, or `received fatal alert: CertificateRequired`): asked in
    /// `on_close`.
    pub failure: Option<String>,
}
