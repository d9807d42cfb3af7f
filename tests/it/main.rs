//! The one integration-test binary: the real server on port 0 with a fresh store,
//! the real binary for CLI and real-client tests.

// Tests may unwrap and panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cache;
mod cli;
mod cluster;
mod commvault;
mod conformance;
mod console;
mod lifecycle;
mod native;
mod ops;
mod rbac;
mod real_clients;
mod support;
mod vsphere;
