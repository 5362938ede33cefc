//! A source of truth as fleets run it: signed intended-state documents
//! (`meshguard publish`) in a directory, served by the reference server
//! (`meshguard serve-intended`) on 127.0.0.1. Tests also write raw bytes there
//! to play an attacker who answers on the source-of-truth cluster.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use meshguard_cli::serve_intended::{self, Log};
use meshguard_core::integrity::{fingerprint, sign_release, IntendedDocument, Release};

/// The workload the test meshes' server sidecar is (its node metadata).
pub const WORKLOAD: &str = "default/backend";
/// The release key's ID in the tests' `MESHGUARD_TRUSTED_KEYS`.
pub const KEY_ID: &str = "release";

/// The tests' release key (the pipeline's signing key).
pub fn release_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// `ID=BASE64` for `MESHGUARD_TRUSTED_KEYS`.
pub fn trusted_key_entry(id: &str, key: &SigningKey) -> String {
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    format!("{id}={public}")
}

/// The proxy-level environment of a sidecar that asks for integrity: the
/// release key trusted and required, and the source of truth on `cluster`
/// (one path for every filter, `{filter}` filled in by the sidecar), polled
/// every `poll_ms`.
pub fn trust_env(cluster: &str, poll_ms: u64, on_drift: &str) -> Vec<(String, String)> {
    vec![
        (
            "MESHGUARD_TRUSTED_KEYS".into(),
            trusted_key_entry(KEY_ID, &release_key()),
        ),
        ("MESHGUARD_REQUIRE_SIGNATURE".into(), "true".into()),
        ("MESHGUARD_ON_DRIFT".into(), on_drift.into()),
        ("MESHGUARD_HEALTH_PATHS".into(), "/healthz".into()),
        (
            "MESHGUARD_SOURCE_OF_TRUTH".into(),
            format!(
                r#"{{"cluster": "{cluster}", "path": "{}", "poll_interval_ms": {poll_ms}, "timeout_ms": {}}}"#,
                SourceOfTruth::path("{filter}"),
                (poll_ms / 2).min(2_000)
            ),
        ),
    ]
}

/// `config` signed with the release key for `filter` of [`WORKLOAD`] at `serial`.
pub fn signed(filter: &str, serial: u64, config: &str) -> String {
    let release = Release {
        filter: filter.into(),
        workloads: vec![WORKLOAD.into()],
        serial,
        not_before: None,
        not_after: None,
        services: None,
    };
    signed_with(config, &release, KEY_ID, &release_key())
}

/// `config` signed for `release` with any key.
pub fn signed_with(config: &str, release: &Release, key_id: &str, key: &SigningKey) -> String {
    let bytes = sign_release(config.as_bytes(), release, key_id, key).expect("signable config");
    String::from_utf8(bytes).expect("JSON is UTF-8")
}

/// The document saying `config` is what `filter` of [`WORKLOAD`] should run, for an hour.
pub fn intended(filter: &str, config: &str) -> IntendedDocument {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    // As `meshguard publish` writes it: the version, and for the combined
    // plugin each section's fingerprint.
    let sections = (filter == "meshguard").then(|| {
        let loaded = meshguard_core::integrity::load(
            config.as_bytes(),
            &meshguard_core::integrity::IntegrityEnv::default(),
        )
        .expect("a loadable config");
        meshguard_core::plugin::section_fingerprints(
            &loaded.filter_config,
            meshguard_core::plugin::Shape::Combined,
        )
        .expect("a combined config")
        .into_iter()
        .map(|(section, fp)| (section.as_str().to_owned(), fp))
        .collect()
    });
    IntendedDocument {
        filter: filter.into(),
        workload: WORKLOAD.into(),
        fingerprint: fingerprint(config.as_bytes()).expect("a JSON object"),
        config_version: value
            .get("config_version")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        expires: now.as_secs() + 3600,
        issued: u64::try_from(now.as_millis()).expect("ms fit"),
        sections,
    }
}

/// Serves `DIR/<namespace>/<workload>/<filter>.json`; dropping it removes the
/// directory (the server thread then answers 404s until the process ends).
#[derive(Debug)]
pub struct SourceOfTruth {
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl SourceOfTruth {
    /// Logs one line per request to standard error (the test's output).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_log(Log::Stderr)
    }

    /// Logs one line per request to `log_file` (appended).
    pub fn start_logging_to(log_file: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_with_log(Log::to_file(log_file)?)
    }

    fn start_with_log(log: Log) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("meshguard-intended-")
            .tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        serve_intended::spawn_with_log(listener, dir.path().to_path_buf(), log);
        Ok(Self { addr, dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory `meshguard publish` writes (what any static server serves).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The request path the sidecar polls for `filter` of [`WORKLOAD`].
    pub fn path(filter: &str) -> String {
        format!("/v1/intended/{WORKLOAD}/{filter}")
    }

    /// Publishes a signed document, as `meshguard publish` does.
    pub fn publish(
        &self,
        document: &IntendedDocument,
        key_id: &str,
        key: &SigningKey,
    ) -> anyhow::Result<()> {
        meshguard_cli::publish::write_document(self.dir.path(), document, key_id, key)?;
        Ok(())
    }

    /// Publishes, signed with the release key, that `filter` should run `config`.
    pub fn publish_config(&self, filter: &str, config: &str) -> anyhow::Result<()> {
        self.publish(&intended(filter, config), KEY_ID, &release_key())
    }

    /// Puts `bytes` where the sidecar polls `filter` (an attacker's answer).
    pub fn publish_raw(&self, filter: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path: PathBuf = self
            .dir
            .path()
            .join(WORKLOAD)
            .join(format!("{filter}.json"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }
}

/// Debian's stock nginx (`apt-get install nginx-light`) serving a published
/// directory under `/v1/intended/`, as a fleet would from any static server.
/// Killed on drop.
#[derive(Debug)]
pub struct Nginx {
    addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Where Debian installs nginx.
pub const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    pub fn serve(published: &std::path::Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            std::path::Path::new(NGINX).exists(),
            "{NGINX} is missing: apt-get install nginx-light"
        );
        let dir = tempfile::Builder::new()
            .prefix("meshguard-nginx-")
            .tempdir()?;
        // A free port (released just before nginx binds it).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let d = dir.path().display();
        let root = published.display();
        let config = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n\
             location /v1/intended/ {{\n      root {root};\n      default_type application/json;\n\
             rewrite ^/v1/intended/(.*)$ /$1.json break;\n    }}\n  }}\n}}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config)?;
        let child = std::process::Command::new(NGINX)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Self {
            addr,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                anyhow::bail!("nginx exited ({status}); see {}", conf.display());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(nginx)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
