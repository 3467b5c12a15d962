//! Prometheus metrics: reconciles, errors and durations per kind; datasets per phase and cached bytes, read from the stores at scrape time.

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

/// Every metric of the controller, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    effects: Family<VerbLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; the store-derived gauges read `stores` on each scrape.
    pub fn new(stores: Stores) -> Self {
        let mut registry = Registry::with_prefix("ferrofluid");
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
        registry.register_collector(Box::new(StoreCollector { stores }));
        Self { registry, reconciles, errors, durations, effects }
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
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Gauges computed from the stores when scraped, so they never drift from the cluster.
#[derive(Clone)]
struct StoreCollector {
    stores: Stores,
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut phases: BTreeMap<String, i64> = BTreeMap::new();
        let cached = Family::<DatasetLabels, Gauge>::default();
        for dataset in self.stores.datasets.state() {
            let status = dataset.status.as_ref();
            let phase = status.map_or("", |s| s.phase.as_str());
            *phases.entry(if phase.is_empty() { "None".to_string() } else { phase.to_string() }).or_default() += 1;
            let bytes =
                status.and_then(|s| s.cache_states.get("cached")).and_then(|text| parse_human_bytes(text)).unwrap_or(0);
            let labels = DatasetLabels {
                namespace: dataset.metadata.namespace.clone().unwrap_or_default(),
                dataset: dataset.metadata.name.clone().unwrap_or_default(),
            };
            cached.get_or_create(&labels).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let by_phase = Family::<PhaseLabels, Gauge>::default();
        for (phase, count) in phases {
            by_phase.get_or_create(&PhaseLabels { phase }).set(count);
        }
        let metric = encoder.encode_descriptor("datasets", "Datasets, by phase", None, by_phase.metric_type())?;
        by_phase.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "dataset_cached_bytes",
            "Bytes cached for each dataset, from status.cacheStates.cached",
            None,
            cached.metric_type(),
        )?;
        cached.encode(metric)
    }
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
