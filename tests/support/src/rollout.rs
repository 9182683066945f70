//! Webhook replicas registered by Service, as the chart runs them (DESIGN.md section 11, "Rollouts"):
//! `mesh-admission serve` processes on the machine's non-loopback address, each published as an
//! EndpointSlice of the Service `mesh-admission` in `mesh-system`. The control plane must run with
//! `--enable-aggregator-routing=true`: the apiserver then calls a Service's endpoint addresses directly
//! (and refuses loopback ones), over HTTP/1.1, verifying the certificate for `SERVICE.NAMESPACE.svc`.
//! Each replica is killed by its PID on drop, also when a test panics.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::control_plane::advertise_address;
use crate::{ControlPlane, admin_get, mesh_admission};

pub const SERVICE: &str = "mesh-admission";
pub const NAMESPACE: &str = "mesh-system";
/// The Service port's name, which the EndpointSlices' port must carry.
const PORT_NAME: &str = "https";
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
        let certs = cp.logs().parent().unwrap().join("replicas-certs");
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
        let config = Command::new(mesh_admission())
            .args(["webhook-config", "--failure-policy", failure_policy])
            .arg("--ca-bundle")
            .arg(self.certs.join("ca.crt"))
            .output()
            .unwrap();
        assert!(
            config.status.success(),
            "mesh-admission webhook-config failed: {}",
            String::from_utf8_lossy(&config.stderr)
        );
        cp.kubectl_stdin_ok(
            ["apply", "-f", "-"],
            &String::from_utf8(config.stdout).unwrap(),
        );
    }

    /// Starts a replica called `name`; returns once its admin `/readyz` answers 200.
    pub fn start(&self, name: &str) -> Replica {
        let log = self.logs.join(format!("replica-{name}.log"));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(mesh_admission())
            .env("MIMALLOC_PURGE_DELAY", "0")
            .arg("serve")
            .arg("--listen")
            .arg(SocketAddr::new(self.address, 0).to_string())
            .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--tls-cert")
            .arg(self.certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(self.certs.join("tls.key"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut replica = Replica {
            name: name.to_owned(),
            child: Some(child),
            log,
            addr: SocketAddr::new(self.address, 0),
            admin: SocketAddr::new(self.address, 0),
        };
        let started = Instant::now();
        loop {
            if let Some((addr, admin)) = replica.listening() {
                (replica.addr, replica.admin) = (addr, admin);
                let ready =
                    admin_get(admin, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
                if ready {
                    return replica;
                }
            }
            let status = replica.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                status.is_none() && started.elapsed() < START_TIMEOUT,
                "replica {name} is not ready ({status:?}); its log is {}",
                replica.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
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
            replica.addr.ip(),
            &[(PORT_NAME, replica.addr.port())],
        );
    }

    /// Removes `replica`'s endpoint and sends it SIGTERM at the same moment, as the kubelet and the
    /// EndpointSlice controller do when a Deployment replaces a pod; returns its exit status.
    pub fn retire(&self, cp: &ControlPlane, mut replica: Replica) -> ExitStatus {
        let slice = replica.slice_name();
        let mut delete = cp
            .kubectl_command(["delete", "endpointslice", "-n", NAMESPACE, &slice])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        replica.signal(Signal::SIGTERM);
        let deleted = delete.wait().unwrap();
        assert!(
            deleted.success(),
            "deleting the EndpointSlice of {} failed",
            replica.name
        );
        replica.wait_exit(Duration::from_secs(30))
    }
}

/// One running replica.
pub struct Replica {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    fn slice_name(&self) -> String {
        format!("{SERVICE}-{}", self.name)
    }

    /// The addresses from the server's `listening` log line, once it is there.
    fn listening(&self) -> Option<(SocketAddr, SocketAddr)> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            let fields = &line["fields"];
            if fields["message"] != "listening" {
                return None;
            }
            Some((
                fields["addr"].as_str()?.parse().ok()?,
                fields["admin_addr"].as_str()?.parse().ok()?,
            ))
        })
    }

    /// The reviews this replica answered (`mesh_admission_requests_total`, every series).
    pub fn reviews(&self) -> f64 {
        let reply = admin_get(self.admin, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics from replica {}: {e}", self.name));
        reply
            .lines()
            .filter(|line| line.starts_with("mesh_admission_requests_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The established TCP connections to the replica's webhook port (from /proc/net/tcp).
    pub fn connections(&self) -> usize {
        let IpAddr::V4(ip) = self.addr.ip() else {
            return 0;
        };
        let local = format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            self.addr.port()
        );
        let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01")
            })
            .count()
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        }
    }

    /// Waits for the process to exit, at most `limit`, then kills it.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "replica {} did not exit within {limit:?} of SIGTERM; its log is {}",
            self.name,
            self.log.display()
        );
    }

    /// SIGTERM, then its exit status (at most 30 s).
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
