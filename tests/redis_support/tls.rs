//! Redis over TLS for the tests: certificates made with rcgen (a CA, and a server
//! certificate it signed) in a directory of the test's, and a `redis-server` that
//! serves TLS on a port of its own beside its plain one (which the readiness check
//! and `cli` use).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::{free_port, RedisServer};

/// A CA and a server certificate it signed, as PEM files in a directory removed when
/// this is dropped.
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// A new CA, and a certificate of its for `names` (each a DNS name or an IP
    /// address) with its key.
    #[track_caller]
    pub fn issue(names: &[&str]) -> Certificates {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sb-rediss-{}-{made}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");

        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "switchboard test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
            .expect("the CA certificate");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().expect("a server key");
        let cert = CertificateParams::new(names)
            .expect("server parameters")
            .signed_by(&key, &ca)
            .expect("the server certificate");

        let certs = Certificates { dir };
        for (path, pem) in [
            (certs.ca(), ca.pem()),
            (certs.cert(), cert.pem()),
            (certs.key(), key.serialize_pem()),
        ] {
            std::fs::write(path, pem).expect("write a PEM file");
        }
        certs
    }

    /// The CA's certificate: what a client must trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` serving TLS with a certificate of `Certificates` (clients are not
/// asked for one), and plain TCP on its `server.addr()`.
pub struct TlsRedis {
    pub server: RedisServer,
    /// Its TLS port.
    tls: SocketAddr,
}

impl TlsRedis {
    /// Starts it with `redis-server` flags of the test's beside the TLS ones, and waits
    /// until it answers.
    #[track_caller]
    pub fn start(certs: &Certificates, flags: &[&str]) -> TlsRedis {
        let tls = free_port();
        let port = tls.port().to_string();
        let (cert, key, ca) = (certs.cert(), certs.key(), certs.ca());
        let mut all = vec![
            "--tls-port",
            &port,
            "--tls-cert-file",
            path(&cert),
            "--tls-key-file",
            path(&key),
            "--tls-ca-cert-file",
            path(&ca),
            "--tls-auth-clients",
            "no",
        ];
        all.extend_from_slice(flags);
        TlsRedis {
            server: RedisServer::start_with(&all),
            tls,
        }
    }

    /// Where it serves TLS.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}
