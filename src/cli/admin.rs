//! `sessiond sessions ...` and `sessiond audit`: session and audit administration
//! straight on the store, as the operator (`Actor::System`). Tables for people,
//! `--json` (the `/v1` wire shapes) for scripts.

use super::{describe, print_table};
use crate::api::native::wire;
use crate::domain::{AuditKind, Dialect, SessionId, Timestamp, UserId};
use crate::service::{Actor, AuditFilter, MAX_PAGE, Origin, Service, ServiceError, SessionView};
use crate::store::StateFilter;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// List sessions, newest first (live ones unless --all).
    List {
        /// Only this user's sessions (a name, or a numeric id).
        #[arg(long)]
        user: Option<String>,
        /// Include ended sessions (history).
        #[arg(long)]
        all: bool,
        /// Only sessions from this client host.
        #[arg(long)]
        host: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End one session by id, or every live session of a user.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["id", "user"])))]
    Revoke {
        /// Session id (as listed).
        id: Option<String>,
        /// End every live session of this user (a name, or a numeric id).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Events by or about this user (a name, or a numeric id).
    #[arg(long)]
    user: Option<String>,
    /// Event kind (e.g. login.failed); repeat for several.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Events since T: RFC 3339 (2025-01-31T12:00:00Z) or an age such as 2h, 7d.
    #[arg(long)]
    since: Option<String>,
    /// Events before T (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// At most this many events (newest first).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn origin() -> Origin {
    Origin {
        dialect: Dialect::Native,
        source: "cli".into(),
    }
}

fn err(e: ServiceError) -> anyhow::Error {
    anyhow::anyhow!(describe(&e))
}

/// A user given by name, or by numeric id (also one that no longer exists).
async fn resolve_user(svc: &Service, given: &str) -> anyhow::Result<UserId> {
    match svc.find_user(&Actor::System, given).await {
        Ok(u) => Ok(u.id),
        Err(ServiceError::NotFound(_)) => given
            .trim()
            .parse::<i64>()
            .map(UserId)
            .map_err(|_| anyhow::anyhow!("no user named {given:?}")),
        Err(e) => Err(err(e)),
    }
}

pub async fn sessions(svc: &Service, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            user,
            all,
            host,
            json,
        } => {
            let user = match user {
                Some(u) => Some(resolve_user(svc, &u).await?),
                None => None,
            };
            let state = if all {
                StateFilter::Any
            } else {
                StateFilter::Live
            };
            let mut views = Vec::new();
            let mut after = None;
            loop {
                let page = svc
                    .list_sessions(&Actor::System, user, state, host.clone(), after, MAX_PAGE)
                    .await
                    .map_err(err)?;
                views.extend(page.sessions);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            print_sessions(&views, json)
        }
        SessionsCommand::Revoke { id, user } => {
            if let Some(raw) = id {
                let id = SessionId::parse(&raw)
                    .ok_or_else(|| anyhow::anyhow!("{raw:?} is not a session id"))?;
                let n = svc
                    .end_sessions(&Actor::System, &[id], &origin())
                    .await
                    .map_err(|e| match e {
                        ServiceError::NotFound(_) => anyhow::anyhow!("no session {id}"),
                        other => err(other),
                    })?;
                if n == 1 {
                    println!("ended session {id}");
                } else {
                    println!("session {id} had already ended");
                }
            } else if let Some(name) = user {
                let id = resolve_user(svc, &name).await?;
                let n = svc
                    .end_user_sessions(&Actor::System, id, &origin())
                    .await
                    .map_err(err)?;
                println!("ended {n} session(s) of {name}");
            }
            Ok(())
        }
    }
}

/// `T` as RFC 3339, or as an age before now (`2h`, `7d`).
fn parse_when(svc: &Service, flag: &str, given: &str) -> anyhow::Result<Timestamp> {
    if let Ok(age) = humantime::parse_duration(given.trim()) {
        return Ok(svc.now().minus(age));
    }
    wire::parse_instant(flag, given).map_err(|_| {
        anyhow::anyhow!(
            "--{flag} {given:?}: use an RFC 3339 instant (2025-01-31T12:00:00Z) or an age (2h, 7d)"
        )
    })
}

pub async fn audit(svc: &Service, args: AuditArgs) -> anyhow::Result<()> {
    let user = match &args.user {
        Some(u) => Some(resolve_user(svc, u).await?),
        None => None,
    };
    let kinds = args
        .kinds
        .iter()
        .flat_map(|k| k.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            AuditKind::from_key(k).ok_or_else(|| {
                let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.key()).collect();
                anyhow::anyhow!("unknown event kind {k:?}; known: {}", known.join(", "))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let since = args
        .since
        .as_deref()
        .map(|t| parse_when(svc, "since", t))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_when(svc, "until", t))
        .transpose()?;
    anyhow::ensure!(args.limit >= 1, "--limit must be at least 1");
    let mut events = Vec::new();
    let mut before_id = None;
    while events.len() < args.limit {
        let page = svc
            .query_audit(
                &Actor::System,
                AuditFilter {
                    user,
                    kinds: kinds.clone(),
                    since,
                    until,
                    before_id,
                    limit: (args.limit - events.len()).min(MAX_PAGE),
                },
            )
            .await
            .map_err(err)?;
        events.extend(page.events);
        match page.next {
            Some(next) => before_id = Some(next),
            None => break,
        }
    }
    if args.json {
        let list: Vec<wire::AuditEvent> = events.iter().map(Into::into).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let name = |r: &Option<crate::domain::UserRef>| {
        r.as_ref()
            .map_or_else(|| "-".to_string(), |r| r.name.clone())
    };
    let rows: Vec<[String; 7]> = events
        .iter()
        .map(|e| {
            let ev = &e.event;
            [
                e.id.to_string(),
                ev.at.to_string(),
                ev.kind.key().to_string(),
                name(&ev.actor),
                name(&ev.subject),
                dash(&ev.source),
                dash(&ev.detail),
            ]
        })
        .collect();
    print_table(
        &["ID", "AT", "KIND", "ACTOR", "SUBJECT", "SOURCE", "DETAIL"],
        &rows,
    );
    Ok(())
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn print_sessions(views: &[SessionView], json: bool) -> anyhow::Result<()> {
    let nobody = SessionId(uuid::Uuid::nil());
    if json {
        let list: Vec<wire::Session> = views
            .iter()
            .map(|v| wire::Session::from_view(v, nobody))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<[String; 8]> = views
        .iter()
        .map(|v| {
            let s = &v.session;
            let (state, ended) = match v.state {
                crate::domain::SessionState::Live => ("live".to_string(), "-".to_string()),
                crate::domain::SessionState::Ended(e) => {
                    (e.reason.key().to_string(), e.at.to_string())
                }
            };
            [
                s.id.to_string(),
                s.user_name.clone(),
                dash(&s.client.host),
                format!("{} ({})", s.console_type.code(), s.console_type.describe()),
                s.created_at.to_string(),
                s.last_accessed_at.to_string(),
                state,
                ended,
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "USER",
            "HOST",
            "CONSOLE",
            "CREATED",
            "LAST ACCESS",
            "STATE",
            "ENDED",
        ],
        &rows,
    );
    Ok(())
}
