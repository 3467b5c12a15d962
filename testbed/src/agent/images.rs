//! What a container's image runs on this machine, which has no container images: ferrofluid's
//! image runs the workspace's own binaries, JuiceFS images run their command with the local
//! `juicefs`, the CSI node-driver-registrar is kubelet's own business here, and any other image
//! idles, as a pause container would.

use k8s_openapi::api::core::v1::Container;

/// The image repository of ferrofluid's binaries (`deploy/`).
pub const FERROFLUID_IMAGE: &str = "ghcr.io/ferrofluid/ferrofluid";

/// What the agent runs for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The container's own command and arguments, with local programs on `PATH`.
    Command(Vec<String>),
    /// The CSI node-driver-registrar: the agent registers the driver whose socket is at this
    /// node path, as kubelet's plugin watcher does when the registrar asks it to.
    Registrar {
        /// `--kubelet-registration-path`: the plugin's socket on the node.
        socket: String,
    },
    /// An image this machine does not have: the container idles until it is stopped.
    Idle {
        /// Why, for the log.
        reason: String,
    },
}

/// The argv of an idle container.
pub const IDLE_ARGV: &[&str] = &["sleep", "infinity"];

/// Decides what a container runs. `is_worker` tells a JuiceFS cache worker (a StatefulSet's
/// pod) from a FUSE client; `run_workers` false idles workers (the benchmarks run a thousand).
pub fn program(container: &Container, is_worker: bool, run_workers: bool) -> Program {
    let image = container.image.as_deref().unwrap_or_default();
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if image.contains("csi-node-driver-registrar") {
        let args = container.args.clone().unwrap_or_default();
        let socket = args.iter().enumerate().find_map(|(i, arg)| {
            arg.strip_prefix("--kubelet-registration-path=")
                .map(str::to_string)
                .or_else(|| (arg == "--kubelet-registration-path").then(|| args.get(i + 1).cloned()).flatten())
        });
        return match socket {
            Some(socket) => Program::Registrar { socket },
            None => Program::Idle { reason: "registrar without --kubelet-registration-path".into() },
        };
    }
    let ours = image.starts_with(FERROFLUID_IMAGE);
    let juicefs = image.contains("juicefs") || image.starts_with("juicedata/");
    if !(ours || juicefs) {
        return Program::Idle { reason: format!("image {image:?} is not on this machine") };
    }
    if juicefs && is_worker && !run_workers {
        return Program::Idle { reason: "cache workers idle (--run-workers=false)".into() };
    }
    if container.command.is_none() {
        return Program::Idle {
            reason: format!("image {image:?} has no entrypoint here; give the container a command"),
        };
    }
    Program::Command(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn images_map_to_programs() {
        let ours = container("ghcr.io/ferrofluid/ferrofluid:v0.1.0", &["ferrofluid-csi"], &["--node-id", "n"]);
        assert_eq!(
            program(&ours, false, true),
            Program::Command(vec!["ferrofluid-csi".into(), "--node-id".into(), "n".into()])
        );
        let registrar = container(
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0",
            &[],
            &["--csi-address=/csi/csi.sock", "--kubelet-registration-path=/var/lib/kubelet/plugins/x/csi.sock"],
        );
        assert_eq!(
            program(&registrar, false, true),
            Program::Registrar { socket: "/var/lib/kubelet/plugins/x/csi.sock".into() }
        );
        let fuse = container("juicedata/mount:ce-v1.3.0", &["sh", "-c", "exec juicefs mount"], &[]);
        assert!(matches!(program(&fuse, false, false), Program::Command(_)));
        assert!(matches!(program(&fuse, true, false), Program::Idle { .. }));
        assert!(matches!(program(&fuse, true, true), Program::Command(_)));
        assert!(matches!(program(&container("nginx", &[], &[]), false, true), Program::Idle { .. }));
    }
}
