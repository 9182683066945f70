//! A real control plane for the end-to-end suite (DESIGN.md section 11): etcd and kube-apiserver as
//! built by `hack/build-control-plane.sh`, started the way controller-runtime's envtest starts them, on
//! 127.0.0.1 only, and driven with the official `kubectl` (`hack/install-tools.sh`).
//!
//! Each process writes its output to a file in [`ControlPlane::logs`], a folder every failure message
//! names. Every process is killed by its PID when the [`ControlPlane`] drops, also when a test panics;
//! the temporary folder is removed on a clean drop and kept after a panic.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const BUILD_HINT: &str = "bash hack/build-control-plane.sh";
const TOOLS_HINT: &str = "bash hack/install-tools.sh";
/// How long etcd and then kube-apiserver may take to answer their health checks.
const ETCD_TIMEOUT: Duration = Duration::from_secs(20);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Room for the controller benchmark's 2,000 Services (a /24 holds 254).
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/16";

/// `../shared/crds`: the CRDs the webhook's users have installed.
pub fn shared_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crds")
}

/// A project tool under `.tools/`; a missing one fails the test with the command that provides it.
fn tool(relative: &str, hint: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `{hint}` first (the end-to-end tests need the real control plane)",
        path.display()
    );
    path
}

/// A running etcd + kube-apiserver pair with an admin kubeconfig.
pub struct ControlPlane {
    dir: PathBuf,
    logs: PathBuf,
    /// Started processes, killed in reverse order on drop.
    processes: Vec<(&'static str, Child)>,
    url: String,
    token: String,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers 200.
    pub fn start() -> Self {
        Self::start_with_apiserver_args(&[])
    }

    /// [`ControlPlane::start`] with more kube-apiserver flags (e.g. `--enable-aggregator-routing=true`).
    pub fn start_with_apiserver_args(extra: &[&str]) -> Self {
        let etcd = tool(".tools/control-plane/etcd", BUILD_HINT);
        let apiserver = tool(".tools/control-plane/kube-apiserver", BUILD_HINT);
        let kubectl = tool(".tools/bin/kubectl", TOOLS_HINT);

        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "e2e-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("creating {}: {e}", logs.display()));
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut cp = ControlPlane {
            ca_file: dir.join("pki/ca.crt"),
            kubeconfig: dir.join("kubeconfig"),
            token: format!("e2e-admin-{nanos:x}"),
            url: String::new(),
            processes: Vec::new(),
            dir,
            logs,
            kubectl,
        };
        eprintln!("e2e: control plane in {}", cp.dir.display());

        let started = Instant::now();
        let etcd_url = cp.start_etcd(&etcd);
        let etcd_ready = started.elapsed();
        let advertise = advertise_address();
        let tls = cp.write_pki(advertise);
        cp.start_apiserver(&apiserver, &etcd_url, advertise, &tls, extra);
        cp.write_kubeconfig();
        eprintln!(
            "e2e: etcd ready in {etcd_ready:.1?}, kube-apiserver {} ready {:.1?} after its start \
             (advertise address {advertise})",
            cp.url,
            started.elapsed() - etcd_ready
        );
        cp
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig with the admin user (group `system:masters`) as its current context.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token of the admin user.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The CA that signed the apiserver's serving certificate (PEM file).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The folder holding one log file per process.
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// Runs `kubectl` against this control plane.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.kubectl.display()))
    }

    /// Runs `kubectl` with `stdin` as its standard input (for `-f -`).
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.kubectl.display()));
        // kubectl reads all of stdin before it writes much, so writing first cannot deadlock.
        let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let output = child.wait_with_output().unwrap();
        written
            .unwrap_or_else(|e| panic!("writing kubectl's stdin: {e}\n{}", self.report(&output)));
        output
    }

    /// Runs `kubectl`, fails the test unless it succeeded, and returns its standard output.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let output = self.kubectl(&args);
        assert!(
            output.status.success(),
            "kubectl {} failed\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            self.report(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `kubectl` with `stdin` as its standard input, fails the test unless it succeeded, and returns
    /// its standard output.
    pub fn kubectl_stdin_ok<I, S>(&self, args: I, stdin: &str) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let output = self.kubectl_stdin(&args, stdin);
        assert!(
            output.status.success(),
            "kubectl {} failed on\n{stdin}\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            self.report(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `kubectl ARGS` on `yaml` and asserts that our validating webhook refused it with exactly
    /// `message` and that `kubectl GET` finds nothing; returns what kubectl printed on stderr.
    pub fn assert_refused(&self, args: &[&str], yaml: &str, message: &str, get: &[&str]) -> String {
        let output = self.kubectl_stdin(args, yaml);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{}", self.report(&output));
        let whole = format!(
            "admission webhook \"validate.mesh-admission.mesh-system.svc\" denied the request: {message}"
        );
        assert!(
            stderr.contains(&whole),
            "kubectl {args:?} must print\n{whole}\n{}",
            self.report(&output)
        );
        let missing = self.kubectl(get);
        assert!(
            String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
            "a refused object must not be stored\n{}",
            self.report(&missing)
        );
        stderr
    }

    /// `kubectl get ARGS -o json`: the object (or List) as the API serves it.
    pub fn get_json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["get".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        all.extend(["-o".into(), "json".into()]);
        let text = self.kubectl_ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("kubectl printed no JSON ({e}): {text}"))
    }

    /// Installs every CRD in `dir` with server-side apply, waits until each is Established, and returns
    /// their names.
    pub fn apply_crds(&self, dir: &Path) -> Vec<String> {
        let applied = self.kubectl_ok([
            OsStr::new("apply"),
            OsStr::new("--server-side"),
            OsStr::new("-o"),
            OsStr::new("name"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ]);
        self.kubectl_ok([
            OsStr::new("wait"),
            OsStr::new("--for"),
            OsStr::new("condition=established"),
            OsStr::new("--timeout=60s"),
            OsStr::new("-f"),
            dir.as_os_str(),
        ]);
        applied
            .lines()
            .map(|line| {
                let name = line.strip_prefix("customresourcedefinition.apiextensions.k8s.io/");
                name.unwrap_or_else(|| panic!("{} holds {line}, not a CRD", dir.display()))
                    .to_owned()
            })
            .collect()
    }

    /// An output's status, stdout and stderr, and where the control plane's logs are: the tail of every
    /// failure message about this control plane.
    pub fn report(&self, output: &Output) -> String {
        format!(
            "{}\n--- stdout\n{}--- stderr\n{}--- control plane logs: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs.display()
        )
    }

    fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // Ports are reused across runs: a shared discovery cache could describe another apiserver.
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        command
    }

    fn start_etcd(&mut self, binary: &Path) -> String {
        let data = self.dir.join("etcd");
        self.launch("etcd", ETCD_TIMEOUT, || {
            let [client, peer] = free_ports();
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut command = Command::new(binary);
            command
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=e2e={peer_url}"))
                .arg("--unsafe-no-fsync=true");
            let ready = move || {
                TcpStream::connect(("127.0.0.1", client))
                    .and_then(|tcp| {
                        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                        http_get(tcp, "/health", None)
                    })
                    .is_ok_and(|reply| {
                        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""health":"true""#)
                    })
            };
            (command, client_url, ready)
        })
    }

    fn start_apiserver(
        &mut self,
        binary: &Path,
        etcd: &str,
        advertise: Ipv4Addr,
        tls: &Tls,
        extra: &[&str],
    ) {
        let tls_config = tls.client_config.clone();
        let token = self.token.clone();
        let dir = self.dir.clone();
        self.url = self.launch("kube-apiserver", APISERVER_TIMEOUT, || {
            let [port] = free_ports();
            let mut command = Command::new(binary);
            command
                .arg(format!("--etcd-servers={etcd}"))
                .arg(format!("--cert-dir={}", tls.cert_dir.display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--advertise-address={advertise}"))
                .arg(format!(
                    "--token-auth-file={}",
                    dir.join("tokens.csv").display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!(
                    "--service-account-key-file={}",
                    tls.sa_public.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    tls.sa_private.display()
                ))
                .arg(format!(
                    "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
                ))
                .arg("--authorization-mode=RBAC")
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--allow-privileged=true")
                .args(extra);
            let config = tls_config.clone();
            let token = token.clone();
            let ready = move || {
                https_get(port, &config, &token, "/readyz")
                    .is_ok_and(|reply| reply.starts_with("HTTP/1.1 200"))
            };
            (command, format!("https://127.0.0.1:{port}"), ready)
        });
    }

    /// Spawns the command `attempt` builds (with ports chosen free just before) and waits until its
    /// `ready` check passes. Another process can take a port between the choice and the bind: if the
    /// process exits saying so, it is started once more with new ports.
    fn launch<R: FnMut() -> bool>(
        &mut self,
        name: &'static str,
        timeout: Duration,
        mut attempt: impl FnMut() -> (Command, String, R),
    ) -> String {
        for retry in [false, true] {
            let log_path = self
                .logs
                .join(format!("{name}{}.log", if retry { "-retry" } else { "" }));
            let log = fs::File::create(&log_path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
            let (mut command, address, mut ready) = attempt();
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e} (logs: {})", self.logs.display()));
            self.processes.push((name, child));
            let started = Instant::now();
            loop {
                if ready() {
                    return address;
                }
                let (_, child) = self.processes.last_mut().unwrap();
                if let Some(status) = child.try_wait().unwrap() {
                    let output = fs::read_to_string(&log_path).unwrap_or_default();
                    self.processes.pop();
                    if !retry && output.contains("address already in use") {
                        eprintln!("e2e: {name} lost a port race, starting it again");
                        break;
                    }
                    panic!(
                        "{name} exited with {status} before it was ready; its log is {}",
                        log_path.display()
                    );
                }
                assert!(
                    started.elapsed() < timeout,
                    "{name} was not ready within {timeout:?}; its log is {}",
                    log_path.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!("the second attempt returns or panics")
    }

    /// The apiserver's serving pair (in `--cert-dir`, where it looks before generating its own), the
    /// service-account signing key, and the token file.
    fn write_pki(&self, advertise: Ipv4Addr) -> Tls {
        let pki = self.dir.join("pki");
        let cert_dir = self.dir.join("certs");
        for dir in [&pki, &cert_dir] {
            fs::create_dir_all(dir).unwrap();
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

        let service_ip = "10.0.0.1"; // the first address of SERVICE_CLUSTER_IP_RANGE
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
        let tls = Tls {
            sa_private: pki.join("sa.key"),
            sa_public: pki.join("sa.pub"),
            client_config: client_config(&ca_pem),
            cert_dir,
        };
        for (path, contents) in [
            (self.ca_file.clone(), ca_pem),
            (tls.cert_dir.join("apiserver.crt"), serving_pem),
            (
                tls.cert_dir.join("apiserver.key"),
                serving_key.serialize_pem(),
            ),
            (tls.sa_private.clone(), sa_key.serialize_pem()),
            (tls.sa_public.clone(), sa_key.public_key_pem()),
            (
                self.dir.join("tokens.csv"),
                format!("{},admin,admin,\"system:masters\"\n", self.token),
            ),
        ] {
            fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        tls
    }

    fn write_kubeconfig(&self) {
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {}
    certificate-authority: {}
users:
- name: admin
  user:
    token: {}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
current-context: e2e
",
            self.url,
            self.ca_file.display(),
            self.token
        );
        fs::write(&self.kubeconfig, kubeconfig).unwrap();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.processes.pop() {
            let _ = child.kill(); // SIGKILL to this child's PID
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "e2e: kept {} (logs: {})",
                self.dir.display(),
                self.logs.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

struct Tls {
    cert_dir: PathBuf,
    sa_private: PathBuf,
    sa_public: PathBuf,
    /// Trusts only the CA that signed the apiserver's serving certificate.
    client_config: Arc<rustls::ClientConfig>,
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// `N` distinct ports that were free on 127.0.0.1 a moment ago.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// A non-loopback IPv4 address of this machine for `--advertise-address` (the apiserver refuses
/// loopback endpoints for the `kubernetes` Service and logs it every few seconds): the source address
/// of the default route, found by connecting a UDP socket, which sends nothing. Loopback otherwise.
fn advertise_address() -> Ipv4Addr {
    let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect((Ipv4Addr::new(203, 0, 113, 1), 9))?;
            socket.local_addr()
        })
        .ok()
        .and_then(|addr| match addr.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        });
    routed.unwrap_or_else(|| {
        eprintln!("e2e: no non-loopback IPv4 address found; advertising 127.0.0.1");
        Ipv4Addr::LOCALHOST
    })
}

/// One HTTP/1.1 GET on `stream`; returns the whole response, status line first.
fn http_get(mut stream: impl Read + Write, path: &str, token: Option<&str>) -> io::Result<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        // A TLS peer may close without close_notify once the reply is complete.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        result => {
            result?;
        }
    }
    Ok(String::from_utf8_lossy(&dechunk(reply)?).into_owned())
}

/// The reply with a chunked body joined back into one, so that no chunk header cuts a line of it
/// (the apiserver's `/metrics` comes in chunks, and a counter cut in two would read as absent).
fn dechunk(reply: Vec<u8>) -> io::Result<Vec<u8>> {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(reply);
    };
    let (head, mut body) = (&reply[..end + 4], &reply[end + 4..]);
    let chunked = String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return Ok(reply);
    }
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body");
    let mut joined = head.to_vec();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(malformed)?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed())?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(joined);
        }
        let chunk = body.get(..size).ok_or_else(malformed)?;
        joined.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or_else(malformed)?;
    }
}

fn https_get(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    token: &str,
    path: &str,
) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    http_get(rustls::StreamOwned::new(tls, tcp), path, Some(token))
}

/// The `mesh-admission` binary under test.
pub fn mesh_admission() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-admission")
}

/// Runs `mesh-admission ARGS` with `stdin`; returns its output, whatever its exit code.
pub fn mesh_admission_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(mesh_admission())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", mesh_admission()));
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().unwrap();
    written.unwrap_or_else(|e| panic!("writing mesh-admission's stdin: {e}"));
    output
}

/// How long `mesh-admission serve` may take to log `listening` and answer `/readyz`, and the apiserver
/// to start calling a newly registered webhook configuration.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `mesh-admission serve` on free 127.0.0.1 ports, with its own certificates from
/// `mesh-admission certs`, its JSON log in the control plane's log folder. Killed by its PID on drop,
/// also when a test panics.
pub struct Webhook {
    child: Option<Child>,
    certs: PathBuf,
    /// The Secret-volume folder the server reads its pair from, when started with one.
    volume: Option<PathBuf>,
    log: PathBuf,
    url: String,
    admin_addr: SocketAddr,
}

/// How [`Webhook::start_with`] runs `mesh-admission serve`; the default is what [`Webhook::start`] does.
#[derive(Clone, Debug, Default)]
pub struct WebhookOptions {
    /// Serve the pair through the layout of a Kubernetes Secret volume (`tls.crt -> ..data/tls.crt`,
    /// `..data -> ..TIMESTAMP/`) so that [`Webhook::rotate`] can update it the way the kubelet does.
    pub secret_volume: bool,
    /// More `serve` arguments, e.g. `--log-level mesh_admission=debug`.
    pub args: Vec<String>,
    /// Another build of `mesh-admission` to serve with (a benchmark's baseline); the crate's own
    /// binary when `None`.
    pub binary: Option<PathBuf>,
    /// `--listen ADDRESS:PORT`; `127.0.0.1:0` when `None`.
    pub listen: Option<String>,
}

impl Webhook {
    /// Generates certificates and starts the server; returns once it logged `listening` and its admin
    /// `/readyz` answers 200.
    pub fn start(cp: &ControlPlane) -> Webhook {
        Self::start_with(cp, &WebhookOptions::default())
    }

    /// [`Webhook::start`] with `options`.
    pub fn start_with(cp: &ControlPlane, options: &WebhookOptions) -> Webhook {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let certs = cp.dir.join(format!("webhook-{n}"));
        fs::create_dir_all(&certs).unwrap();
        let generated = Command::new(mesh_admission())
            .args(["certs", "--out"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "mesh-admission certs failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );

        let (serving, volume) = if options.secret_volume {
            let volume = certs.join("volume");
            fs::create_dir_all(&volume).unwrap();
            publish_to_volume(&certs, &volume);
            // As in a Secret volume: the names the server is given are links through `..data`, so
            // one rename of `..data` switches both files at once.
            for file in ["tls.crt", "tls.key"] {
                std::os::unix::fs::symlink(Path::new("..data").join(file), volume.join(file))
                    .unwrap();
            }
            (volume.clone(), Some(volume))
        } else {
            (certs.clone(), None)
        };

        let log = cp.logs.join(format!("mesh-admission-{n}.log"));
        let file =
            fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(mesh_admission()));
        let child = Command::new(&binary)
            // As the image and the chart run it (src/main.rs says why).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args(["serve", "--listen"])
            .arg(options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .arg("--tls-cert")
            .arg(serving.join("tls.crt"))
            .arg("--tls-key")
            .arg(serving.join("tls.key"))
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        // The guard exists from here on: a failed wait below still kills the process.
        let mut webhook = Webhook {
            child: Some(child),
            certs,
            volume,
            log,
            url: String::new(),
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        };
        let started = Instant::now();
        let (addr, admin_addr) = loop {
            if let Some(found) = webhook.listening() {
                break found;
            }
            webhook.assert_running_within(started);
            std::thread::sleep(Duration::from_millis(50));
        };
        webhook.url = format!("https://{addr}");
        webhook.admin_addr = admin_addr;
        loop {
            let ready = TcpStream::connect(admin_addr)
                .and_then(|tcp| {
                    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                    http_get(tcp, "/readyz", None)
                })
                .is_ok_and(|reply| reply.starts_with("HTTP/1.1 200"));
            if ready {
                break;
            }
            webhook.assert_running_within(started);
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "e2e: mesh-admission serving {} (admin {admin_addr}), ready in {:.1?}, log {}",
            webhook.url,
            started.elapsed(),
            webhook.log.display()
        );
        webhook
    }

    /// `https://127.0.0.1:PORT`, the base URL the webhooks are registered with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate (the caBundle).
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.crt")
    }

    /// The admin port's `/metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        let reply = TcpStream::connect(self.admin_addr)
            .and_then(|tcp| {
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                http_get(tcp, "/metrics", None)
            })
            .unwrap_or_else(|e| panic!("GET /metrics from {}: {e}", self.admin_addr));
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        reply
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `mesh-admission webhook-config --url URL --ca-bundle CA --failure-policy POLICY | kubectl apply
    /// -f -`. While the server runs, returns only once the apiserver calls both the mutating and the
    /// validating webhook (it picks configurations up from a watch, a moment after they are stored).
    pub fn register(&self, cp: &ControlPlane, failure_policy: &str) {
        self.apply_config(cp, &self.config(failure_policy));
    }

    /// What `mesh-admission webhook-config --url URL --ca-bundle CA --failure-policy POLICY` prints.
    pub fn config(&self, failure_policy: &str) -> String {
        let config = Command::new(mesh_admission())
            .args(["webhook-config", "--url", &self.url])
            .args(["--failure-policy", failure_policy])
            .arg("--ca-bundle")
            .arg(self.ca_file())
            .output()
            .unwrap();
        assert!(
            config.status.success(),
            "mesh-admission webhook-config failed: {}",
            String::from_utf8_lossy(&config.stderr)
        );
        String::from_utf8(config.stdout).unwrap()
    }

    /// `kubectl apply -f -` of `config` (the [`Webhook::config`] output, possibly edited), then, as
    /// [`Webhook::register`], waits until the apiserver calls both webhooks.
    pub fn apply_config(&self, cp: &ControlPlane, config: &str) {
        cp.kubectl_stdin_ok(["apply", "-f", "-"], config);
        if self.child.is_some() {
            self.wait_until_called(cp);
        }
    }

    /// Issues a new serving pair from the same CA (`mesh-admission certs` again, which keeps an
    /// existing CA) and publishes it the way the kubelet updates a Secret volume. Returns the new
    /// certificate (PEM). Only for a server started with [`WebhookOptions::secret_volume`].
    pub fn rotate(&self) -> String {
        let volume = self
            .volume
            .as_ref()
            .expect("rotate needs a server started with WebhookOptions::secret_volume");
        let ca = fs::read(self.ca_file()).unwrap();
        let old = fs::read_to_string(self.certs.join("tls.crt")).unwrap();
        let generated = Command::new(mesh_admission())
            .args(["certs", "--out"])
            .arg(&self.certs)
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "mesh-admission certs failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        assert_eq!(
            fs::read(self.ca_file()).unwrap(),
            ca,
            "mesh-admission certs replaced the CA in {}: the registered caBundle no longer holds",
            self.certs.display()
        );
        let new = fs::read_to_string(self.certs.join("tls.crt")).unwrap();
        assert_ne!(
            new, old,
            "mesh-admission certs wrote the same certificate again"
        );
        publish_to_volume(&self.certs, volume);
        new
    }

    /// The certificate (DER) a new TLS handshake with the server gets; the handshake verifies it
    /// against [`Webhook::ca_file`] for 127.0.0.1.
    pub fn served_certificate(&self) -> Vec<u8> {
        let stream = self.connect_tls();
        let chain = stream.conn.peer_certificates().unwrap();
        chain[0].to_vec()
    }

    /// A new TLS connection to the webhook port, handshake done (no ALPN: HTTP/1.1).
    pub fn connect_tls(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let addr: SocketAddr = self.url.strip_prefix("https://").unwrap().parse().unwrap();
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let ca = fs::read_to_string(self.ca_file()).unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = rustls::ClientConnection::new(client_config(&ca), name).unwrap();
        // Each round trip moves the handshake on; TLS 1.3 needs two, TLS 1.2 three.
        for _ in 0..10 {
            if !tls.is_handshaking() {
                break;
            }
            tls.complete_io(&mut tcp)
                .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        }
        assert!(
            !tls.is_handshaking(),
            "TLS handshake with {addr} did not finish"
        );
        rustls::StreamOwned::new(tls, tcp)
    }

    /// Stops the server (SIGKILL to its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls with server-side dry runs until the apiserver sends namespaces to `/mutate` (the label
    /// appears) and pods to `/validate` (a bad annotation is denied).
    fn wait_until_called(&self, cp: &ControlPlane) {
        let started = Instant::now();
        let probe_pod = r#"{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "e2e-probe", "namespace": "default",
                "annotations": {"servicemesh.bigbang.dev/permissivePorts": "0"}},
            "spec": {"containers": [{"name": "c", "image": "example/probe:1"}]}}"#;
        loop {
            let namespace = cp.kubectl([
                "create",
                "namespace",
                "e2e-probe",
                "--dry-run=server",
                "-o",
                "json",
            ]);
            let mutated = namespace.status.success()
                && serde_json::from_slice::<serde_json::Value>(&namespace.stdout)
                    .is_ok_and(|ns| ns["metadata"]["labels"]["istio-injection"] == "enabled");
            let validated = mutated && {
                let pod = cp.kubectl_stdin(["create", "--dry-run=server", "-f", "-"], probe_pod);
                String::from_utf8_lossy(&pod.stderr).contains("denied the request")
            };
            if validated {
                return;
            }
            assert!(
                started.elapsed() < WEBHOOK_TIMEOUT,
                "the apiserver did not call the webhooks at {} within {WEBHOOK_TIMEOUT:?} of their \
                 registration (logs: {})",
                self.url,
                cp.logs.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The addresses from the server's `listening` log line, once it is there.
    fn listening(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.log().lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &line["fields"];
            if fields["message"] != "listening" {
                return None;
            }
            let addr = fields["addr"].as_str()?.parse().ok()?;
            let admin_addr = fields["admin_addr"].as_str()?.parse().ok()?;
            Some((addr, admin_addr))
        })
    }

    fn assert_running_within(&mut self, started: Instant) {
        let child = self.child.as_mut().unwrap();
        assert_starting(
            child,
            "mesh-admission serve",
            &self.log,
            started,
            WEBHOOK_TIMEOUT,
        );
    }
}

/// Panics, with the process's log, when a process the tests started has exited, or is still not
/// ready `timeout` after `started`.
fn assert_starting(child: &mut Child, what: &str, log: &Path, started: Instant, timeout: Duration) {
    let text = || fs::read_to_string(log).unwrap_or_default();
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "{what} exited with {status} before it was ready; its log is {}:\n{}",
            log.display(),
            text()
        );
    }
    assert!(
        started.elapsed() < timeout,
        "{what} was not ready within {timeout:?}; its log is {}:\n{}",
        log.display(),
        text()
    );
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `certs`' serving pair into `volume` as the kubelet's atomic writer updates a Secret
/// volume: a new `..TIMESTAMP` folder, a `..data_tmp` link to it renamed over `..data` (one
/// atomic step for both files), then the previous folder removed.
fn publish_to_volume(certs: &Path, volume: &Path) {
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
    fs::create_dir(volume.join(&version)).unwrap();
    for file in ["tls.crt", "tls.key"] {
        fs::copy(certs.join(file), volume.join(&version).join(file)).unwrap();
    }
    let data = volume.join("..data");
    let previous = fs::read_link(&data).ok();
    let staged = volume.join("..data_tmp");
    std::os::unix::fs::symlink(&version, &staged).unwrap();
    fs::rename(&staged, &data).unwrap();
    if let Some(previous) = previous {
        fs::remove_dir_all(volume.join(previous)).unwrap();
    }
}

/// A two-worker tokio runtime for the async clients ([`ApiClient`]) of the tests and benchmarks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The Kubernetes REST API over one HTTP/2 connection with the admin token, as client-go talks to
/// it: many requests in flight on one connection, no process per request.
pub struct ApiClient {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    base: String,
    token: String,
    connection: tokio::task::JoinHandle<()>,
}

/// How long one API request may take before [`ApiClient`] reports it failed.
const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    /// Connects to `cp`'s apiserver (TLS verified against its CA, ALPN h2); the connection is driven
    /// by a task of the current tokio runtime.
    pub async fn connect(cp: &ControlPlane) -> ApiClient {
        let ca = fs::read_to_string(cp.ca_file()).unwrap();
        let mut config = (*client_config(&ca)).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let addr: SocketAddr = cp.url().strip_prefix("https://").unwrap().parse().unwrap();
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        ApiClient {
            send,
            base: cp.url().to_owned(),
            token: cp.admin_token().to_owned(),
            connection,
        }
    }

    /// `POST path` with `object` as JSON: the status code and the JSON the apiserver answered (the
    /// stored object, or a Status), or why there was no answer within [`API_REQUEST_TIMEOUT`].
    pub async fn post(
        &self,
        path: &str,
        object: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        self.send("POST", path, "application/json", Some(object))
            .await
    }

    /// `PATCH path` with `patch` as a JSON merge patch; as [`ApiClient::post`].
    pub async fn merge_patch(
        &self,
        path: &str,
        patch: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        self.send("PATCH", path, "application/merge-patch+json", Some(patch))
            .await
    }

    /// `GET path` (an object or a list); as [`ApiClient::post`].
    pub async fn get(&self, path: &str) -> Result<(u16, serde_json::Value), String> {
        self.send("GET", path, "application/json", None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        object: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                object.map(ToString::to_string).unwrap_or_default(),
            )))
            .unwrap();
        let exchange = async {
            let response = self
                .send
                .clone()
                .send_request(request)
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?
                .to_bytes();
            let json = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "{method} {path}: {status} with no JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })?;
            Ok((status, json))
        };
        tokio::time::timeout(API_REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{method} {path}: no answer within {API_REQUEST_TIMEOUT:?}"
                ))
            })
    }
}

impl Drop for ApiClient {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
pub mod bench;

pub mod controller;

pub mod istiod;

pub mod rollout;

impl ControlPlane {
    /// The apiserver's `/metrics` (Prometheus text), read with the admin token.
    pub fn apiserver_metrics(&self) -> String {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url));
        let ca = fs::read_to_string(&self.ca_file).unwrap();
        let reply = https_get(port, &client_config(&ca), &self.token, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics from the apiserver: {e}"));
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "GET /metrics: {reply:.300}"
        );
        reply
    }
}

/// One plain-HTTP GET on 127.0.0.1 (an admin port); the whole response.
pub fn admin_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    http_get(tcp, path, None)
}
