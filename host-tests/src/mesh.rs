//! Istio's sidecar-to-sidecar path on 127.0.0.1:
//!
//! ```text
//! test ──h1/h2c──▶ client sidecar ──mTLS, h1 or h2──▶ server sidecar ──h1/h2c──▶ recording upstream
//!                  (Envoy, outbound)                (Envoy, inbound,           (crate::upstream)
//!                                                    meshguard filters)
//! ```
//!
//! The client sidecar picks the upstream cluster, and so the identity and TLS
//! settings it presents, from the `x-meshguard-test-route` header, which it
//! removes before forwarding. Each profile has three clusters: `<route>`
//! follows the client's protocol (as Istio does for HTTP/2 callers),
//! `<route>.h1` and `<route>.h2` force the sidecar-to-sidecar protocol
//! ([`Request::leg`]). The server sidecar accepts mTLS and, like Istio's
//! PERMISSIVE mode, plaintext on the same port (a TLS inspector picks the chain),
//! detects the protocol (codec AUTO), handles XFCC as Istio's inbound sidecar
//! does (APPEND_FORWARD) and normalizes paths as Istio's mesh setting says
//! ([`PathNormalization`], default BASE). HTTP/1 trailers are enabled on every
//! HTTP/1 codec, so chunked trailers reach the filters.
//!
//! Filters are configured exactly as Istio turns a WasmPlugin (or a 1.30
//! TrafficExtension) into Envoy config: the order given, `configuration` as a
//! `google.protobuf.StringValue`, `vm_config.environment_variables`, a
//! failure policy (FAIL_CLOSED unless chosen), and no
//! `allow_on_headers_stop_iteration` unless the filter is the documented
//! EnvoyFilter variant ([`Filter::envoyfilter_variant`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::certs::{CertFiles, Pki};
use crate::envoy::{stats_config, Envoy};
use crate::http::{self, Protocol, Request, Response};
use crate::upstream::Upstream;

pub const TRUST_DOMAIN: &str = "cluster.local";
/// The server workload's identity.
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/backend";
/// The header the client sidecar routes on.
pub const ROUTE_HEADER: &str = "x-meshguard-test-route";
/// `h1` / `h2`: the server sidecar reaches the upstream over this protocol
/// (removed before the upstream; see [`Request::upstream_protocol`]).
pub const UPSTREAM_HEADER: &str = "x-meshguard-test-upstream";

/// Requests under this path are answered by the server sidecar itself.
pub const MARKER_PATH: &str = "/meshguard-test-marker/";

/// Requests under this path go to the server sidecar's filterless barrier
/// listener, which forwards them to the upstream (see [`Mesh::upstream_barrier`]).
pub const BARRIER_PATH: &str = "/meshguard-test-barrier/";

/// Istio's `meshConfig.pathNormalization`, applied to the server sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    /// Envoy's defaults: nothing normalized (Istio `NONE`).
    None,
    /// `normalize_path` (Istio's default, `BASE`).
    #[default]
    Base,
    /// `BASE` plus `merge_slashes`.
    MergeSlashes,
    /// `MERGE_SLASHES` plus decoding `%2F` / `%5C` (`UNESCAPE_AND_FORWARD`).
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub const ALL: [PathNormalization; 4] = [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ];

    fn apply(self, hcm: &mut Value) {
        let (normalize, merge, escaped) = match self {
            PathNormalization::None => (false, false, "KEEP_UNCHANGED"),
            PathNormalization::Base => (true, false, "KEEP_UNCHANGED"),
            PathNormalization::MergeSlashes => (true, true, "KEEP_UNCHANGED"),
            PathNormalization::DecodeAndMergeSlashes => (true, true, "UNESCAPE_AND_FORWARD"),
        };
        hcm["normalize_path"] = json!(normalize);
        hcm["merge_slashes"] = json!(merge);
        hcm["path_with_escaped_slashes_action"] = json!(escaped);
    }
}

/// Istio's `failStrategy`, as Envoy's `failure_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// `FAIL_CLOSE` (Istio's default).
    #[default]
    FailClosed,
    /// `FAIL_RELOAD` (Istio >= 1.27).
    FailReload,
    /// `FAIL_OPEN`.
    FailOpen,
}

impl FailurePolicy {
    fn envoy(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailReload => "FAIL_RELOAD",
            FailurePolicy::FailOpen => "FAIL_OPEN",
        }
    }
}

/// How the client sidecar reaches the server sidecar for one profile.
#[derive(Debug, Clone)]
pub struct ClientProfile {
    /// Value of the route header that selects this profile.
    pub route: &'static str,
    /// The SPIFFE ID in the client certificate; `None` means plaintext.
    pub identity: Option<&'static str>,
    /// Highest TLS version offered (`TLSv1_2`, `TLSv1_3`).
    pub max_tls: &'static str,
    /// Further URI SANs in the certificate, after `identity` (an X509-SVID
    /// has exactly one: these make the identity unusable).
    pub extra_uris: &'static [&'static str],
}

/// The profiles every mesh has.
pub fn default_profiles() -> Vec<ClientProfile> {
    let mtls = |route, identity| ClientProfile {
        route,
        identity: Some(identity),
        max_tls: "TLSv1_3",
        extra_uris: &[],
    };
    vec![
        mtls("frontend", "spiffe://cluster.local/ns/default/sa/frontend"),
        ClientProfile {
            route: "frontend-tls12",
            identity: Some("spiffe://cluster.local/ns/default/sa/frontend"),
            max_tls: "TLSv1_2",
            extra_uris: &[],
        },
        // A certificate naming two SPIFFE IDs: not a valid X509-SVID.
        ClientProfile {
            route: "two-uris",
            identity: Some("spiffe://cluster.local/ns/default/sa/frontend"),
            max_tls: "TLSv1_3",
            extra_uris: &["spiffe://cluster.local/ns/default/sa/admin"],
        },
        mtls("unknown", "spiffe://cluster.local/ns/default/sa/unknown"),
        mtls("batch", "spiffe://cluster.local/ns/jobs/sa/batch"),
        mtls(
            "gateway",
            "spiffe://cluster.local/ns/istio-system/sa/ingress",
        ),
        mtls("auditor", "spiffe://cluster.local/ns/default/sa/auditor"),
        ClientProfile {
            route: "plaintext",
            identity: None,
            max_tls: "TLSv1_3",
            extra_uris: &[],
        },
    ]
}

/// A meshguard filter in the server sidecar's chain.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Module name in `dist/` (`meshguard`), or an absolute path without `.wasm`.
    pub module: String,
    /// Envoy root id (Istio: `pluginName`).
    pub root_id: String,
    /// The Istio resource's `NAMESPACE.NAME`, which Istio makes the Envoy
    /// filter's and plugin's name (`plugin_name`); `None` is
    /// `default.<root_id>` ([`Filter::plugin_name`]).
    pub resource: Option<String>,
    /// Plugin JSON (Istio: `pluginConfig`).
    pub config: String,
    /// `vmConfig.env` as inline values.
    pub env: Vec<(String, String)>,
    /// `failStrategy`.
    pub failure_policy: FailurePolicy,
    /// Deployed through the documented EnvoyFilter (istio-manifests/audit/
    /// envoyfilter-body-commands.yaml) with `allow_on_headers_stop_iteration:
    /// true`, which a WasmPlugin cannot set.
    pub envoyfilter_variant: bool,
}

/// The HMAC key the test meshes give the audit filter (base64 of 32 bytes).
pub const AUDIT_KEY: &str = "bWVzaGd1YXJkLXRlc3QtYXVkaXQta2V5LTMyYnl0ZXM=";

impl Filter {
    pub fn identity(config: impl Into<String>) -> Self {
        Self::named("identity", config)
    }

    /// The audit filter, with [`AUDIT_KEY`] in `MESHGUARD_AUDIT_KEY`.
    pub fn audit(config: impl Into<String>) -> Self {
        Self::named("audit", config).env("MESHGUARD_AUDIT_KEY", AUDIT_KEY)
    }

    /// The single-section plugin `name` (`identity`, `masking`, `audit`):
    /// `dist/meshguard.wasm` with root id `meshguard-<name>`.
    pub fn named(name: &str, config: impl Into<String>) -> Self {
        Self {
            module: "meshguard".into(),
            root_id: format!("meshguard-{name}"),
            resource: None,
            config: config.into(),
            env: Vec::new(),
            failure_policy: FailurePolicy::default(),
            envoyfilter_variant: false,
        }
    }

    /// The combined plugin: root id `meshguard`, `config` holding the
    /// sections (docs/deploy.md).
    pub fn combined(config: impl Into<String>) -> Self {
        Self {
            root_id: "meshguard".into(),
            ..Self::named("combined", config)
        }
    }

    /// Names the Istio resource (WasmPlugin or TrafficExtension) this filter
    /// comes from: `namespace.name` becomes its plugin name, as Istio names
    /// it, so two resources running the same plugin are two instances.
    pub fn resource(mut self, namespace: &str, name: &str) -> Self {
        self.resource = Some(format!("{namespace}.{name}"));
        self
    }

    /// The Envoy filter and plugin name (`plugin_name`): the resource's
    /// `NAMESPACE.NAME`, `default.<root_id>` unless [`Filter::resource`] named one.
    pub fn plugin_name(&self) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("default.{}", self.root_id))
    }

    /// Trusts the tests' release key and requires a signature
    /// (`MESHGUARD_TRUSTED_KEYS`, `MESHGUARD_REQUIRE_SIGNATURE`).
    pub fn trusting_release_key(self) -> Self {
        use crate::source::{release_key, trusted_key_entry, KEY_ID};
        self.env(
            "MESHGUARD_TRUSTED_KEYS",
            &trusted_key_entry(KEY_ID, &release_key()),
        )
        .env("MESHGUARD_REQUIRE_SIGNATURE", "true")
    }

    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// The EnvoyFilter variant: `allow_on_headers_stop_iteration: true`.
    pub fn envoyfilter_variant(mut self) -> Self {
        self.envoyfilter_variant = true;
        self
    }

    /// Adds a `vmConfig.env` value.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// How the meshguard sections are deployed in the server sidecar:
/// `MESHGUARD_TEST_DEPLOYMENT=separate` (the default: one plugin per section,
/// as the filters were always deployed) or `combined` (the sections a test
/// gives merged into one `meshguard` plugin, as docs/deploy.md recommends).
/// The suites run in both (`make test`), so every test that runs the three
/// filters proves the combined plugin does the same on the upstream side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    Separate,
    Combined,
}

impl Deployment {
    pub fn current() -> Self {
        match std::env::var("MESHGUARD_TEST_DEPLOYMENT").as_deref() {
            Ok("combined") => Self::Combined,
            _ => Self::Separate,
        }
    }

    /// The filters as deployed: in combined mode, the single-section
    /// plugins of the chain become one `meshguard` plugin whose config holds
    /// their sections, in chain order. Plugins whose configs carry integrity
    /// (`signature`, `release`, `integrity`: a signature covers one plugin's
    /// bytes), whose environment sets trust variables, or that disagree on
    /// environment stay as they are.
    pub fn apply(self, filters: &[Filter]) -> Vec<Filter> {
        if self == Self::Separate {
            return filters.to_vec();
        }
        let section = |f: &Filter| -> Option<(String, serde_json::Map<String, Value>)> {
            let name = f.root_id.strip_prefix("meshguard-")?;
            if !["identity", "masking", "audit"].contains(&name) || f.module != "meshguard" {
                return None;
            }
            let config: serde_json::Map<String, Value> = serde_json::from_str(&f.config).ok()?;
            // A signature covers one plugin's bytes, and the integrity
            // suites judge one plugin's trust settings under its own label:
            // those plugins stay as they are (the combined plugin's
            // integrity has rows of its own).
            if ["signature", "release", "integrity"]
                .iter()
                .any(|k| config.contains_key(*k))
                || f.env.iter().any(|(k, _)| {
                    k.starts_with("MESHGUARD_")
                        && !["MESHGUARD_AUDIT_KEY", "MESHGUARD_MASK_HASH_KEY"].contains(&k.as_str())
                })
            {
                return None;
            }
            Some((name.to_owned(), config))
        };
        let sections: Vec<_> = filters.iter().filter_map(section).collect();
        let merged: Vec<&Filter> = filters.iter().filter(|f| section(f).is_some()).collect();
        let Some(first) = merged.first() else {
            return filters.to_vec();
        };
        let mut env: Vec<(String, String)> = Vec::new();
        for f in &merged {
            for (k, v) in &f.env {
                match env.iter().find(|(ek, _)| ek == k) {
                    Some((_, ev)) if ev != v => return filters.to_vec(),
                    Some(_) => {}
                    None => env.push((k.clone(), v.clone())),
                }
            }
        }
        let mut config = serde_json::Map::new();
        // The plugin's version names every section's.
        let versions: Vec<&str> = sections
            .iter()
            .filter_map(|(_, s)| s.get("config_version")?.as_str())
            .collect();
        if !versions.is_empty() {
            config.insert("config_version".into(), Value::String(versions.join("+")));
        }
        for (name, section) in sections {
            config.insert(name, Value::Object(section));
        }
        let combined = Filter {
            module: "meshguard".into(),
            root_id: "meshguard".into(),
            resource: first.resource.clone(),
            config: Value::Object(config).to_string(),
            env,
            // The strictest: one crashed section must not pass the others' traffic.
            failure_policy: if merged
                .iter()
                .all(|f| f.failure_policy == FailurePolicy::FailReload)
            {
                FailurePolicy::FailReload
            } else if merged
                .iter()
                .any(|f| f.failure_policy == FailurePolicy::FailOpen)
                && merged
                    .iter()
                    .all(|f| f.failure_policy == FailurePolicy::FailOpen)
            {
                FailurePolicy::FailOpen
            } else {
                FailurePolicy::FailClosed
            },
            envoyfilter_variant: merged.iter().any(|f| f.envoyfilter_variant),
        };
        let first = first.root_id.clone();
        filters
            .iter()
            .filter_map(|f| {
                if f.root_id == first {
                    Some(combined.clone())
                } else if section(f).is_some() {
                    None
                } else {
                    Some(f.clone())
                }
            })
            .collect()
    }

    /// Where a section's config key is reported in errors: `identity.rules[0]`
    /// once combined, `rules[0]` in the section's own plugin.
    pub fn config_path(self, section: &str, at: &str) -> String {
        match self {
            Self::Combined => format!("{section}.{at}"),
            Self::Separate => at.into(),
        }
    }

    /// The `filter` label a test's plugin has for the integrity metrics:
    /// `meshguard` once combined, else the section's own name.
    pub fn filter_label(self, section: &str) -> String {
        match self {
            Self::Combined => "meshguard".into(),
            Self::Separate => section.into(),
        }
    }

    /// The `filter` label `filter` is deployed under: `meshguard` when
    /// [`Deployment::apply`] merges it, else its own section (a plugin with
    /// trust settings of its own stays as it is).
    pub fn label_of(self, filter: &Filter) -> String {
        let deployed = self.apply(std::slice::from_ref(filter));
        match deployed.first() {
            Some(f) if f.root_id == "meshguard" => "meshguard".into(),
            _ => filter
                .root_id
                .strip_prefix("meshguard-")
                .unwrap_or(&filter.root_id)
                .to_owned(),
        }
    }
}

/// Which meshguard build the server sidecar runs:
/// `MESHGUARD_TEST_BUILD=wasm` (the default: `dist/meshguard.wasm` through
/// `envoy.filters.http.wasm`, configured as Istio configures a WasmPlugin)
/// or `native` (`dist/libmeshguard.so` through
/// `envoy.filters.http.dynamic_modules`, the same plugin JSON). The suites run
/// unchanged against both (`make test-native`): a parity matrix. In the
/// native build the filters' `env` is set on the Envoy process (the native
/// module reads Envoy's process environment), and rows that only exist for a
/// Wasm VM are skipped with their reason ([`wasm_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Build {
    #[default]
    Wasm,
    Native,
}

impl Build {
    pub fn current() -> Self {
        match std::env::var("MESHGUARD_TEST_BUILD").as_deref() {
            Ok("native") => Self::Native,
            _ => Self::Wasm,
        }
    }

    /// The Envoy HTTP filter that runs `f` in this build.
    pub fn http_filter(self, f: &Filter) -> anyhow::Result<Value> {
        match self {
            Self::Wasm => wasm_filter(f),
            Self::Native => native_filter(f),
        }
    }

    /// The filter config's type (ECDS `type_urls`).
    fn type_url(self) -> &'static str {
        match self {
            Self::Wasm => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            Self::Native => NATIVE_FILTER_TYPE,
        }
    }

    /// The environment the server sidecar's Envoy process runs with: none
    /// for Wasm (each plugin's `vmConfig.env` is in its filter config); for
    /// the native module, where it finds `libmeshguard.so`, the node
    /// metadata Istio would put in the proxy's environment, and every
    /// filter's `env` (one process: filters may not disagree on a value).
    pub fn process_env(self, filters: &[Filter]) -> anyhow::Result<Vec<(String, String)>> {
        if self == Self::Wasm {
            return Ok(Vec::new());
        }
        let module = crate::native_module()?;
        let search_path = module
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut env = vec![
            ("ENVOY_DYNAMIC_MODULES_SEARCH_PATH".to_owned(), search_path),
            ("ISTIO_META_NAMESPACE".to_owned(), "default".to_owned()),
            ("ISTIO_META_WORKLOAD_NAME".to_owned(), "backend".to_owned()),
        ];
        for f in filters {
            for (k, v) in &f.env {
                match env.iter().find(|(ek, _)| ek == k) {
                    Some((_, ev)) if ev != v => anyhow::bail!(
                        "the native build has one process environment: {} disagrees on {k}",
                        f.root_id
                    ),
                    Some(_) => {}
                    None => env.push((k.clone(), v.clone())),
                }
            }
        }
        // A trust setting reaches every plugin of the process: one given
        // to some plugins only cannot be expressed natively.
        for (k, _) in &env {
            if let Some(f) = filters
                .iter()
                .find(|f| is_trust_setting(k) && !f.env.iter().any(|(fk, _)| fk == k))
            {
                anyhow::bail!(
                    "the native build has one process environment: {k} is not set for {}",
                    f.root_id
                );
            }
        }
        Ok(env)
    }
}

/// A variable that judges a plugin's config (`MESHGUARD_*`, but the keys
/// a section reads for itself).
fn is_trust_setting(key: &str) -> bool {
    key.starts_with("MESHGUARD_")
        && !["MESHGUARD_AUDIT_KEY", "MESHGUARD_MASK_HASH_KEY"].contains(&key)
}

/// Skips the calling test in the native build, printing why: for rows that
/// only exist for a Wasm VM (VM failure policies and crashes, VM memory,
/// Istio's WasmPlugin-only limits). Returns true when the test must return.
pub fn wasm_only(reason: &str) -> bool {
    if Build::current() == Build::Native {
        eprintln!("skipped in the native build: {reason}");
        return true;
    }
    false
}

/// `envoy.filters.http.dynamic_modules`' config type.
pub const NATIVE_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// The Envoy filter that runs `f` in the native module (docs/native.md):
/// module `meshguard` (`libmeshguard.so` on the search path, never unloaded),
/// metrics under `meshguard.`, `filter_name` = `ROOT_ID:PLUGIN_NAME` (the
/// plugin name as Istio would give it), and the plugin JSON as a
/// `google.protobuf.StringValue`, byte for byte.
pub fn native_filter(f: &Filter) -> anyhow::Result<Value> {
    // The shipped module by name; a test module by its path (`module.local`).
    let mut module = json!({"do_not_close": true, "metrics_namespace": "meshguard"});
    if f.module == "meshguard" {
        module["name"] = json!("meshguard");
    } else {
        let path = PathBuf::from(format!("{}.so", f.module));
        anyhow::ensure!(
            path.is_absolute() && path.exists(),
            "the native build has no module {} (a Wasm-only test module)",
            f.module
        );
        module["module"] = json!({"local": {"filename": path}});
    }
    Ok(json!({
        "name": format!("default.{}", f.root_id),
        "typed_config": {
            "@type": NATIVE_FILTER_TYPE,
            "dynamic_module_config": module,
            "filter_name": format!("{}:default.{}", f.root_id, f.root_id),
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": f.config}
        }
    }))
}

/// Describes a mesh before it starts.
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    filters: Vec<Filter>,
    profiles: Vec<ClientProfile>,
    extra_clusters: Vec<(String, SocketAddr)>,
    shape: ServerShape,
    istio_retries: bool,
    /// [`MeshBuilder::keep_files_in`].
    files: Option<PathBuf>,
    /// The server sidecar's worker threads (`--concurrency`).
    workers: u32,
}

/// Server-sidecar settings that survive filter pushes.
#[derive(Debug, Clone, Copy, Default)]
struct ServerShape {
    /// The meshguard build the filters run in.
    build: Build,
    paths: PathNormalization,
    upstream: Option<Protocol>,
    /// `forward_client_cert_details`; `None` is Istio's APPEND_FORWARD.
    xfcc: Option<&'static str>,
    /// Filters delivered over ECDS (as Istio's WasmPlugin does): the listener
    /// names them, each filter's config lives in its own watched file.
    ecds: bool,
}

/// The LDS file in the server sidecar's watched directory.
const LDS_FILE: &str = "lds.json";

/// A running client sidecar, server sidecar and echo upstream. Dropping it
/// stops all of them and removes their files.
#[derive(Debug)]
pub struct Mesh {
    pub server: Envoy,
    pub client: Envoy,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    upstream: Upstream,
    shape: ServerShape,
    pki: Pki,
    server_cert: CertFiles,
    barrier_addr: SocketAddr,
    workers: u32,
    /// The inbound listener's LDS file.
    lds: LdsFile,
    /// The version of the next ECDS push.
    ecds_version: std::cell::Cell<u32>,
    /// The server sidecar's process environment ([`Build::process_env`]).
    process_env: Vec<(String, String)>,
    markers: std::cell::Cell<u32>,
    dir: MeshDir,
}

/// Where a mesh keeps its files (configs, certificates, Envoy logs).
#[derive(Debug)]
enum MeshDir {
    /// A temporary directory, removed with the mesh.
    Temporary(tempfile::TempDir),
    /// A directory the caller chose, left in place ([`MeshBuilder::keep_files_in`]).
    Kept(PathBuf),
}

impl MeshDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }
}

impl Mesh {
    pub fn builder() -> MeshBuilder {
        MeshBuilder {
            filters: Vec::new(),
            profiles: default_profiles(),
            extra_clusters: Vec::new(),
            shape: ServerShape {
                build: Build::current(),
                ..ServerShape::default()
            },
            istio_retries: false,
            files: None,
            workers: 1,
        }
    }

    /// The recording upstream behind the server sidecar.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends `request` through the client sidecar as `profile`, over
    /// `request.protocol`, with the sidecar-to-sidecar leg `request.leg`.
    pub async fn send_as(&self, profile: &str, request: Request) -> anyhow::Result<Response> {
        let route = route_for(profile, request.leg);
        http::send(self.client_addr, &request.header(ROUTE_HEADER, route)).await
    }

    /// Sends `request` straight to the server sidecar in plaintext.
    pub async fn send_direct(&self, request: Request) -> anyhow::Result<Response> {
        http::send(self.server_addr, &request).await
    }

    /// The server sidecar's log, once every line written before this call is
    /// in the file: Envoy flushes its log asynchronously, so an absence can
    /// only be asserted after a later line (a marker request's path) appears.
    pub async fn flushed_server_log(&self) -> anyhow::Result<String> {
        let n = self.markers.get() + 1;
        self.markers.set(n);
        let marker = format!("{MARKER_PATH}{n}-{}", std::process::id());
        // Filters may refuse the marker; Envoy logs its headers either way.
        http::send(self.server_addr, &Request::new("GET", &marker)).await?;
        self.server.wait_for_log(&marker).await
    }

    /// The client sidecar's address, for tests that manage connections.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The server sidecar's inbound listener (mTLS and plaintext).
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// Connections each server-sidecar worker accepted on the inbound
    /// listener, by worker ([`MeshBuilder::workers`]): a worker with none
    /// served no request. Marker requests ([`Mesh::flushed_server_log`])
    /// count too.
    pub async fn inbound_worker_connections(&self) -> anyhow::Result<Vec<u64>> {
        self.server.worker_connections("inbound").await
    }

    /// Sends `request(i)` straight to the server sidecar (plaintext), each on
    /// a fresh connection, `per_round` at once, round after round until every
    /// server-sidecar worker accepted at least one of these connections (so
    /// every worker served a request sent by this call), or fails after 20
    /// rounds. Returns each response with its `i`, in sending order.
    pub async fn send_direct_on_every_worker(
        &self,
        per_round: usize,
        request: impl Fn(usize) -> Request,
    ) -> anyhow::Result<Vec<(usize, Response)>> {
        self.server
            .send_on_every_worker("inbound", self.workers, per_round, |i| {
                let request = request(i);
                async move { http::send(self.server_addr, &request).await }
            })
            .await
    }

    /// On every worker, over `protocol`: `/api/items?n=i` (even `i`) passes
    /// and `/admin/users?n=i` (odd) is refused by a deny rule (`403
    /// denied_by_rule`), and exactly the passed requests reach the upstream.
    /// Returns what reached it. `what` names the row in failures.
    pub async fn every_worker_passes_items_and_denies_admin(
        &self,
        per_round: usize,
        protocol: Protocol,
        what: &str,
    ) -> Vec<crate::upstream::Recorded> {
        let answers = self
            .send_direct_on_every_worker(per_round, |i| {
                let path = if i % 2 == 0 {
                    "/api/items"
                } else {
                    "/admin/users"
                };
                Request::new("GET", &format!("{path}?n={i}")).protocol(protocol)
            })
            .await
            .unwrap();
        let mut passed = std::collections::HashSet::new();
        for (i, resp) in &answers {
            let row = format!("{what}: request {i} over {protocol:?}");
            if i % 2 == 0 {
                assert_eq!(resp.status, 200, "{row}: {resp:?}");
                passed.insert(format!("/api/items?n={i}"));
            } else {
                assert_eq!(resp.status, 403, "{row}: {resp:?}");
                assert_eq!(
                    resp.header("x-meshguard-deny-reason"),
                    Some("denied_by_rule"),
                    "{row}"
                );
            }
        }
        self.upstream_barrier().await.unwrap();
        let arrived = self.upstream.take();
        let targets: std::collections::HashSet<String> =
            arrived.iter().map(|r| r.target.clone()).collect();
        assert_eq!(targets, passed, "{what} over {protocol:?}");
        arrived
    }

    /// Waits until everything the server sidecar forwarded before this call
    /// reached the upstream: a request sent after it through a listener
    /// without filters (same Envoy, same upstream cluster) is waited for at
    /// the upstream, then every body is left to settle. The barrier request
    /// is removed from the recording. Use before asserting that nothing
    /// arrived: it proves a forwarded request would have been seen.
    pub async fn upstream_barrier(&self) -> anyhow::Result<()> {
        let n = self.markers.get() + 1;
        self.markers.set(n);
        upstream_barrier(self.barrier_addr, &self.upstream, n).await
    }

    /// After [`Mesh::upstream_barrier`], fails if any request reached the
    /// upstream: the proof of "nothing was forwarded" for a refusal.
    pub async fn assert_nothing_reached_upstream(&self, what: &str) {
        if let Err(e) = self.upstream_barrier().await {
            panic!("{what}: {e}");
        }
        self.upstream.assert_nothing_arrived(what);
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Pushes a new filter chain to the running server sidecar, as Istio does
    /// over xDS, and waits until Envoy accepted or rejected it.
    pub async fn push_filters(&self, filters: &[Filter]) -> anyhow::Result<PushOutcome> {
        let filters = &Deployment::current().apply(filters);
        self.check_process_env(filters)?;
        if self.shape.ecds {
            return self.push_ecds(filters).await;
        }
        let listener = server_listener(
            filters,
            self.shape,
            &self.pki,
            &self.server_cert,
            self.dir.path(),
        )?;
        self.lds.push(&self.server, vec![listener]).await
    }
}

impl Mesh {
    /// The native module reads Envoy's process environment, which a push
    /// cannot change: a pushed chain whose trust settings (`MESHGUARD_*`
    /// but the section keys) differ from the ones Envoy started with, or
    /// that needs a variable Envoy does not have, is an error here rather
    /// than a silent difference between the builds.
    fn check_process_env(&self, filters: &[Filter]) -> anyhow::Result<()> {
        let pushed = self.shape.build.process_env(filters)?;
        let value = |env: &[(String, String)], key: &str| {
            env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        for (k, v) in &pushed {
            anyhow::ensure!(
                value(&self.process_env, k).as_ref() == Some(v),
                "the native build cannot push {k}={v}: it reads Envoy's process environment"
            );
        }
        for (k, _) in self.process_env.iter().filter(|(k, _)| is_trust_setting(k)) {
            anyhow::ensure!(
                value(&pushed, k).is_some(),
                "the native build cannot push a chain without {k}: Envoy's process has it"
            );
        }
        Ok(())
    }

    async fn push_ecds(&self, filters: &[Filter]) -> anyhow::Result<PushOutcome> {
        let version = self.ecds_version.get() + 1;
        self.ecds_version.set(version);
        push_ecds(
            &self.server,
            self.dir.path(),
            self.shape.build,
            version,
            filters,
        )
        .await
    }
}

/// ECDS: writes each changed filter config to its watched file under `dir`
/// and waits until `envoy` reloaded or refused it (the listener stays as it
/// is; an unchanged config is not sent, as istiod sends none).
pub(crate) async fn push_ecds(
    envoy: &Envoy,
    dir: &Path,
    build: Build,
    version: u32,
    filters: &[Filter],
) -> anyhow::Result<PushOutcome> {
    let mut pushed = Vec::new();
    for f in filters {
        let resource = ecds_resource(build, f)?;
        let current = std::fs::read(ecds_dir(dir, f).join(ECDS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        if current.is_some_and(|c| c["resources"][0] == resource) {
            continue;
        }
        let name = f.plugin_name();
        pushed.push(
            PushCounters::read(
                envoy,
                &format!("{name}.config_reload"),
                &format!("{name}.config_fail"),
            )
            .await?,
        );
        write_ecds(dir, build, version, f)?;
    }
    push_outcome(envoy, "the pushed filter configs", &pushed).await
}

/// A pushed resource's accept and reject counters, with their values before
/// the push.
struct PushCounters {
    accepted: String,
    rejected: String,
    accepted_before: u64,
    rejected_before: u64,
}

impl PushCounters {
    /// Reads `accepted` and `rejected` (names matched as suffixes) before a push.
    async fn read(envoy: &Envoy, accepted: &str, rejected: &str) -> anyhow::Result<Self> {
        Ok(Self {
            accepted_before: envoy.stat_sum(accepted).await?,
            rejected_before: envoy.stat_sum(rejected).await?,
            accepted: accepted.into(),
            rejected: rejected.into(),
        })
    }
}

/// Waits until Envoy took every pushed resource, or refused one.
async fn push_outcome(
    envoy: &Envoy,
    what: &str,
    pushed: &[PushCounters],
) -> anyhow::Result<PushOutcome> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut taken = 0;
        for p in pushed {
            if envoy.stat_sum(&p.rejected).await? > p.rejected_before {
                return Ok(PushOutcome::Rejected);
            }
            if envoy.stat_sum(&p.accepted).await? > p.accepted_before {
                taken += 1;
            }
        }
        if taken == pushed.len() {
            return Ok(PushOutcome::Accepted);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "Envoy neither accepted nor rejected {what}:\n{}",
            envoy.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Listeners served from a watched LDS file, as a control plane pushes them
/// over xDS: a test rewrites the file (atomically) and waits until Envoy took
/// or refused the new listeners.
#[derive(Debug)]
pub struct LdsFile {
    dir: PathBuf,
    version: std::cell::Cell<u32>,
}

impl LdsFile {
    /// Writes the first version of `listeners` into `dir` (created if needed).
    pub fn create(dir: &Path, listeners: Vec<Value>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        write_lds(dir, 1, listeners)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            version: std::cell::Cell::new(1),
        })
    }

    /// The bootstrap's `dynamic_resources` that serve the file.
    pub fn dynamic_resources(&self) -> Value {
        json!({"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": self.dir.join(LDS_FILE),
                "watched_directory": {"path": self.dir}
            }
        }})
    }

    /// Replaces the listeners `envoy` serves from the file, and waits until
    /// Envoy accepted or rejected them.
    pub async fn push(&self, envoy: &Envoy, listeners: Vec<Value>) -> anyhow::Result<PushOutcome> {
        let pushed = [PushCounters::read(
            envoy,
            "listener_manager.lds.update_success",
            "listener_manager.lds.update_rejected",
        )
        .await?];
        let version = self.version.get() + 1;
        self.version.set(version);
        write_lds(&self.dir, version, listeners)?;
        push_outcome(envoy, "the pushed listeners", &pushed).await
    }
}

/// The listener's reference to a filter delivered over ECDS (Istio names
/// it `<namespace>.<name>` and serves it from istiod; here a watched file).
pub(crate) fn ecds_reference(dir: &Path, build: Build, f: &Filter) -> Value {
    let watched = ecds_dir(dir, f);
    json!({
        "name": f.plugin_name(),
        "config_discovery": {
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": watched.join(ECDS_FILE),
                    "watched_directory": {"path": watched}
                }
            },
            "type_urls": [build.type_url()]
        }
    })
}

/// The ECDS file of one filter, in a directory of its own (a watched
/// directory reloads every file in it).
const ECDS_FILE: &str = "ecds.json";

fn ecds_dir(dir: &Path, f: &Filter) -> PathBuf {
    dir.join("ecds").join(f.plugin_name())
}

/// A filter's config as an ECDS resource.
fn ecds_resource(build: Build, f: &Filter) -> anyhow::Result<Value> {
    let mut resource = build.http_filter(f)?;
    resource["@type"] = json!("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig");
    Ok(resource)
}

/// Writes a filter's ECDS response atomically.
pub(crate) fn write_ecds(dir: &Path, build: Build, version: u32, f: &Filter) -> anyhow::Result<()> {
    let watched = ecds_dir(dir, f);
    std::fs::create_dir_all(&watched)?;
    let resource = ecds_resource(build, f)?;
    let response = json!({"version_info": version.to_string(), "resources": [resource]});
    let tmp = watched.join(format!(".{ECDS_FILE}.{version}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&response)?)?;
    std::fs::rename(&tmp, watched.join(ECDS_FILE))?;
    Ok(())
}

/// The client-sidecar cluster for `profile` with the leg `leg`.
pub fn route_for(profile: &str, leg: Option<Protocol>) -> String {
    match leg {
        None => profile.to_string(),
        Some(p) => format!("{profile}.{}", p.short()),
    }
}

/// What Envoy did with a pushed config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Accepted,
    Rejected,
}

/// Writes an LDS response atomically (write, then rename into the watched dir).
fn write_lds(dir: &Path, version: u32, listeners: Vec<Value>) -> anyhow::Result<()> {
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut listener| {
            listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
            listener
        })
        .collect();
    let response = json!({"version_info": version.to_string(), "resources": resources});
    let tmp = dir.join(format!(".{LDS_FILE}.{version}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&response)?)?;
    std::fs::rename(&tmp, dir.join(LDS_FILE))?;
    Ok(())
}

impl MeshBuilder {
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// How the server sidecar normalizes paths (default: Istio's BASE).
    pub fn path_normalization(mut self, paths: PathNormalization) -> Self {
        self.shape.paths = paths;
        self
    }

    /// The server sidecar's `forward_client_cert_details` (default Istio's
    /// `APPEND_FORWARD`, which drops XFCC from a caller without a client
    /// certificate). `ALWAYS_FORWARD_ONLY` lets a plaintext caller's XFCC
    /// reach the filters, to prove the filter's own guarantee.
    pub fn forward_client_cert(mut self, mode: &'static str) -> Self {
        self.shape.xfcc = Some(mode);
        self
    }

    /// The protocol the server sidecar uses to the upstream by default
    /// (HTTP/1.1 unless set; per request: [`Request::upstream_protocol`]).
    pub fn upstream_protocol(mut self, protocol: Protocol) -> Self {
        self.shape.upstream = Some(protocol);
        self
    }

    /// Delivers the filters over ECDS, as Istio delivers a WasmPlugin: the
    /// listener references each filter by name and
    /// [`Mesh::push_filters`] replaces their configs without a listener
    /// change (the default pushes a whole new listener, LDS).
    pub fn ecds(mut self) -> Self {
        self.shape.ecds = true;
        self
    }

    /// Gives the client sidecar's route Istio's default retry policy (two
    /// retries on connect failure, refused stream, `unavailable`, `cancelled`
    /// and 503). Off by default, so that tests count each request once.
    pub fn istio_retries(mut self) -> Self {
        self.istio_retries = true;
        self
    }

    /// Runs the server sidecar with `workers` worker threads (Envoy's
    /// `--concurrency`; Istio's sidecar default is 2; the harness default
    /// is 1 so that per-request counts are deterministic). A second worker
    /// only serves connections the kernel hands it: send over several
    /// connections and check [`Mesh::inbound_worker_connections`].
    /// Runs the filters in `build` whatever `MESHGUARD_TEST_BUILD` says
    /// (the native module's own suite, `tests/native.rs`).
    pub fn build(mut self, build: Build) -> Self {
        self.shape.build = build;
        self
    }

    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Adds a client profile (its route selects it, see [`ROUTE_HEADER`]).
    pub fn profile(mut self, profile: ClientProfile) -> Self {
        self.profiles.push(profile);
        self
    }

    /// Adds a plain-HTTP cluster to the server sidecar (e.g. a source of truth).
    pub fn server_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.extra_clusters.push((name.into(), addr));
        self
    }

    /// Writes the mesh's files (Envoy configs and logs, certificates) into
    /// `dir`, created if needed, and leaves them there when the mesh stops
    /// (by default they go to a temporary directory, removed with the mesh).
    pub fn keep_files_in(mut self, dir: &Path) -> Self {
        self.files = Some(dir.to_path_buf());
        self
    }

    pub async fn start(mut self) -> anyhow::Result<Mesh> {
        self.filters = Deployment::current().apply(&self.filters);
        let dir = match &self.files {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                MeshDir::Kept(dir.clone())
            }
            None => MeshDir::Temporary(
                tempfile::Builder::new()
                    .prefix("meshguard-mesh-")
                    .tempdir()?,
            ),
        };
        let pki = Pki::new(dir.path())?;
        let upstream = Upstream::start().await?;
        let server_cert = pki.issue("server", SERVER_ID)?;
        let (server, lds) = self
            .start_server(dir.path(), &pki, &server_cert, upstream.addr())
            .await?;
        let server_addr = match server.listener("inbound").await {
            Ok(addr) => addr,
            Err(e) => anyhow::bail!("{e}; the server sidecar's log:\n{}", server.log()),
        };
        let barrier_addr = server.listener("barrier").await?;
        let client_bootstrap = self.client_bootstrap(&pki, server_addr)?;
        let client = Envoy::start("client-sidecar", dir.path(), client_bootstrap).await?;
        let client_addr = client.listener("outbound").await?;
        Ok(Mesh {
            server,
            client,
            client_addr,
            server_addr,
            upstream,
            shape: self.shape,
            pki,
            server_cert,
            barrier_addr,
            workers: self.workers,
            lds,
            ecds_version: std::cell::Cell::new(1),
            process_env: self.shape.build.process_env(&self.filters)?,
            markers: std::cell::Cell::new(0),
            dir,
        })
    }

    async fn start_server(
        &self,
        dir: &Path,
        pki: &Pki,
        cert: &CertFiles,
        upstream: SocketAddr,
    ) -> anyhow::Result<(Envoy, LdsFile)> {
        if self.shape.ecds {
            for f in &self.filters {
                write_ecds(dir, self.shape.build, 1, f)?;
            }
        }
        let lds = LdsFile::create(
            &dir.join("lds"),
            vec![self.server_listener(pki, cert, dir)?],
        )?;
        let mut bootstrap = self.server_bootstrap(upstream);
        // The listener comes from a watched file, so tests can push config
        // updates to a running sidecar as the control plane would.
        bootstrap["dynamic_resources"] = lds.dynamic_resources();
        let envoy = Envoy::start_with_env(
            "server-sidecar",
            dir,
            bootstrap,
            self.workers,
            &self.shape.build.process_env(&self.filters)?,
        )
        .await?;
        Ok((envoy, lds))
    }

    /// Starts only the server sidecar, expecting Envoy to refuse its config;
    /// returns Envoy's log.
    pub async fn start_refused(mut self) -> anyhow::Result<String> {
        self.filters = Deployment::current().apply(&self.filters);
        let dir = tempfile::Builder::new()
            .prefix("meshguard-mesh-")
            .tempdir()?;
        let pki = Pki::new(dir.path())?;
        let server_cert = pki.issue("server", SERVER_ID)?;
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
        // A static listener, as in a bootstrap: a bad filter config stops Envoy.
        let mut bootstrap = self.server_bootstrap(upstream);
        bootstrap["static_resources"]["listeners"] =
            json!([self.server_listener(&pki, &server_cert, dir.path())?]);
        let env = self.shape.build.process_env(&self.filters)?;
        match Envoy::start_with_env("server-sidecar", dir.path(), bootstrap, 1, &env).await {
            Ok(envoy) => anyhow::bail!(
                "Envoy accepted a config it should refuse; log:\n{}",
                envoy.log()
            ),
            Err(_) => Ok(std::fs::read_to_string(
                dir.path().join("server-sidecar.log"),
            )?),
        }
    }

    fn server_listener(&self, pki: &Pki, cert: &CertFiles, dir: &Path) -> anyhow::Result<Value> {
        server_listener(&self.filters, self.shape, pki, cert, dir)
    }

    /// The server sidecar's bootstrap without its inbound listener.
    fn server_bootstrap(&self, upstream: SocketAddr) -> Value {
        let default = self.shape.upstream.unwrap_or(Protocol::Http1);
        let mut clusters = vec![
            with_protocol(static_cluster("upstream", upstream, None), Some(default)),
            with_protocol(
                static_cluster("upstream-h1", upstream, None),
                Some(Protocol::Http1),
            ),
            with_protocol(
                static_cluster("upstream-h2", upstream, None),
                Some(Protocol::Http2),
            ),
        ];
        for (name, addr) in &self.extra_clusters {
            clusters.push(static_cluster(name, *addr, None));
        }
        json!({
            // As Istio's node metadata: what the integrity checks bind to.
            "node": {"id": "backend-sidecar", "cluster": "backend.default",
                     "metadata": {"NAMESPACE": "default", "WORKLOAD_NAME": "backend"}},
            "stats_config": stats_config(),
            "static_resources": {"clusters": clusters, "listeners": [barrier_listener()]}
        })
    }

    fn client_bootstrap(&self, pki: &Pki, server: SocketAddr) -> anyhow::Result<Value> {
        let mut clusters = Vec::new();
        for profile in &self.profiles {
            let tls = match profile.identity {
                None => None,
                Some(id) => {
                    let mut uris = vec![id];
                    uris.extend_from_slice(profile.extra_uris);
                    let cert = pki.issue_with_uris(&format!("client-{}", profile.route), &uris)?;
                    Some(json!({
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                            "sni": "backend.default.svc.cluster.local",
                            "common_tls_context": {
                                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": profile.max_tls},
                                "tls_certificates": [certificate(&cert)],
                                "validation_context": {
                                    "trusted_ca": {"filename": pki.ca_file()},
                                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": SERVER_ID}}]
                                }
                            }
                        }
                    }))
                }
            };
            for leg in [None, Some(Protocol::Http1), Some(Protocol::Http2)] {
                let cluster = static_cluster(&route_for(profile.route, leg), server, tls.clone());
                clusters.push(with_protocol(cluster, leg));
            }
        }
        let mut route = json!({"cluster_header": ROUTE_HEADER, "timeout": "10s"});
        if self.istio_retries {
            // Istio's default for every outbound HTTP route
            // (pilot/pkg/networking/core/route/retry: DefaultPolicy).
            route["retry_policy"] = json!({
                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                "num_retries": 2,
                "retriable_status_codes": [503],
                "retry_host_predicate": [{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
                }],
                "host_selection_retry_max_attempts": 5
            });
        }
        Ok(json!({
            "node": {"id": "client-sidecar", "cluster": "client.default"},
            "static_resources": {
                "listeners": [{
                    "name": "outbound",
                    "address": loopback(0),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "outbound",
                            "codec_type": "AUTO",
                            "http_protocol_options": {"enable_trailers": true},
                            // Pass test-supplied XFCC through, to prove the server ignores it.
                            "forward_client_cert_details": "ALWAYS_FORWARD_ONLY",
                            "route_config": {"virtual_hosts": [{
                                "name": "outbound", "domains": ["*"],
                                "routes": [{
                                    "match": {"prefix": "/"},
                                    "route": route,
                                    "request_headers_to_remove": [ROUTE_HEADER]
                                }]
                            }]},
                            "http_filters": [router()]
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        }))
    }
}

/// The server sidecar's inbound listener with `filters` in its HTTP chain.
fn server_listener(
    filters: &[Filter],
    shape: ServerShape,
    pki: &Pki,
    cert: &CertFiles,
    dir: &Path,
) -> anyhow::Result<Value> {
    let mut http_filters = Vec::new();
    for f in filters {
        http_filters.push(if shape.ecds {
            ecds_reference(dir, shape.build, f)
        } else {
            shape.build.http_filter(f)?
        });
    }
    http_filters.push(router());
    let by_protocol = |p: Protocol| {
        json!({
            "match": {"prefix": "/", "headers": [{"name": UPSTREAM_HEADER, "string_match": {"exact": p.short()}}]},
            "route": {"cluster": format!("upstream-{}", p.short()), "timeout": "10s"},
            "request_headers_to_remove": [UPSTREAM_HEADER]
        })
    };
    let mut hcm_config = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "inbound",
            "codec_type": "AUTO",
            "http_protocol_options": {"enable_trailers": true},
            // As Istio's inbound sidecar: append the peer's element to XFCC.
            "forward_client_cert_details": shape.xfcc.unwrap_or("APPEND_FORWARD"),
            "set_current_client_cert_details": {"uri": true},
            "route_config": {"virtual_hosts": [{
                "name": "inbound", "domains": ["*"],
                "routes": [
                    // A request that never reaches the upstream, whose headers
                    // Envoy logs (http:debug) after everything before it.
                    {"match": {"prefix": MARKER_PATH}, "direct_response": {"status": 204}},
                    by_protocol(Protocol::Http1),
                    by_protocol(Protocol::Http2),
                    {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}
                ]
            }]},
            "http_filters": http_filters
    });
    shape.paths.apply(&mut hcm_config);
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": hcm_config
    });
    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                "tls_certificates": [certificate(cert)],
                "validation_context": {"trusted_ca": {"filename": pki.ca_file()}}
            }
        }
    });
    Ok(json!({
                "name": "inbound",
                "stat_prefix": "inbound",
                "address": loopback(0),
                "listener_filters": [{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
                }],
                "filter_chains": [
                    {"name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
                     "transport_socket": tls, "filters": [hcm.clone()]},
                    {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"},
                     "filters": [hcm]}
                ]
    }))
}

/// Sends the `n`-th barrier request to `barrier` (a [`barrier_listener`]),
/// waits for it at `upstream`, removes it there and lets every body settle.
pub async fn upstream_barrier(
    barrier: SocketAddr,
    upstream: &Upstream,
    n: u32,
) -> anyhow::Result<()> {
    let target = format!("{BARRIER_PATH}{n}-{}", std::process::id());
    let resp = http::send(barrier, &Request::new("GET", &target)).await?;
    anyhow::ensure!(resp.status != 0, "the barrier request was reset: {resp:?}");
    anyhow::ensure!(
        !upstream.remove_target_prefix(&target).is_empty(),
        "the barrier request never reached the upstream: {resp:?}"
    );
    upstream.settled().await?;
    Ok(())
}

/// A filterless listener for [`upstream_barrier`]: plaintext HTTP/1.1 to the
/// Envoy's `upstream` cluster.
pub fn barrier_listener() -> Value {
    json!({
        "name": "barrier",
        "stat_prefix": "barrier",
        "address": loopback(0),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "barrier",
                "route_config": {"virtual_hosts": [{
                    "name": "barrier", "domains": ["*"],
                    "routes": [{"match": {"prefix": BARRIER_PATH}, "route": {"cluster": "upstream", "timeout": "10s"}}]
                }]},
                "http_filters": [router()]
            }
        }]}]
    })
}

pub fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

pub fn certificate(cert: &CertFiles) -> Value {
    json!({"certificate_chain": {"filename": cert.cert}, "private_key": {"filename": cert.key}})
}

pub fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    })
}

pub fn static_cluster(name: &str, addr: SocketAddr, transport_socket: Option<Value>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]}
    });
    if let Some(ts) = transport_socket {
        cluster["transport_socket"] = ts;
    }
    cluster
}

/// Sets a cluster's upstream HTTP protocol; `None` follows the downstream.
pub fn with_protocol(mut cluster: Value, protocol: Option<Protocol>) -> Value {
    let h1 = json!({"enable_trailers": true});
    let config = match protocol {
        None => json!({"use_downstream_protocol_config": {
            "http_protocol_options": h1, "http2_protocol_options": {}
        }}),
        Some(Protocol::Http1) => json!({"explicit_http_config": {"http_protocol_options": h1}}),
        Some(Protocol::Http2) => {
            json!({"explicit_http_config": {"http2_protocol_options": {}}})
        }
    };
    let mut options = config;
    options["@type"] =
        json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    cluster["typed_extension_protocol_options"] =
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options});
    cluster
}

/// The Envoy filter Istio generates for a WasmPlugin (pilot/pkg/model/
/// extensions.go): name `<namespace>.<name>`, `root_id` = `pluginName`, the
/// plugin config as a StringValue, runtime v8 with no `vm_id`, inline env
/// plus the resource version Istio adds, and `failure_policy` from
/// `failStrategy`.
pub fn wasm_filter(f: &Filter) -> anyhow::Result<Value> {
    let mut env: serde_json::Map<String, Value> = f
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    env.entry("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION")
        .or_insert_with(|| json!("1"));
    let mut config = json!({
        "name": f.plugin_name(),
        "root_id": f.root_id,
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": f.config},
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": crate::wasm_module(&f.module)?}},
            "environment_variables": {"key_values": env}
        },
        "failure_policy": f.failure_policy.envoy()
    });
    if f.envoyfilter_variant {
        // Only the EnvoyFilter can set this (Envoy >= 1.35): Pause in
        // on_request_headers then stops header iteration only, so the audit
        // filter sees the body before the headers leave.
        config["allow_on_headers_stop_iteration"] = json!(true);
    }
    Ok(json!({
        "name": f.plugin_name(),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config
        }
    }))
}
