//! Metrics: per-core counters and latency histograms, merged at scrape time.
//!
//! Each shard keeps its own [`CoreMetrics`] in plain `Cell`s and histograms
//! (no atomics, no sharing on the hot path). A scrape of the admin endpoint
//! ([`http`]) asks every shard over the mesh for a snapshot of [`Sample`]s,
//! labelled with the shard, and renders them as Prometheus text, grouped by
//! family.

pub mod http;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;

use histogram::Histogram;

/// Latency histograms hold microseconds up to 2^36 (about 19 hours), with 2^-4 relative precision.
pub fn new_histogram() -> Histogram {
    Histogram::new(4, 36).expect("valid histogram parameters")
}

/// Per-API request statistics on one core.
pub struct ApiStats {
    pub count: u64,
    pub errors: u64,
    pub latency_us: Histogram,
}

/// Counters of one core. Only that core touches them.
pub struct CoreMetrics {
    pub requests: RefCell<BTreeMap<i16, ApiStats>>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    /// Connections closed at once because this core's share of `max.connections` was spent.
    pub connections_rejected_max: Cell<u64>,
    /// Connections closed at once because this core's share of the address's `max.connections.per.ip` was spent.
    pub connections_rejected_per_ip: Cell<u64>,
    /// Connections closed after `connections.max.idle.ms` without traffic.
    pub connections_idle_closed: Cell<u64>,
    pub mesh_sent: Cell<u64>,
    pub mesh_received: Cell<u64>,
    /// Probe wake-ups that came later than [`STALL_LATENESS_US`]: something held the reactor.
    pub stalls: Cell<u64>,
    /// How late the probe's timer fired, in microseconds.
    pub wakeup_lateness_us: RefCell<Histogram>,
}

/// The probe sleeps this long, again and again, and measures how late it wakes.
pub const STALL_PROBE_INTERVAL_MS: u64 = 10;
/// A wake-up later than this counts as a reactor stall.
pub const STALL_LATENESS_US: u64 = 10_000;

/// Measures reactor responsiveness on this core until shutdown: a timer that
/// fires late means a task kept the reactor busy (or the core was taken away).
pub async fn stall_probe(shard: std::rc::Rc<crate::shard::Shard>) {
    let interval = std::time::Duration::from_millis(STALL_PROBE_INTERVAL_MS);
    while !shard.shutting_down.get() {
        let t = std::time::Instant::now();
        glommio::timer::sleep(interval).await;
        let late = t.elapsed().saturating_sub(interval).as_micros() as u64;
        let _ = shard.metrics.wakeup_lateness_us.borrow_mut().increment(late);
        if late > STALL_LATENESS_US {
            add(&shard.metrics.stalls, 1);
        }
    }
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            requests: RefCell::new(BTreeMap::new()),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            connections_open: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_rejected_max: Cell::new(0),
            connections_rejected_per_ip: Cell::new(0),
            connections_idle_closed: Cell::new(0),
            mesh_sent: Cell::new(0),
            mesh_received: Cell::new(0),
            stalls: Cell::new(0),
            wakeup_lateness_us: RefCell::new(new_histogram()),
        }
    }
}

pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl CoreMetrics {
    pub fn record_request(&self, api_key: i16, latency_us: u64, failed: bool) {
        let mut reqs = self.requests.borrow_mut();
        let s = reqs.entry(api_key).or_insert_with(|| ApiStats { count: 0, errors: 0, latency_us: new_histogram() });
        s.count += 1;
        s.errors += failed as u64;
        let _ = s.latency_us.increment(latency_us);
    }
}

/// One metric sample, `Send` so it can cross the mesh.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
}

#[derive(Debug, Clone)]
pub enum Value {
    Number(f64),
    /// Quantiles (0..1, value), count, sum.
    Summary(Vec<(f64, f64)>, u64, f64),
}

pub fn sample(name: &'static str, kind: Kind, help: &'static str, labels: Vec<(&'static str, String)>, v: f64) -> Sample {
    Sample { name, kind, help, labels, value: Value::Number(v) }
}

/// Summarises a histogram (p50, p90, p99, p99.9, max) in the unit it was recorded in, scaled by `scale`.
pub fn summary(name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, h: &Histogram, scale: f64) -> Sample {
    let count: u64 = h.into_iter().map(|b| b.count()).sum();
    let sum: f64 = h.into_iter().map(|b| b.count() as f64 * (b.start() as f64 + b.end() as f64) / 2.0).sum();
    let qs = [50.0, 90.0, 99.0, 99.9, 100.0];
    let values = match h.percentiles(&qs) {
        Ok(Some(v)) => v.into_iter().map(|(p, b)| (p / 100.0, b.end() as f64 * scale)).collect(),
        _ => Vec::new(),
    };
    Sample { name, kind: Kind::Summary, help, labels, value: Value::Summary(values, count, sum * scale) }
}

impl CoreMetrics {
    /// This core's samples, labelled with its shard id.
    pub fn samples(&self, shard: usize) -> Vec<Sample> {
        let l = || vec![("shard", shard.to_string())];
        let mut out = vec![
            sample("corestream_bytes_in_total", Kind::Counter, "Request bytes read from client sockets.", l(), self.bytes_in.get() as f64),
            sample("corestream_bytes_out_total", Kind::Counter, "Response bytes written to client sockets.", l(), self.bytes_out.get() as f64),
            sample("corestream_connections", Kind::Gauge, "Open client connections.", l(), self.connections_open.get() as f64),
            sample("corestream_connections_accepted_total", Kind::Counter, "Client connections accepted (including those closed at once over a connection limit).", l(), self.connections_accepted.get() as f64),
            sample(
                "corestream_connections_rejected_total",
                Kind::Counter,
                "Connections closed at once because a connection limit (this core's share of it) was reached.",
                vec![("shard", shard.to_string()), ("limit", "max.connections".to_string())],
                self.connections_rejected_max.get() as f64,
            ),
            sample(
                "corestream_connections_rejected_total",
                Kind::Counter,
                "Connections closed at once because a connection limit (this core's share of it) was reached.",
                vec![("shard", shard.to_string()), ("limit", "max.connections.per.ip".to_string())],
                self.connections_rejected_per_ip.get() as f64,
            ),
            sample("corestream_connections_idle_closed_total", Kind::Counter, "Connections closed after connections.max.idle.ms without traffic.", l(), self.connections_idle_closed.get() as f64),
            sample("corestream_mesh_messages_sent_total", Kind::Counter, "Requests sent to other cores over the cross-core mesh.", l(), self.mesh_sent.get() as f64),
            sample("corestream_mesh_messages_received_total", Kind::Counter, "Requests received from other cores over the cross-core mesh.", l(), self.mesh_received.get() as f64),
            sample("corestream_reactor_stalls_total", Kind::Counter, "Timer wake-ups more than 10 ms late: the reactor was held.", l(), self.stalls.get() as f64),
            summary("corestream_reactor_wakeup_lateness_seconds", "How late a 10 ms timer fires on this core.", l(), &self.wakeup_lateness_us.borrow(), 1e-6),
        ];
        for (key, s) in self.requests.borrow().iter() {
            let api = kafka_protocol::messages::ApiKey::try_from(*key).map(|k| format!("{k:?}")).unwrap_or_else(|_| key.to_string());
            let labels = || vec![("shard", shard.to_string()), ("api", api.clone())];
            out.push(sample("corestream_requests_total", Kind::Counter, "Kafka requests handled, by API.", labels(), s.count as f64));
            out.push(sample("corestream_request_errors_total", Kind::Counter, "Kafka requests that closed the connection, by API.", labels(), s.errors as f64));
            out.push(summary("corestream_request_latency_seconds", "Time from a request's arrival to its response being ready.", labels(), &s.latency_us, 1e-6));
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Renders samples as Prometheus text exposition format, one HELP/TYPE per family.
pub fn render(samples: &[Sample]) -> String {
    let mut families: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        families.entry(s.name).or_default().push(s);
    }
    let mut out = String::new();
    for (name, list) in families {
        let first = list[0];
        let kind = match first.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        };
        let _ = writeln!(out, "# HELP {name} {}", first.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in list {
            match &s.value {
                Value::Number(v) => {
                    let _ = writeln!(out, "{name}{} {v}", labels_text(&s.labels, None));
                }
                Value::Summary(qs, count, sum) => {
                    for (q, v) in qs {
                        let q = format!("{q:.4}");
                        let q = q.trim_end_matches('0').trim_end_matches('.');
                        let _ = writeln!(out, "{name}{} {v}", labels_text(&s.labels, Some(("quantile", q.to_string()))));
                    }
                    let _ = writeln!(out, "{name}_sum{} {sum}", labels_text(&s.labels, None));
                    let _ = writeln!(out, "{name}_count{} {count}", labels_text(&s.labels, None));
                }
            }
        }
    }
    out
}

/// Resident memory of the process, from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_once_with_merged_shards() {
        let a = CoreMetrics::default();
        let b = CoreMetrics::default();
        a.bytes_in.set(10);
        b.bytes_in.set(5);
        a.record_request(0, 120, false);
        a.record_request(0, 480, true);
        let mut all = a.samples(0);
        all.extend(b.samples(1));
        let text = render(&all);
        assert_eq!(text.matches("# TYPE corestream_bytes_in_total counter").count(), 1);
        assert!(text.contains("corestream_bytes_in_total{shard=\"0\"} 10"));
        assert!(text.contains("corestream_bytes_in_total{shard=\"1\"} 5"));
        assert!(text.contains("corestream_requests_total{shard=\"0\",api=\"Produce\"} 2"));
        assert!(text.contains("corestream_request_errors_total{shard=\"0\",api=\"Produce\"} 1"));
        assert!(text.contains("corestream_request_latency_seconds_count{shard=\"0\",api=\"Produce\"} 2"));
        // p50 lies in the bucket of the first sample: between 120 and 128 microseconds.
        let p50 = text
            .lines()
            .find(|l| l.starts_with("corestream_request_latency_seconds{shard=\"0\",api=\"Produce\",quantile=\"0.5\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("p50 line");
        assert!((0.000120..0.000130).contains(&p50), "{p50}");
        assert!(text.contains("quantile=\"0.999\""), "{text}");
        assert!(text.contains("quantile=\"1\""), "{text}");
    }
}
