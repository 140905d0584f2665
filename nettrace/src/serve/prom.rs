//! The Prometheus exporter: cumulative families fed by one client of the library, read at
//! every scrape, encoded in the text format by prometheus-client.

use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::text,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use rustc_hash::FxHashMap;
use tracer::{
    model::{ConnectionStats, Connections},
    telemetry::{CounterKind, Sample},
};

use super::series::{Aggregator, Kind, Label, Metric, Point, Value};

/// A series' labels: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;
/// The kind of a tracer counter, as a label.
type KindLabel = [(&'static str, &'static str); 1];

fn rtt_histogram() -> Histogram {
    // 50 µs (loopback) to about 3.3 s, doubling.
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

enum Family_ {
    Counter(Family<Labels, Counter>),
    FloatCounter(Family<Labels, Counter<f64, AtomicU64>>),
    Gauge(Family<Labels, Gauge>),
    Histogram(Family<Labels, Histogram, fn() -> Histogram>),
}

enum TracerMetric {
    Counter(Family<KindLabel, Counter>),
    Gauge(Gauge),
}

/// Every family, the registry that encodes them, and this client's aggregator.
pub struct PromExporter {
    registry: Registry,
    families: FxHashMap<Metric, Family_>,
    tracer: FxHashMap<&'static str, TracerMetric>,
    aggregator: Aggregator,
    /// Mirrors [`Aggregator::refused`].
    series_dropped: Counter,
    series: Gauge,
    scrapes: Counter,
}

impl PromExporter {
    /// The families of every traffic metric and of the tracer's counters `initial` (the names
    /// and kinds of [`tracer::Tracer::counters`]; a counter that appears later is added when
    /// first seen).
    pub fn new(max_series: usize, initial: &[Sample]) -> Self {
        let mut registry = Registry::default();
        let mut families = FxHashMap::default();
        for metric in Metric::ALL {
            let family = match metric.kind() {
                Kind::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    registry.register(metric.prom_name(), metric.help(), f.clone());
                    Family_::Counter(f)
                }
                Kind::FloatCounter => {
                    let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
                    registry.register(metric.prom_name(), metric.help(), f.clone());
                    Family_::FloatCounter(f)
                }
                Kind::Gauge => {
                    let f = Family::<Labels, Gauge>::default();
                    registry.register(metric.prom_name(), metric.help(), f.clone());
                    Family_::Gauge(f)
                }
                Kind::Histogram => {
                    let f = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                        rtt_histogram,
                    );
                    registry.register(metric.prom_name(), metric.help(), f.clone());
                    Family_::Histogram(f)
                }
            };
            families.insert(metric, family);
        }
        let series_dropped = Counter::default();
        registry.register(
            "nettrace_series_dropped",
            "Metric updates refused because their series would have passed --max-series.",
            series_dropped.clone(),
        );
        let series = Gauge::default();
        registry.register(
            "nettrace_series",
            "Series admitted under --max-series.",
            series.clone(),
        );
        let scrapes = Counter::default();
        registry.register(
            "nettrace_scrapes",
            "Scrapes served, each one read of the tracer.",
            scrapes.clone(),
        );
        let mut exporter = Self {
            registry,
            families,
            tracer: FxHashMap::default(),
            aggregator: Aggregator::new(max_series),
            series_dropped,
            series,
            scrapes,
        };
        for sample in initial {
            exporter.tracer_metric(sample);
        }
        exporter
    }

    /// The family of a tracer counter, registered on first sight.
    fn tracer_metric(&mut self, sample: &Sample) -> &TracerMetric {
        let info = sample.info;
        let registry = &mut self.registry;
        self.tracer.entry(info.name).or_insert_with(|| {
            let name = format!("nettrace_tracer_{}", info.name);
            match info.kind {
                CounterKind::Gauge => {
                    let g = Gauge::default();
                    registry.register(name, info.doc, g.clone());
                    TracerMetric::Gauge(g)
                }
                CounterKind::Loss | CounterKind::Activity => {
                    let f = Family::<KindLabel, Counter>::default();
                    registry.register(name, info.doc, f.clone());
                    TracerMetric::Counter(f)
                }
            }
        })
    }

    /// Adds one delta of this exporter's client.
    pub fn apply(
        &mut self,
        conns: &Connections,
        names: &mut dyn FnMut(&ConnectionStats) -> Arc<str>,
    ) {
        for point in self.aggregator.points(conns, names) {
            self.apply_point(&point);
        }
        for sample in conns.counters.iter() {
            match self.tracer_metric(sample) {
                TracerMetric::Gauge(g) => {
                    g.set(i64::try_from(sample.value).unwrap_or(i64::MAX));
                }
                TracerMetric::Counter(f) => {
                    f.get_or_create(&[("kind", sample.info.kind.as_str())])
                        .inc_by(sample.value);
                }
            }
        }
        let dropped = self.aggregator.refused();
        let already = self.series_dropped.get();
        self.series_dropped.inc_by(dropped.saturating_sub(already));
        self.series
            .set(i64::try_from(self.aggregator.series()).unwrap_or(i64::MAX));
        self.scrapes.inc();
    }

    fn apply_point(&self, point: &Point) {
        let Some(family) = self.families.get(&point.key.metric) else {
            return;
        };
        let labels = point.key.labels(Label::prom_name);
        match (family, point.value) {
            (Family_::Counter(f), Value::Add(v)) => {
                f.get_or_create(&labels).inc_by(v);
            }
            (Family_::FloatCounter(f), Value::AddF(v)) => {
                f.get_or_create(&labels).inc_by(v);
            }
            (Family_::Gauge(f), Value::Set(v)) => {
                f.get_or_create(&labels).set(v);
            }
            (Family_::Histogram(f), Value::Observe(v)) => {
                f.get_or_create(&labels).observe(v);
            }
            // A metric's kind decides its values (series.rs): no other pair is built.
            _ => {}
        }
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
