//! `cargo bench`: the pure parts of the hot path, so that regressions show up in
//! review. Timings only; the service as a whole is measured by `bench/` (wrk
//! against the HTTP ceiling).

use sessiond::api::commvault::render;
use sessiond::api::commvault::wire::Format;
use sessiond::api::native::wire as native;
use sessiond::domain::{
    ClientInfo, ConsoleType, Dialect, NewSession, SessionId, SessionState, SessionToken, Timestamp,
    UserId,
};
use sessiond::service::{SessionRows, SessionView};
use std::hint::black_box;
use std::time::Duration;

fn main() {
    divan::main();
}

const TOKEN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[divan::bench]
fn token_parse_and_hash() -> Option<sessiond::domain::TokenHash> {
    SessionToken::parse(black_box(TOKEN.as_bytes())).map(|t| t.hash())
}

/// `n` live sessions of one user, as a listing holds them.
fn views(n: usize) -> Vec<SessionView> {
    let now = Timestamp::from_unix_millis(1_763_900_000_000);
    (0..n)
        .map(|i| {
            let session = NewSession {
                id: SessionId::generate(),
                token_hash: sessiond::domain::TokenHash([i as u8; 32]),
                user_id: UserId(42),
                user_name: "alice".into(),
                client: ClientInfo {
                    host: "192.0.2.10".into(),
                    user_agent: "cvpysdk".into(),
                    device_id: String::new(),
                    description: "nightly report".into(),
                },
                console_type: ConsoleType::CommandLine,
                dialect: Dialect::Commvault,
                created_at: now,
                idle_timeout: Duration::from_secs(1800),
                expires_at: now.plus(Duration::from_secs(86_400)),
            }
            .into_session(i as i64 + 1);
            SessionView {
                session,
                state: SessionState::Live,
            }
        })
        .collect()
}

/// The same sessions as a Commvault `GET Session` lists them.
fn rows(n: usize) -> SessionRows {
    let now = Timestamp::from_unix_millis(1_763_900_000_000);
    SessionRows::of(views(n).into_iter().map(|v| v.session).collect(), now)
}

#[divan::bench(args = [1, 100])]
fn commvault_sessions_json(bencher: divan::Bencher, n: usize) {
    let r = rows(n);
    bencher.bench(|| render::sessions(Format::Json, black_box(&r)));
}

#[divan::bench(args = [1, 100])]
fn commvault_sessions_xml(bencher: divan::Bencher, n: usize) {
    let r = rows(n);
    bencher.bench(|| render::sessions(Format::Xml, black_box(&r)));
}

#[divan::bench(args = [1, 100])]
fn native_sessions_json(bencher: divan::Bencher, n: usize) {
    let v = views(n);
    let current = v[0].session.id;
    bencher.bench(|| {
        let items: Vec<native::Session> = black_box(&v)
            .iter()
            .map(|s| native::Session::from_view(s, current))
            .collect();
        serde_json::to_vec(&items)
    });
}
