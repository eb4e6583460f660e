//! A TLS-terminating TCP proxy for tests, and a throwaway PKI for it: what
//! a coordinator behind an ingress or a load balancer looks like.
//!
//! ```text
//!   worker / CLI ──https──► 127.0.0.1:<proxy port> ──plain TCP──► upstream
//!   (trusts TestPki::ca)      (TestPki's server cert)              (coordinator)
//! ```
//!
//! [`TestPki::generate`] makes a CA and a server certificate for
//! `localhost` and `127.0.0.1` signed by it, with the `openssl` command
//! line tool (no certificate-generation crate needed), in a fresh
//! directory removed on drop. [`TlsProxy`] binds first and forwards to the
//! upstream set with [`TlsProxy::forward_to`], so its URL can be handed to
//! processes started before the upstream is known. A connection whose
//! handshake fails (a client that does not trust the CA) is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate signed by it, as PEM files.
pub struct TestPki {
    dir: PathBuf,
}

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = Tributary test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
";

const SERVER_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl TestPki {
    /// Makes the CA and the server certificate (P-256 keys, valid two
    /// days). Panics, naming the command, if `openssl` is missing or fails.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("tributary-pki-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        std::fs::write(dir.join("ca.cnf"), CA_CONFIG).expect("write ca.cnf");
        std::fs::write(dir.join("server.cnf"), SERVER_CONFIG).expect("write server.cnf");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &dir,
            &[
                &["req", "-x509", "-config", "ca.cnf"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req", "-new", "-config", "server.cnf"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.cnf",
                "-extensions",
                "v3_server",
            ],
        );
        Self { dir }
    }

    /// The CA certificate: what a client must trust (`TRIBUTARY_CA_FILE`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (for `localhost` and `127.0.0.1`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` (install it; the TLS tests need it): {e}")
        });
    assert!(
        out.status.success(),
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS-terminating proxy; see the module documentation. Dropping it
/// stops it and closes every connection.
pub struct TlsProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    handshakes: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl TlsProxy {
    /// Binds `127.0.0.1:0` and serves TLS with `pki`'s server certificate.
    pub async fn start(pki: &TestPki) -> Self {
        let certs = CertificateDer::pem_file_iter(pki.server_cert())
            .expect("read the server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the server certificate");
        let key = PrivateKeyDer::from_pem_file(pki.server_key()).expect("read the server key");
        let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TLS proxy");
        let addr = listener.local_addr().expect("local addr");
        let proxy = Self {
            addr,
            upstream: Arc::new(Mutex::new(None)),
            handshakes: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        let (upstream, handshakes, stop) = (
            proxy.upstream.clone(),
            proxy.handshakes.clone(),
            proxy.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let target = *upstream.lock().unwrap_or_else(PoisonError::into_inner);
                let (acceptor, handshakes, stop) =
                    (acceptor.clone(), handshakes.clone(), stop.clone());
                tokio::spawn(async move {
                    let Some(target) = target else { return };
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    handshakes.fetch_add(1, SeqCst);
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut server) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Forwards connections accepted from now on to `upstream`.
    pub fn forward_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = Some(upstream);
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>`: the URL to hand clients.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
