//! The standard `process_*` metrics of the controller's own process, read from /proc at scrape time.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, fixed at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one scrape read; a field is `None` where /proc did not answer (not Linux, or hidden).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    /// User + system CPU time.
    pub cpu_seconds: Option<f64>,
    /// Resident set size.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size.
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Reads this process's figures.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot_time = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time_seconds);
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as u64);
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let mut sample = stat.as_deref().map(|stat| parse_stat(stat, boot_time)).unwrap_or_default();
        sample.open_fds = open_fds;
        sample.resident_memory_bytes =
            status.as_deref().and_then(|status| status_kib(status, "VmRSS")).map(|kib| kib * 1024);
        sample
    }
}

/// Parses `/proc/<pid>/stat` (fields after the parenthesised command name, which may hold
/// spaces): utime 14, stime 15, starttime 22, vsize 23. The resident size comes from
/// `/proc/<pid>/status` ([`status_kib`]), which states its unit; `stat` counts pages.
pub fn parse_stat(stat: &str, boot_time_seconds: Option<f64>) -> ProcessSample {
    let Some((_, rest)) = stat.rsplit_once(')') else { return ProcessSample::default() };
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).and_then(|text| text.parse::<u64>().ok());
    let cpu_ticks = field(14).zip(field(15)).map(|(user, system)| user + system);
    ProcessSample {
        cpu_seconds: cpu_ticks.map(|ticks| ticks as f64 / TICKS_PER_SECOND),
        resident_memory_bytes: None,
        virtual_memory_bytes: field(23),
        open_fds: None,
        start_time_seconds: field(22)
            .zip(boot_time_seconds)
            .map(|(ticks, boot)| boot + ticks as f64 / TICKS_PER_SECOND),
    }
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.split(':').next() == Some(name))?;
    line.split(':').nth(1)?.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The `btime` line of `/proc/stat`: when the machine booted.
pub fn boot_time_seconds(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())
}

/// Encodes a fresh [`ProcessSample`] on every scrape.
#[derive(Default)]
pub struct ProcessCollector;

impl fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessCollector")
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sample = ProcessSample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", sample.resident_memory_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", sample.virtual_memory_bytes),
            ("process_open_fds", "Number of open file descriptors", sample.open_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        if let Some(start) = sample.start_time_seconds {
            let gauge = ConstGauge::new(start);
            let metric = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name_even_with_spaces_in_it() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss …
        let stat = "42 (ferro fluid) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 73400320 2048 18446744073709551615";
        let sample = parse_stat(stat, Some(1_700_000_000.0));
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.virtual_memory_bytes, Some(73_400_320));
        assert_eq!(sample.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(parse_stat("garbage", None), ProcessSample::default());
        assert_eq!(parse_stat("1 (x) S 1", None).cpu_seconds, None, "a short line reads as unknown");
    }

    #[test]
    fn the_resident_size_is_read_with_its_unit() {
        let status = "Name:\tferrofluid\nVmHWM:\t  70000 kB\nVmRSS:\t   68200 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(68_200));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(status_kib("VmRSS: lots\n", "VmRSS"), None);
    }

    #[test]
    fn boot_time_comes_from_the_btime_line() {
        assert_eq!(boot_time_seconds("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000.0));
        assert_eq!(boot_time_seconds("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_itself() {
        let sample = ProcessSample::read();
        assert!(sample.resident_memory_bytes.is_some_and(|bytes| bytes > 0), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|fds| fds >= 3), "{sample:?}");
    }
}
