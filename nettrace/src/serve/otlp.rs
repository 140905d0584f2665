//! The OTLP exporter: the same metrics as Prometheus, as OpenTelemetry instruments with
//! semantic-convention attribute names, pushed over OTLP/HTTP (protobuf) by the SDK's periodic
//! reader with the blocking reqwest client (no async runtime of ours).

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider, Temporality},
};
use rustc_hash::FxHashMap;
use tracer::{
    model::{ConnectionStats, Connections},
    telemetry::{CounterKind, Sample},
};

use super::series::{Aggregator, Kind, Label, Metric, Value};

/// Path of the metrics signal on an OTLP/HTTP collector.
const METRICS_PATH: &str = "/v1/metrics";

/// The collector URL for metrics: `endpoint` as given when it has a path, else with
/// `/v1/metrics` (the OTLP/HTTP default) appended.
pub fn metrics_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}{METRICS_PATH}")
    }
}

enum Instrument {
    Counter(Counter<u64>),
    FloatCounter(Counter<f64>),
    Gauge(Gauge<i64>),
    Histogram(Histogram<f64>),
}

/// The meter provider (its periodic reader pushes), the instruments, and this client's
/// aggregator.
pub struct OtlpExporter {
    provider: SdkMeterProvider,
    meter: Meter,
    instruments: FxHashMap<Metric, Instrument>,
    tracer: FxHashMap<&'static str, Instrument>,
    aggregator: Aggregator,
    series_dropped: Counter<u64>,
    reported_dropped: u64,
}

impl OtlpExporter {
    /// An exporter pushing to `endpoint` every `interval`, cumulative temporality (as
    /// Prometheus: a lost push loses no bytes).
    pub fn new(endpoint: &str, interval: Duration, max_series: usize) -> Result<Self, String> {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(metrics_url(endpoint))
            .with_temporality(Temporality::Cumulative)
            .build()
            .map_err(|err| format!("building the OTLP exporter: {err}"))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(Resource::builder().with_service_name("nettrace").build())
            .build();
        let meter = provider.meter("nettrace");
        let mut instruments = FxHashMap::default();
        for metric in Metric::ALL {
            let name = metric.otel_name();
            let instrument = match metric.kind() {
                Kind::Counter => Instrument::Counter(
                    meter
                        .u64_counter(name)
                        .with_unit(metric.unit())
                        .with_description(metric.help())
                        .build(),
                ),
                Kind::FloatCounter => Instrument::FloatCounter(
                    meter
                        .f64_counter(name)
                        .with_unit(metric.unit())
                        .with_description(metric.help())
                        .build(),
                ),
                Kind::Gauge => Instrument::Gauge(
                    meter
                        .i64_gauge(name)
                        .with_unit(metric.unit())
                        .with_description(metric.help())
                        .build(),
                ),
                Kind::Histogram => Instrument::Histogram(
                    meter
                        .f64_histogram(name)
                        .with_unit(metric.unit())
                        .with_description(metric.help())
                        // 50 µs to about 3.3 s, doubling (as the Prometheus histogram).
                        .with_boundaries((0..17).map(|i| 50e-6 * f64::from(1u32 << i)).collect())
                        .build(),
                ),
            };
            instruments.insert(metric, instrument);
        }
        let series_dropped = meter
            .u64_counter("nettrace.series.dropped")
            .with_description(
                "Metric updates refused because their series would have passed --max-series.",
            )
            .build();
        Ok(Self {
            provider,
            meter,
            instruments,
            tracer: FxHashMap::default(),
            aggregator: Aggregator::new(max_series),
            series_dropped,
            reported_dropped: 0,
        })
    }

    fn tracer_instrument(&mut self, sample: &Sample) -> &Instrument {
        let info = sample.info;
        let meter = &self.meter;
        self.tracer.entry(info.name).or_insert_with(|| {
            let name = format!("nettrace.tracer.{}", info.name);
            match info.kind {
                CounterKind::Gauge => {
                    Instrument::Gauge(meter.i64_gauge(name).with_description(info.doc).build())
                }
                CounterKind::Loss | CounterKind::Activity => {
                    Instrument::Counter(meter.u64_counter(name).with_description(info.doc).build())
                }
            }
        })
    }

    /// Adds one delta of this exporter's client; the next push carries it.
    pub fn apply(
        &mut self,
        conns: &Connections,
        names: &mut dyn FnMut(&ConnectionStats) -> Arc<str>,
    ) {
        for point in self.aggregator.points(conns, names) {
            let Some(instrument) = self.instruments.get(&point.key.metric) else {
                continue;
            };
            let attributes: Vec<KeyValue> = point
                .key
                .labels(Label::otel_name)
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(key, value)| KeyValue::new(key, value))
                .collect();
            match (instrument, point.value) {
                (Instrument::Counter(c), Value::Add(v)) => c.add(v, &attributes),
                (Instrument::FloatCounter(c), Value::AddF(v)) => c.add(v, &attributes),
                (Instrument::Gauge(g), Value::Set(v)) => g.record(v, &attributes),
                (Instrument::Histogram(h), Value::Observe(v)) => h.record(v, &attributes),
                // A metric's kind decides its values (series.rs): no other pair is built.
                _ => {}
            }
        }
        for sample in conns.counters.iter() {
            let kind = [KeyValue::new(
                "nettrace.counter.kind",
                sample.info.kind.as_str(),
            )];
            match self.tracer_instrument(sample) {
                Instrument::Gauge(g) => {
                    g.record(i64::try_from(sample.value).unwrap_or(i64::MAX), &[])
                }
                Instrument::Counter(c) => c.add(sample.value, &kind),
                Instrument::FloatCounter(_) | Instrument::Histogram(_) => {}
            }
        }
        let dropped = self.aggregator.refused();
        self.series_dropped
            .add(dropped.saturating_sub(self.reported_dropped), &[]);
        self.reported_dropped = dropped;
    }

    /// Pushes what is recorded now and stops the reader.
    pub fn shutdown(self) -> Result<(), String> {
        self.provider
            .shutdown()
            .map_err(|err| format!("the last OTLP push: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_path_is_added_only_to_a_bare_endpoint() {
        assert_eq!(metrics_url("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(
            metrics_url("http://c:4318/v1/metrics"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(metrics_url("http://c/otlp/m"), "http://c/otlp/m");
    }
}
