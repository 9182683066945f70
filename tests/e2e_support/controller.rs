//! `mesh-admission controller` as a child process against a [`ControlPlane`]: its kubeconfig is the
//! control plane's, its JSON log a file in the control plane's log folder. Killed by its PID on drop,
//! also when a test panics.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{ControlPlane, admin_get, assert_starting, mesh_admission};

/// How long the controller may take to log `listening` and then answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Controller {
    child: Option<Child>,
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
        let file =
            fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(mesh_admission()));
        let child = Command::new(&binary)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("POD_NAME", &options.identity)
            .env_remove("POD_NAMESPACE")
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args(["controller", "--admin-listen", "127.0.0.1:0"])
            .args(["--leader-election-namespace", "default"])
            .args(["--log-format", "json", "--debounce", &options.debounce])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut controller = Controller {
            child: Some(child),
            log,
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            identity: options.identity.clone(),
        };
        let started = Instant::now();
        controller.admin_addr = loop {
            if let Some(addr) = controller.listening() {
                break addr;
            }
            controller.assert_running_within(started);
            std::thread::sleep(Duration::from_millis(50));
        };
        while options.wait_ready && !controller.ready() {
            controller.assert_running_within(started);
            std::thread::sleep(Duration::from_millis(100));
        }
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
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        admin_get(self.admin_addr, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    }

    /// The admin port's `/metrics`.
    pub fn metrics(&self) -> String {
        admin_get(self.admin_addr, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics of controller {}: {e}", self.identity))
    }

    /// The value of the metric line starting with `series` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Whether this replica says it holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.metric("mesh_admission_controller_leader ") == 1.0
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    /// SIGKILL: a leader that dies without releasing its Lease.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn listening(&self) -> Option<SocketAddr> {
        self.log().lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &line["fields"];
            if fields["message"] != "listening" {
                return None;
            }
            fields["admin_addr"].as_str()?.parse().ok()
        })
    }

    fn assert_running_within(&mut self, started: Instant) {
        let child = self.child.as_mut().unwrap();
        let what = "mesh-admission controller";
        assert_starting(child, what, &self.log, started, START_TIMEOUT);
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
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
