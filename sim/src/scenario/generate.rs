//! A generated cluster as a scenario file: N nodes, P Dataset+JuiceFSRuntime pairs and A app
//! pods, run to convergence. The same file runs in the simulator and on the real control plane,
//! which makes it the side-by-side benchmark's workload.

use std::fmt::Write as _;

/// The sizes of a generated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Nodes `node-1` … `node-N`.
    pub nodes: usize,
    /// Pairs `ds-1` … `ds-P` in namespace `default`, one worker each; the worker of `ds-k` is
    /// pinned to `node-((k - 1) % N + 1)`.
    pub pairs: usize,
    /// App pods `app-1` … `app-A`; app `i` reads dataset `ds-((i - 1) % P + 1)` on
    /// `node-((i - 1) % N + 1)`. Placements are pinned so that no scheduler breaks a tie: the
    /// two clusters' final states can then be compared node by node.
    pub apps: usize,
}

/// The scenario text for `sizes`; Err names a size that cannot make a cluster.
pub fn scenario_text(sizes: Sizes) -> Result<String, String> {
    let Sizes { nodes, pairs, apps } = sizes;
    if nodes == 0 || pairs == 0 {
        return Err(format!("--nodes and --pairs must be at least 1 (got {nodes} and {pairs})"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "name: A generated cluster of {nodes} nodes, {pairs} dataset and runtime pairs and {apps} app pods converges"
    );
    let _ = writeln!(out, "description: >");
    let _ = writeln!(
        out,
        "  Written by `ferrofluid-sim generate`: every pair binds, every app pod runs with a live mount."
    );
    let _ = writeln!(out, "seed: 1");
    let _ = writeln!(out, "cluster:");
    let _ = writeln!(out, "  nodes: {nodes}");
    let _ = writeln!(out, "  capacity: {{pods: 110, cpu: \"64\", memory: 256Gi}}");
    let _ = writeln!(out, "steps:");
    let _ = writeln!(out, "  - at: 0s");
    let _ = writeln!(out, "    apply: |");
    for pair in 1..=pairs {
        let _ = write!(
            out,
            "      ---
      apiVersion: data.fluid.io/v1alpha1
      kind: Dataset
      metadata: {{name: ds-{pair}}}
      spec:
        mounts: [{{name: ds-{pair}, mountPoint: \"juicefs:///ds-{pair}\"}}]
      ---
      apiVersion: data.fluid.io/v1alpha1
      kind: JuiceFSRuntime
      metadata: {{name: ds-{pair}}}
      spec:
        replicas: 1
        worker: {{nodeSelector: {{kubernetes.io/hostname: node-{node}}}}}
        tieredstore: {{levels: [{{mediumtype: SSD, path: /var/cache/ds-{pair}, quota: 1Gi}}]}}
",
            node = (pair - 1) % nodes + 1
        );
    }
    let _ = writeln!(out, "  - expect:");
    for pair in 1..=pairs {
        let _ = writeln!(out, "      - Dataset/default/ds-{pair} status.phase == Bound");
    }
    let _ = writeln!(out, "    within: 10m");
    for app in 1..=apps {
        let dataset = (app - 1) % pairs + 1;
        let node = (app - 1) % nodes + 1;
        let _ = writeln!(out, "  - pod: {{name: app-{app}, claim: ds-{dataset}, node: node-{node}}}");
    }
    let _ = writeln!(out, "  - expect:");
    let _ = writeln!(out, "      - count Pod/default role=juicefs-worker running == {pairs}");
    for app in 1..=apps {
        let _ = writeln!(out, "      - Pod/default/app-{app} status.phase == Running");
    }
    let _ = writeln!(out, "    within: 10m");
    let _ = writeln!(out, "  - run: until converged");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_generated_cluster_parses_and_converges_in_the_simulator() {
        let text = scenario_text(Sizes { nodes: 4, pairs: 2, apps: 5 }).unwrap();
        let scenario = crate::scenario::parse_str(&text, "generated.yaml").unwrap();
        let result = crate::scenario::run(&scenario, &crate::scenario::RunOptions::default());
        assert_eq!(result.outcome, crate::Outcome::Passed, "{}", result.summary);
        assert!(result.summary.contains("default/ds-2: phase=Bound"), "{}", result.summary);
    }

    #[test]
    fn sizes_that_make_no_cluster_are_refused_by_name() {
        let error = scenario_text(Sizes { nodes: 0, pairs: 1, apps: 1 }).unwrap_err();
        assert!(error.contains("--nodes"), "{error}");
    }
}
