//! The built binary: bad configuration exits non-zero with one clear line, never a panic.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrofluid-controller"));
    command.args(args).env_remove("KUBERNETES_SERVICE_HOST").env_remove("KUBERNETES_SERVICE_PORT");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run the binary")
}

fn assert_one_clear_line(output: &Output, expected: &str) {
    assert!(!output.status.success(), "must fail");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("ferrofluid-controller: "), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn an_empty_worker_image_is_refused() {
    let output = run(&["run", "--worker-image", ""], &[("KUBECONFIG", "/nonexistent")]);
    assert_one_clear_line(&output, "--worker-image is empty");
}

#[test]
fn an_empty_fuse_image_from_the_environment_is_refused() {
    let output = run(&[], &[("FERROFLUID_FUSE_IMAGE", ""), ("KUBECONFIG", "/nonexistent")]);
    assert_one_clear_line(&output, "--fuse-image is empty");
}

#[test]
fn an_unreadable_kubeconfig_is_refused() {
    let output = run(&["run"], &[("KUBECONFIG", "/nonexistent")]);
    assert_one_clear_line(&output, "/nonexistent");
}

#[test]
fn help_lists_the_flags() {
    let output = run(&["run", "--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--worker-image", "--fuse-image", "--mount-root", "--resync-seconds", "--log-format", "--metrics-addr"]
    {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}
