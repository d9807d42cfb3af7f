//! Log lines: the request id of the request being served, without a `tracing`
//! span per request.
//!
//! A span per request cost about as much as the rest of the request's own work
//! (a registry slot, its field formatted into a `String` whether or not anything
//! is logged, an enter and exit on every poll; see `bench/PROFILE.md`). Instead the
//! request's id lives in a task-local for as long as its future runs
//! ([`in_request`], used by `api::ops::Instrument`), and [`LineFormat`] writes it
//! where the span used to be, in the same shape:
//!
//! - text: `2026-11-23T18:31:32.325985Z  INFO request{request_id=abc}: target: message k=v`
//! - JSON: `{..., "span": {"request_id": "abc", "name": "request"}, "spans": [{...}]}`
//!
//! Lines logged outside a request (start-up, background sweeps) are the
//! subscriber's default ones. A task spawned from a request does not inherit the
//! id, as it did not inherit the span.

use axum::http::HeaderValue;
use std::fmt;
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// Runs `fut` as the request `id`: every line it logs carries the id.
pub fn in_request<F: Future>(id: HeaderValue, fut: F) -> TaskLocalFuture<HeaderValue, F> {
    REQUEST_ID.scope(id, fut)
}

/// Runs `f` as the request `id` (for lines logged outside the request's future).
pub fn with_request_id<R>(id: HeaderValue, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}

/// The id of the request being served on this thread, if any.
fn current_request_id() -> Option<HeaderValue> {
    REQUEST_ID.try_with(HeaderValue::clone).ok()
}

/// The event format of both log formats: the subscriber's default, plus the
/// request id in a request (see the module documentation).
#[derive(Debug)]
pub enum LineFormat {
    Text(Format<Full, SystemTime>),
    Json(Format<Json, SystemTime>),
}

impl LineFormat {
    /// Plain lines; `ansi`: colours (for a terminal).
    pub fn text(ansi: bool) -> Self {
        LineFormat::Text(Format::default().with_ansi(ansi))
    }

    /// One JSON object per line (use with `JsonFields`).
    pub fn json() -> Self {
        LineFormat::Json(Format::default().json())
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(id) = current_request_id() else {
            return match self {
                LineFormat::Text(f) => f.format_event(ctx, w, event),
                LineFormat::Json(f) => f.format_event(ctx, w, event),
            };
        };
        // Checked or made by `Instrument`: plain ASCII, nothing to escape.
        let id = id.to_str().unwrap_or("-");
        match self {
            LineFormat::Text(_) => {
                SystemTime.format_time(&mut w)?;
                let level = *event.metadata().level();
                if w.has_ansi_escapes() {
                    write!(w, " \x1b[{}m{level:>5}\x1b[0m ", level_colour(level))?;
                } else {
                    write!(w, " {level:>5} ")?;
                }
                write!(
                    w,
                    "request{{request_id={id}}}: {}: ",
                    event.metadata().target()
                )?;
                ctx.format_fields(w.by_ref(), event)?;
                writeln!(w)
            }
            LineFormat::Json(f) => {
                let mut line = String::with_capacity(256);
                f.format_event(ctx, Writer::new(&mut line), event)?;
                // The default object ends in `}` and a newline: the span goes before.
                let end = line.trim_end().len();
                let Some(body) = line[..end].strip_suffix('}') else {
                    return w.write_str(&line);
                };
                let span = serde_json::json!({"request_id": id, "name": "request"});
                write!(w, "{body},\"span\":{span},\"spans\":[{span}]}}")?;
                writeln!(w)
            }
        }
    }
}

/// The colours of tracing-subscriber's own levels.
fn level_colour(level: Level) -> u8 {
    match level {
        Level::ERROR => 31,
        Level::WARN => 33,
        Level::INFO => 32,
        Level::DEBUG => 34,
        Level::TRACE => 35,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn log_two_lines() {
        tracing::info!(user = "ann", n = 3, "outside");
        with_request_id(HeaderValue::from_static("req-7"), || {
            tracing::warn!(user = "bob", ok = true, "inside");
        });
    }

    #[test]
    fn text_lines_carry_the_request_id_like_a_span() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(LineFormat::text(false))
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_two_lines);
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let tail = |l: &str| l.split_once(' ').unwrap().1.to_string();
        assert_eq!(
            tail(&lines[0]),
            " INFO sessiond::logging::tests: outside user=\"ann\" n=3"
        );
        assert_eq!(
            tail(&lines[1]),
            " WARN request{request_id=req-7}: sessiond::logging::tests: inside user=\"bob\" ok=true"
        );
        // Same timestamp shape as the default's.
        let stamp = |l: &str| l.split_once(' ').unwrap().0.len();
        assert_eq!(stamp(&lines[0]), stamp(&lines[1]));
        assert!(
            lines[1].starts_with("20") && lines[1].contains("Z "),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn json_lines_carry_the_request_id_like_a_span() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(LineFormat::json())
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_two_lines);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["fields"]["message"], "outside");
        assert_eq!(lines[0]["fields"]["n"], 3);
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_eq!(lines[1]["fields"]["ok"], true);
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["target"], "sessiond::logging::tests");
        assert_eq!(lines[1]["span"]["request_id"], "req-7");
        assert_eq!(lines[1]["span"]["name"], "request");
        assert_eq!(lines[1]["spans"][0]["request_id"], "req-7");
    }

    #[tokio::test]
    async fn a_request_future_carries_its_id_across_awaits() {
        let seen = in_request(HeaderValue::from_static("r-1"), async {
            tokio::task::yield_now().await;
            current_request_id()
        })
        .await;
        assert_eq!(seen.unwrap(), "r-1");
        assert!(current_request_id().is_none());
    }
}
