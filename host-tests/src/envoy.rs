//! One Envoy process: started from a generated JSON bootstrap, polled until
//! ready, killed on drop. Its log is kept in a file and shown when it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use meshguard_core::metrics;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::http::{self, Request};

/// How long Envoy may take to load its wasm modules and bind its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Envoy.
#[derive(Debug)]
pub struct Envoy {
    name: String,
    child: Child,
    admin: SocketAddr,
    log_file: PathBuf,
}

/// The `stats_config` every meshguard Envoy needs: the tag extractors that
/// turn `name.tag=.=value;.;` into Prometheus labels (Istio: `extraStatTags`).
pub fn stats_config() -> Value {
    let tags: Vec<Value> = metrics::TAG_NAMES
        .iter()
        .map(|tag| json!({"tag_name": tag, "regex": metrics::tag_regex(tag)}))
        .collect();
    json!({"stats_tags": tags})
}

/// Tests log wasm and http at debug; `MESHGUARD_ENVOY_LOG=production` runs
/// Envoy at its production default (info), as benchmarks must.
fn log_levels() -> Vec<&'static str> {
    match std::env::var("MESHGUARD_ENVOY_LOG").as_deref() {
        Ok("production") => vec!["--log-level", "info"],
        _ => vec![
            "--log-level",
            "info",
            "--component-log-level",
            "wasm:debug,dynamic_modules:debug,http:debug",
        ],
    }
}

impl Envoy {
    /// Writes `bootstrap` (admin is added here) to `dir` and starts Envoy on
    /// it with one worker thread.
    pub async fn start(name: &str, dir: &Path, bootstrap: Value) -> anyhow::Result<Self> {
        Self::start_with_workers(name, dir, bootstrap, 1).await
    }

    /// As [`Envoy::start`], with `workers` worker threads (`--concurrency`;
    /// Istio's sidecar default is 2). Envoy balances connections, not
    /// requests, across workers: see [`Envoy::worker_connections`].
    pub async fn start_with_workers(
        name: &str,
        dir: &Path,
        bootstrap: Value,
        workers: u32,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(name, dir, bootstrap, workers, &[]).await
    }

    /// As [`Envoy::start_with_workers`], with `env` added to the process
    /// environment (the native module's trust settings and search path).
    pub async fn start_with_env(
        name: &str,
        dir: &Path,
        mut bootstrap: Value,
        workers: u32,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let admin_path = dir.join(format!("{name}.admin"));
        let log_file = dir.join(format!("{name}.log"));
        let config_file = dir.join(format!("{name}.json"));
        bootstrap["admin"] = json!({
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        });
        std::fs::write(&config_file, serde_json::to_vec_pretty(&bootstrap)?)?;
        let log = std::fs::File::create(&log_file)?;
        let child = Command::new(crate::envoy_binary()?)
            .arg("-c")
            .arg(&config_file)
            .args(["--disable-hot-restart", "--concurrency"])
            .arg(workers.max(1).to_string())
            // As Istio's pilot-agent starts every sidecar: a listener that is
            // replaced drains its connections at once (HTTP/1 `connection:
            // close` on the next response, HTTP/2 GOAWAY), within 45 s.
            .args(["--drain-strategy", "immediate", "--drain-time-s", "45"])
            .args(log_levels())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawning envoy")?;
        let mut envoy = Self {
            name: name.into(),
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_file,
        };
        envoy.wait_ready(&admin_path).await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self, admin_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{}: Envoy exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if self.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(admin_path) {
                    if let Ok(addr) = text.trim().parse() {
                        self.admin = addr;
                    }
                }
            }
            if self.admin.port() != 0 {
                if let Ok(resp) = http::send(self.admin, &Request::new("GET", "/ready")).await {
                    if resp.status == 200 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: Envoy not ready after {START_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The bound address of a listener declared with port 0.
    pub async fn listener(&self, listener: &str) -> anyhow::Result<SocketAddr> {
        let resp = self.admin_get("/listeners?format=json").await?;
        let doc = resp.json()?;
        let statuses = doc["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for status in statuses {
            if status["name"] == listener {
                let sa = &status["local_address"]["socket_address"];
                let ip = sa["address"].as_str().unwrap_or("127.0.0.1");
                let port = sa["port_value"].as_u64().unwrap_or(0);
                return Ok(format!("{ip}:{port}").parse()?);
            }
        }
        bail!("{}: no listener {listener} in {doc}", self.name)
    }

    /// The process id (benchmarks read its CPU time and memory from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The admin address (for scrapers).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Polls a Prometheus sample until `accept` holds, or fails after `timeout`
    /// with the last value and the log. Returns the accepted value.
    pub async fn wait_for_metric(
        &self,
        sample: &str,
        timeout: Duration,
        accept: impl Fn(Option<u64>) -> bool,
    ) -> anyhow::Result<Option<u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(sample).await?;
            if accept(value) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {sample} stayed at {value:?} for {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<http::Response> {
        http::send(self.admin, &Request::new("GET", path)).await
    }

    /// `/stats/prometheus` text. The native module's metrics, which Envoy
    /// exports in its own namespace (`envoy_meshguard_<name>`), are read
    /// under the names the Wasm build exports (`meshguard_<name>`), so that
    /// every suite asserts the same samples in both builds
    /// ([`crate::mesh::Build`]; `tests/native.rs` asserts the native names
    /// themselves on the raw text).
    pub async fn prometheus(&self) -> anyhow::Result<String> {
        let text = self.admin_get("/stats/prometheus").await?.text();
        Ok(text
            .lines()
            .map(|line| {
                line.strip_prefix("envoy_meshguard_")
                    .map(|rest| format!("meshguard_{rest}"))
                    .or_else(|| {
                        line.strip_prefix("# TYPE envoy_meshguard_")
                            .map(|rest| format!("# TYPE meshguard_{rest}"))
                    })
                    .unwrap_or_else(|| line.to_owned())
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The value of one Prometheus sample, e.g.
    /// `meshguard_identity_requests_total{decision="denied",reason="mtls_required"}`.
    /// A sample that is not exported yet reads as `None`.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<Option<u64>> {
        let text = self.prometheus().await?;
        // Envoy writes a sample without labels as `name{}`.
        let bare = format!("{sample}{{}}");
        Ok(text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample || name == bare)
                .then(|| value.parse().ok())
                .flatten()
        }))
    }

    /// A counter or gauge from `/stats` by its Envoy name (0 when absent).
    pub async fn stat(&self, name: &str) -> anyhow::Result<u64> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await?
            .text();
        Ok(text
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0))
    }

    /// The sum of every counter or gauge from `/stats` named `suffix` or
    /// ending in `.{suffix}` (e.g. `upstream_rq_retry` over all clusters).
    pub async fn stat_sum(&self, suffix: &str) -> anyhow::Result<u64> {
        let pattern = format!("{}$", suffix.replace('.', "\\."));
        let text = self
            .admin_get(&format!("/stats?filter={pattern}"))
            .await?
            .text();
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                (name == suffix || name.ends_with(&format!(".{suffix}")))
                    .then(|| value.trim().parse::<u64>().ok())
                    .flatten()
            })
            .sum())
    }

    /// Connections each worker thread accepted on the listener whose
    /// `stat_prefix` is `listener` (Envoy's per-worker
    /// `listener.<stat_prefix>.worker_<n>.downstream_cx_total`), indexed by
    /// worker: the proof that a worker served, since Envoy hands each
    /// connection to one worker.
    pub async fn worker_connections(&self, listener: &str) -> anyhow::Result<Vec<u64>> {
        let prefix = format!("listener.{listener}.worker_");
        let text = self
            .admin_get(&format!("/stats?filter=^{}", prefix.replace('.', "\\.")))
            .await?
            .text();
        let mut counts = Vec::new();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            let Some(worker) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".downstream_cx_total"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if counts.len() <= worker {
                counts.resize(worker + 1, 0);
            }
            counts[worker] = value.trim().parse().unwrap_or(0);
        }
        Ok(counts)
    }

    /// Calls `send(i)` for fresh connections to the listener whose
    /// `stat_prefix` is `listener`, `per_round` at once, round after round
    /// until each of the `workers` worker threads accepted at least one of
    /// this call's connections (so every worker served one of its requests),
    /// or fails after 20 rounds. Returns each response with its `i`, in
    /// sending order. `send` must open a connection of its own.
    pub async fn send_on_every_worker<F, Fut>(
        &self,
        listener: &str,
        workers: u32,
        per_round: usize,
        send: F,
    ) -> anyhow::Result<Vec<(usize, http::Response)>>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<http::Response>>,
    {
        let before = self.worker_connections(listener).await?;
        let mut answers = Vec::new();
        let mut next = 0;
        for _ in 0..20 {
            let sent = (next..next + per_round).map(|i| {
                let response = send(i);
                async move { (i, response.await) }
            });
            next += per_round;
            for (i, resp) in futures_util::future::join_all(sent).await {
                answers.push((i, resp?));
            }
            let now = self.worker_connections(listener).await?;
            let served = now
                .iter()
                .enumerate()
                .filter(|(w, n)| **n > before.get(*w).copied().unwrap_or(0))
                .count();
            if now.len() >= workers as usize && served == now.len() {
                return Ok(answers);
            }
        }
        bail!(
            "{}: not every worker accepted a connection on {listener} in 20 rounds of {per_round}: {:?} -> {:?}",
            self.name,
            before,
            self.worker_connections(listener).await?
        )
    }

    /// The log so far. Lossy: hostile request bytes end up in debug lines,
    /// and a strict UTF-8 read would turn the whole log into "" (an absence
    /// check on it could then never fail).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle` (log lines are flushed
    /// asynchronously by Envoy), or fails with the log.
    pub async fn wait_for_log(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {needle:?} never appeared in the log:\n{log}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The lines of an Envoy log that show a wasm VM crashing: a trap in any
/// callback (the release modules abort on a panic without a message, so the
/// trap is what shows), or a panic message from a module that keeps them.
/// `failure_strategies.rs` proves it finds a real crash.
pub fn vm_crashes(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("panicked")
                || (l.contains("Function: proxy_") && l.contains(" failed: Uncaught "))
        })
        .collect()
}
