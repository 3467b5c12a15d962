//! The bad-request corpus: every Node RPC refuses malformed calls with the right gRPC code and
//! a message that names the field. One table, so the corpus is counted and easy to extend.
//! No mount is made (every case is refused before any), so this runs without root.

mod common;

use std::path::Path;

use common::*;
use csi::proto::{self, volume_capability};
use tonic::Code;

/// One RPC call of the corpus.
enum Call {
    Stage(proto::NodeStageVolumeRequest),
    Unstage(proto::NodeUnstageVolumeRequest),
    Publish(proto::NodePublishVolumeRequest),
    Unpublish(proto::NodeUnpublishVolumeRequest),
    Stats(proto::NodeGetVolumeStatsRequest),
}

struct Case {
    name: &'static str,
    call: Call,
    code: Code,
    /// The field the status message must name.
    field: &'static str,
}

const FLUID: &str = "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse";
const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/default-jfsdemo/mount";
const STAGING: &str = "/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/x/globalmount";

fn ctx(extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    volume_context(Path::new(FLUID), extra)
}

fn stage() -> proto::NodeStageVolumeRequest {
    stage_req("default-jfsdemo", Path::new(STAGING), ctx(&[]))
}

fn publish() -> proto::NodePublishVolumeRequest {
    publish_req("default-jfsdemo", Path::new(TARGET), RW, false, ctx(&[]))
}

fn block_cap() -> Option<proto::VolumeCapability> {
    Some(proto::VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(volume_capability::BlockVolume {})),
        access_mode: Some(volume_capability::AccessMode { mode: RW }),
    })
}

fn no_access_type() -> Option<proto::VolumeCapability> {
    Some(proto::VolumeCapability { access_type: None, access_mode: Some(volume_capability::AccessMode { mode: RW }) })
}

fn no_access_mode() -> Option<proto::VolumeCapability> {
    Some(proto::VolumeCapability { access_mode: None, ..mount_cap(RW) })
}

/// The corpus.
fn corpus() -> Vec<Case> {
    use Call::*;
    let without = |key: &str| {
        let mut c = ctx(&[]);
        c.remove(key);
        c
    };
    vec![
        // NodeStageVolume
        Case {
            name: "stage: missing volume_id",
            call: Stage(proto::NodeStageVolumeRequest { volume_id: String::new(), ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_id",
        },
        Case {
            name: "stage: missing staging_target_path",
            call: Stage(proto::NodeStageVolumeRequest { staging_target_path: String::new(), ..stage() }),
            code: Code::InvalidArgument,
            field: "staging_target_path",
        },
        Case {
            name: "stage: relative staging_target_path",
            call: Stage(proto::NodeStageVolumeRequest { staging_target_path: "plugins/x".into(), ..stage() }),
            code: Code::InvalidArgument,
            field: "staging_target_path",
        },
        Case {
            name: "stage: missing volume_capability",
            call: Stage(proto::NodeStageVolumeRequest { volume_capability: None, ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_capability",
        },
        Case {
            name: "stage: block access",
            call: Stage(proto::NodeStageVolumeRequest { volume_capability: block_cap(), ..stage() }),
            code: Code::FailedPrecondition,
            field: "volume_capability.block",
        },
        Case {
            name: "stage: no access type",
            call: Stage(proto::NodeStageVolumeRequest { volume_capability: no_access_type(), ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_capability",
        },
        Case {
            name: "stage: missing access mode",
            call: Stage(proto::NodeStageVolumeRequest { volume_capability: no_access_mode(), ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_capability.access_mode",
        },
        Case {
            name: "stage: UNKNOWN access mode",
            call: Stage(proto::NodeStageVolumeRequest { volume_capability: Some(mount_cap(0)), ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_capability.access_mode",
        },
        Case {
            name: "stage: missing fluid_path",
            call: Stage(proto::NodeStageVolumeRequest { volume_context: without("fluid_path"), ..stage() }),
            code: Code::InvalidArgument,
            field: "volume_context.fluid_path",
        },
        Case {
            name: "stage: relative fluid_path",
            call: Stage(proto::NodeStageVolumeRequest {
                volume_context: ctx(&[("fluid_path", "runtime-mnt/x")]),
                ..stage()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.fluid_path",
        },
        Case {
            name: "stage: invalid label key",
            call: Stage(proto::NodeStageVolumeRequest {
                volume_context: ctx(&[("mount_pod_node_selector_key", "no spaces allowed")]),
                ..stage()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.mount_pod_node_selector_key",
        },
        Case {
            name: "stage: no label key and no runtime name",
            call: Stage(proto::NodeStageVolumeRequest {
                volume_context: {
                    let mut c = without("mount_pod_node_selector_key");
                    c.remove("runtime_name");
                    c
                },
                ..stage()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.mount_pod_node_selector_key",
        },
        Case {
            name: "stage: invalid label value",
            call: Stage(proto::NodeStageVolumeRequest {
                volume_context: ctx(&[("mount_pod_node_selector_value", "not valid!")]),
                ..stage()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.mount_pod_node_selector_value",
        },
        Case {
            name: "stage: unknown clean policy",
            call: Stage(proto::NodeStageVolumeRequest {
                volume_context: ctx(&[("fuse_clean_policy", "Never")]),
                ..stage()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.fuse_clean_policy",
        },
        // NodeUnstageVolume
        Case {
            name: "unstage: missing volume_id",
            call: Unstage(unstage_req("", Path::new(STAGING))),
            code: Code::InvalidArgument,
            field: "volume_id",
        },
        Case {
            name: "unstage: missing staging_target_path",
            call: Unstage(proto::NodeUnstageVolumeRequest {
                volume_id: "v".into(),
                staging_target_path: String::new(),
            }),
            code: Code::InvalidArgument,
            field: "staging_target_path",
        },
        Case {
            name: "unstage: relative staging_target_path",
            call: Unstage(proto::NodeUnstageVolumeRequest { volume_id: "v".into(), staging_target_path: "x/y".into() }),
            code: Code::InvalidArgument,
            field: "staging_target_path",
        },
        // NodePublishVolume
        Case {
            name: "publish: missing volume_id",
            call: Publish(proto::NodePublishVolumeRequest { volume_id: String::new(), ..publish() }),
            code: Code::InvalidArgument,
            field: "volume_id",
        },
        Case {
            name: "publish: missing target_path",
            call: Publish(proto::NodePublishVolumeRequest { target_path: String::new(), ..publish() }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        Case {
            name: "publish: relative target_path",
            call: Publish(proto::NodePublishVolumeRequest { target_path: "pods/p1/mount".into(), ..publish() }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        Case {
            name: "publish: target_path with ..",
            call: Publish(proto::NodePublishVolumeRequest {
                target_path: "/var/lib/kubelet/../../etc".into(),
                ..publish()
            }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        Case {
            name: "publish: target_path is fluid_path",
            call: Publish(proto::NodePublishVolumeRequest { target_path: FLUID.into(), ..publish() }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        Case {
            name: "publish: missing staging_target_path",
            call: Publish(proto::NodePublishVolumeRequest { staging_target_path: String::new(), ..publish() }),
            code: Code::FailedPrecondition,
            field: "staging_target_path",
        },
        Case {
            name: "publish: missing volume_capability",
            call: Publish(proto::NodePublishVolumeRequest { volume_capability: None, ..publish() }),
            code: Code::InvalidArgument,
            field: "volume_capability",
        },
        Case {
            name: "publish: block access",
            call: Publish(proto::NodePublishVolumeRequest { volume_capability: block_cap(), ..publish() }),
            code: Code::FailedPrecondition,
            field: "volume_capability.block",
        },
        Case {
            name: "publish: UNKNOWN access mode",
            call: Publish(proto::NodePublishVolumeRequest { volume_capability: Some(mount_cap(0)), ..publish() }),
            code: Code::InvalidArgument,
            field: "volume_capability.access_mode",
        },
        Case {
            name: "publish: missing fluid_path",
            call: Publish(proto::NodePublishVolumeRequest { volume_context: without("fluid_path"), ..publish() }),
            code: Code::InvalidArgument,
            field: "volume_context.fluid_path",
        },
        Case {
            name: "publish: absolute sub path",
            call: Publish(proto::NodePublishVolumeRequest {
                volume_context: ctx(&[("fluid_sub_path", "/etc")]),
                ..publish()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.fluid_sub_path",
        },
        Case {
            name: "publish: escaping sub path",
            call: Publish(proto::NodePublishVolumeRequest {
                volume_context: ctx(&[("fluid_sub_path", "data/../../../etc")]),
                ..publish()
            }),
            code: Code::InvalidArgument,
            field: "volume_context.fluid_sub_path",
        },
        // NodeUnpublishVolume
        Case {
            name: "unpublish: missing volume_id",
            call: Unpublish(unpublish_req("", Path::new(TARGET))),
            code: Code::InvalidArgument,
            field: "volume_id",
        },
        Case {
            name: "unpublish: missing target_path",
            call: Unpublish(proto::NodeUnpublishVolumeRequest { volume_id: "v".into(), target_path: String::new() }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        Case {
            name: "unpublish: relative target_path",
            call: Unpublish(proto::NodeUnpublishVolumeRequest { volume_id: "v".into(), target_path: "mount".into() }),
            code: Code::InvalidArgument,
            field: "target_path",
        },
        // NodeGetVolumeStats
        Case {
            name: "stats: missing volume_id",
            call: Stats(proto::NodeGetVolumeStatsRequest {
                volume_id: String::new(),
                volume_path: TARGET.into(),
                ..Default::default()
            }),
            code: Code::InvalidArgument,
            field: "volume_id",
        },
        Case {
            name: "stats: missing volume_path",
            call: Stats(proto::NodeGetVolumeStatsRequest {
                volume_id: "v".into(),
                volume_path: String::new(),
                ..Default::default()
            }),
            code: Code::InvalidArgument,
            field: "volume_path",
        },
        Case {
            // No volume can exist at a relative path (CSI: NOT_FOUND, as csi-sanity expects).
            name: "stats: relative volume_path",
            call: Stats(proto::NodeGetVolumeStatsRequest {
                volume_id: "v".into(),
                volume_path: "mount".into(),
                ..Default::default()
            }),
            code: Code::NotFound,
            field: "volume_path",
        },
        Case {
            name: "stats: volume_path that does not exist",
            call: Stats(proto::NodeGetVolumeStatsRequest {
                volume_id: "v".into(),
                volume_path: "/nonexistent/ferrofluid/volume".into(),
                ..Default::default()
            }),
            code: Code::NotFound,
            field: "/nonexistent/ferrofluid/volume",
        },
    ]
}

#[tokio::test]
async fn every_bad_request_is_refused_with_its_code_and_field() {
    let mut h = Harness::start(1_000).await;
    let cases = corpus();
    let mut failures = Vec::new();
    for case in &cases {
        let status = match &case.call {
            Call::Stage(req) => h.node.node_stage_volume(req.clone()).await.map(|_| ()),
            Call::Unstage(req) => h.node.node_unstage_volume(req.clone()).await.map(|_| ()),
            Call::Publish(req) => h.node.node_publish_volume(req.clone()).await.map(|_| ()),
            Call::Unpublish(req) => h.node.node_unpublish_volume(req.clone()).await.map(|_| ()),
            Call::Stats(req) => h.node.node_get_volume_stats(req.clone()).await.map(|_| ()),
        };
        match status {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(status) if status.code() != case.code || !status.message().contains(case.field) => {
                failures.push(format!(
                    "{}: got {:?} {:?}, want {:?} naming {}",
                    case.name,
                    status.code(),
                    status.message(),
                    case.code,
                    case.field
                ))
            }
            Err(status) => println!("{:<45} {:<20?} {}", case.name, status.code(), status.message()),
        }
    }
    println!("bad-request corpus: {} cases, {} failures", cases.len(), failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
    // Nothing was labelled or recorded by a refused call.
    assert!(h.labels().is_empty());
    assert!(!h.dir.join("state").exists());
}

#[tokio::test]
async fn the_corpus_covers_every_node_rpc_that_takes_arguments() {
    let cases = corpus();
    let count = |f: fn(&Call) -> bool| cases.iter().filter(|case| f(&case.call)).count();
    let per_rpc = [
        ("NodeStageVolume", count(|c| matches!(c, Call::Stage(_)))),
        ("NodeUnstageVolume", count(|c| matches!(c, Call::Unstage(_)))),
        ("NodePublishVolume", count(|c| matches!(c, Call::Publish(_)))),
        ("NodeUnpublishVolume", count(|c| matches!(c, Call::Unpublish(_)))),
        ("NodeGetVolumeStats", count(|c| matches!(c, Call::Stats(_)))),
    ];
    for (rpc, n) in per_rpc {
        println!("{rpc:<22} {n} bad-request cases");
        assert!(n >= 2, "{rpc} has only {n} bad-request cases");
    }
    println!("total {} bad-request cases", cases.len());
}
