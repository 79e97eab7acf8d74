//! The first signal cancels the shutdown token. (Its own test binary: it signals its own
//! process. The forced exit on a second signal is exercised through the agents' binaries.)

use std::time::Duration;

#[tokio::test]
async fn sigterm_cancels_the_token() {
    let token = ksd_runtime::shutdown::on_signals();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), token.cancelled())
        .await
        .expect("the token is cancelled by SIGTERM");
}
