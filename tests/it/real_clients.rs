//! Real clients against the real binary: Commvault's cvpysdk.

use crate::support::process::{ServeProcess, cli, python, text};
use serde_json::Value;
use std::process::Command;

#[test]
fn cvpysdk_logs_in_lists_sessions_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cv.db").display());
    let admin_pw = "cvpysdk-admin-pw";
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", admin_pw)]);
    let added = cli(
        &["user", "add", "bob", "--password-stdin", "--store", &store],
        "bob-password-1\n",
    );
    assert!(added.status.success(), "{}", text(&added.stderr));

    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/cvpysdk_sessions.py"
        ))
        .env("SESSIOND_URL", server.base())
        .env("ADMIN_PASSWORD", admin_pw)
        .env("USER2", "bob")
        .env("USER2_PASSWORD", "bob-password-1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "cvpysdk script failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        server.log_text()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("script output");
    assert_eq!(seen["admin_sessions"][0]["user"]["userName"], "admin");
    assert_eq!(seen["own_sessions"][0]["user"]["userName"], "bob");
    assert_eq!(seen["after_logout"], serde_json::json!([]));

    // The server recorded the logouts: both sessions show as ended, with reason logout.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
