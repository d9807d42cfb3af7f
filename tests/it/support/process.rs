//! The `sessiond` binary as a user runs it: `serve` processes and CLI commands,
//! and a Python virtual environment for the real-client tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sessiond")
}

/// A running `sessiond serve`, killed on drop. Its log (stderr) is kept.
pub struct ServeProcess {
    child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
    /// Notified whenever a log line arrives.
    log_grew: Arc<Condvar>,
    /// Reads stderr into `log` until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `sessiond serve --listen 127.0.0.1:0 --store STORE` with extra args and env,
    /// and waits for it to log the port it bound.
    pub fn start(store: &str, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--store", store])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SESSIOND_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sessiond serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let log_grew = Arc::new(Condvar::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let grew = log_grew.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logs written to a pipe carry no colour codes (see `cli::init_logging`).
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
                grew.notify_all();
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("sessiond did not start:\n{}", log.lock().unwrap());
            }
        };
        ServeProcess {
            child,
            port,
            log,
            log_grew,
            reader: Some(reader),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = self.log.lock().unwrap();
        while !log.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {needle:?} in:\n{log}");
            log = self.log_grew.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
    }

    /// Waits (up to 30 s) for the process to exit; then the log is complete.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.reader.take() {
                    reader.join().expect("log reader");
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sessiond did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of a `listening on http://ADDR` (or `https://`) log line, text or JSON.
fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split("listening on http").nth(1)?;
    let rest = rest.strip_prefix('s').unwrap_or(rest).strip_prefix("://")?;
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    addr.rsplit(':').next()?.parse().ok()
}

/// Runs a CLI command, feeding `stdin`.
/// Signs in through `/v1/login` of a running server; returns the token and session id.
pub async fn v1_login(base: &str, user: &str, password: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["session"]["id"].as_str().unwrap().to_string(),
    )
}

pub fn cli(args: &[&str], stdin: &str) -> Output {
    cli_with_env(args, stdin, &[])
}

/// Runs a CLI command with extra environment variables, feeding `stdin`.
pub fn cli_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("SESSIOND_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessiond");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Python with the real clients' packages, made once per build directory under
/// `target/` (pinned in `tests/clients/requirements.txt`). A failure to build it
/// fails the test: real-client tests never skip silently.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let requirements = root.join("tests/clients/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvenv");
        std::fs::create_dir_all(&venv).expect("venv dir");
        // One builder at a time, across test processes too.
        let lock = std::fs::File::create(venv.with_extension("lock")).expect("lock file");
        lock.lock().expect("lock");
        let python = venv.join("bin/python");
        let stamp = venv.join("requirements.installed");
        let current = std::fs::read_to_string(&stamp).unwrap_or_default();
        if !python.exists() || current != wanted {
            let host_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            run(Command::new(&host_python)
                .args(["-m", "venv", "--clear"])
                .arg(&venv));
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements));
            std::fs::write(&stamp, &wanted).expect("stamp");
        }
        python
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
