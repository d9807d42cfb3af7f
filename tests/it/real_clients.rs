//! Real clients against the real binary: Commvault's cvpysdk and VMware's vAPI
//! Python runtime (`com.vmware.cis_client.Session` over JSON-RPC).

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

#[test]
fn vapi_python_runtime_creates_gets_and_deletes_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("vapi.db").display());
    let admin_pw = "vapi-admin-pw";
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", admin_pw)]);

    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/vapi_session.py"
        ))
        .env("SESSIOND_URL", server.base())
        .env("ADMIN_PASSWORD", admin_pw)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "vAPI script failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        server.log_text()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("script output");
    assert_eq!(seen["user"], "admin@local");
    assert_eq!(
        seen["bad_login"],
        serde_json::json!({"error_type": "UNAUTHENTICATED", "message_id": "vapi.security.authentication.invalid"})
    );
    assert_eq!(seen["unknown_operation"], "vapi.operation.not_found");
    assert_eq!(
        seen["after_delete"],
        serde_json::json!({"error_type": "UNAUTHENTICATED", "message_id": "vapi.session.invalid"})
    );
    assert_eq!(seen["delete_again"], "vapi.session.invalid");

    // The session the script left open is one session for every dialect: Commvault
    // lists both of the script's sessions as JSON-RPC ones (103), the deleted one ended.
    let open = seen["open_session"].as_str().unwrap().to_string();
    let deleted = seen["session_id"].as_str().unwrap().to_string();
    let base = server.base();
    let sessions: Value = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let http = reqwest::Client::new();
            let r = http
                .post(format!("{base}/rest/com/vmware/cis/session?~action=get"))
                .header("vmware-api-session-id", &deleted)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            http.get(format!("{base}/commandcenter/api/Session?userId=1"))
                .header("Authtoken", format!("QSDK {open}"))
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
    let list = sessions["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 2, "{sessions}");
    assert!(list.iter().all(|s| s["consoleType"] == 103), "{sessions}");
    assert_eq!(
        list.iter().filter(|s| s["logoutTime"] == 0).count(),
        1,
        "{sessions}"
    );
    // Nothing secret reached the log.
    let log = server.log_text();
    assert!(!log.contains(&seen["open_session"].as_str().unwrap()[..16]));
    assert!(!log.contains(admin_pw));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
