//! Development and cluster certificates for the webhook, generated with rcgen.
//!
//! `mesh-admission certs` writes a CA (`ca.crt`, `ca.key`) and a serving pair (`tls.crt`, `tls.key`).
//! The CA is reused when it already exists, so re-running only re-issues the leaf and the caBundle that
//! the webhook configurations carry stays valid across rotations. `load` reads such files back into
//! what the TLS server serves.

pub mod load;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

pub const DEFAULT_SERVICE: &str = "mesh-admission";
pub const DEFAULT_NAMESPACE: &str = "mesh-system";
pub const DEFAULT_DAYS: u32 = 365;

/// A freshly minted CA lives this long (or `days`, if longer): leaves are re-issued under it for
/// years, and a CA that expires forces every cluster to re-distribute its caBundle.
const CA_MIN_DAYS: u32 = 3650;
/// Refuse validity periods that rcgen cannot encode (X.509 times end in 9999) long before overflow.
const MAX_DAYS: u32 = 36_500;
/// Backdate `notBefore` so a node whose clock runs a little behind still accepts a brand-new leaf.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
const SECONDS_PER_DAY: u64 = 86_400;

/// What `mesh-admission certs` generates.
#[derive(Clone, Debug)]
pub struct CertOptions {
    pub service: String,
    pub namespace: String,
    pub out: PathBuf,
    pub days: u32,
}

impl CertOptions {
    /// The defaults of `mesh-admission certs`, writing into `out`.
    pub fn with_defaults(out: impl Into<PathBuf>) -> Self {
        Self {
            service: DEFAULT_SERVICE.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            out: out.into(),
            days: DEFAULT_DAYS,
        }
    }

    /// The DNS names and IP the serving certificate is valid for, in the order the contract lists them.
    pub fn subject_alt_names(&self) -> Vec<String> {
        let Self {
            service, namespace, ..
        } = self;
        vec![
            service.clone(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ]
    }
}

/// Where the generated files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// True when an existing `ca.crt`/`ca.key` pair was kept and only the leaf was re-issued.
    pub reused_ca: bool,
}

/// Why certificates could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// `days` was 0 or beyond what an X.509 validity can express.
    #[error("invalid validity of {days} days: must be between 1 and {MAX_DAYS}")]
    InvalidDays { days: u32 },

    /// The service or namespace is not a DNS-1123 label, so it cannot be part of the Service's DNS names.
    #[error(
        "invalid {what} {value:?}: must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    InvalidName { what: &'static str, value: String },

    /// The output directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Only one half of the CA exists; guessing the other half would silently break the caBundle.
    #[error("found {} but not {}: remove it or restore the missing file", present.display(), missing.display())]
    IncompleteCa { present: PathBuf, missing: PathBuf },

    /// Only one half of the serving pair exists and we must not overwrite it.
    #[error("found {} but not {}: remove it or restore the missing file", present.display(), missing.display())]
    IncompletePair { present: PathBuf, missing: PathBuf },

    /// An existing file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An existing CA certificate or key could not be parsed.
    #[error("cannot parse {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },

    /// The re-issued leaf does not verify against the existing CA (key not matching ca.crt, or CA expired).
    #[error("existing CA {} cannot issue a valid certificate (does {} belong to it, is it expired?): {reason}", ca_cert.display(), ca_key.display())]
    UnusableCa {
        ca_cert: PathBuf,
        ca_key: PathBuf,
        reason: String,
    },

    /// rcgen failed to generate a key or sign a certificate.
    #[error("cannot generate {}", path.display())]
    Generate {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },

    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Generates (or re-issues) the serving certificate, creating the CA only when none exists yet.
pub fn generate(opts: &CertOptions) -> Result<GeneratedCerts, CertError> {
    if opts.days == 0 || opts.days > MAX_DAYS {
        return Err(CertError::InvalidDays { days: opts.days });
    }
    for (what, value) in [("service", &opts.service), ("namespace", &opts.namespace)] {
        if !is_dns_label(value) {
            return Err(CertError::InvalidName {
                what,
                value: value.clone(),
            });
        }
    }
    let out = &opts.out;
    fs::create_dir_all(out).map_err(|source| CertError::CreateDir {
        path: out.clone(),
        source,
    })?;
    let paths = GeneratedCerts {
        ca_cert: out.join(CA_CERT_FILE),
        ca_key: out.join(CA_KEY_FILE),
        tls_cert: out.join(TLS_CERT_FILE),
        tls_key: out.join(TLS_KEY_FILE),
        reused_ca: false,
    };

    let ca = match (paths.ca_cert.exists(), paths.ca_key.exists()) {
        (true, true) => load_ca(&paths.ca_cert, &paths.ca_key)?,
        (false, false) => new_ca(opts, &paths.ca_cert)?,
        (true, false) => {
            return Err(CertError::IncompleteCa {
                present: paths.ca_cert.clone(),
                missing: paths.ca_key.clone(),
            });
        }
        (false, true) => {
            return Err(CertError::IncompleteCa {
                present: paths.ca_key.clone(),
                missing: paths.ca_cert.clone(),
            });
        }
    };

    let leaf = issue_leaf(opts, &ca, &paths.tls_cert)?;
    verify_leaf(opts, &ca.cert_pem, &leaf.cert_pem).map_err(|reason| CertError::UnusableCa {
        ca_cert: paths.ca_cert.clone(),
        ca_key: paths.ca_key.clone(),
        reason,
    })?;

    if let Some(key_pem) = &ca.new_key_pem {
        write_private(&paths.ca_key, key_pem.as_bytes())?;
        write_private(&paths.ca_cert, ca.cert_pem.as_bytes())?;
    }
    // Key first, then cert: a reloader that catches the pair halfway sees a mismatch and waits for
    // the next change rather than serving a cert it has no key for.
    write_private(&paths.tls_key, leaf.key_pem.as_bytes())?;
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem);
    write_private(&paths.tls_cert, chain.as_bytes())?;

    Ok(GeneratedCerts {
        reused_ca: ca.new_key_pem.is_none(),
        ..paths
    })
}

/// For `serve --dev-certs`: generates certificates with the defaults when `dir` lacks a serving pair.
/// Never overwrites an existing file; returns whether it generated anything.
pub fn ensure_dev_certs(dir: &Path) -> Result<bool, CertError> {
    let cert = dir.join(TLS_CERT_FILE);
    let key = dir.join(TLS_KEY_FILE);
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(false),
        (true, false) => Err(CertError::IncompletePair {
            present: cert,
            missing: key,
        }),
        (false, true) => Err(CertError::IncompletePair {
            present: key,
            missing: cert,
        }),
        (false, false) => generate(&CertOptions::with_defaults(dir)).map(|_| true),
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// Set only for a CA minted in this run, whose files still have to be written.
    new_key_pem: Option<String>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

fn load_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, CertError> {
    let cert_pem = read_to_string(cert_path)?;
    let key_pem = read_to_string(key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CertError::Parse {
        path: key_path.to_owned(),
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CertError::Parse {
        path: cert_path.to_owned(),
        source,
    })?;
    // ca.crt may carry more than one block; the caBundle and our chain need only the CA itself.
    let cert_pem = first_pem_block(&cert_pem).unwrap_or(cert_pem);
    Ok(Ca {
        issuer,
        cert_pem,
        new_key_pem: None,
    })
}

fn new_ca(opts: &CertOptions, cert_path: &Path) -> Result<Ca, CertError> {
    let generate_err = |source| CertError::Generate {
        path: cert_path.to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(generate_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("{} CA", opts.service));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, opts.days.max(CA_MIN_DAYS));
    let cert = params.self_signed(&key).map_err(generate_err)?;
    let key_pem = key.serialize_pem();
    Ok(Ca {
        issuer: Issuer::new(params, key),
        cert_pem: cert.pem(),
        new_key_pem: Some(key_pem),
    })
}

fn issue_leaf(opts: &CertOptions, ca: &Ca, cert_path: &Path) -> Result<Leaf, CertError> {
    let generate_err = |source| CertError::Generate {
        path: cert_path.to_owned(),
        source,
    };
    let mut params = CertificateParams::new(opts.subject_alt_names()).map_err(generate_err)?;
    params.distinguished_name =
        distinguished_name(&format!("{}.{}.svc", opts.service, opts.namespace));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, opts.days);

    let key = KeyPair::generate().map_err(generate_err)?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(generate_err)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Checks the new leaf the way a client will, which also proves that a reused `ca.key` belongs to
/// `ca.crt` (rcgen does not check that) and that the reused CA has not expired.
fn verify_leaf(opts: &CertOptions, ca_pem: &str, leaf_pem: &str) -> Result<(), String> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(format!("{}.{}.svc", opts.service, opts.namespace))
        .map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Kubernetes' rule for Service and namespace names (RFC 1123 label).
fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)).into();
}

fn first_pem_block(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` with mode 0600 through a temporary file in the same directory and a rename,
/// so a concurrent reader (the server's reloader) sees either the old file or the new one, never half.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let write_err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and useless now; the real error is the one we report.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// A fresh, empty scratch directory for a test: unique per call, so parallel tests never share one.
#[cfg(test)]
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-admission-certs-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn verifier(ca_cert: &Path) -> Arc<WebPkiServerVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    }

    fn chain(tls_cert: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(tls_cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn leaf_is_valid_for_every_service_name_and_loopback() {
        let dir = temp_dir("sans");
        let out = generate(&CertOptions::with_defaults(&dir)).unwrap();
        assert!(!out.reused_ca);
        let verifier = verifier(&out.ca_cert);
        let chain = chain(&out.tls_cert);
        assert_eq!(chain.len(), 2, "leaf then CA");
        for name in [
            "mesh-admission",
            "mesh-admission.mesh-system",
            "mesh-admission.mesh-system.svc",
            "mesh-admission.mesh-system.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ] {
            let server_name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("other.mesh-system.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(&chain[0], &[], &other, &[], UnixTime::now())
                .is_err()
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rerun_reuses_the_ca_and_reissues_the_leaf() {
        let dir = temp_dir("reuse");
        let opts = CertOptions::with_defaults(&dir);
        let first = generate(&opts).unwrap();
        let ca_before = fs::read(&first.ca_cert).unwrap();
        let ca_key_before = fs::read(&first.ca_key).unwrap();
        let leaf_before = fs::read(&first.tls_cert).unwrap();

        let second = generate(&opts).unwrap();
        assert!(second.reused_ca);
        assert_eq!(fs::read(&second.ca_cert).unwrap(), ca_before);
        assert_eq!(fs::read(&second.ca_key).unwrap(), ca_key_before);
        assert_ne!(fs::read(&second.tls_cert).unwrap(), leaf_before);

        // The old caBundle still validates the new leaf.
        let chain = chain(&second.tls_cert);
        let name = ServerName::try_from("mesh-admission.mesh-system.svc").unwrap();
        verifier(&first.ca_cert)
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_file_is_private() {
        let dir = temp_dir("mode");
        let out = generate(&CertOptions::with_defaults(dir.join("nested"))).unwrap();
        for path in [&out.ca_cert, &out.ca_key, &out.tls_cert, &out.tls_key] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let leftovers: Vec<_> = fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_ca_key_that_does_not_match_ca_crt_is_refused() {
        let dir = temp_dir("mismatch");
        let other = temp_dir("mismatch-other");
        let out = generate(&CertOptions::with_defaults(&dir)).unwrap();
        let foreign = generate(&CertOptions::with_defaults(&other)).unwrap();
        fs::copy(&foreign.ca_key, &out.ca_key).unwrap();
        let err = generate(&CertOptions::with_defaults(&dir)).unwrap_err();
        assert!(matches!(err, CertError::UnusableCa { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn half_a_ca_is_an_error_naming_both_files() {
        let dir = temp_dir("half");
        let out = generate(&CertOptions::with_defaults(&dir)).unwrap();
        fs::remove_file(&out.ca_key).unwrap();
        let err = generate(&CertOptions::with_defaults(&dir)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ca.crt") && msg.contains("ca.key"), "{msg}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_that_are_not_dns_labels_are_refused() {
        for (service, namespace) in [
            ("", "mesh-system"),
            ("Mesh", "mesh-system"),
            ("mesh-admission", "mesh.system"),
            ("-mesh", "mesh-system"),
            ("mesh-admission", "mesh-system-"),
        ] {
            let mut opts = CertOptions::with_defaults(temp_dir("names"));
            opts.service = service.to_owned();
            opts.namespace = namespace.to_owned();
            let err = generate(&opts).unwrap_err();
            assert!(matches!(err, CertError::InvalidName { .. }), "{err}");
            assert!(
                !opts.out.exists(),
                "nothing written for {service:?}/{namespace:?}"
            );
        }
    }

    #[test]
    fn zero_days_is_refused() {
        let mut opts = CertOptions::with_defaults(temp_dir("days"));
        opts.days = 0;
        assert!(matches!(
            generate(&opts),
            Err(CertError::InvalidDays { days: 0 })
        ));
    }

    #[test]
    fn dev_certs_are_generated_once_and_never_overwritten() {
        let dir = temp_dir("dev");
        assert!(ensure_dev_certs(&dir).unwrap());
        let cert = fs::read(dir.join(TLS_CERT_FILE)).unwrap();
        assert!(!ensure_dev_certs(&dir).unwrap());
        assert_eq!(fs::read(dir.join(TLS_CERT_FILE)).unwrap(), cert);

        fs::remove_file(dir.join(TLS_KEY_FILE)).unwrap();
        assert!(matches!(
            ensure_dev_certs(&dir),
            Err(CertError::IncompletePair { .. })
        ));
        assert_eq!(fs::read(dir.join(TLS_CERT_FILE)).unwrap(), cert);
        fs::remove_dir_all(dir).unwrap();
    }
}
