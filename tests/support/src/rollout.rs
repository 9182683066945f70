//! Webhook replicas registered by Service, as the chart runs them (DESIGN.md section 11, "Rollouts"):
//! `mesh-admission serve` processes on the machine's non-loopback address, each published as an
//! EndpointSlice of the Service `mesh-admission` in `mesh-system`. The control plane must run with
//! `--enable-aggregator-routing=true`: the apiserver then calls a Service's endpoint addresses directly
//! (and refuses loopback ones), over HTTP/1.1, verifying the certificate for `SERVICE.NAMESPACE.svc`.
//! Each replica is killed by its PID on drop, also when a test panics.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::control_plane::advertise_address;
use crate::server::Server;
use crate::webhook::printed_config;
use crate::{ControlPlane, generate_certs, metrics, procfs};

pub const SERVICE: &str = "mesh-admission";
pub const NAMESPACE: &str = "mesh-system";
/// The Service port's name, which the EndpointSlices' port must carry.
const PORT_NAME: &str = "https";
/// How long a replica may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The address endpoints of a Service must have: a non-loopback address of this machine, which the
/// processes behind a Service bind (the apiserver refuses loopback endpoints).
pub fn endpoint_address() -> IpAddr {
    let address = IpAddr::V4(advertise_address());
    assert!(
        !address.is_loopback(),
        "the machine has no non-loopback IPv4 address: the apiserver refuses loopback endpoints"
    );
    address
}

/// Creates the Service `namespace/name` without a selector (the tests publish its EndpointSlices),
/// with `ports` as (name, port).
pub fn create_service(cp: &ControlPlane, namespace: &str, name: &str, ports: &[(&str, u16)]) {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": ports}
    });
    cp.kubectl_stdin_ok(["create", "-f", "-"], &service.to_string());
}

/// Publishes `address` as a ready endpoint of the Service `namespace/service` in the EndpointSlice
/// `slice`, serving each Service port named in `ports` on the given port of `address`. The apiserver
/// matches a slice's port to the Service port by name.
pub fn publish_endpoint(
    cp: &ControlPlane,
    namespace: &str,
    service: &str,
    slice: &str,
    address: IpAddr,
    ports: &[(&str, u16)],
) {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice, "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "ports": ports,
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}]
    });
    cp.kubectl_stdin_ok(["apply", "-f", "-"], &slice.to_string());
}

/// The Service, the serving pair every replica shares, and the address the replicas bind.
pub struct Replicas {
    certs: PathBuf,
    address: IpAddr,
    logs: PathBuf,
}

impl Replicas {
    /// Creates `mesh-system`, the Service (no selector: the test publishes the EndpointSlices) and a
    /// serving pair for `mesh-admission.mesh-system.svc` (`mesh-admission certs`).
    pub fn install(cp: &ControlPlane) -> Replicas {
        let address = endpoint_address();
        let certs = cp.dir().join("replicas-certs");
        generate_certs(&certs);
        cp.kubectl_ok(["create", "namespace", NAMESPACE]);
        create_service(cp, NAMESPACE, SERVICE, &[(PORT_NAME, 443)]);
        Replicas {
            certs,
            address,
            logs: cp.logs().to_owned(),
        }
    }

    /// `mesh-admission webhook-config` by Service (as the chart registers it) with `failure_policy`,
    /// applied.
    pub fn register(&self, cp: &ControlPlane, failure_policy: &str) {
        let ca = self.certs.join("ca.crt");
        let config = printed_config(&[
            OsStr::new("--failure-policy"),
            OsStr::new(failure_policy),
            OsStr::new("--ca-bundle"),
            ca.as_os_str(),
        ]);
        cp.kubectl_stdin_ok(["apply", "-f", "-"], &config);
    }

    /// Starts a replica called `name`; returns once its admin `/readyz` answers 200.
    pub fn start(&self, name: &str) -> Replica {
        let log = self.logs.join(format!("replica-{name}.log"));
        Replica {
            name: name.to_owned(),
            server: Server::start_at(self.address, None, &self.certs, &[], &log),
        }
    }

    /// Adds `replica` to the Service's endpoints.
    pub fn publish(&self, cp: &ControlPlane, replica: &Replica) {
        let slice = replica.slice_name();
        publish_endpoint(
            cp,
            NAMESPACE,
            SERVICE,
            &slice,
            replica.addr().ip(),
            &[(PORT_NAME, replica.addr().port())],
        );
    }

    /// Removes `replica`'s endpoint and sends it SIGTERM at the same moment, as the kubelet and the
    /// EndpointSlice controller do when a Deployment replaces a pod; returns its exit status.
    pub fn retire(&self, cp: &ControlPlane, replica: Replica) -> ExitStatus {
        let slice = replica.slice_name();
        let mut delete = cp
            .kubectl_command(["delete", "endpointslice", "-n", NAMESPACE, &slice])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        replica.server.signal(Signal::SIGTERM);
        let deleted = delete.wait().unwrap();
        assert!(
            deleted.success(),
            "deleting the EndpointSlice of {} failed",
            replica.name
        );
        replica.exit()
    }
}

/// One running replica: `mesh-admission serve` on the machine's address.
pub struct Replica {
    pub name: String,
    server: Server,
}

impl Replica {
    fn slice_name(&self) -> String {
        format!("{SERVICE}-{}", self.name)
    }

    /// The webhook port.
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The reviews this replica answered (`mesh_admission_requests_total`, every series).
    pub fn reviews(&self) -> f64 {
        metrics::sum(&self.server.metrics(), "mesh_admission_requests_total")
    }

    /// The established TCP connections to the replica's webhook port (from /proc/net/tcp).
    pub fn connections(&self) -> usize {
        match self.addr() {
            SocketAddr::V4(addr) => procfs::tcp_peers(addr).len(),
            SocketAddr::V6(_) => 0,
        }
    }

    pub fn log_path(&self) -> &Path {
        self.server.log_path()
    }

    /// Its exit status once it has exited after a signal; fails the test (and kills it) when it has
    /// not within [`EXIT_TIMEOUT`].
    fn exit(mut self) -> ExitStatus {
        self.server.wait_exit(EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "replica {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM; its log is {}",
                self.name,
                self.server.log_path().display()
            )
        })
    }

    /// SIGTERM, then its exit status (at most 30 s).
    pub fn terminate(self) -> ExitStatus {
        self.server.signal(Signal::SIGTERM);
        self.exit()
    }
}
