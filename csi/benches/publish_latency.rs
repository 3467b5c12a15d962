//! NodePublishVolume latency, from "FUSE mount ready" to "bind mount done", over real gRPC on a
//! unix socket, with real mounts in a private mount namespace. The FUSE mount at `fluid_path` is
//! a bind of a directory of a real JuiceFS mount (a `fuse.juicefs` mount, which publish waits
//! for; a tmpfs no longer passes), made once: mounting JuiceFS anew per iteration would measure
//! JuiceFS.
//!
//! * `waiting`: publish is called first and waits; the "FUSE" mount appears 5–25 ms later.
//!   Latency = publish response received − mount(2) returned. This is the number Fluid's
//!   `check_mount.sh` makes 0–3 s (it sleeps 3 s between checks).
//! * `ready`: the mount is already there; latency = the whole publish RPC.
//!
//! `cargo bench -p csi --bench publish_latency [-- ITERATIONS]`; prints a table (ms).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::*;

fn main() -> ExitCode {
    if !require_root("publish_latency") {
        return ExitCode::SUCCESS;
    }
    let juicefs = match require_juicefs("publish_latency") {
        None => return ExitCode::SUCCESS,
        Some(None) => return ExitCode::FAILURE,
        Some(Some(bin)) => bin,
    };
    let iterations: usize = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).next().unwrap_or(200);
    enter_private_mount_namespace();
    let fuse = JuiceFs::start(&juicefs);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (waiting, ready) = runtime.block_on(measure(iterations, &fuse));
    println!("\nNodePublishVolume latency, {iterations} iterations, a JuiceFS bind as the FUSE mount (ms)");
    println!("{:<10} {:>8} {:>8} {:>8} {:>8} {:>8}", "scenario", "p50", "p90", "p99", "max", "mean");
    for (name, samples) in [("waiting", waiting), ("ready", ready)] {
        let row = summary(samples);
        println!("{name:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}", row[0], row[1], row[2], row[3], row[4]);
    }
    ExitCode::SUCCESS
}

async fn measure(iterations: usize, fuse: &JuiceFs) -> (Vec<f64>, Vec<f64>) {
    let mut h = Harness::start(10_000).await;
    let fluid = h.dir.join("runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
    let target = h.dir.join("pods/p/volumes/kubernetes.io~csi/default-jfsdemo/mount");
    std::fs::create_dir_all(&fluid).unwrap();
    let ctx = volume_context(&fluid, &[]);
    let (mut waiting, mut ready) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        // waiting: the publish is in flight when the mount appears.
        let mut node = h.node.clone();
        let req = publish_req("default-jfsdemo", &target, RW, false, ctx.clone());
        let publish = tokio::spawn(async move {
            node.node_publish_volume(req).await.expect("publish");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(5 + (i as u64 * 7) % 20)).await;
        let mounted = tokio::task::block_in_place(|| {
            fuse.bind_subdir(&fluid);
            Instant::now()
        });
        let done = publish.await.unwrap();
        waiting.push(done.saturating_duration_since(mounted).as_secs_f64() * 1e3);
        h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &target)).await.unwrap();

        // ready: the mount is there before the call.
        let started = Instant::now();
        h.node.node_publish_volume(publish_req("default-jfsdemo", &target, RW, false, ctx.clone())).await.unwrap();
        ready.push(started.elapsed().as_secs_f64() * 1e3);
        h.node.node_unpublish_volume(unpublish_req("default-jfsdemo", &target)).await.unwrap();
        umount(&fluid);
        assert_eq!(mount_count(&target), 0);
    }
    (waiting, ready)
}

/// p50, p90, p99, max and mean of `samples` (nearest-rank percentiles).
fn summary(mut samples: Vec<f64>) -> [f64; 5] {
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[index.saturating_sub(1).min(samples.len() - 1)]
    };
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    [rank(50.0), rank(90.0), rank(99.0), rank(100.0), mean]
}
