//! CloudWatch Embedded Metric Format: a metric is a JSON line on stdout with an `_aws`
//! header; CloudWatch Logs turns it into metrics, with no API call from the function.
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>)
//!
//! Dimensions are chosen for cardinality: every metric has `Service` (the stack), the run
//! metrics add `RunKind` (2 values) and the outcome count adds `Outcome` (9 values).
//! `TenantId`, `JobId` and `RunId` are *properties*: they are in the log line, so Logs
//! Insights can find the job behind a spike, but they create no metric series. The
//! dispatcher's per-job gauges can also be published per tenant and job
//! (`METRICS_JOB_DIMENSIONS=true`) where the number of jobs is small.

use serde_json::{json, Map, Value};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Where metrics go: the namespace, the `Service` dimension's value, and whether per-job
/// dimensions are allowed.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub namespace: String,
    pub service: String,
    pub job_dimensions: bool,
}

/// One EMF document: a set of metrics sharing dimensions and properties.
#[derive(Debug, Clone)]
pub struct Doc {
    dimensions: Vec<(String, String)>,
    /// Extra dimension sets beyond the base one (names must be among `dimensions`).
    extra_sets: Vec<Vec<String>>,
    base_set: Vec<String>,
    metrics: Vec<(String, Unit, f64)>,
    properties: Map<String, Value>,
}

impl Metrics {
    pub fn new(
        namespace: impl Into<String>,
        service: impl Into<String>,
        job_dimensions: bool,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            job_dimensions,
        }
    }

    /// A document with the `Service` dimension.
    pub fn doc(&self) -> Doc {
        Doc {
            dimensions: vec![("Service".into(), self.service.clone())],
            extra_sets: Vec::new(),
            base_set: vec!["Service".into()],
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// The JSON line of `doc` at `timestamp_ms`.
    pub fn render(&self, doc: &Doc, timestamp_ms: i64) -> String {
        let mut sets = vec![doc.base_set.clone()];
        sets.extend(doc.extra_sets.iter().cloned());
        let definitions: Vec<Value> = doc
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": sets,
                    "Metrics": definitions,
                }]
            }),
        );
        for (k, v) in &doc.properties {
            root.insert(k.clone(), v.clone());
        }
        for (name, value) in &doc.dimensions {
            root.insert(name.clone(), json!(value));
        }
        for (name, _, value) in &doc.metrics {
            root.insert(name.clone(), json!(value));
        }
        Value::Object(root).to_string()
    }

    /// Writes `doc` to stdout as one line (a locked write, so it never interleaves with a
    /// log line).
    pub fn emit(&self, doc: &Doc) {
        if doc.metrics.is_empty() {
            return;
        }
        let line = self.render(doc, chrono::Utc::now().timestamp_millis());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

impl Doc {
    /// Adds a dimension to the base dimension set (every metric is published under it).
    pub fn dimension(mut self, name: &str, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self.base_set.push(name.into());
        self
    }

    /// Also publishes every metric under the base set plus these dimensions.
    pub fn also_by(mut self, extra: &[(&str, String)]) -> Self {
        let mut set = self.base_set.clone();
        for (name, value) in extra {
            self.dimensions.push(((*name).into(), value.clone()));
            set.push((*name).into());
        }
        self.extra_sets.push(set);
        self
    }

    pub fn metric(mut self, name: &str, unit: Unit, value: f64) -> Self {
        self.metrics.push((name.into(), unit, value));
        self
    }

    pub fn count(self, name: &str, value: u64) -> Self {
        self.metric(name, Unit::Count, value as f64)
    }

    /// A searchable field of the line that is not a dimension.
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_emf_envelope_with_dimensions_metrics_and_properties() {
        let m = Metrics::new("CrmExport", "stack-a", false);
        let doc = m
            .doc()
            .dimension("RunKind", "export")
            .also_by(&[("Outcome", "halted".to_string())])
            .count("RecordsExported", 7)
            .metric("RunDuration", Unit::Milliseconds, 1234.0)
            .property("TenantId", "acme");
        let v: Value = serde_json::from_str(&m.render(&doc, 1_700_000_000_000)).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(cw["Namespace"], "CrmExport");
        assert_eq!(
            cw["Dimensions"],
            json!([["Service", "RunKind"], ["Service", "RunKind", "Outcome"]])
        );
        assert_eq!(
            cw["Metrics"],
            json!([{"Name":"RecordsExported","Unit":"Count"},{"Name":"RunDuration","Unit":"Milliseconds"}])
        );
        // Every dimension named in a set has a value at the top level (EMF rejects the
        // document otherwise), and so does every metric.
        assert_eq!(v["Service"], "stack-a");
        assert_eq!(v["RunKind"], "export");
        assert_eq!(v["Outcome"], "halted");
        assert_eq!(v["RecordsExported"], 7.0);
        assert_eq!(v["RunDuration"], 1234.0);
        assert_eq!(v["TenantId"], "acme");
    }
}
