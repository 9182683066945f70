//! The first SIGTERM starts a graceful shutdown instead of killing the process; the second one
//! reports that the drain was cut short (`main` then exits with status 1).

use std::time::Duration;

use mesh_admission::signals::spawn_signal_handler;

fn send(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn the_first_sigterm_cancels_the_shutdown_token_and_the_second_aborts() {
    let signals = spawn_signal_handler().expect("install signal handlers");
    assert!(!signals.shutdown.is_cancelled());
    send("-TERM");
    tokio::time::timeout(Duration::from_secs(2), signals.shutdown.cancelled())
        .await
        .expect("token cancelled by SIGTERM");
    let aborted = tokio::time::timeout(Duration::from_millis(200), signals.aborted()).await;
    assert!(aborted.is_err(), "one signal does not abort");
    send("-INT");
    tokio::time::timeout(Duration::from_secs(2), signals.aborted())
        .await
        .expect("aborted by a second signal");
}
