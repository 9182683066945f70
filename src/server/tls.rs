//! rustls configuration for the webhook port and hot reload of its certificate.
//!
//! Handshakes read the current pair through an [`ArcSwap`], so a reload is one atomic store and
//! never blocks a handshake. The reloader polls the files' *content*: a Kubernetes Secret volume
//! updates by swapping its `..data` symlink, which file-event watchers on `tls.crt` miss.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::certs::load::{self, TlsError, certified_key, load_certified_key, read_limited};

/// ALPN identifiers, in server preference order: h2 first so HTTP/2 clients get it.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Serves whatever pair was stored last; handshakes never wait for a reload.
pub struct CertificateResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertificateResolver {
    /// Loads the initial pair from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let initial = load_certified_key(cert, key)?;
        Ok(Self {
            current: ArcSwap::from_pointee(initial),
        })
    }

    /// Replaces the pair for all handshakes that start after this call.
    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no key material; the chain length is enough to tell instances apart in logs.
        f.debug_struct("CertificateResolver")
            .field("chain_len", &self.current.load().cert.len())
            .finish()
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The webhook port's TLS configuration: ring, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and,
/// with `client_ca`, mandatory client certificates signed by it.
pub fn server_config(
    resolver: Arc<CertificateResolver>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(load::provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(load::client_verifier(path, provider)?),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// What one reload attempt did; the caller turns these into
/// `mesh_admission_tls_reloads_total` and `mesh_admission_tls_reload_errors_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadEvent {
    /// The files changed and the new pair now serves new handshakes.
    Reloaded,
    /// The files changed but the new content is unusable; the previous pair keeps serving.
    Failed(String),
}

/// Polls a certificate/key pair by content and swaps it into a [`CertificateResolver`].
struct CertReloader {
    resolver: Arc<CertificateResolver>,
    cert: PathBuf,
    key: PathBuf,
    /// Fingerprint of the last content acted on, good or bad: unchanged content is never reloaded
    /// and a broken pair is reported once, not once per tick.
    last_seen: Option<u64>,
}

impl CertReloader {
    fn new(resolver: Arc<CertificateResolver>, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            resolver,
            cert,
            key,
            last_seen: None,
        }
    }

    /// Checks the files once; `None` when there is nothing to report.
    async fn check(&mut self) -> Option<ReloadEvent> {
        let first = self.read_pair().await;
        // A Secret volume swap between reading tls.crt and tls.key would otherwise pair the new
        // cert with the old key and count a spurious error; a second read tells settled content
        // apart from content in flux, and in-flux content is simply looked at again next tick.
        let second = self.read_pair().await;
        let seen = fingerprint(&first);
        if seen != fingerprint(&second) || self.last_seen == Some(seen) {
            return None;
        }
        let is_baseline = self.last_seen.is_none();
        self.last_seen = Some(seen);

        let loaded =
            first.and_then(|(cert, key)| certified_key(&cert, &key, &self.cert, &self.key));
        match loaded {
            // The resolver was most likely loaded from these very files just before we started.
            Ok(new) if is_baseline && new.cert == self.resolver.current().cert => None,
            Ok(new) => {
                self.resolver.store(new);
                tracing::info!(cert = %self.cert.display(), "reloaded TLS certificate");
                Some(ReloadEvent::Reloaded)
            }
            Err(error) => {
                // `{:#}`: the error and its causes on one line.
                let reason = format!("{:#}", anyhow::Error::new(error));
                tracing::warn!(%reason, "keeping the previous TLS certificate");
                Some(ReloadEvent::Failed(reason))
            }
        }
    }

    /// Reads both files off the runtime's threads, as `tokio::fs` would.
    async fn read_pair(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        let read = move || Ok((read_limited(&cert)?, read_limited(&key)?));
        tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|error| {
                Err(TlsError::Read {
                    path: self.cert.clone(),
                    source: io::Error::other(error),
                })
            })
    }
}

/// An unreadable pair is fingerprinted by its error, so a deleted file is reported once, and its
/// return (even with the old content) counts as a change.
fn fingerprint(pair: &Result<(Vec<u8>, Vec<u8>), TlsError>) -> u64 {
    let mut hasher = DefaultHasher::new();
    pair.as_ref().map_err(ToString::to_string).hash(&mut hasher);
    hasher.finish()
}

/// Polls `cert` and `key` every `interval` until `shutdown` is cancelled, and swaps a changed,
/// valid pair into `resolver`. Content identical to what `resolver` already serves is not reported
/// as a reload.
pub fn spawn_reloader(
    resolver: Arc<CertificateResolver>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    events: impl Fn(ReloadEvent) + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let mut reloader = CertReloader::new(resolver, cert, key);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if let Some(event) = reloader.check().await {
                        events(event);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertOptions, generate, temp_dir};
    use std::fs;

    #[test]
    fn server_config_offers_h2_then_http11() {
        let dir = temp_dir("config");
        let out = generate(&CertOptions::with_defaults(&dir)).unwrap();
        let resolver =
            Arc::new(CertificateResolver::from_files(&out.tls_cert, &out.tls_key).unwrap());
        let config = server_config(resolver.clone(), None).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(server_config(resolver.clone(), Some(&out.ca_cert)).is_ok());
        assert!(matches!(
            server_config(resolver, Some(&out.tls_key)),
            Err(TlsError::EmptyChain { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn reloader_reports_changes_once_and_ignores_unchanged_content() {
        let dir = temp_dir("check");
        let opts = CertOptions::with_defaults(&dir);
        let out = generate(&opts).unwrap();
        let resolver =
            Arc::new(CertificateResolver::from_files(&out.tls_cert, &out.tls_key).unwrap());
        let mut reloader =
            CertReloader::new(resolver.clone(), out.tls_cert.clone(), out.tls_key.clone());
        assert_eq!(reloader.check().await, None, "baseline is not a reload");
        assert_eq!(reloader.check().await, None);

        generate(&opts).unwrap();
        assert_eq!(reloader.check().await, Some(ReloadEvent::Reloaded));
        assert_eq!(reloader.check().await, None);
        let served = resolver.current();

        fs::write(&out.tls_cert, "garbage").unwrap();
        assert!(matches!(
            reloader.check().await,
            Some(ReloadEvent::Failed(_))
        ));
        assert_eq!(
            reloader.check().await,
            None,
            "a broken pair is reported once"
        );
        assert!(Arc::ptr_eq(&served, &resolver.current()));
        fs::remove_dir_all(dir).unwrap();
    }
}
