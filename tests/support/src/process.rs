//! Where things are (the binary under test, the examples, this checkout, scratch folders) and the
//! child processes the tests start: each is killed by its PID when its guard drops, also when a test
//! panics.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// This checkout of mesh-admission (the folder of its Cargo.toml).
pub fn checkout() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
        kit.ancestors()
            .nth(2)
            .unwrap_or_else(|| panic!("{} is not tests/support of a checkout", kit.display()))
            .to_owned()
    })
}

/// `../shared/crds`: the CRDs the webhook's users have installed.
pub fn shared_crds() -> PathBuf {
    checkout().join("../shared/crds")
}

/// What provides the programs under `.tools/` that the tests run.
pub const TOOLS_HINT: &str = "bash hack/install-tools.sh";

/// A program or folder under this checkout's `.tools/` (`relative` to the checkout); a missing one fails the
/// test with `hint`, the command that provides it.
pub fn tool(relative: &str, hint: &str) -> PathBuf {
    let path = checkout().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `{hint}` first (the end-to-end tests need it)",
        path.display()
    );
    path
}

/// The folder of the running test, benchmark or example's build profile (`target/debug`,
/// `target/release`, or `target/TRIPLE/PROFILE`): cargo puts the package's binaries there and its
/// tests, benchmarks and examples one level below (`deps/`, `examples/`).
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
        let parent = exe
            .parent()
            .unwrap_or_else(|| panic!("{} has no folder", exe.display()));
        let nested = matches!(
            parent.file_name().and_then(OsStr::to_str),
            Some("deps" | "examples")
        );
        let dir = if nested {
            parent.parent()
        } else {
            Some(parent)
        };
        dir.unwrap_or_else(|| panic!("{} has no profile folder", exe.display()))
            .to_owned()
    })
}

/// The `mesh-admission` binary under test: the one cargo built beside this test, in the same
/// profile (cargo builds a package's binaries before its integration tests).
pub fn mesh_admission() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = profile_dir().join("mesh-admission");
        assert!(
            path.is_file(),
            "{} is missing: run the tests with cargo, which builds it first",
            path.display()
        );
        path
    })
}

/// An example built in the same profile (`target/release/examples/NAME` for `cargo test --release`),
/// which the hack/ script that runs the benchmark builds first: cargo does not build examples for
/// integration tests.
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --examples` in this profile (the hack/ script \
         of the benchmark does)",
        path.display()
    );
    path
}

/// A fresh, empty folder under cargo's `target/tmp`, unique to this process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    // The target folder is the one holding cargo's CACHEDIR.TAG, above the profile folder.
    let target = profile_dir()
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or_else(|| profile_dir());
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = target
        .join("tmp")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Runs `mesh-admission ARGS` with `stdin`; returns its output, whatever its exit code.
pub fn mesh_admission_stdin<S: AsRef<OsStr>>(args: &[S], stdin: &str) -> Output {
    let mut child = Command::new(mesh_admission())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", mesh_admission().display()));
    // It reads all of stdin before it writes much, so writing first cannot deadlock.
    let written = child
        .stdin
        .take()
        .map(|mut pipe| pipe.write_all(stdin.as_bytes()));
    let output = child.wait_with_output().unwrap();
    if let Some(Err(e)) = written {
        panic!("writing mesh-admission's stdin: {e}");
    }
    output
}

/// Runs `mesh-admission SUBCOMMAND ARGS` feeding `stdin`; returns (exit code, stdout, stderr).
pub fn run_command(subcommand: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut all = vec![subcommand];
    all.extend_from_slice(args);
    let out = mesh_admission_stdin(&all, stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `N` distinct ports that were free on 127.0.0.1 a moment ago.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// Calls `check` every `every` until it gives a value; fails the test with `what` after `limit`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// [`wait_for`] a condition.
pub fn wait_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) {
    wait_for(what, limit, every, || condition().then_some(()));
}

/// A child process killed by its PID and reaped when this guard drops.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the exit at most `limit`; `None` while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill(); // SIGKILL to this child's PID
        }
        let _ = self.0.wait();
    }
}

/// Spawns `command` with its stdout and stderr in the file `log` and no stdin.
pub fn spawn_logged(command: &mut Command, log: &Path) -> ChildGuard {
    let file = fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let program = command.get_program().to_owned();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", Path::new(&program).display()));
    ChildGuard(child)
}

/// Waits until `ready` gives a value, failing the test, with the process's log, when the process
/// exits first or `timeout` passes.
pub fn wait_started<T>(
    child: &mut ChildGuard,
    what: &str,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    let text = || fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses of the first JSON log line of `log` whose message is `listening`: the `addr` and
/// `admin_addr` fields the `serve` and `controller` commands print.
pub fn listening(log: &Path, field: &str) -> Option<std::net::SocketAddr> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &line["fields"];
        if fields["message"] != "listening" {
            return None;
        }
        fields[field].as_str()?.parse().ok()
    })
}
