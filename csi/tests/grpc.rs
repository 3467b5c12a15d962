//! Identity, Controller and the Node queries over a real gRPC client on a unix socket.

mod common;

use common::*;
use csi::proto;
use tonic::Code;

#[tokio::test]
async fn identity_reports_the_fluid_driver_name_and_is_ready() {
    let mut h = Harness::start(1_000).await;
    let info = h.identity.get_plugin_info(proto::GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "fuse.csi.fluid.io");
    assert!(!info.vendor_version.is_empty());
    let probe = h.identity.probe(proto::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let caps = h.identity.get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(caps.capabilities.len(), 1);
}

#[tokio::test]
async fn controller_advertises_create_delete_volume_only() {
    use proto::controller_service_capability::{Type, rpc};
    let mut h = Harness::start(1_000).await;
    let caps = h
        .controller
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> =
        caps.capabilities.iter().filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(r)| r.r#type)).collect();
    assert_eq!(types, vec![rpc::Type::CreateDeleteVolume as i32]);
}

fn create_req(name: &str, required: i64, params: &[(&str, &str)]) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange { required_bytes: required, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap(RW)],
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_volume_is_idempotent_and_refuses_another_capacity() {
    let mut h = Harness::start(1_000).await;
    let params = [("fluid_path", "/runtime-mnt/juicefs/default/demo/juicefs-fuse")];
    let first = h.controller.create_volume(create_req("pvc-1", 1 << 30, &params)).await.unwrap().into_inner();
    let volume = first.volume.expect("a volume");
    assert_eq!((volume.volume_id.as_str(), volume.capacity_bytes), ("pvc-1", 1 << 30));
    assert_eq!(volume.volume_context.get("fluid_path").map(String::as_str), Some(params[0].1));
    let again = h.controller.create_volume(create_req("pvc-1", 1 << 30, &params)).await.unwrap().into_inner();
    assert_eq!(again.volume.unwrap().volume_id, "pvc-1");
    let status = h.controller.create_volume(create_req("pvc-1", 2 << 30, &params)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let status = h.controller.create_volume(create_req("pvc-1", 1 << 30, &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "other parameters: {status:?}");
    // Bad requests name their field.
    let status = h.controller.create_volume(create_req("", 1, &params)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("name"), "{status:?}");
    let status = h
        .controller
        .create_volume(proto::CreateVolumeRequest { volume_capabilities: vec![], ..create_req("x", 1, &params) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("volume_capabilities"), "{status:?}");
    let range = proto::CapacityRange { required_bytes: 10, limit_bytes: 5 };
    let status = h
        .controller
        .create_volume(proto::CreateVolumeRequest { capacity_range: Some(range), ..create_req("y", 1, &params) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Deleting is idempotent, and a deleted volume is gone for ValidateVolumeCapabilities.
    h.controller
        .delete_volume(proto::DeleteVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() })
        .await
        .unwrap();
    h.controller
        .delete_volume(proto::DeleteVolumeRequest { volume_id: "pvc-1".into(), ..Default::default() })
        .await
        .unwrap();
    let status = h.controller.delete_volume(proto::DeleteVolumeRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let validate = proto::ValidateVolumeCapabilitiesRequest {
        volume_id: "pvc-1".into(),
        volume_capabilities: vec![mount_cap(RW)],
        ..Default::default()
    };
    let status = h.controller.validate_volume_capabilities(validate).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn validate_volume_capabilities_confirms_mount_access_of_known_volumes() {
    use proto::volume_capability::{AccessMode, AccessType, BlockVolume};
    let mut h = Harness::start(1_000).await;
    h.controller.create_volume(create_req("pvc-2", 0, &[("fluid_path", "/mnt/x")])).await.unwrap();
    let validate =
        |id: &str, caps: Vec<proto::VolumeCapability>, ctx: &[(&str, &str)]| proto::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            volume_context: ctx.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
    let ok = h.controller.validate_volume_capabilities(validate("pvc-2", vec![mount_cap(RO)], &[])).await.unwrap();
    assert_eq!(ok.into_inner().confirmed.unwrap().volume_capabilities, vec![mount_cap(RO)]);
    let block = proto::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: RW }),
    };
    let refused = h.controller.validate_volume_capabilities(validate("pvc-2", vec![block], &[])).await.unwrap();
    let refused = refused.into_inner();
    assert!(refused.confirmed.is_none() && refused.message.contains("block"), "{refused:?}");
    // A static Fluid PV is known by its attributes.
    let fluid = [("fluid_path", "/runtime-mnt/juicefs/default/demo/juicefs-fuse")];
    let ok = h.controller.validate_volume_capabilities(validate("default-demo", vec![mount_cap(RW)], &fluid)).await;
    assert!(ok.unwrap().into_inner().confirmed.is_some());
    for (req, field) in
        [(validate("", vec![mount_cap(RW)], &[]), "volume_id"), (validate("pvc-2", vec![], &[]), "volume_capabilities")]
    {
        let status = h.controller.validate_volume_capabilities(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{status:?}");
    }
    let status =
        h.controller.validate_volume_capabilities(validate("nope", vec![mount_cap(RW)], &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn volume_stats_of_a_path_with_no_volume_is_not_found_relative_or_absolute() {
    let mut h = Harness::start(1_000).await;
    let stats = |volume_id: &str, volume_path: &str| proto::NodeGetVolumeStatsRequest {
        volume_id: volume_id.into(),
        volume_path: volume_path.into(),
        ..Default::default()
    };
    for path in ["some/path", "/nonexistent/ferrofluid/path"] {
        let status = h.node.node_get_volume_stats(stats("v", path)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{path}: {status:?}");
        assert!(status.message().contains(path), "{status:?}");
    }
    for (req, field) in [(stats("", "some/path"), "volume_id"), (stats("v", ""), "volume_path")] {
        let status = h.node.node_get_volume_stats(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
}

#[tokio::test]
async fn node_reports_its_id_and_stage_unstage() {
    use proto::node_service_capability::{Type, rpc};
    let mut h = Harness::start(1_000).await;
    let info = h.node.node_get_info(proto::NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, NODE);
    assert!(info.accessible_topology.is_none());
    let caps = h.node.node_get_capabilities(proto::NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
    let types: Vec<i32> =
        caps.capabilities.iter().filter_map(|c| c.r#type.as_ref().map(|Type::Rpc(r)| r.r#type)).collect();
    assert!(types.contains(&(rpc::Type::StageUnstageVolume as i32)), "{types:?}");
    assert!(types.contains(&(rpc::Type::GetVolumeStats as i32)), "{types:?}");
}

#[tokio::test]
async fn undeclared_rpcs_are_unimplemented() {
    // A raw gRPC call to ListVolumes, which this plugin does not declare.
    let h = Harness::start(1_000).await;
    let channel = connect(&h.socket).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        proto::ControllerGetCapabilitiesRequest,
        proto::ControllerGetCapabilitiesResponse,
    >::default();
    let path = http::uri::PathAndQuery::from_static("/csi.v1.Controller/ListVolumes");
    let status =
        grpc.unary(tonic::Request::new(proto::ControllerGetCapabilitiesRequest {}), path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn unstage_of_a_volume_never_staged_is_ok() {
    let mut h = Harness::start(1_000).await;
    let staging = h.dir.join("staging");
    h.node.node_unstage_volume(unstage_req("never-staged", &staging)).await.unwrap();
}

#[tokio::test]
async fn stage_labels_the_node_and_records_the_policy() {
    let mut h = Harness::start(1_000).await;
    let fluid = h.dir.join("fluid");
    let staging = h.dir.join("staging");
    let ctx = volume_context(&fluid, &[("fuse_clean_policy", "OnDemand")]);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx.clone())).await.unwrap();
    // Idempotent.
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx)).await.unwrap();
    assert_eq!(h.labels().get(LABEL).map(String::as_str), Some("true"));
    let record = h.plugin.state().load("default-jfsdemo").await.unwrap().expect("stage record");
    assert_eq!(record.label.key, LABEL);
    assert_eq!(record.clean_policy, model::api::FuseCleanPolicy::OnDemand);
}

#[tokio::test]
async fn stage_derives_the_label_from_the_runtime_when_the_pv_has_no_key() {
    let mut h = Harness::start(1_000).await;
    let mut ctx = volume_context(&h.dir.join("fluid"), &[]);
    ctx.remove("mount_pod_node_selector_key");
    ctx.insert("runtime_name".into(), "other".into());
    h.node.node_stage_volume(stage_req("default-other", &h.dir.join("staging"), ctx)).await.unwrap();
    assert!(h.labels().contains_key("fluid.io/f-default-other"), "{:?}", h.labels());
}

#[tokio::test]
async fn unstage_survives_a_plugin_restart() {
    let h = Harness::start(1_000).await;
    let labeler = h.plugin.labeler().clone();
    let (fluid, staging) = (h.dir.join("fluid"), h.dir.join("staging"));
    let mut h = h;
    let ctx = volume_context(&fluid, &[("fuse_clean_policy", "OnDemand")]);
    h.node.node_stage_volume(stage_req("default-jfsdemo", &staging, ctx)).await.unwrap();
    let dir = h.stop().await;
    let state = dir.join("state");
    let mut h = Harness::start_with(dir, state, labeler, 1_000).await;
    assert!(h.labels().contains_key(LABEL));
    h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap();
    assert!(!h.labels().contains_key(LABEL), "OnDemand unstage after restart removes the label");
    assert!(h.plugin.state().load("default-jfsdemo").await.unwrap().is_none());
}

#[tokio::test]
async fn on_runtime_deleted_unstage_keeps_the_label() {
    let mut h = Harness::start(1_000).await;
    let staging = h.dir.join("staging");
    h.node
        .node_stage_volume(stage_req("default-jfsdemo", &staging, volume_context(&h.dir.join("f"), &[])))
        .await
        .unwrap();
    h.node.node_unstage_volume(unstage_req("default-jfsdemo", &staging)).await.unwrap();
    assert!(h.labels().contains_key(LABEL));
    assert!(h.plugin.state().load("default-jfsdemo").await.unwrap().is_none());
}

#[test]
fn endpoints_parse_or_fail_clearly() {
    assert_eq!(csi::server::socket_path("unix:///csi/csi.sock").unwrap(), std::path::Path::new("/csi/csi.sock"));
    assert_eq!(csi::server::socket_path("/csi/csi.sock").unwrap(), std::path::Path::new("/csi/csi.sock"));
    let err = csi::server::socket_path("tcp://0.0.0.0:1").unwrap_err();
    assert!(err.to_string().contains("--endpoint"), "{err}");
}

/// Runs the real binary with `args` and returns (exit code, stderr).
fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrofluid-csi"))
        .args(args)
        .env_remove("CSI_ENDPOINT")
        .env_remove("NODE_ID")
        .output()
        .expect("run ferrofluid-csi");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_configuration_exits_with_a_clear_message() {
    let (code, stderr) = run_binary(&["--endpoint", "tcp://0.0.0.0:10000", "--node-id", "n1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--endpoint") && stderr.contains("unix socket"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, stderr) = run_binary(&["--endpoint", "unix:///tmp/x.sock", "--node-id", " "]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--node-id"), "{stderr}");

    let (code, stderr) = run_binary(&["--endpoint", "unix:///tmp/x.sock"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--node-id"), "{stderr}");

    let (code, stderr) =
        run_binary(&["--endpoint", "unix:///tmp/x.sock", "--node-id", "n1", "--poll-interval-ms", "500"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--poll-interval-ms"), "{stderr}");
}

/// The real binary with no Kubernetes configuration at all (empty environment, a HOME without
/// `.kube`): Identity and the Node queries answer, NodeStageVolume is UNAVAILABLE naming what
/// is missing, and the process is still serving afterwards.
#[tokio::test]
async fn without_any_kube_config_the_binary_serves_and_stage_is_unavailable() {
    let dir = TempDir::new("no-apiserver");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let socket = dir.join("csi.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferrofluid-csi"))
        .env_clear()
        .env("HOME", &home)
        .args(["--endpoint", &format!("unix://{}", socket.display()), "--node-id", "lonely-node"])
        .args(["--state-dir", &dir.join("state").display().to_string(), "--fuse-recovery=false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ferrofluid-csi");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("ferrofluid-csi exited with {status} without an API server:\n{stderr}");
        }
        assert!(std::time::Instant::now() < deadline, "no socket at {}", socket.display());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let channel = connect(&socket).await;
    let mut identity = proto::identity_client::IdentityClient::new(channel.clone());
    let mut node = proto::node_client::NodeClient::new(channel);
    let probe = identity.probe(proto::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let info = identity.get_plugin_info(proto::GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "fuse.csi.fluid.io");
    assert_eq!(node.node_get_info(proto::NodeGetInfoRequest {}).await.unwrap().into_inner().node_id, "lonely-node");
    node.node_get_capabilities(proto::NodeGetCapabilitiesRequest {}).await.unwrap();
    let ctx = volume_context(&dir.join("fluid"), &[]);
    let status = node.node_stage_volume(stage_req("default-jfsdemo", &dir.join("staging"), ctx)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for missing in ["in-cluster", "kubeconfig"] {
        assert!(status.message().contains(missing), "names {missing}: {status:?}");
    }
    println!("    NodeStageVolume without an API server: {}", status.message());
    // Still serving.
    identity.probe(proto::ProbeRequest {}).await.unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the plugin exited");
    let _ = child.kill();
    let _ = child.wait();
}
