//! Native TLS (`wss://`, `https://`) with rustls: the certificate chain and key come from
//! PEM files and are read again when they change or on SIGHUP. New handshakes use the new
//! certificate; established connections keep theirs and are never dropped for a reload.
//! A load balancer may terminate TLS instead; then leave this off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::settings::TlsSettings;

/// A certificate or key that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read a certificate chain from {path}")]
    Certificates {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot read a private key from {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot set up TLS")]
    Config(#[source] rustls::Error),
}

/// The node's TLS side: what accepts handshakes, and the certificate it hands out.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    certificate: Arc<Reloadable>,
}

#[derive(Debug)]
struct Reloadable {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

impl Tls {
    /// `None` when TLS is not configured.
    pub fn new(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load(cert_file, key_file, &provider)?;
        let certificate = Arc::new(Reloadable {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(current)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        // WebSocket upgrades are HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
        }))
    }

    /// Reads the certificate and key again; on failure the ones in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let c = &self.certificate;
        let fresh = load(&c.cert_file, &c.key_file, &c.provider)?;
        *c.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        vec![
            self.certificate.cert_file.clone(),
            self.certificate.key_file.clone(),
        ]
    }
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .and_then(|chain| {
            if chain.is_empty() {
                Err(rustls_pki_types::pem::Error::NoItemsFound)
            } else {
                Ok(chain)
            }
        })
        .map_err(|source| TlsError::Certificates {
            path: cert.to_owned(),
            source,
        })?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}
