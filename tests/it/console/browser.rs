//! The web console in a real browser: Debian's chromium driven by npm's
//! `playwright-core` (`tests/browser/console.mjs`) against a real `sessiond serve`.
//! Screenshots of each view land in `target/ui-screenshots/`.
//!
//! Nothing is skipped: without `/usr/bin/chromium` (or `$CHROMIUM`), `node` or
//! npm, the test fails and says what to install (`.ci/run` installs them).

use crate::support::process::{ServeProcess, text, v1_login};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "admin-password";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's browser (apt-get install -y chromium), as .ci/run does",
        path.display()
    );
    path
}

/// `playwright-core` as pinned in `tests/browser/package.json`, installed once per
/// build directory under `target/browser-tests` (a file lock keeps parallel test
/// processes from racing).
fn playwright_dir() -> PathBuf {
    let dir = root().join("target/browser-tests");
    std::fs::create_dir_all(&dir).expect("browser-tests dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("lock");
    let wanted = std::fs::read_to_string(root().join("tests/browser/package.json"))
        .expect("tests/browser/package.json");
    let stamp = dir.join("package.installed");
    let installed = dir
        .join("node_modules/playwright-core/package.json")
        .exists()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted);
    if !installed {
        std::fs::write(dir.join("package.json"), &wanted).expect("package.json");
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("npm: {e} (install Node.js and npm, as .ci/run does)"));
        assert!(
            out.status.success(),
            "npm install of playwright-core failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        std::fs::write(&stamp, &wanted).expect("stamp");
    }
    dir
}

/// Creates a plain user through `/v1` as the bootstrap admin.
async fn add_plain_user(base: &str, name: &str, password: &str) {
    let http = reqwest::Client::new();
    let (token, _) = v1_login(base, "admin", ADMIN_PASSWORD).await;
    let created = http
        .post(format!("{base}/v1/users"))
        .bearer_auth(&token)
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let out = http
        .post(format!("{base}/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn console_end_to_end_in_chromium() {
    let browser = chromium();
    let playwright = tokio::task::spawn_blocking(playwright_dir).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("sessiond.db").display());
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let base = server.base();
    add_plain_user(&base, "alice", "alice-password").await;
    let shots = root().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let mut node = tokio::process::Command::new("node");
    node.arg(root().join("tests/browser/console.mjs"))
        .env("BASE", &base)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PLAIN_USER", "alice")
        .env("PLAIN_PASSWORD", "alice-password")
        .env("SHOTS", &shots)
        .env("PLAYWRIGHT_DIR", &playwright)
        .env("CHROMIUM", &browser)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), node.output())
        .await
        .expect("the browser test did not finish in 4 minutes")
        .unwrap_or_else(|e| panic!("node: {e} (install Node.js, as .ci/run does)"));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}\n--- server log ---\n{}",
        text(&out.stderr),
        server.log_text()
    );
    let results: Value = serde_json::from_str(stdout.trim()).expect("one JSON line of results");
    assert_eq!(results["ok"], true);
    assert_eq!(
        results["steps"].as_array().map(Vec::len),
        Some(13),
        "{results}"
    );
    for view in [
        "01-login",
        "03-sessions-live-row",
        "05-users",
        "07-audit",
        "08-phone-sessions",
    ] {
        assert!(
            shots.join(format!("{view}.png")).exists(),
            "no screenshot {view}"
        );
    }

    // Seen from outside the browser too: the Commvault session ended from the page
    // is recorded as revoked by the admin.
    let http = reqwest::Client::new();
    let (token, _) = v1_login(&base, "admin", ADMIN_PASSWORD).await;
    let audit: Value = http
        .get(format!("{base}/v1/audit?kind=session.revoked"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["subject"]["name"] == "alice" && e["actor"]["name"] == "admin"),
        "{audit}"
    );
}
