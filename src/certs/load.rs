//! The webhook's TLS material from PEM files: the serving pair as rustls serves it (checked to
//! belong together) and the client CA. Files are read with a size limit, and every error names the
//! file it is about on one line.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

/// PEM files beyond this size are refused rather than read: a misconfigured path (a log file,
/// `/dev/zero`) must not exhaust memory once per reload tick.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why a certificate, key or client CA could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is larger than any plausible PEM bundle.
    #[error("{} is larger than {MAX_PEM_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },

    /// A PEM section in the certificate file is malformed.
    #[error("cannot parse certificates in {}", path.display())]
    ParseCert {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },

    /// The certificate file holds no certificate.
    #[error("no certificate found in {}", path.display())]
    EmptyChain { path: PathBuf },

    /// The key file holds no private key.
    #[error("no private key found in {}", path.display())]
    NoKey { path: PathBuf },

    /// The private key PEM is malformed.
    #[error("cannot parse private key in {}", path.display())]
    ParseKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },

    /// The private key is of a type or curve the ring provider cannot sign with.
    #[error("unsupported private key in {}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// The leaf certificate is not valid X.509.
    #[error("invalid certificate in {}", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// The private key is not the one the leaf certificate was issued for.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    /// A certificate in the client CA file cannot be used as a trust anchor.
    #[error("cannot use {} as client CA", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// The client certificate verifier could not be built from the client CA file.
    #[error("cannot build client verifier from {}", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// The ring provider rejected the protocol versions we ask for.
    #[error("cannot configure TLS versions")]
    Versions(#[source] rustls::Error),
}

/// Loads a certificate chain and its private key from files; see [`certified_key`].
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certified_key(&read_limited(cert)?, &read_limited(key)?, cert, key)
}

/// Parses a certificate chain and its private key: an empty chain, a missing key and a key that
/// does not belong to the leaf are refused. rustls' `CertifiedKey::from_der` loads the key and
/// checks it against the leaf; only the PEM and the error's wording are ours.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_chain(cert_pem, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_owned(),
        },
        source => TlsError::ParseKey {
            path: key_path.to_owned(),
            source,
        },
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        source @ rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
            path: cert_path.to_owned(),
            source,
        },
        source => TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            source,
        },
    })
}

fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseCert {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::EmptyChain {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

pub fn read_limited(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Mandatory client certificates signed by one of the certificates in `path`.
pub fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_chain(&read_limited(path)?, path)? {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            path: path.to_owned(),
            source,
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsError::ClientVerifier {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertOptions, generate, temp_dir};
    use std::fs;

    #[test]
    fn loads_a_generated_pair() {
        let dir = temp_dir("load");
        let out = generate(&CertOptions::with_defaults(&dir)).unwrap();
        let key = load_certified_key(&out.tls_cert, &out.tls_key).unwrap();
        assert_eq!(key.cert.len(), 2);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_bad_pairs_with_one_line_messages_naming_the_file() {
        let dir = temp_dir("bad");
        let a = generate(&CertOptions::with_defaults(dir.join("a"))).unwrap();
        let b = generate(&CertOptions::with_defaults(dir.join("b"))).unwrap();
        let empty = dir.join("empty.pem");
        fs::write(&empty, "").unwrap();
        let missing = dir.join("missing.pem");

        struct Case<'a> {
            cert: &'a Path,
            key: &'a Path,
            /// The file the message must name.
            named: &'a Path,
            expected: fn(&TlsError) -> bool,
        }
        let cases = [
            Case {
                cert: &empty,
                key: &a.tls_key,
                named: &empty,
                expected: |e| matches!(e, TlsError::EmptyChain { .. }),
            },
            Case {
                cert: &a.tls_cert,
                key: &empty,
                named: &empty,
                expected: |e| matches!(e, TlsError::NoKey { .. }),
            },
            // A certificate file is not a key file.
            Case {
                cert: &a.tls_cert,
                key: &a.tls_cert,
                named: &a.tls_cert,
                expected: |e| matches!(e, TlsError::NoKey { .. }),
            },
            Case {
                cert: &a.tls_cert,
                key: &b.tls_key,
                named: &b.tls_key,
                expected: |e| matches!(e, TlsError::KeyMismatch { .. }),
            },
            Case {
                cert: &missing,
                key: &a.tls_key,
                named: &missing,
                expected: |e| matches!(e, TlsError::Read { .. }),
            },
        ];
        for case in cases {
            let err = load_certified_key(case.cert, case.key).unwrap_err();
            let msg = err.to_string();
            assert!((case.expected)(&err), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains(&*case.named.to_string_lossy()), "{msg}");
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
