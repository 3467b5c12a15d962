#!/usr/bin/env bash
# Builds the testbed's Go programs into a cache outside git (never committed):
#   ferrofluid-controlplane  etcd + kube-apiserver + kube-controller-manager + kube-scheduler
#                            of Kubernetes v1.36.3, from their Go modules (testbed/controlplane)
# A rebuild happens only when the sources or the Go version change. The first build downloads
# the modules and compiles Kubernetes: about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${FERROFLUID_CACHE:-$HOME/.cache/ferrofluid}/bin"
mkdir -p "$cache"
command -v go >/dev/null || { echo "testbed-build: 'go' is missing (Go 1.26 builds the control plane)" >&2; exit 1; }
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' testbed/controlplane/go.mod)
minor=$(echo "$k8s_version" | cut -d. -f2)
stamp=$( (go version; cat testbed/controlplane/go.mod testbed/controlplane/go.sum testbed/controlplane/*.go) | sha256sum | cut -c1-16)
binary="$cache/ferrofluid-controlplane"
if [ -x "$binary" ] && [ "$(cat "$binary.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "testbed-build: ferrofluid-controlplane $k8s_version is up to date ($binary)"
else
  echo "testbed-build: building ferrofluid-controlplane (Kubernetes $k8s_version) into $binary"
  started=$(date +%s)
  ( cd testbed/controlplane && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$k8s_version \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" -o "$binary.tmp" . )
  mv "$binary.tmp" "$binary"
  echo "$stamp" > "$binary.stamp"
  echo "testbed-build: built in $(( $(date +%s) - started )) s"
fi
