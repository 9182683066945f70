//! The first SIGTERM starts a graceful shutdown instead of killing the process. (The second
//! signal's `exit(1)` would end the test binary, so it is left to a manual check.)

use std::time::Duration;

use mesh_admission::server::listener::spawn_signal_handler;

#[tokio::test]
async fn the_first_sigterm_cancels_the_shutdown_token() {
    let token = spawn_signal_handler().expect("install signal handlers");
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(2), token.cancelled())
        .await
        .expect("token cancelled by SIGTERM");
}
