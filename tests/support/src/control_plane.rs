//! A real control plane for the end-to-end suite (DESIGN.md section 11): etcd and kube-apiserver as
//! built by `hack/build-control-plane.sh`, started the way controller-runtime's envtest starts them, on
//! 127.0.0.1 only, and driven with the official `kubectl` (`hack/install-tools.sh`).
//!
//! Each process writes its output to a file in [`ControlPlane::logs`], a folder every failure message
//! names. Every process is killed by its PID when the [`ControlPlane`] drops, also when a test panics;
//! the temporary folder is removed on a clean drop and kept after a panic.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::certs::{ApiserverPki, apiserver_pki};
use crate::client::client_config;
use crate::http::{admin_get, https_get, status};
use crate::process::{ChildGuard, TOOLS_HINT, free_ports, spawn_logged, temp_dir, tool};

const BUILD_HINT: &str = "bash hack/build-control-plane.sh";
/// How long etcd and then kube-apiserver may take to answer their health checks.
const ETCD_TIMEOUT: Duration = Duration::from_secs(20);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Room for the controller benchmark's 2,000 Services (a /24 holds 254).
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/16";

/// A running etcd + kube-apiserver pair with an admin kubeconfig.
pub struct ControlPlane {
    dir: PathBuf,
    logs: PathBuf,
    /// Started processes, killed in reverse order on drop.
    processes: Vec<(&'static str, ChildGuard)>,
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

        let dir = temp_dir("e2e");
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("creating {}: {e}", logs.display()));
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut cp = ControlPlane {
            // Where apiserver_pki writes it.
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
        let pki = cp.write_pki(advertise);
        cp.start_apiserver(&apiserver, &etcd_url, advertise, &pki, extra);
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

    /// The control plane's temporary folder, for a test's own files (removed with it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PID of a control-plane process (`etcd` or `kube-apiserver`).
    pub fn pid(&self, name: &str) -> u32 {
        self.processes
            .iter()
            .find(|(process, _)| *process == name)
            .map(|(_, child)| child.pid())
            .unwrap_or_else(|| panic!("no {name} in the control plane"))
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
        self.succeeded(&args, None, output)
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
        self.succeeded(&args, Some(stdin), output)
    }

    /// The standard output of a kubectl run that must have succeeded; the failure message names
    /// the arguments and the input.
    fn succeeded<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
        output: Output,
    ) -> String {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        assert!(
            output.status.success(),
            "kubectl {} failed{}\n{}",
            args.join(" "),
            stdin.map_or(String::new(), |text| format!(" on\n{text}")),
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

    /// A `kubectl` command against this control plane, for callers that spawn it themselves.
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
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
                admin_get(SocketAddr::from((Ipv4Addr::LOCALHOST, client)), "/health").is_ok_and(
                    |reply| status(&reply) == 200 && reply.contains(r#""health":"true""#),
                )
            };
            (command, client_url, ready)
        })
    }

    fn start_apiserver(
        &mut self,
        binary: &Path,
        etcd: &str,
        advertise: Ipv4Addr,
        tls: &ApiserverPki,
        extra: &[&str],
    ) {
        let tls_config = Arc::new(client_config(&tls.ca_file, &[], None));
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
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                https_get(addr, &config, &token, "/readyz").is_ok_and(|reply| status(&reply) == 200)
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
            let (mut command, address, mut ready) = attempt();
            let child = spawn_logged(&mut command, &log_path);
            self.processes.push((name, child));
            let started = Instant::now();
            loop {
                if ready() {
                    return address;
                }
                let (_, child) = self.processes.last_mut().unwrap();
                if let Some(status) = child.0.try_wait().unwrap() {
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

    /// The apiserver's PKI and the token file of the admin user.
    fn write_pki(&self, advertise: Ipv4Addr) -> ApiserverPki {
        // The first address of SERVICE_CLUSTER_IP_RANGE: the `kubernetes` Service's.
        let pki = apiserver_pki(&self.dir, advertise, "10.0.0.1");
        let tokens = self.dir.join("tokens.csv");
        fs::write(
            &tokens,
            format!("{},admin,admin,\"system:masters\"\n", self.token),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", tokens.display()));
        pki
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
        // SIGKILL to each PID, the apiserver before its etcd.
        while let Some((_, child)) = self.processes.pop() {
            drop(child);
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

/// A non-loopback IPv4 address of this machine for `--advertise-address` (the apiserver refuses
/// loopback endpoints for the `kubernetes` Service and logs it every few seconds): the source address
/// of the default route, found by connecting a UDP socket, which sends nothing. Loopback otherwise.
pub fn advertise_address() -> Ipv4Addr {
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

impl ControlPlane {
    /// The apiserver's `/metrics` (Prometheus text), read with the admin token.
    pub fn apiserver_metrics(&self) -> String {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url));
        let config = Arc::new(client_config(&self.ca_file, &[], None));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let reply = https_get(addr, &config, &self.token, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics from the apiserver: {e}"));
        assert_eq!(status(&reply), 200, "GET /metrics: {reply:.300}");
        reply
    }
}
