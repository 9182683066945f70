//! `mesh-admission controller` as a child process against a [`ControlPlane`]: its kubeconfig is the
//! control plane's, its JSON log a file in the control plane's log folder. Killed by its PID on drop,
//! also when a test panics.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::control_plane::ControlPlane;
use crate::http::{admin_get, status};
use crate::metrics;
use crate::process::{ChildGuard, listening, mesh_admission, spawn_logged, wait_started};

/// How long the controller may take to log `listening` and then answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Controller {
    child: Option<ChildGuard>,
    log: PathBuf,
    admin_addr: SocketAddr,
    pub identity: String,
}

/// How [`Controller::start_with`] runs it.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// `POD_NAME`: the Lease holder identity.
    pub identity: String,
    /// Wait for `/readyz` (every required watch listed) before returning.
    pub wait_ready: bool,
    /// `--debounce`: short in the tests, the default in the benchmark.
    pub debounce: String,
    /// More arguments.
    pub args: Vec<String>,
    /// Another build to run (the benchmark's release build).
    pub binary: Option<PathBuf>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            identity: "controller-0".into(),
            wait_ready: true,
            debounce: "100ms".into(),
            args: Vec::new(),
            binary: None,
        }
    }
}

impl Controller {
    pub fn start(cp: &ControlPlane) -> Controller {
        Self::start_with(cp, &ControllerOptions::default())
    }

    pub fn start_with(cp: &ControlPlane, options: &ControllerOptions) -> Controller {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let log = cp
            .logs()
            .join(format!("controller-{n}-{}.log", options.identity));
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| mesh_admission().to_owned());
        let mut command = Command::new(&binary);
        command
            .env("KUBECONFIG", cp.kubeconfig())
            .env("POD_NAME", &options.identity)
            .env_remove("POD_NAMESPACE")
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args(["controller", "--admin-listen", "127.0.0.1:0"])
            .args(["--leader-election-namespace", "default"])
            .args(["--log-format", "json", "--debounce", &options.debounce])
            .args(&options.args);
        let mut child = spawn_logged(&mut command, &log);
        let started = Instant::now();
        let what = "mesh-admission controller";
        let admin_addr = wait_started(&mut child, what, &log, START_TIMEOUT, || {
            let admin = listening(&log, "admin_addr")?;
            (!options.wait_ready || ready(admin)).then_some(admin)
        });
        let controller = Controller {
            child: Some(child),
            log,
            admin_addr,
            identity: options.identity.clone(),
        };
        eprintln!(
            "e2e: controller {} (admin {}) started in {:.1?}, log {}",
            controller.identity,
            controller.admin_addr,
            started.elapsed(),
            controller.log.display()
        );
        controller
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildGuard::pid)
    }

    /// `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        ready(self.admin_addr)
    }

    /// The admin port's `/metrics`.
    pub fn metrics(&self) -> String {
        admin_get(self.admin_addr, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics of controller {}: {e}", self.identity))
    }

    /// The value of the series `series` (`name` or `name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metrics::value(&self.metrics(), series)
    }

    /// Whether this replica says it holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.metric("mesh_admission_controller_leader") == 1.0
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    /// SIGKILL: a leader that dies without releasing its Lease.
    pub fn kill(&mut self) {
        self.child = None; // the guard kills it by its PID
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.pid()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        child.wait_exit(Duration::from_secs(10))
    }
}

/// The admin port at `admin` answers `/readyz` with 200 (every required watch listed).
fn ready(admin: SocketAddr) -> bool {
    admin_get(admin, "/readyz").is_ok_and(|reply| status(&reply) == 200)
}

/// The apiserver's `apiserver_request_total`, summed by `VERB resource` (e.g. `APPLY
/// virtualservices`, `LIST helmreleases`) over codes, scopes and versions.
pub fn apiserver_requests(cp: &ControlPlane) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for line in cp.apiserver_metrics().lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        *totals
            .entry(format!("{} {}", label("verb"), label("resource")))
            .or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    totals
}
