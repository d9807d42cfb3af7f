//! The `sessiond` command line: `serve`, and user, session and audit administration
//! straight on the store (`admin.rs` holds the session and audit commands).

mod admin;

use crate::clock::SystemClock;
use crate::config::{Config, LogFormat, Overrides};
use crate::domain::{Dialect, User};
use crate::service::{Actor, Origin, ServiceError, UserChanges, UserInput};
use crate::{server, store};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "sessiond",
    version,
    about = "Session service for management APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Default)]
struct Common {
    /// Store URL: sqlite://sessiond.db, postgres://USER@HOST/DB or redis://HOST:6379 [env: SESSIOND_STORE]
    #[arg(long, global = true)]
    store: Option<String>,
    /// TOML configuration file [env: SESSIOND_CONFIG]
    #[arg(long, global = true, env = "SESSIOND_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8400 (port 0 picks a free port) [env: SESSIOND_LISTEN]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key) [env: SESSIOND_TLS__CERT]
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert [env: SESSIOND_TLS__KEY]
        #[arg(long, value_name = "PEM")]
        tls_key: Option<PathBuf>,
        /// Password for the `admin` user created on an empty store (generated and logged once if unset)
        #[arg(
            long = "admin-password-env-only",
            hide = true,
            env = "SESSIOND_ADMIN_PASSWORD",
            hide_env_values = true
        )]
        admin_password: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        common: Common,
    },
    /// List and end sessions.
    Sessions {
        #[command(subcommand)]
        command: admin::SessionsCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Show the audit trail, newest first.
    Audit {
        #[command(flatten)]
        args: admin::AuditArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Print the OpenAPI document of the native API (/v1).
    Openapi,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user (password read from standard input).
    Add {
        name: String,
        /// Role to grant (master, user-admin, view); repeat for several. None: a plain user.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        full_name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (read from standard input); ends the user's sessions.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable a user; ends the user's sessions.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            admin_password,
            common,
        } => {
            let flags = Overrides {
                listen,
                tls_cert,
                tls_key,
                ..Overrides::default()
            };
            let config = load(&common, flags)?;
            init_logging(&config, "info");
            serve(config, admin_password.map(SecretString::from)).await
        }
        Command::User { command, common } => {
            let config = load(&common, Overrides::default())?;
            init_logging(&config, "warn");
            user_command(config, command).await
        }
        Command::Sessions { command, common } => {
            let config = load(&common, Overrides::default())?;
            init_logging(&config, "warn");
            let state = open_state(&config).await?;
            let result = admin::sessions(&state.service, command).await;
            state.service.flush_touches().await.ok();
            result
        }
        Command::Audit { args, common } => {
            let config = load(&common, Overrides::default())?;
            init_logging(&config, "warn");
            let state = open_state(&config).await?;
            admin::audit(&state.service, args).await
        }
        Command::Openapi => {
            print!("{}", crate::api::native::openapi::document());
            Ok(())
        }
    }
}

fn load(common: &Common, flags: Overrides) -> anyhow::Result<Config> {
    Config::load(
        common.config.as_deref(),
        &Overrides {
            store: common.store.clone(),
            ..flags
        },
    )
}

fn init_logging(config: &Config, quiet_default: &str) {
    use crate::logging::LineFormat;
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = if config.log.level == "info" {
        quiet_default
    } else {
        config.log.level.as_str()
    };
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| level.to_string());
    // Plain `target=level` directives (the usual case) go to `Targets`, a static
    // filter; `EnvFilter` also understands span and field directives, but consults
    // locked tables on every span entered and left, i.e. on every request.
    let (targets, env_filter) = match directives.parse::<Targets>() {
        Ok(targets) => (Some(targets), None),
        Err(_) => (None, Some(EnvFilter::new(&directives))),
    };
    // Colours only for a terminal: escape codes are noise in a file or journal,
    // and formatting them is a measurable part of every request's span.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (text, json) = match config.log.format {
        LogFormat::Text => (
            Some(
                fmt::layer()
                    .with_ansi(ansi)
                    .event_format(LineFormat::text(ansi))
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .with_ansi(false)
                    .fmt_fields(fmt::format::JsonFields::new())
                    .event_format(LineFormat::json())
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(targets)
        .with(env_filter)
        .with(text)
        .with(json)
        .try_init();
}

async fn open_state(config: &Config) -> anyhow::Result<crate::api::AppState> {
    let store = store::open_with(&config.store, &config.store_options)
        .await
        .with_context(|| format!("opening store {}", store::redact_url(&config.store)))?;
    server::build(config, store, Arc::new(SystemClock))
}

async fn serve(config: Config, admin_password: Option<SecretString>) -> anyhow::Result<()> {
    // Before the store: a bad certificate should fail fast and say so.
    let tls = match config.tls.files()? {
        Some((cert, key)) => Some(server::load_tls(cert, key)?),
        None => None,
    };
    let state = open_state(&config).await?;
    tracing::info!(store = %store::redact_url(&config.store), "store ready");
    match state.service.bootstrap_admin(admin_password).await {
        Ok(Some(out)) => match out.generated_password {
            Some(pw) => tracing::warn!(
                user = %out.user.name,
                password = pw.expose_secret(),
                "created the first user with a generated password; it is shown only this once"
            ),
            None => tracing::info!(user = %out.user.name, "created the first user"),
        },
        Ok(None) => {}
        Err(e) => return Err(anyhow::anyhow!("creating the first user: {}", describe(&e))),
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = server::shutdown_signal();
    match tls {
        Some(tls) => {
            tracing::info!("listening on https://{addr}");
            server::run_tls(listener, state, tls, shutdown).await
        }
        None => {
            tracing::info!("listening on http://{addr}");
            server::run(listener, state, shutdown).await
        }
    }
}

fn describe(e: &ServiceError) -> String {
    match e {
        ServiceError::Unavailable(cause) => format!("store failure: {cause:#}"),
        other => other.to_string(),
    }
}

fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(!pw.is_empty(), "no password on standard input");
    Ok(SecretString::from(pw))
}

async fn user_command(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let state = open_state(&config).await?;
    let svc = &state.service;
    let origin = Origin {
        dialect: Dialect::Native,
        source: "cli".into(),
    };
    let actor = Actor::System;
    let find = |name: String| async move {
        svc.find_user(&Actor::System, &name)
            .await
            .map_err(|e| match e {
                ServiceError::NotFound(_) => anyhow::anyhow!("no user named {name:?}"),
                other => anyhow::anyhow!(describe(&other)),
            })
    };
    let result = match command {
        UserCommand::Add {
            name,
            roles,
            email,
            full_name,
            description,
            password_stdin: _,
        } => {
            let password = read_password()?;
            let user = svc
                .create_user(
                    &actor,
                    UserInput {
                        name,
                        password,
                        roles,
                        full_name,
                        email,
                        description,
                        enabled: true,
                    },
                    &origin,
                )
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            println!("created user {} (id {})", user.name, user.id);
            Ok(())
        }
        UserCommand::List { json } => {
            let mut users = Vec::new();
            let mut after = None;
            loop {
                let page = svc
                    .list_users(&actor, after, 1000)
                    .await
                    .map_err(|e| anyhow::anyhow!(describe(&e)))?;
                let done = page.len() < 1000;
                after = page.last().map(|u| u.id);
                users.extend(page);
                if done {
                    break;
                }
            }
            print_users(&users, json)
        }
        UserCommand::Passwd {
            name,
            password_stdin: _,
        } => {
            let password = read_password()?;
            let user = find(name).await?;
            svc.set_password(&actor, user.id, &password, &origin)
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            println!(
                "password of {} changed; their sessions were ended",
                user.name
            );
            Ok(())
        }
        UserCommand::Disable { name } => {
            set_enabled(svc, &actor, &origin, find(name).await?, false).await
        }
        UserCommand::Enable { name } => {
            set_enabled(svc, &actor, &origin, find(name).await?, true).await
        }
    };
    svc.flush_touches().await.ok();
    result
}

async fn set_enabled(
    svc: &crate::service::Service,
    actor: &Actor<'_>,
    origin: &Origin,
    user: User,
    enabled: bool,
) -> anyhow::Result<()> {
    svc.update_user(
        actor,
        user.id,
        UserChanges {
            enabled: Some(enabled),
            ..UserChanges::default()
        },
        origin,
    )
    .await
    .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    println!(
        "{} {}",
        if enabled { "enabled" } else { "disabled" },
        user.name
    );
    Ok(())
}

fn print_users(users: &[User], json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "id": u.id.0, "name": u.name, "guid": u.guid, "full_name": u.full_name,
                    "email": u.email, "description": u.description, "enabled": u.enabled,
                    "roles": u.roles,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                u.id.to_string(),
                u.name.clone(),
                if u.roles.is_empty() {
                    "-".into()
                } else {
                    u.roles.join(",")
                },
                if u.enabled { "yes" } else { "no" }.into(),
                u.email.clone(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "ROLES", "ENABLED", "EMAIL"], &rows);
    Ok(())
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
