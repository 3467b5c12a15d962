//! Every scenario: its trace and final state are snapshots; one seed gives byte-identical
//! output; other seeds keep every expectation; bad scenario files get located, helpful errors.

use std::path::{Path, PathBuf};

use sim::Outcome;
use sim::scenario::{RunOptions, load, parse_str, run};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("scenarios"))
        .expect("scenarios/")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 11, "expected the issue's scenarios, found {}", files.len());
    files
}

fn output(path: &Path, seed: Option<u64>) -> (String, Outcome) {
    let scenario = load(path).unwrap_or_else(|e| panic!("{e}"));
    let result = run(&scenario, &RunOptions { seed, record: false });
    (format!("# {}\n# seed {}\n{}\n{}", scenario.name, result.seed, result.trace, result.summary), result.outcome)
}

#[test]
fn every_scenario_passes_and_matches_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for path in scenario_files() {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario").to_string();
        let (text, outcome) = output(&path, None);
        assert_eq!(outcome, Outcome::Passed, "{name} failed:\n{text}");
        settings.bind(|| insta::assert_snapshot!(name, text));
    }
}

#[test]
fn one_seed_gives_byte_identical_output_and_other_seeds_keep_the_expectations() {
    for path in scenario_files() {
        let (first, _) = output(&path, None);
        let (second, _) = output(&path, None);
        assert!(first == second, "{} is not deterministic", path.display());
        for seed in [101, 202, 303] {
            let (text, outcome) = output(&path, Some(seed));
            assert_eq!(outcome, Outcome::Passed, "{} with seed {seed} failed:\n{text}", path.display());
        }
    }
}

fn error_of(text: &str) -> String {
    match parse_str(text, "bad.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error.to_string(),
    }
}

const HEAD: &str = "name: A bad file is refused\ncluster:\n  nodes: 1\n";

#[test]
fn an_unknown_key_names_the_place_and_the_allowed_keys() {
    let error = error_of(&format!("{HEAD}steps:\n  - at: 0s\n    aply: {{}}\n"));
    assert!(error.starts_with("bad.yaml:6:"), "{error}");
    assert!(error.contains("unknown field `aply`") && error.contains("`apply`"), "{error}");
}

#[test]
fn an_unknown_enum_value_lists_the_allowed_ones() {
    let error =
        error_of("name: x\ncluster:\n  nodes:\n    - name: a\n      taints: [{key: k, effect: NoWay}]\nsteps: []\n");
    assert!(error.contains("NoWay") && error.contains("NoSchedule") && error.contains("NoExecute"), "{error}");
    assert!(error.starts_with("bad.yaml:5:"), "{error}");
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let error = error_of(&format!("{HEAD}steps:\n  - at: 5 minutes\n    controller_restart: true\n"));
    assert!(error.contains("invalid duration `5 minutes`") && error.contains("2m30s"), "{error}");
    assert!(error.starts_with("bad.yaml:5:"), "{error}");
    let error = error_of(&format!("{HEAD}steps:\n  - at: 30\n    controller_restart: true\n"));
    assert!(error.contains("needs units"), "{error}");
}

#[test]
fn a_fault_on_a_node_the_cluster_lacks_is_refused_with_the_nodes_there_are() {
    for field in ["node_down", "node_up", "fuse_crash", "csi_restart"] {
        let error = error_of(&format!("{HEAD}steps:\n  - at: 0s\n    {field}: node-9\n"));
        assert!(error.contains(&format!("steps[0].{field}: no node `node-9`")), "{error}");
        assert!(error.contains("node-1") && error.starts_with("bad.yaml"), "{error}");
    }
}

#[test]
fn a_taint_names_a_node_the_cluster_has_or_one_an_earlier_step_applies() {
    let taint = "taint: {node: node-2, key: node.kubernetes.io/out-of-service, effect: NoExecute}";
    let error = error_of(&format!("{HEAD}steps:\n  - {taint}\n"));
    assert!(error.contains("steps[0].taint.node: no node `node-2`") && error.contains("node-1"), "{error}");
    let error = error_of(&format!("{HEAD}steps:\n  - untaint: {{node: node-2, key: k}}\n"));
    assert!(error.contains("steps[0].untaint.node: no node `node-2`"), "{error}");
    let applied = format!(
        "{HEAD}steps:\n  - apply: |\n      apiVersion: v1\n      kind: Node\n      metadata: {{name: node-2}}\n  - {taint}\n"
    );
    assert!(parse_str(&applied, "ok.yaml").is_ok());
    let error = error_of(&format!("{HEAD}steps:\n  - taint: {{node: node-1, key: k, effect: NoRun}}\n"));
    assert!(error.contains("NoRun") && error.contains("NoExecute") && error.starts_with("bad.yaml:"), "{error}");
}

#[test]
fn a_mount_expectation_names_a_pod_and_one_of_the_states() {
    let error = error_of(&format!("{HEAD}steps:\n  - expect: mount Pod/default/app data == gone\n"));
    assert!(
        error.contains("unknown mount state `gone`") && error.contains("live, broken, detached, unmounted"),
        "{error}"
    );
    let error = error_of(&format!("{HEAD}steps:\n  - expect: mount Pod/default/app data >= live\n"));
    assert!(error.contains("`==` or `!=`"), "{error}");
    let error = error_of(&format!("{HEAD}steps:\n  - expect: mount Node/node-1 data == live\n"));
    assert!(error.contains("looks at a Pod"), "{error}");
    let error = error_of(&format!("{HEAD}steps:\n  - expect: mount Pod/default/app == live\n"));
    assert!(error.contains("mount Pod/ns/name <volume> == <state>"), "{error}");
}

#[test]
fn a_step_must_do_exactly_one_thing() {
    let error = error_of(&format!("{HEAD}steps:\n  - at: 0s\n    node_down: node-1\n    node_up: node-1\n"));
    assert!(error.contains("exactly one thing") && error.contains("`apply`"), "{error}");
    assert!(error.contains("bad.yaml:"), "{error}");
}

#[test]
fn a_bad_manifest_names_the_kind_and_the_allowed_kinds() {
    let error = error_of(&format!(
        "{HEAD}steps:\n  - apply: |\n      apiVersion: v1\n      kind: ConfigMap\n      metadata: {{name: x}}\n"
    ));
    assert!(error.contains("unknown kind `ConfigMap`") && error.contains("JuiceFSRuntime"), "{error}");
    let error = error_of(&format!(
        "{HEAD}steps:\n  - apply: |\n      apiVersion: data.fluid.io/v1alpha1\n      kind: Dataset\n      metadata: {{name: x}}\n      spec: {{mounts: 3}}\n"
    ));
    assert!(error.contains("Dataset") && error.contains("document 1"), "{error}");
}

#[test]
fn a_bad_expectation_lists_the_operators() {
    let error = error_of(&format!("{HEAD}steps:\n  - expect: Dataset/default/x status.phase ~ Bound\n"));
    assert!(error.contains("unknown operator `~`") && error.contains("contains"), "{error}");
    let error = error_of(&format!("{HEAD}steps:\n  - delete: Datasett/default/x\n"));
    assert!(error.contains("unknown kind `Datasett`") && error.contains("allowed kinds"), "{error}");
}

#[test]
fn steps_out_of_time_order_are_refused() {
    let error = error_of(&format!(
        "{HEAD}steps:\n  - at: 1m\n    controller_restart: true\n  - at: 30s\n    controller_restart: true\n"
    ));
    assert!(error.contains("earlier than the step before"), "{error}");
}

#[test]
fn malformed_yaml_gets_a_location() {
    let error = error_of("name: [unclosed\n");
    assert!(error.starts_with("bad.yaml:"), "{error}");
}

#[test]
fn the_fault_steps_are_the_nine_fault_kinds_exploration_counts() {
    let faults = sim::scenario::parse::FAULT_STEP_ACTIONS;
    assert_eq!(faults.first(), Some(&"node_down"));
    assert_eq!(faults.last(), Some(&"csi_restart"));
    assert_eq!(faults.len(), 9);
    assert_eq!(sim::explore::world::FAULT_KINDS, faults);
}

/// Runs an inline scenario; returns its outcome's failure messages (empty when it passed) and trace.
fn failures_of(text: &str) -> (Vec<String>, String) {
    let scenario = parse_str(text, "inline.yaml").unwrap_or_else(|e| panic!("{e}"));
    let result = run(&scenario, &RunOptions { seed: None, record: false });
    let failures = match result.outcome {
        Outcome::Passed => Vec::new(),
        Outcome::Failed(failures) => failures,
    };
    (failures, result.trace)
}

const LONELY_POD: &str = "name: A pod whose claim never comes\ncluster: {nodes: 1}\nsteps:\n  - at: 0s\n    pod: {name: app, claim: nothing}\n";

#[test]
fn an_expectation_that_never_holds_fails_at_its_deadline_and_the_run_goes_on() {
    let text = format!(
        "{LONELY_POD}  - expect: Pod/default/app status.phase == Running\n    within: 30s\n  - at: 1m\n    expect: Pod/default/app status.phase == Pending\n"
    );
    let (failures, trace) = failures_of(&text);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("step 2: expected `Pod/default/app status.phase == Running` by 0:00:30"),
        "{failures:?}"
    );
    assert!(
        trace.contains("0:00:30.000  expect             step 2"),
        "the failure is traced at its deadline:\n{trace}"
    );
    assert!(trace.contains("holds: Pod/default/app status.phase == Pending"), "later steps still run:\n{trace}");
}

#[test]
fn a_point_in_time_expectation_that_fails_says_what_was_seen() {
    let text = format!("{LONELY_POD}  - at: 10s\n    expect: Pod/default/app spec.nodeName == node-1\n");
    let (failures, _) = failures_of(&text);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0] == "step 2 at 0:00:10.000: expected `Pod/default/app spec.nodeName == node-1`, but it is absent",
        "{failures:?}"
    );
}

#[test]
fn a_cluster_that_cannot_converge_in_its_budget_fails_saying_what_is_pending() {
    let text = "name: Setup needs longer than the budget\ncluster: {nodes: 1}\nbudget: 1s\nsteps:\n  - at: 0s\n    apply: |\n      apiVersion: data.fluid.io/v1alpha1\n      kind: Dataset\n      metadata: {name: demo}\n      spec: {mounts: [{name: demo, mountPoint: 'juicefs:///demo'}]}\n      ---\n      apiVersion: data.fluid.io/v1alpha1\n      kind: JuiceFSRuntime\n      metadata: {name: demo}\n      spec: {replicas: 1}\n";
    let (failures, _) = failures_of(text);
    assert!(failures.iter().any(|f| f.starts_with("did not converge within 1s (still pending: ")), "{failures:?}");
}

#[test]
fn a_broken_app_mount_fails_a_run_that_converges_otherwise() {
    // recover_period 0s turns FUSE recovery off: the app's mount stays dead after a FUSE crash.
    let path = workspace()
        .join("sim/tests/failing/a-fuse-crash-with-recovery-off-leaves-the-app-mount-broken-and-fails-the-run.yaml");
    let (text, outcome) = output(&path, None);
    let Outcome::Failed(reasons) = outcome else { panic!("a dead app mount passed:\n{text}") };
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("app-mount-is-live: Pod/default/demo-app on node-1 reads volume data through ")
            && reasons[0].ends_with("broken (device 0:101 is dead: transport endpoint is not connected)"),
        "{}",
        reasons[0]
    );
}
