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
async fn controller_advertises_no_capability() {
    let mut h = Harness::start(1_000).await;
    let caps = h
        .controller
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty());
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
    // A raw gRPC call to CreateVolume, which this plugin does not declare.
    let h = Harness::start(1_000).await;
    let channel = connect(&h.socket).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        proto::ControllerGetCapabilitiesRequest,
        proto::ControllerGetCapabilitiesResponse,
    >::default();
    let path = http::uri::PathAndQuery::from_static("/csi.v1.Controller/CreateVolume");
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
