//! `mesh-admission serve` for a [`ControlPlane`]: its own certificates from `mesh-admission certs`,
//! its log in the control plane's log folder, registered with exactly what `webhook-config` prints.

use std::ffi::OsStr;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::certs::{SecretVolume, generate_certs};
use crate::client::client_config;
use crate::control_plane::ControlPlane;
use crate::process::mesh_admission_stdin;
use crate::server::Server;

/// What `mesh-admission webhook-config ARGS` prints; fails the test unless it succeeded.
pub fn printed_config(args: &[&OsStr]) -> String {
    let mut all = vec![OsStr::new("webhook-config")];
    all.extend_from_slice(args);
    let output = mesh_admission_stdin(&all, "");
    assert!(
        output.status.success(),
        "mesh-admission webhook-config {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("webhook-config printed {e}"))
}

/// How long the apiserver may take to start calling a newly registered webhook configuration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `mesh-admission serve` on free 127.0.0.1 ports. Killed by its PID on drop, also when a
/// test panics.
pub struct Webhook {
    server: Server,
    certs: PathBuf,
    /// The Secret volume the server reads its pair from, when started with one.
    volume: Option<SecretVolume>,
    url: String,
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
    /// The address the webhook port listens on (an ephemeral port); 127.0.0.1 when `None`.
    pub listen: Option<std::net::IpAddr>,
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
        let certs = cp.dir().join(format!("webhook-{n}"));
        generate_certs(&certs);
        // As in a Secret volume: the names the server is given are links through `..data`, so one
        // rename of `..data` switches both files at once.
        let volume = options
            .secret_volume
            .then(|| SecretVolume::new(certs.join("volume"), &certs));
        let serving = volume
            .as_ref()
            .map_or(certs.as_path(), SecretVolume::root)
            .to_owned();
        let log = cp.logs().join(format!("mesh-admission-{n}.log"));
        let started = Instant::now();
        let server = Server::start_at(
            options
                .listen
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            options.binary.as_deref(),
            &serving,
            &options.args,
            &log,
        );
        let url = server.url();
        eprintln!(
            "e2e: mesh-admission serving {url} (admin {}), ready in {:.1?}, log {}",
            server.admin_addr,
            started.elapsed(),
            log.display()
        );
        Webhook {
            server,
            certs,
            volume,
            url,
        }
    }

    /// `https://127.0.0.1:PORT`, the base URL the webhooks are registered with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate (the caBundle).
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.crt")
    }

    /// The folder of the serving pair (`tls.crt`, `tls.key`) and its CA.
    pub fn certs(&self) -> &std::path::Path {
        &self.certs
    }

    /// The PID of `mesh-admission serve` while it runs.
    pub fn pid(&self) -> u32 {
        self.server
            .pid()
            .unwrap_or_else(|| panic!("mesh-admission serve at {} was stopped", self.url))
    }

    /// The admin port's `/metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        self.server.metrics()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// `mesh-admission webhook-config --url URL --ca-bundle CA --failure-policy POLICY | kubectl apply
    /// -f -`. While the server runs, returns only once the apiserver calls both the mutating and the
    /// validating webhook (it picks configurations up from a watch, a moment after they are stored).
    pub fn register(&self, cp: &ControlPlane, failure_policy: &str) {
        self.apply_config(cp, &self.config(failure_policy));
    }

    /// What `mesh-admission webhook-config --url URL --ca-bundle CA --failure-policy POLICY` prints.
    pub fn config(&self, failure_policy: &str) -> String {
        let ca = self.ca_file();
        printed_config(&[
            OsStr::new("--url"),
            OsStr::new(&self.url),
            OsStr::new("--failure-policy"),
            OsStr::new(failure_policy),
            OsStr::new("--ca-bundle"),
            ca.as_os_str(),
        ])
    }

    /// `kubectl apply -f -` of `config` (the [`Webhook::config`] output, possibly edited), then, as
    /// [`Webhook::register`], waits until the apiserver calls both webhooks.
    pub fn apply_config(&self, cp: &ControlPlane, config: &str) {
        cp.kubectl_stdin_ok(["apply", "-f", "-"], config);
        if self.server.pid().is_some() {
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
        generate_certs(&self.certs);
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
        volume.update(&self.certs);
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
        let addr: SocketAddr = self.server.addr;
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let config = Arc::new(client_config(&self.ca_file(), &[], None));
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = rustls::ClientConnection::new(config, name).unwrap();
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
        self.server.stop();
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
                started.elapsed() < REGISTER_TIMEOUT,
                "the apiserver did not call the webhooks at {} within {REGISTER_TIMEOUT:?} of their \
                 registration (logs: {})",
                self.url,
                cp.logs().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
