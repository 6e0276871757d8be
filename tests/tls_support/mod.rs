//! Certificates and clients for the TLS tests: a test CA made with rcgen, a server
//! certificate it signs (for `localhost` and `127.0.0.1`), a client certificate, all
//! written as PEM files into a directory of the test's own; and a blocking rustls
//! client with timeouts.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The PEM files of one test's certificates.
pub struct Certs {
    pub dir: PathBuf,
    /// The CA that signed the others.
    pub ca: PathBuf,
    /// The server's chain (its certificate) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key, signed by the same CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    /// Makes a CA and the certificates it signs, in a new directory named after `test`.
    pub fn make(test: &str) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("switchboard-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("switchboard test CA {test}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let issue = |names: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) =
            issue(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (client_pem, client_key) = issue(vec!["member.test".into()], "member");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Certs {
            ca: write("ca.pem", &ca.pem()),
            cert: write("cert.pem", &server_pem),
            key: write("key.pem", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key),
            dir,
        }
    }

    /// A client configuration trusting this CA only (and presenting the client
    /// certificate, when `with_cert`).
    pub fn client_config(&self, with_cert: bool) -> Arc<ClientConfig> {
        client_config(
            &self.ca,
            with_cert.then(|| (&*self.client_cert, &*self.client_key)),
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client configuration trusting the CAs in `ca`.
pub fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// A blocking TLS client over TCP, with read and write timeouts.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and starts a handshake for `name` (completed by the first read
/// or write, or by [`handshake`]).
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    StreamOwned::new(conn, tcp)
}

/// Drives the handshake to its end: `Err` with rustls's (or the socket's) reason.
pub fn handshake(stream: &mut TlsStream) -> std::io::Result<()> {
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(())
}

/// One length frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Reads one length frame's payload.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

/// Sends `payload` as a frame and reads the echo.
pub fn echo(stream: &mut TlsStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(&frame(payload)).unwrap();
    stream.flush().unwrap();
    read_frame(stream).unwrap()
}
