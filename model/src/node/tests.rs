//! Unit and property tests of the node decisions.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::volume::{
    ATTR_CLEAN_POLICY, ATTR_FLUID_PATH, ATTR_FUSE_LABEL_KEY, ATTR_FUSE_LABEL_VALUE, ATTR_RUNTIME_NAME,
    ATTR_RUNTIME_NAMESPACE, ATTR_SUB_PATH,
};

const FLUID: &str = "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse";
const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/default-jfsdemo/mount";

fn mk_ctx(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut ctx = BTreeMap::from([
        (ATTR_FLUID_PATH.to_string(), FLUID.to_string()),
        (ATTR_FUSE_LABEL_KEY.to_string(), "fluid.io/f-default-jfsdemo".to_string()),
        (ATTR_RUNTIME_NAMESPACE.to_string(), "default".to_string()),
        (ATTR_RUNTIME_NAME.to_string(), "jfsdemo".to_string()),
    ]);
    for (k, v) in extra {
        ctx.insert((*k).to_string(), (*v).to_string());
    }
    ctx
}

fn mk_stage(ctx: BTreeMap<String, String>) -> StageRequest {
    StageRequest {
        volume_id: "default-jfsdemo".into(),
        staging_target_path: "/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/x/globalmount".into(),
        capability: Some(Capability::mount(AccessMode::MultiNodeMultiWriter)),
        volume_context: ctx,
    }
}

fn mk_publish(ctx: BTreeMap<String, String>) -> PublishRequest {
    PublishRequest {
        volume_id: "default-jfsdemo".into(),
        staging_target_path: "/var/lib/kubelet/plugins/x/globalmount".into(),
        target_path: TARGET.into(),
        capability: Some(Capability::mount(AccessMode::MultiNodeMultiWriter)),
        readonly: false,
        volume_context: ctx,
    }
}

const MOUNTED: PathState = PathState::Mounted { read_only: false };

#[test]
fn stage_labels_with_the_pv_key_as_is() {
    let ctx = mk_ctx(&[(ATTR_FUSE_LABEL_KEY, "fluid.io/f-5d0b7a3c-uid")]);
    let plan = plan_stage(&mk_stage(ctx), PathState::Absent).unwrap();
    assert_eq!(plan.label, NodeLabel { key: "fluid.io/f-5d0b7a3c-uid".into(), value: "true".into() });
    assert_eq!(plan.unmount_broken_fluid_path, None);
    assert_eq!(plan.record.clean_policy, FuseCleanPolicy::OnRuntimeDeleted);
    assert_eq!(plan.record.fluid_path, FLUID);
}

#[test]
fn stage_derives_the_key_when_the_pv_has_none() {
    let mut ctx = mk_ctx(&[(ATTR_FUSE_LABEL_VALUE, "yes")]);
    ctx.remove(ATTR_FUSE_LABEL_KEY);
    let plan = plan_stage(&mk_stage(ctx.clone()), PathState::Absent).unwrap();
    assert_eq!(plan.label, NodeLabel { key: "fluid.io/f-default-jfsdemo".into(), value: "yes".into() });
    ctx.remove(ATTR_RUNTIME_NAME);
    let refusal = plan_stage(&mk_stage(ctx), PathState::Absent).unwrap_err();
    assert_eq!(refusal.error.field(), Some("volume_context.mount_pod_node_selector_key"));
}

#[test]
fn stage_repairs_a_broken_fluid_path_and_not_a_healthy_one() {
    let plan = plan_stage(&mk_stage(mk_ctx(&[])), PathState::Broken).unwrap();
    assert_eq!(plan.unmount_broken_fluid_path.as_deref(), Some(FLUID));
    for state in [PathState::Absent, PathState::Unmounted, MOUNTED] {
        assert_eq!(plan_stage(&mk_stage(mk_ctx(&[])), state).unwrap().unmount_broken_fluid_path, None);
    }
}

#[test]
fn stage_refusals_name_their_field() {
    let cases: Vec<(StageRequest, RefusalKind, &str)> = vec![
        (StageRequest { volume_id: String::new(), ..mk_stage(mk_ctx(&[])) }, RefusalKind::InvalidArgument, "volume_id"),
        (
            StageRequest { staging_target_path: "relative".into(), ..mk_stage(mk_ctx(&[])) },
            RefusalKind::InvalidArgument,
            "staging_target_path",
        ),
        (StageRequest { capability: None, ..mk_stage(mk_ctx(&[])) }, RefusalKind::InvalidArgument, "volume_capability"),
        (
            StageRequest {
                capability: Some(Capability {
                    access_type: AccessType::Block,
                    access_mode: Some(AccessMode::SingleNodeWriter),
                }),
                ..mk_stage(mk_ctx(&[]))
            },
            RefusalKind::FailedPrecondition,
            "volume_capability.block",
        ),
        (
            StageRequest { capability: Some(Capability::mount(AccessMode::Unknown)), ..mk_stage(mk_ctx(&[])) },
            RefusalKind::InvalidArgument,
            "volume_capability.access_mode",
        ),
        (mk_stage(BTreeMap::new()), RefusalKind::InvalidArgument, "volume_context.fluid_path"),
        (
            mk_stage(mk_ctx(&[(ATTR_CLEAN_POLICY, "Sometimes")])),
            RefusalKind::InvalidArgument,
            "volume_context.fuse_clean_policy",
        ),
        (
            mk_stage(mk_ctx(&[(ATTR_FUSE_LABEL_KEY, "not a key!")])),
            RefusalKind::InvalidArgument,
            "volume_context.mount_pod_node_selector_key",
        ),
    ];
    for (req, kind, field) in cases {
        let refusal = plan_stage(&req, PathState::Absent).unwrap_err();
        assert_eq!((refusal.kind, refusal.error.field()), (kind, Some(field)), "{refusal}");
        assert!(refusal.to_string().contains(field), "{refusal}");
    }
}

#[test]
fn publish_waits_for_the_fuse_mount_then_binds() {
    let req = mk_publish(mk_ctx(&[]));
    for fuse in [PathState::Absent, PathState::Unmounted, PathState::Broken] {
        assert_eq!(
            plan_publish(&req, fuse, PathState::Absent).unwrap(),
            PublishStep::WaitForFuse { fluid_path: FLUID.into() }
        );
    }
    let step = plan_publish(&req, MOUNTED, PathState::Absent).unwrap();
    assert_eq!(
        step,
        PublishStep::BindMount(MountPlan { source: FLUID.into(), target: TARGET.into(), read_only: false })
    );
}

#[test]
fn publish_is_read_only_for_reader_modes_the_flag_or_an_ro_mount_flag() {
    let ro = |req: PublishRequest| match plan_publish(&req, MOUNTED, PathState::Unmounted).unwrap() {
        PublishStep::BindMount(plan) => plan.read_only,
        other => panic!("{other:?}"),
    };
    assert!(!ro(mk_publish(mk_ctx(&[]))));
    assert!(ro(PublishRequest { readonly: true, ..mk_publish(mk_ctx(&[])) }));
    for mode in [AccessMode::MultiNodeReaderOnly, AccessMode::SingleNodeReaderOnly] {
        assert!(ro(PublishRequest { capability: Some(Capability::mount(mode)), ..mk_publish(mk_ctx(&[])) }));
    }
    let flags = Capability {
        access_type: AccessType::Mount { mount_flags: vec!["noatime".into(), "ro".into()] },
        access_mode: Some(AccessMode::SingleNodeWriter),
    };
    assert!(ro(PublishRequest { capability: Some(flags), ..mk_publish(mk_ctx(&[])) }));
}

#[test]
fn publish_binds_the_normalized_sub_path() {
    let req = mk_publish(mk_ctx(&[(ATTR_SUB_PATH, "./a//b/")]));
    let PublishStep::BindMount(plan) = plan_publish(&req, MOUNTED, PathState::Absent).unwrap() else { panic!() };
    assert_eq!(plan.source, format!("{FLUID}/a/b"));
    let req = mk_publish(mk_ctx(&[(ATTR_SUB_PATH, "a/../../etc")]));
    let refusal = plan_publish(&req, MOUNTED, PathState::Absent).unwrap_err();
    assert_eq!(refusal.error.field(), Some("volume_context.fluid_sub_path"));
}

#[test]
fn publish_is_idempotent_and_repairs_what_it_finds() {
    let req = mk_publish(mk_ctx(&[]));
    assert_eq!(plan_publish(&req, MOUNTED, MOUNTED).unwrap(), PublishStep::AlreadyPublished);
    // Already published: no wait for the FUSE mount even if it is gone meanwhile.
    assert_eq!(plan_publish(&req, PathState::Absent, MOUNTED).unwrap(), PublishStep::AlreadyPublished);
    assert_eq!(
        plan_publish(&req, MOUNTED, PathState::Broken).unwrap(),
        PublishStep::UnmountBrokenTarget { target: TARGET.into() }
    );
    let ro = PublishRequest { readonly: true, ..req.clone() };
    assert_eq!(plan_publish(&ro, MOUNTED, MOUNTED).unwrap(), PublishStep::RemountReadOnly { target: TARGET.into() });
    let refusal = plan_publish(&req, MOUNTED, PathState::Mounted { read_only: true }).unwrap_err();
    assert_eq!((refusal.kind, refusal.error.field()), (RefusalKind::AlreadyExists, Some("target_path")));
}

#[test]
fn publish_refusals_name_their_field() {
    let base = || mk_publish(mk_ctx(&[]));
    let cases: Vec<(PublishRequest, RefusalKind, &str)> = vec![
        (PublishRequest { volume_id: " ".into(), ..base() }, RefusalKind::InvalidArgument, "volume_id"),
        (PublishRequest { target_path: String::new(), ..base() }, RefusalKind::InvalidArgument, "target_path"),
        (PublishRequest { target_path: "pods/x/mount".into(), ..base() }, RefusalKind::InvalidArgument, "target_path"),
        (PublishRequest { target_path: "/a/../b".into(), ..base() }, RefusalKind::InvalidArgument, "target_path"),
        (PublishRequest { target_path: FLUID.into(), ..base() }, RefusalKind::InvalidArgument, "target_path"),
        (
            PublishRequest { staging_target_path: String::new(), ..base() },
            RefusalKind::FailedPrecondition,
            "staging_target_path",
        ),
        (PublishRequest { capability: None, ..base() }, RefusalKind::InvalidArgument, "volume_capability"),
        (
            PublishRequest {
                capability: Some(Capability {
                    access_type: AccessType::Unset,
                    access_mode: Some(AccessMode::SingleNodeWriter),
                }),
                ..base()
            },
            RefusalKind::InvalidArgument,
            "volume_capability",
        ),
        (
            PublishRequest {
                capability: Some(Capability { access_type: AccessType::Block, access_mode: None }),
                ..base()
            },
            RefusalKind::FailedPrecondition,
            "volume_capability.block",
        ),
        (
            PublishRequest {
                capability: Some(Capability {
                    access_type: AccessType::Mount { mount_flags: vec![] },
                    access_mode: None,
                }),
                ..base()
            },
            RefusalKind::InvalidArgument,
            "volume_capability.access_mode",
        ),
        (mk_publish(BTreeMap::new()), RefusalKind::InvalidArgument, "volume_context.fluid_path"),
        (
            mk_publish(mk_ctx(&[(ATTR_FLUID_PATH, "runtime-mnt/x")])),
            RefusalKind::InvalidArgument,
            "volume_context.fluid_path",
        ),
        (mk_publish(mk_ctx(&[(ATTR_SUB_PATH, "/etc")])), RefusalKind::InvalidArgument, "volume_context.fluid_sub_path"),
    ];
    for (req, kind, field) in cases {
        let refusal = plan_publish(&req, MOUNTED, PathState::Absent).unwrap_err();
        assert_eq!((refusal.kind, refusal.error.field()), (kind, Some(field)), "{refusal}");
    }
}

#[test]
fn unpublish_unmounts_until_nothing_is_left() {
    let req = UnpublishRequest { volume_id: "v".into(), target_path: format!("{TARGET}/") };
    assert_eq!(plan_unpublish(&req, MOUNTED).unwrap(), UnpublishStep::Unmount { target: TARGET.into(), broken: false });
    assert_eq!(
        plan_unpublish(&req, PathState::Broken).unwrap(),
        UnpublishStep::Unmount { target: TARGET.into(), broken: true }
    );
    assert_eq!(
        plan_unpublish(&req, PathState::Unmounted).unwrap(),
        UnpublishStep::RemoveTarget { target: TARGET.into() }
    );
    assert_eq!(plan_unpublish(&req, PathState::Absent).unwrap(), UnpublishStep::Done);
    let refusal =
        plan_unpublish(&UnpublishRequest { volume_id: "v".into(), target_path: "x".into() }, MOUNTED).unwrap_err();
    assert_eq!(refusal.error.field(), Some("target_path"));
    let refusal = plan_unpublish(&UnpublishRequest { volume_id: String::new(), target_path: TARGET.into() }, MOUNTED)
        .unwrap_err();
    assert_eq!(refusal.error.field(), Some("volume_id"));
}

#[test]
fn unstage_applies_the_clean_policy() {
    let req = UnstageRequest { volume_id: "default-jfsdemo".into(), staging_target_path: "/staging".into() };
    let staged =
        |policy: &str| plan_stage(&mk_stage(mk_ctx(&[(ATTR_CLEAN_POLICY, policy)])), PathState::Absent).unwrap().record;
    let keep = staged("OnRuntimeDeleted");
    assert_eq!(plan_unstage(&req, Some(&keep), 3).unwrap(), UnstagePlan { remove_label: None, forget_record: true });
    let on_fuse_changed = staged("OnFuseChanged");
    assert_eq!(
        plan_unstage(&req, Some(&on_fuse_changed), 0).unwrap(),
        UnstagePlan { remove_label: None, forget_record: true }
    );
    let on_demand = staged("OnDemand");
    assert_eq!(
        plan_unstage(&req, Some(&on_demand), 0).unwrap(),
        UnstagePlan { remove_label: Some("fluid.io/f-default-jfsdemo".into()), forget_record: true }
    );
    let busy = plan_unstage(&req, Some(&on_demand), 2).unwrap_err();
    assert_eq!((busy.kind, busy.error.field()), (RefusalKind::FailedPrecondition, Some("volume_id")));
    assert_eq!(plan_unstage(&req, None, 0).unwrap(), UnstagePlan { remove_label: None, forget_record: false });
    let refusal = plan_unstage(&UnstageRequest { volume_id: "v".into(), staging_target_path: String::new() }, None, 0)
        .unwrap_err();
    assert_eq!(refusal.error.field(), Some("staging_target_path"));
}

const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse rw,relatime shared:20 - fuse.juicefs JuiceFS:myjfs rw,user_id=0
41 22 0:50 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/default-jfsdemo/mount ro,relatime shared:20 - fuse.juicefs JuiceFS:myjfs rw
42 22 0:50 /sub /tmp/with\\040space rw - fuse.juicefs JuiceFS:myjfs rw
43 22 0:51 / /var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/default-jfsdemo/mount rw - fuse.juicefs JuiceFS:myjfs rw
44 22 0:52 / /mnt/other rw - tmpfs tmpfs rw
garbage line
";

#[test]
fn mountinfo_parses_and_decodes_escapes() {
    let mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(mounts.len(), 6);
    assert_eq!(mounts[1].fs_type, "fuse.juicefs");
    assert_eq!(mounts[1].source, "JuiceFS:myjfs");
    assert!(mounts[2].read_only && !mounts[1].read_only);
    assert_eq!(mounts[3].mount_point, "/tmp/with space");
    assert_eq!(mounts[3].root, "/sub");
}

#[test]
fn classify_combines_the_table_and_stat() {
    let mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(classify_path(&mounts, FLUID, PathProbe::Present), MOUNTED);
    assert_eq!(classify_path(&mounts, &format!("{FLUID}/"), PathProbe::Present), MOUNTED);
    assert_eq!(classify_path(&mounts, FLUID, PathProbe::NotConnected), PathState::Broken);
    assert_eq!(classify_path(&mounts, TARGET, PathProbe::Present), PathState::Mounted { read_only: true });
    assert_eq!(classify_path(&mounts, "/mnt/none", PathProbe::Missing), PathState::Absent);
    assert_eq!(classify_path(&mounts, "/mnt/none", PathProbe::Present), PathState::Unmounted);
    assert_eq!(classify_path(&mounts, "/mnt/other", PathProbe::OtherError), PathState::Broken);
}

#[test]
fn bind_mounts_of_a_volume_are_counted_by_device_and_kubelet_path() {
    let mounts = parse_mountinfo(MOUNTINFO);
    // p1 (same device), /tmp/with space (same device) and p2 (kubelet path of the volume).
    assert_eq!(count_volume_bind_mounts(&mounts, "default-jfsdemo", FLUID), 3);
    assert_eq!(count_volume_bind_mounts(&mounts, "other", "/mnt/nothing"), 0);
}

#[test]
fn a_path_is_within_a_directory_by_whole_components() {
    use super::request::is_within;
    assert!(is_within("/a/b", "/a/b") && is_within("/a/b/c", "/a/b") && is_within("/a/b/c", "/a/b/"));
    assert!(is_within("/anything", "/") && is_within("/", "/"));
    assert!(!is_within("/a/bc", "/a/b") && !is_within("/a", "/a/b"));
}

#[test]
fn a_mount_of_a_sibling_directory_on_the_fuse_device_is_no_bind_of_it() {
    let mut mounts = parse_mountinfo(MOUNTINFO);
    let fuse = mounts.iter().position(|m| m.mount_point == FLUID).expect("the FUSE mount");
    mounts[fuse].root = "/data".into();
    let others: Vec<usize> =
        (0..mounts.len()).filter(|i| *i != fuse && mounts[*i].major_minor == mounts[fuse].major_minor).collect();
    assert!(!others.is_empty());
    for i in &others {
        mounts[*i].root = "/data-old".into();
        mounts[*i].mount_point = format!("/elsewhere/{i}");
    }
    // Only kubelet's publish paths of the volume count now, not the sibling's mounts.
    let kubelet_paths =
        mounts.iter().filter(|m| m.mount_point.ends_with("/volumes/kubernetes.io~csi/default-jfsdemo/mount")).count();
    assert_eq!(count_volume_bind_mounts(&mounts, "default-jfsdemo", FLUID), kubelet_paths);
    mounts[others[0]].root = "/data/sub".into();
    assert_eq!(count_volume_bind_mounts(&mounts, "default-jfsdemo", FLUID), kubelet_paths + 1);
}

fn safe_component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,8}".prop_filter("not a dot component", |c| c != "." && c != "..")
}

proptest! {
    /// A sub path with a `..` component anywhere, or an absolute one, is always refused.
    #[test]
    fn escaping_sub_paths_are_refused(
        before in proptest::collection::vec(safe_component(), 0..4),
        after in proptest::collection::vec(safe_component(), 0..4),
        absolute in any::<bool>(),
    ) {
        let mut parts = before.clone();
        parts.push("..".to_string());
        parts.extend(after);
        let escaping = parts.join("/");
        let refusal = normalize_sub_path(&escaping).unwrap_err();
        prop_assert_eq!(refusal.error.field(), Some("volume_context.fluid_sub_path"));
        if absolute {
            let refusal = normalize_sub_path(&format!("/{}", before.join("/"))).unwrap_err();
            prop_assert_eq!(refusal.kind, RefusalKind::InvalidArgument);
        }
    }

    /// Any accepted sub path publishes a directory strictly inside the FUSE mount.
    #[test]
    fn accepted_sub_paths_stay_inside_the_mount(raw in "[a-z./]{0,24}") {
        let ctx = mk_ctx(&[(ATTR_SUB_PATH, raw.as_str())]);
        match plan_publish(&mk_publish(ctx), MOUNTED, PathState::Absent) {
            Ok(PublishStep::BindMount(plan)) => {
                let inside = plan.source == FLUID || plan.source.starts_with(&format!("{FLUID}/"));
                prop_assert!(inside, "{} escapes", plan.source);
                prop_assert!(!plan.source.split('/').any(|c| c == ".." || c == "."));
            }
            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
            Err(refusal) => {
                prop_assert!(raw.starts_with('/') || raw.split('/').any(|c| c == ".."), "{} refused: {}", raw, refusal);
            }
        }
    }
}

#[test]
fn the_fuse_type_follows_the_pvs_mount_type() {
    assert_eq!(FuseType::of(Some("JuiceFS")), FuseType::Exact("fuse.juicefs".into()));
    assert_eq!(FuseType::of(Some("juicefs")), FuseType::Exact("fuse.juicefs".into()));
    assert_eq!(FuseType::of(Some("fuse.alluxio-fuse")), FuseType::Exact("fuse.alluxio-fuse".into()));
    assert_eq!(FuseType::of(Some("fuse.")), FuseType::AnyFuse);
    assert_eq!(FuseType::of(None), FuseType::AnyFuse);
    let juicefs = FuseType::of(Some("JuiceFS"));
    assert!(juicefs.accepts("fuse.juicefs"));
    assert!(!juicefs.accepts("fuse.sshfs") && !juicefs.accepts("tmpfs"));
    for fuse in ["fuse", "fuseblk", "fuse.juicefs", "fuse.sshfs"] {
        assert!(FuseType::AnyFuse.accepts(fuse), "{fuse}");
    }
    for other in ["tmpfs", "ext4", "overlay", "fusectl"] {
        assert!(!FuseType::AnyFuse.accepts(other), "{other}");
    }
}

#[test]
fn a_tmpfs_or_a_plain_bind_at_fluid_path_is_no_fuse_mount_and_publish_waits() {
    let juicefs = FuseType::of(Some("JuiceFS"));
    let mut mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(classify_fuse_path(&mounts, FLUID, PathProbe::Present, &juicefs), MOUNTED);
    let fuse = mounts.iter().position(|m| m.mount_point == FLUID).unwrap();
    for (fs_type, source) in [("tmpfs", "tmpfs"), ("ext4", "/dev/sda1")] {
        mounts[fuse].fs_type = fs_type.into();
        mounts[fuse].source = source.into();
        let state = classify_fuse_path(&mounts, FLUID, PathProbe::Present, &juicefs);
        assert_eq!(state, PathState::Unmounted, "{fs_type}");
        assert_eq!(
            plan_publish(&mk_publish(mk_ctx(&[])), state, PathState::Absent).unwrap(),
            PublishStep::WaitForFuse { fluid_path: FLUID.into() }
        );
        let found = describe_fuse_path(&mounts, FLUID, &juicefs);
        assert!(found.contains(fs_type) && found.contains("fuse.juicefs"), "{found}");
    }
    // Broken stays broken, absent stays absent: only a healthy mount of the wrong type changes.
    assert_eq!(classify_fuse_path(&mounts, FLUID, PathProbe::NotConnected, &juicefs), PathState::Broken);
    assert_eq!(classify_fuse_path(&mounts, "/mnt/none", PathProbe::Missing, &juicefs), PathState::Absent);
    assert!(describe_fuse_path(&mounts, "/mnt/none", &juicefs).contains("no mount"));
}

#[test]
fn the_dataset_of_a_volume_is_its_runtime() {
    let ctx = mk_ctx(&[]);
    assert_eq!(
        DatasetRef::from_volume_context(&ctx),
        Some(DatasetRef { namespace: "default".into(), name: "jfsdemo".into() })
    );
    let mut no_name = ctx.clone();
    no_name.insert(ATTR_RUNTIME_NAME.into(), " ".into());
    assert_eq!(DatasetRef::from_volume_context(&no_name), None);
}

#[test]
fn access_mode_numbers_round_trip() {
    for n in 0..=7 {
        assert_eq!(AccessMode::from_csi(n).to_csi(), n);
    }
    assert_eq!(AccessMode::from_csi(42), AccessMode::Unknown);
}
