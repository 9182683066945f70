//! `mesh-admission serve` as a child process: the one way the tests, the soak and the end-to-end
//! suite start the webhook server. Free 127.0.0.1 ports, JSON logs in a file, killed by its PID on
//! drop (also when a test panics).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::http::{admin_get, status};
use crate::process::{ChildGuard, listening, mesh_admission, spawn_logged, wait_started};

/// How long `serve` may take to log `listening` and answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `binary serve` on ephemeral 127.0.0.1 ports with `tls_dir`'s `tls.crt` and `tls.key`.
pub fn serve_command(binary: &Path, tls_dir: &Path) -> Command {
    serve_command_at(binary, Ipv4Addr::LOCALHOST.into(), tls_dir)
}

/// [`serve_command`] with the webhook port on `ip` (the admin port stays on 127.0.0.1).
fn serve_command_at(binary: &Path, ip: IpAddr, tls_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--listen")
        .arg(SocketAddr::new(ip, 0).to_string())
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(tls_dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(tls_dir.join("tls.key"));
    command
}

/// A running `mesh-admission serve`.
pub struct Server {
    child: Option<ChildGuard>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `serve` with the pair in `dir` plus `extra` flags; its log is a file in `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        Server::start_with(None, dir, &args, &dir.join(format!("serve-{n}.log")))
    }

    /// Starts `binary` (the crate's own when `None`) as `serve` on ephemeral 127.0.0.1 ports, with
    /// `tls_dir`'s `tls.crt` and `tls.key`, plus `args`, logging JSON to `log`; returns once it
    /// logged `listening` and its admin `/readyz` answers 200.
    pub fn start_with(
        binary: Option<&Path>,
        tls_dir: &Path,
        args: &[String],
        log: &Path,
    ) -> Server {
        Server::start_at(Ipv4Addr::LOCALHOST.into(), binary, tls_dir, args, log)
    }

    /// [`Server::start_with`] with the webhook port on `ip` (a replica the apiserver reaches by a
    /// Service's endpoint, which may not be a loopback address).
    pub fn start_at(
        ip: IpAddr,
        binary: Option<&Path>,
        tls_dir: &Path,
        args: &[String],
        log: &Path,
    ) -> Server {
        let binary = binary.unwrap_or_else(|| mesh_admission());
        let mut command = serve_command_at(binary, ip, tls_dir);
        command
            // As the image and the chart run it (src/main.rs says why).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args(["--log-format", "json"])
            .args(args);
        let mut child = spawn_logged(&mut command, log);
        let what = format!("{} serve", binary.display());
        let (addr, admin_addr) = wait_started(&mut child, &what, log, START_TIMEOUT, || {
            let addr = listening(log, "addr")?;
            let admin = listening(log, "admin_addr")?;
            admin_get(admin, "/readyz")
                .is_ok_and(|reply| status(&reply) == 200)
                .then_some((addr, admin))
        });
        Server {
            child: Some(child),
            addr,
            admin_addr,
            log: log.to_owned(),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The process ID; `None` once [`Server::stop`] ran.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The admin port's `/metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        let reply = admin_get(self.admin_addr, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics from {}: {e}", self.admin_addr));
        assert_eq!(status(&reply), 200, "{reply}");
        reply
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.pid().expect("the server was stopped");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// The exit status once the process has exited, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the server was stopped");
        child.0.try_wait().unwrap()
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.child.as_mut()?.wait_exit(limit)
    }

    /// Stops the server (SIGKILL to its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child = None;
    }
}
