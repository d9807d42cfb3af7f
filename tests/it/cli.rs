//! The command line as an operator uses it.

use crate::support::process::{ServeProcess, cli, text, v1_login};

fn store_in(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("cli.db").display())
}

#[test]
fn user_commands_add_list_passwd_disable_enable() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let out = cli(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "user-admin",
            "--email",
            "a@example.test",
            "--password-stdin",
            "--store",
            &store,
        ],
        "alice-password\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user alice"));

    let dup = cli(
        &[
            "user",
            "add",
            "ALICE",
            "--password-stdin",
            "--store",
            &store,
        ],
        "another-password\n",
    );
    assert!(!dup.status.success());
    assert!(
        text(&dup.stderr).contains("already exists"),
        "{}",
        text(&dup.stderr)
    );

    let bad_role = cli(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "emperor",
            "--password-stdin",
            "--store",
            &store,
        ],
        "bob-password\n",
    );
    assert!(!bad_role.status.success());
    assert!(
        text(&bad_role.stderr).contains("unknown role"),
        "{}",
        text(&bad_role.stderr)
    );

    let short = cli(
        &["user", "add", "bob", "--password-stdin", "--store", &store],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(
        text(&short.stderr).contains("at least 8"),
        "{}",
        text(&short.stderr)
    );

    let no_flag = cli(&["user", "add", "bob", "--store", &store], "");
    assert!(!no_flag.status.success());

    let list = cli(&["user", "list", "--store", &store], "");
    let table = text(&list.stdout);
    assert!(
        table.starts_with("ID  NAME   ROLES       ENABLED  EMAIL"),
        "{table}"
    );
    assert!(
        table.contains("alice  user-admin  yes      a@example.test"),
        "{table}"
    );

    let json = cli(&["user", "list", "--json", "--store", &store], "");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["name"], "alice");
    assert_eq!(v[0]["roles"][0], "user-admin");

    let passwd = cli(
        &[
            "user",
            "passwd",
            "alice",
            "--password-stdin",
            "--store",
            &store,
        ],
        "new-alice-password\n",
    );
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
    let unknown = cli(
        &[
            "user",
            "passwd",
            "nobody",
            "--password-stdin",
            "--store",
            &store,
        ],
        "whatever-password\n",
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("no user named \"nobody\""),
        "{}",
        text(&unknown.stderr)
    );

    let dis = cli(&["user", "disable", "alice", "--store", &store], "");
    assert!(dis.status.success(), "{}", text(&dis.stderr));
    let list = text(&cli(&["user", "list", "--store", &store], "").stdout);
    assert!(list.contains("alice  user-admin  no"), "{list}");
    let en = cli(&["user", "enable", "alice", "--store", &store], "");
    assert!(en.status.success());
    assert!(!text(&cli(&["user", "disable", "ghost", "--store", &store], "").stderr).is_empty());
}

#[test]
fn serve_binds_port_zero_creates_admin_and_logs_a_generated_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let server = ServeProcess::start(&store, &[], &[]);
    assert_ne!(server.port, 0);
    let log = server.log_text();
    assert!(
        log.contains("created the first user with a generated password"),
        "{log}"
    );
    let password = log
        .split("password=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("password in log")
        .to_string();
    assert!(password.len() >= 16);
    assert_eq!(server.terminate().code(), Some(0));

    // The second start finds the admin and prints no password.
    let server = ServeProcess::start(&store, &[], &[]);
    assert!(!server.log_text().contains("password="));
    let list = text(&cli(&["user", "list", "--store", &store], "").stdout);
    assert!(list.contains("admin  master"), "{list}");
    drop(server);
}

#[test]
fn configuration_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\nstroe = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let out = cli(&["serve", "--config", cfg.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("stroe"), "{}", text(&out.stderr));
    let out = cli(&["serve", "--store", "mysql://nope"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unsupported store URL"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["user", "list", "--config", "/nonexistent.toml"], "");
    assert!(!out.status.success());
}

#[test]
fn config_file_env_and_flags_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let cfg = dir.path().join("sessiond.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:1\"\nstore = \"{store}\"\n[session]\nidle_timeout = \"5m\"\n"
        ),
    )
    .unwrap();
    // The flag beats the file's listen address; the file's store is used.
    let server = ServeProcess::start(
        &store,
        &["--config", cfg.to_str().unwrap()],
        &[("SESSIOND_ADMIN_PASSWORD", "layered-admin-pw")],
    );
    assert_ne!(server.port, 1);
    drop(server);
    let list = text(&cli(&["user", "list", "--config", cfg.to_str().unwrap()], "").stdout);
    assert!(list.contains("admin"), "{list}");
}

async fn v1_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_list_and_revoke_and_audit_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", "cli-admin-pw")]);
    let base = server.base();
    let added = cli(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--store",
            &store,
        ],
        "alice-password\n",
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let (a1, s1) = v1_login(&base, "alice", "alice-password").await;
    let (a2, _) = v1_login(&base, "alice", "alice-password").await;
    let (admin, _) = v1_login(&base, "admin", "cli-admin-pw").await;
    let failed = reqwest::Client::new()
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"username": "alice", "password": "not-her-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);

    // Live sessions, as a table and as JSON.
    let list = text(&cli(&["sessions", "list", "--store", &store], "").stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("USER") && lines[0].contains("STATE"),
        "{list}"
    );
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[1..].iter().all(|l| l.contains(" live ")), "{list}");
    assert!(list.contains("201 (native API)"), "{list}");
    let mine = text(
        &cli(
            &["sessions", "list", "--user", "alice", "--store", &store],
            "",
        )
        .stdout,
    );
    assert_eq!(mine.lines().count(), 3, "{mine}");
    let json = cli(
        &[
            "sessions", "list", "--user", "alice", "--json", "--store", &store,
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["user"]["name"], "alice");
    assert_eq!(v[0]["console_type"]["code"], 201);

    // Revoke one by id: it stops working on the next request.
    let out = cli(&["sessions", "revoke", &s1, "--store", &store], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("ended session {s1}"));
    assert_eq!(v1_status(&base, &a1).await, 401);
    assert_eq!(v1_status(&base, &a2).await, 200);
    let again = cli(
        &["sessions", "revoke", &s1.to_lowercase(), "--store", &store],
        "",
    );
    assert!(text(&again.stdout).contains("had already ended"));
    // Revoke all of a user's.
    let out = cli(
        &["sessions", "revoke", "--user", "alice", "--store", &store],
        "",
    );
    assert_eq!(text(&out.stdout).trim(), "ended 1 session(s) of alice");
    assert_eq!(v1_status(&base, &a2).await, 401);
    assert_eq!(v1_status(&base, &admin).await, 200);
    let live = text(
        &cli(
            &["sessions", "list", "--user", "alice", "--store", &store],
            "",
        )
        .stdout,
    );
    assert_eq!(live.lines().count(), 1, "header only: {live}");
    let all = text(
        &cli(
            &[
                "sessions", "list", "--user", "alice", "--all", "--store", &store,
            ],
            "",
        )
        .stdout,
    );
    assert_eq!(
        all.lines().filter(|l| l.contains(" revoked ")).count(),
        2,
        "{all}"
    );

    // Bad input is an error with a message, and changes nothing.
    for (args, needle) in [
        (vec!["sessions", "revoke", "not-a-guid"], "not a session id"),
        (
            vec!["sessions", "revoke", "--user", "nobody"],
            "no user named",
        ),
        (
            vec!["sessions", "revoke", "00000000-0000-0000-0000-000000000000"],
            "no session",
        ),
        (vec!["sessions", "revoke"], "required"),
        (vec!["audit", "--kind", "login.maybe"], "unknown event kind"),
        (vec!["audit", "--since", "last tuesday"], "RFC 3339"),
    ] {
        let mut args = args.clone();
        args.extend(["--store", &store]);
        let out = cli(&args, "");
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // The audit trail: table, filters, JSON.
    let audit = text(&cli(&["audit", "--user", "alice", "--store", &store], "").stdout);
    let first = audit.lines().next().unwrap();
    assert!(
        first.starts_with("ID") && first.contains("KIND") && first.contains("DETAIL"),
        "{audit}"
    );
    for kind in [
        "user.created",
        "login.succeeded",
        "login.failed",
        "session.revoked",
    ] {
        assert!(audit.contains(kind), "{kind} in {audit}");
    }
    assert!(!audit.contains("not-her-password"));
    let failed = cli(
        &[
            "audit",
            "--kind",
            "login.failed",
            "--since",
            "1h",
            "--json",
            "--store",
            &store,
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["subject"]["name"], "alice");
    assert_eq!(v[0]["detail"], "invalid credentials");
    let future = text(
        &cli(
            &[
                "audit",
                "--since",
                "2999-01-01T00:00:00Z",
                "--store",
                &store,
            ],
            "",
        )
        .stdout,
    );
    assert_eq!(future.lines().count(), 1, "header only: {future}");
    let limited = text(&cli(&["audit", "--limit", "2", "--store", &store], "").stdout);
    assert_eq!(limited.lines().count(), 3, "{limited}");
    drop(server);
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let out = cli(&["openapi"], "");
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(text(&out.stdout), committed);
}
