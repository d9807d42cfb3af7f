#!/usr/bin/env bash
# One command: build the release binaries, then run the benchmark and write
# bench/REPORT.md. Extra arguments go to sessiond-bench (e.g. --duration 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
exec target/release/sessiond-bench "$@"
