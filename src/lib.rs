//! sessiond: a session service for management APIs.
//!
//! It signs users in, issues session tokens and keeps a record of every session,
//! served through the dialects existing clients speak (Commvault, vSphere, native).
//!
//! # Layout
//!
//! Requests flow one way:
//!
//! - [`api`]: one module per dialect. Parses the wire format, authenticates the
//!   caller, calls the service, renders the dialect's success or error shape.
//! - [`service`]: all policy (authentication, authorization, expiry, revocation,
//!   users). Never sees HTTP.
//! - [`store`]: the [`store::Store`] trait and one file per backend. Only it knows SQL.
//! - [`domain`]: plain types shared by all layers.
//! - [`clock`]: the injected clock; nothing else reads the system time.
//! - [`telemetry`]: Prometheus metric names and the process-wide recorder.
//! - [`logging`]: the log line formats (with the id of the request being served).
//! - [`config`], [`server`], [`cli`]: configuration, wiring and the binary's commands.
//!
//! See `ARCHITECTURE.md` for the invariants.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod logging;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
