//! A real Prometheus (Debian's `prometheus` package) scraping Envoy admin
//! endpoints on 127.0.0.1, queried through its HTTP API.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http::{self, Request};

/// The scrape job's `metric_relabel_configs` that store the native module's
/// metrics (Envoy exports them as `envoy_meshguard_<name>`) under the names
/// the Wasm build exports (`meshguard_<name>`), as docs/native.md gives it.
pub const NATIVE_RELABEL: &str = "    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'envoy_(meshguard_.*)'
        target_label: __name__
        replacement: '$1'
";

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `/stats/prometheus` of each admin address
    /// every second, with the relabel rule docs/native.md gives for the
    /// native module ([`NATIVE_RELABEL`]: its `envoy_meshguard_*` samples
    /// are stored under the Wasm build's names), so one set of queries,
    /// alerts and dashboards serves both builds.
    pub async fn start(targets: &[SocketAddr]) -> anyhow::Result<Self> {
        let binary =
            std::env::var_os("MESHGUARD_PROMETHEUS").unwrap_or_else(|| "prometheus".into());
        let dir = tempfile::Builder::new()
            .prefix("meshguard-prometheus-")
            .tempdir()?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    static_configs:\n      - targets: [{}]\n{NATIVE_RELABEL}",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        // Prometheus cannot report a port it picked itself: take a free one.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_file = dir.path().join("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_file)?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary:?} (run `make tools`)"))?;
        let mut prometheus = Self {
            child,
            addr,
            log_file,
            _dir: dir,
        };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", self.log());
            }
            if let Ok(resp) = http::send(self.addr, &Request::new("GET", "/-/ready")).await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Runs an instant query; returns the `data.result` array.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let resp = http::send(self.addr, &Request::new("GET", &path).host("prometheus")).await?;
        let doc = resp.json()?;
        if doc["status"] != "success" {
            bail!("query {promql:?} failed: {doc}");
        }
        Ok(doc["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Polls `promql` until `accept` holds for its result, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql).await?;
            if accept(&result) {
                return Ok(result);
            }
            if Instant::now() > deadline {
                bail!("{promql:?} never gave an accepted result; last: {result:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The numeric value of one sample of an instant-query result.
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
