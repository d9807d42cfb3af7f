//! The one integration-test binary: the real server on port 0 with a fresh store,
//! the real binary for CLI and real-client tests.

mod cli;
mod commvault;
mod conformance;
mod real_clients;
mod support;
