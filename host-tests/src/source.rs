//! The reference source of truth (`meshguard serve-intended`), run in process
//! on 127.0.0.1 over a temporary directory, as tests and the demo need it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// Serves `DIR/<workload>/<filter>.json`; dropping it removes the directory
/// (the server thread then answers 404s until the process ends).
#[derive(Debug)]
pub struct SourceOfTruth {
    addr: SocketAddr,
    workload: String,
    dir: tempfile::TempDir,
}

impl SourceOfTruth {
    /// Starts a server for `workload`'s intended configs.
    pub fn start(workload: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("meshguard-intended-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join(workload))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        meshguard_cli::serve_intended::spawn(listener, dir.path().to_path_buf());
        Ok(Self {
            addr,
            workload: workload.into(),
            dir,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publishes `config` as the intended config of the workload's `filter`
    /// (written aside, then renamed: a poll never reads half a file).
    pub fn publish(&self, filter: &str, config: &str) -> anyhow::Result<()> {
        let path: PathBuf = self
            .dir
            .path()
            .join(&self.workload)
            .join(format!("{filter}.json"));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, config)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }
}
