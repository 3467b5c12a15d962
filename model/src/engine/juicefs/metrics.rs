//! JuiceFS's Prometheus metrics: the figures a worker's cache sample is made of.

use crate::observed::CacheSample;

/// Bytes in the block cache.
pub const METRIC_CACHED_BYTES: &str = "juicefs_blockcache_bytes";
/// Block-cache hits.
pub const METRIC_CACHE_HITS: &str = "juicefs_blockcache_hits";
/// Block-cache misses.
pub const METRIC_CACHE_MISSES: &str = "juicefs_blockcache_miss";
/// Bytes used in the whole volume.
pub const METRIC_USED_SPACE: &str = "juicefs_used_space";

/// Reads a worker's `/metrics` text (Prometheus exposition format) into a cache sample. Series
/// of one metric with different labels are summed; comments, other metrics and lines that do not
/// parse are skipped, so a partial or odd scrape gives smaller figures, never an error.
pub fn parse_cache_sample(pod_name: &str, text: &str) -> CacheSample {
    let mut sample = CacheSample {
        pod_name: pod_name.to_string(),
        cached_bytes: 0,
        cache_hits: 0,
        cache_misses: 0,
        used_space_bytes: 0,
    };
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => continue,
        };
        let value_text = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once('}').map(|(_, after)| after),
            None => Some(rest),
        };
        let Some(value) = value_text.and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        // Counters and gauges of sizes are non-negative; clamp anything else (NaN, -1) to 0.
        let value = if value.is_finite() && value > 0.0 { value.min(u64::MAX as f64) as u64 } else { 0 };
        let slot = match name {
            METRIC_CACHED_BYTES => &mut sample.cached_bytes,
            METRIC_CACHE_HITS => &mut sample.cache_hits,
            METRIC_CACHE_MISSES => &mut sample.cache_misses,
            METRIC_USED_SPACE => &mut sample.used_space_bytes,
            _ => continue,
        };
        *slot = slot.saturating_add(value);
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCRAPE: &str = "\
# HELP juicefs_blockcache_bytes number of bytes in the block cache
# TYPE juicefs_blockcache_bytes gauge
juicefs_blockcache_bytes{mp=\"/runtime-mnt/juicefs/default/demo/juicefs-fuse\",vol_name=\"demo\"} 1.073741824e+09
juicefs_blockcache_hits{vol_name=\"demo\"} 300
juicefs_blockcache_miss{vol_name=\"demo\"} 100
juicefs_used_space 4294967296
juicefs_blockcache_bytes{vol_name=\"other\"} 1024
juicefs_uptime 12.5
";

    #[test]
    fn reads_the_cache_figures_and_sums_label_sets() {
        let sample = parse_cache_sample("demo-juicefs-worker-0", SCRAPE);
        assert_eq!(sample.pod_name, "demo-juicefs-worker-0");
        assert_eq!(sample.cached_bytes, (1 << 30) + 1024);
        assert_eq!((sample.cache_hits, sample.cache_misses), (300, 100));
        assert_eq!(sample.used_space_bytes, 4 << 30);
    }

    #[test]
    fn odd_values_and_lines_are_skipped_or_clamped() {
        let sample = parse_cache_sample(
            "p",
            "juicefs_used_space NaN\njuicefs_blockcache_hits -5\ngarbage\njuicefs_blockcache_miss{x=\"}\"} 7\n",
        );
        assert_eq!((sample.used_space_bytes, sample.cache_hits, sample.cache_misses), (0, 0, 7));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_cache_sample("p", &text);
        }
    }
}
