//! Parity: each listed scenario runs in the simulator and on a real control plane (a fresh
//! testbed each), must pass on both, and both must end in the same normalised final state.
//! On a difference both sides are printed. Needs what the e2e suite needs; on CI a missing
//! prerequisite fails. Arguments filter the scenarios by name; `PARITY_KEEP=1` keeps the logs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use sim::scenario::parity::{difference, named_nodes, normalized};
use testbed::cluster::Programs;

/// The scenarios run on both clusters in CI. The others, and why, are in the README.
const PARITY: &[&str] = &[
    "a-memory-tier-over-the-fuse-memory-limit-is-refused-naming-the-quota",
    "a-worker-no-node-tolerates-says-why-on-the-dataset",
    "delete-dataset-in-use",
    "delete-runtime",
    "exclusive-placement-holds-across-namespaces",
    "pod-before-runtime",
    "scale-workers",
    "two-datasets-exclusive",
    "two-datasets-shared",
    "fuse-crash",
    "controller-restart",
    "scaling-a-runtime-from-zero-keeps-its-dataset-bound",
    "long-names",
    "a-node-added-during-a-run-gets-a-kubelet-and-runs-its-pods",
    "a-dataset-without-a-runtime-clears-node-labels-left-behind",
    "an-app-mount-broken-while-the-csi-plugin-restarts-is-repaired",
    "bad-runtime-spec",
    "a-fuse-pod-stopped-gracefully-serves-the-app-until-recovery-binds-the-next-mount",
];

fn main() -> ExitCode {
    let ci = std::env::var_os("CI").is_some();
    let skip_or_fail = |reason: &str| {
        eprintln!("parity: {reason}");
        if ci { ExitCode::FAILURE } else { ExitCode::SUCCESS }
    };
    if !nix::unistd::Uid::effective().is_root() {
        return skip_or_fail("must run as root (mounts, namespaces)");
    }
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_ferrofluid-node-agent"));
    let programs = match Programs::find(&agent) {
        Ok(programs) => programs,
        Err(err) => return skip_or_fail(&err.to_string()),
    };
    // Nothing the testbed mounts reaches the host's mount table.
    if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).and_then(|_| {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    }) {
        eprintln!("parity: cannot make a private mount namespace: {err}");
        return ExitCode::FAILURE;
    }
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&str> = PARITY
        .iter()
        .copied()
        .filter(|name| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return skip_or_fail(&format!("cannot start the async runtime: {err}")),
    };
    let root = std::env::temp_dir().join(format!("ffparity-{}", std::process::id()));
    let scenarios = programs.workspace.join("scenarios");
    let (mut agreed, mut differed) = (0, 0);
    for (index, name) in selected.into_iter().enumerate() {
        let began = Instant::now();
        // Short directories: the agent's unix socket path must fit in 108 bytes.
        let dir = root.join(format!("{index:02}"));
        println!("parity {name}: the real run's logs are in {}", dir.display());
        match runtime.block_on(compare(&scenarios.join(format!("{name}.yaml")), programs.clone(), &dir)) {
            Ok(()) => {
                agreed += 1;
                println!("parity {name} ... ok ({:.1} s)", began.elapsed().as_secs_f64());
            }
            Err(why) => {
                differed += 1;
                println!("parity {name} ... FAILED ({:.1} s)\n{why}", began.elapsed().as_secs_f64());
            }
        }
    }
    println!("\nparity: {agreed} scenarios agree on both clusters; {differed} do not (logs in {})", root.display());
    if differed == 0 && std::env::var_os("PARITY_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    if differed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs one scenario on both clusters; Err shows what differs.
async fn compare(file: &Path, programs: Programs, dir: &Path) -> Result<(), String> {
    let scenario = sim::scenario::load(file).map_err(|e| e.to_string())?;
    let simulated = sim::scenario::run(&scenario, &sim::scenario::RunOptions::default());
    let sim_state = normalized(&simulated.sim, &named_nodes(&scenario));
    let real = testbed::scenario::run(&scenario, programs, dir).await.map_err(|e| format!("    the testbed: {e}"))?;
    for line in &real.not_applicable {
        println!("    {line}");
    }
    let mut problems = Vec::new();
    if let sim::Outcome::Failed(reasons) = &simulated.outcome {
        problems.push(format!("    the simulator's run failed:\n      - {}", reasons.join("\n      - ")));
    }
    if !real.failures.is_empty() {
        problems.push(format!(
            "    the real run failed:\n      - {}\n    its trace:\n{}",
            real.failures.join("\n      - "),
            indent(&real.trace)
        ));
    }
    if let Some(diff) = difference(&sim_state, &real.normalized) {
        problems.push(format!(
            "    the final states differ (- simulator, + real):\n{}\n    simulator:\n{}\n    real:\n{}",
            indent(&diff),
            indent(&sim_state),
            indent(&real.normalized)
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}
