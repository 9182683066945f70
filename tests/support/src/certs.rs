//! Certificates. Serving pairs come from the product itself (`mesh-admission certs`, the command a
//! user runs), published the way the kubelet updates a Secret volume; rcgen makes only what that
//! command does not: kube-apiserver's own PKI and client certificates for mutual TLS.

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use mesh_admission::certs::GeneratedCerts;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::client::ClientIdentity;
use crate::process::{ChildGuard, mesh_admission};

/// How long `mesh-admission certs` may take.
const CERTS_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `mesh-admission certs ARGS --out DIR` (an existing CA there is reused) for at most 30 s;
/// `Err` with its output when it failed.
pub fn issue(dir: &Path, args: &[&str]) -> Result<GeneratedCerts, String> {
    let child = Command::new(mesh_admission())
        .arg("certs")
        .args(args)
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run certs: {e}"))?;
    let mut guard = ChildGuard(child);
    let status = guard
        .wait_exit(CERTS_TIMEOUT)
        .ok_or_else(|| format!("certs did not finish within {CERTS_TIMEOUT:?} (killed)"))?;
    // The outputs are a few lines: they fit in the pipes while the process runs.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(pipe) = guard.0.stdout.as_mut() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(pipe) = guard.0.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(format!("certs exited {status}: {}", stderr.trim()));
    }
    Ok(GeneratedCerts {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        tls_cert: dir.join("tls.crt"),
        tls_key: dir.join("tls.key"),
        reused_ca: stdout.contains("CA (reused)"),
    })
}

/// [`issue`] with the default names, failing the test when it fails.
pub fn generate_certs(dir: &Path) -> GeneratedCerts {
    issue(dir, &[]).unwrap_or_else(|e| panic!("mesh-admission certs --out {}: {e}", dir.display()))
}

/// A Kubernetes Secret volume holding a serving pair: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..VERSION/`. An update writes a new version folder, renames a new `..data` link over
/// the old one (one atomic step for both files) and removes the previous folder, as the kubelet's
/// atomic writer does.
pub struct SecretVolume {
    root: PathBuf,
}

impl SecretVolume {
    /// A volume at `root` holding the pair in the folder `from`.
    pub fn new(root: PathBuf, from: &Path) -> SecretVolume {
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let volume = SecretVolume { root };
        volume.update(from);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.root.join(file))
                .unwrap();
        }
        volume
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }

    /// Publishes the pair in the folder `from`.
    pub fn update(&self, from: &Path) {
        let read = |file: &str| fs::read(from.join(file)).unwrap();
        self.publish(&read("tls.crt"), &read("tls.key"));
    }

    /// Publishes `cert` with the key the volume holds now.
    pub fn write_cert(&self, cert: &str) {
        let key = fs::read(self.key()).unwrap();
        self.publish(cert.as_bytes(), &key);
    }

    fn publish(&self, cert: &[u8], key: &[u8]) {
        static VERSIONS: AtomicUsize = AtomicUsize::new(0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let version = format!(
            "..{}_{:09}_{}",
            now.as_secs(),
            now.subsec_nanos(),
            VERSIONS.fetch_add(1, Ordering::Relaxed)
        );
        fs::create_dir(self.root.join(&version)).unwrap();
        fs::write(self.root.join(&version).join("tls.crt"), cert).unwrap();
        fs::write(self.root.join(&version).join("tls.key"), key).unwrap();
        let data = self.root.join("..data");
        let previous = fs::read_link(&data).ok();
        let staged = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        fs::rename(&staged, &data).unwrap();
        if let Some(previous) = previous {
            fs::remove_dir_all(self.root.join(previous)).unwrap();
        }
    }
}

/// A client certificate for `name`, signed by the CA that `mesh-admission certs` left in
/// `certs_dir` (`ca.crt`, `ca.key`).
pub fn client_identity(certs_dir: &Path, name: &str) -> ClientIdentity {
    let ca_pem = fs::read_to_string(certs_dir.join("ca.crt")).unwrap();
    let ca_key = KeyPair::from_pem(&fs::read_to_string(certs_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    ClientIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// kube-apiserver's PKI, as files.
pub struct ApiserverPki {
    /// The CA that signed the serving certificate (PEM).
    pub ca_file: PathBuf,
    /// `--cert-dir`: `apiserver.crt` and `apiserver.key`, where it looks before generating its own.
    pub cert_dir: PathBuf,
    /// The service-account signing key pair.
    pub sa_private: PathBuf,
    pub sa_public: PathBuf,
}

/// Writes kube-apiserver's PKI under `dir`: a CA, a serving pair for 127.0.0.1, `advertise`,
/// `service_ip` and the `kubernetes` Service names, and a service-account key pair.
pub fn apiserver_pki(dir: &Path, advertise: Ipv4Addr, service_ip: &str) -> ApiserverPki {
    let pki = ApiserverPki {
        ca_file: dir.join("pki/ca.crt"),
        cert_dir: dir.join("certs"),
        sa_private: dir.join("pki/sa.key"),
        sa_public: dir.join("pki/sa.pub"),
    };
    for folder in [dir.join("pki"), pki.cert_dir.clone()] {
        fs::create_dir_all(&folder)
            .unwrap_or_else(|e| panic!("creating {}: {e}", folder.display()));
    }

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "mesh-admission e2e CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        advertise.to_string(),
        service_ip.to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])
    .unwrap();
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().unwrap();
    let serving_pem = serving.signed_by(&serving_key, &issuer).unwrap().pem();

    let sa_key = KeyPair::generate().unwrap();
    for (path, contents) in [
        (pki.ca_file.clone(), ca_pem),
        (pki.cert_dir.join("apiserver.crt"), serving_pem),
        (
            pki.cert_dir.join("apiserver.key"),
            serving_key.serialize_pem(),
        ),
        (pki.sa_private.clone(), sa_key.serialize_pem()),
        (pki.sa_public.clone(), sa_key.public_key_pem()),
    ] {
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    pki
}
