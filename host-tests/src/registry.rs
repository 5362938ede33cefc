//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution
//! registry) on 127.0.0.1 with its own config and storage in a temp dir, and
//! `skopeo` to push layouts to it and pull them back. Killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use crate::http::{self, Request};

/// A running registry; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    log_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Finds a tool on PATH, or explains how to get it.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` is not installed (run `make tools`)"))
}

impl Registry {
    pub async fn start() -> anyhow::Result<Self> {
        let binary = tool("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("meshguard-registry-")
            .tempdir()?;
        // The registry cannot report a port it picked itself: take a free one.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config)?;
        let log_file = dir.path().join("registry.log");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_file)?))
            .kill_on_drop(true)
            .spawn()
            .context("starting docker-registry")?;
        let mut registry = Self {
            child,
            addr,
            log_file,
            _dir: dir,
        };
        registry.wait_ready().await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("docker-registry exited ({status}):\n{}", self.log());
            }
            if let Ok(resp) = http::send(self.addr, &Request::new("GET", "/v2/")).await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("docker-registry not ready:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// `docker://127.0.0.1:PORT/<repository>:<tag>`
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("docker://{}/{repository}:{tag}", self.addr)
    }
}

/// Runs `skopeo` with an accept-anything signature policy (the test's own
/// registry, plain HTTP) and returns its stdout.
pub async fn skopeo(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new(tool("skopeo")?)
        .arg("--insecure-policy")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running skopeo")?;
    if !output.status.success() {
        bail!(
            "skopeo {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// `oci:<dir>:<tag>`
pub fn oci_reference(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}
