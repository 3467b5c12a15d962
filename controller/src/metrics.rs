//! Prometheus metrics: reconciles, errors and durations per kind; datasets per phase and cached bytes, read from the stores at scrape time; Fluid's own metric names; the leader gauge and the process.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::observe::Stores;

/// Label set with the reconciled kind (`Dataset`, `JuiceFSRuntime`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: String,
}

/// Label set of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The kind.
    pub kind: String,
    /// [`Error::metric_label`].
    pub error: String,
}

/// Label set of an executed effect.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `model::effect::Effect::verb`.
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatasetLabels {
    namespace: String,
    dataset: String,
}

/// Fluid's label set of a dataset metric: `dataset="<namespace>/<name>"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FluidDatasetLabels {
    dataset: String,
}

/// Fluid's label set of a runtime metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    /// `juicefs`.
    pub runtime_type: String,
    /// `<namespace>/<name>`.
    pub runtime: String,
}

impl RuntimeLabels {
    /// The labels of the runtime `namespace/name` of `runtime_type`.
    pub fn new(runtime_type: &str, namespace: &str, name: &str) -> Self {
        Self { runtime_type: runtime_type.to_string(), runtime: format!("{namespace}/{name}") }
    }
}

/// Every metric of the controller, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    effects: Family<VerbLabels, Counter>,
    leader: Gauge,
    setup_errors: Family<RuntimeLabels, Counter>,
    healthcheck_errors: Family<RuntimeLabels, Counter>,
    /// The runtimes the two families above have series for, by `(namespace, name)`: those no
    /// longer in the store are dropped at scrape time, however their deletion was seen.
    counted_runtimes: std::sync::Mutex<BTreeMap<(String, String), RuntimeLabels>>,
    stores: Stores,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; the store-derived gauges read `stores` on each scrape.
    pub fn new(stores: Stores) -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("ferrofluid");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms to ~16 s.
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let effects = Family::<VerbLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by kind and error", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time to observe, decide and execute, by kind",
            durations.clone(),
        );
        registry.register("effects", "Requests sent for model effects, by verb", effects.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the lease", leader.clone());
        // Fluid's names, unprefixed, so that its users' dashboards and alerts keep working.
        let setup_errors = Family::<RuntimeLabels, Counter>::default();
        let healthcheck_errors = Family::<RuntimeLabels, Counter>::default();
        root.register("runtime_setup_error", "Failed reconciles of a runtime not yet set up", setup_errors.clone());
        root.register(
            "runtime_sync_healthcheck_error",
            "Reconciles of a set-up runtime that found its workers not ready",
            healthcheck_errors.clone(),
        );
        root.register_collector(Box::new(DatasetCollector { stores: stores.clone() }));
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        Self {
            registry: root,
            reconciles,
            errors,
            durations,
            effects,
            leader,
            setup_errors,
            healthcheck_errors,
            counted_runtimes: Default::default(),
            stores,
        }
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records a failed reconcile of a runtime whose setup is not done (Fluid's
    /// `runtime_setup_error_total`).
    pub fn runtime_setup_failed(&self, runtime: &RuntimeLabels) {
        self.count_runtime(runtime);
        self.setup_errors.get_or_create(runtime).inc();
    }

    /// Records a reconcile of a set-up runtime whose workers were not ready (Fluid's
    /// `runtime_sync_healthcheck_error_total`).
    pub fn runtime_unhealthy(&self, runtime: &RuntimeLabels) {
        self.count_runtime(runtime);
        self.healthcheck_errors.get_or_create(runtime).inc();
    }

    fn count_runtime(&self, runtime: &RuntimeLabels) {
        let mut counted = self.counted_runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((namespace, name)) = runtime.runtime.split_once('/') {
            counted.insert((namespace.to_string(), name.to_string()), runtime.clone());
        }
    }

    /// Drops the series of runtimes the store no longer holds: a deleted runtime's reconcile
    /// may never run (kube-runtime drops triggers for objects gone from its store).
    fn forget_deleted_runtimes(&self) {
        use model::observe::ClusterView;
        let mut counted = self.counted_runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counted.retain(|(namespace, name), labels| {
            let lives = self.stores.runtime(namespace, name).is_some();
            if !lives {
                self.setup_errors.remove(labels);
                self.healthcheck_errors.remove(labels);
            }
            lives
        });
    }

    /// Records a finished reconcile of `kind`.
    pub fn reconciled(&self, kind: &str, duration: Duration) {
        let labels = KindLabels { kind: kind.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(duration.as_secs_f64());
    }

    /// Records a failed reconcile of `kind`.
    pub fn failed(&self, kind: &str, error: &Error) {
        let labels = ErrorLabels { kind: kind.to_string(), error: error.metric_label().to_string() };
        self.errors.get_or_create(&labels).inc();
    }

    /// Records one request sent for an effect with this verb.
    pub fn effect(&self, verb: &str) {
        self.effects.get_or_create(&VerbLabels { verb: verb.to_string() }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        self.forget_deleted_runtimes();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Dataset gauges computed from the stores when scraped, so they never drift from the cluster
/// and a deleted dataset disappears: ferrofluid's own (prefixed) and Fluid's names.
#[derive(Clone)]
struct DatasetCollector {
    stores: Stores,
}

impl fmt::Debug for DatasetCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatasetCollector")
    }
}

impl Collector for DatasetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut phases: BTreeMap<String, i64> = BTreeMap::new();
        let cached = Family::<DatasetLabels, Gauge>::default();
        let total_size = Family::<FluidDatasetLabels, Gauge>::default();
        let file_num = Family::<FluidDatasetLabels, Gauge>::default();
        for dataset in self.stores.datasets.state() {
            let status = dataset.status.as_ref();
            let phase = status.map_or("", |s| s.phase.as_str());
            *phases.entry(if phase.is_empty() { "None".to_string() } else { phase.to_string() }).or_default() += 1;
            let namespace = dataset.metadata.namespace.clone().unwrap_or_default();
            let name = dataset.metadata.name.clone().unwrap_or_default();
            let fluid_labels = FluidDatasetLabels { dataset: format!("{namespace}/{name}") };
            let bytes =
                status.and_then(|s| s.cache_states.get("cached")).and_then(|text| parse_human_bytes(text)).unwrap_or(0);
            cached.get_or_create(&DatasetLabels { namespace, dataset: name }).set(saturating_i64(bytes));
            let Some(status) = status else { continue };
            if let Some(bytes) = status.ufs_total.as_deref().and_then(parse_human_bytes) {
                total_size.get_or_create(&fluid_labels).set(saturating_i64(bytes));
            }
            if let Some(files) = status.file_num.as_deref().and_then(|text| text.trim().parse::<i64>().ok()) {
                file_num.get_or_create(&fluid_labels).set(files);
            }
        }
        let by_phase = Family::<PhaseLabels, Gauge>::default();
        for (phase, count) in phases {
            by_phase.get_or_create(&PhaseLabels { phase }).set(count);
        }
        let metric =
            encoder.encode_descriptor("ferrofluid_datasets", "Datasets, by phase", None, by_phase.metric_type())?;
        by_phase.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "ferrofluid_dataset_cached_bytes",
            "Bytes cached for each dataset, from status.cacheStates.cached",
            None,
            cached.metric_type(),
        )?;
        cached.encode(metric)?;
        let fluid = [
            (
                "dataset_ufs_total_size",
                "Total size of the dataset's underlying storage, in bytes (status.ufsTotal)",
                total_size,
            ),
            ("dataset_ufs_file_num", "Number of files in the dataset's underlying storage (status.fileNum)", file_num),
        ];
        for (name, help, family) in fluid {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads Fluid's human-readable sizes (`10.00GiB`, `0.00B`) back into bytes.
pub fn parse_human_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_suffix('B').unwrap_or(text);
    model::quantity::parse_bytes(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_parse_back() {
        assert_eq!(parse_human_bytes("0.00B"), Some(0));
        assert_eq!(parse_human_bytes("2.00GiB"), Some(2 << 30));
        assert_eq!(parse_human_bytes("512.00MiB"), Some(512 << 20));
        assert_eq!(parse_human_bytes("junk"), None);
    }
}
