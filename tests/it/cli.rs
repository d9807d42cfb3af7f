//! The command line as an operator uses it.

use crate::support::process::{ServeProcess, cli, text};

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
