//! An Istio ambient waypoint, reproduced with the same Envoy: the shape
//! `pilot/pkg/networking/core/listener_waypoint.go` generates (no Istio
//! control plane runs here; the listeners are written as istiod writes them).
//!
//! ```text
//! test ──HTTP──▶ "ztunnel" (Envoy, tcp_proxy tunneling: HTTP/2 CONNECT over
//!                mTLS with the profile's SPIFFE certificate = HBONE, to the
//!                Service's VIP)
//!          ──HBONE──▶ waypoint `connect_terminate` listener (mTLS, CONNECT;
//!                     set_filter_state io.istio.peer_principal =
//!                     %DOWNSTREAM_PEER_URI_SAN% and the original destination
//!                     = the CONNECT authority, shared ONCE)
//!          ──internal──▶ `main_internal` internal listener: original_dst
//!                     restores the VIP, and the filter chain matcher picks
//!                     the Service's chain `inbound-vip|80|http|HOST`
//!                     [that Service's meshguard filters, as Istio attaches a
//!                      WasmPlugin / TrafficExtension with a Service in
//!                      `targetRefs`, delivered over ECDS as `NAMESPACE.NAME`]
//!                     ──▶ recording upstream
//! ```
//!
//! On the inner listener the connection carries no TLS at all: the caller's
//! identity exists only as the filter state the waypoint's own Envoy set from
//! the tunnel's verified certificate. Requests are plain HTTP/1.1 or HTTP/2
//! inside the tunnel, as an application behind ztunnel sends them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Value};

use crate::certs::Pki;
use crate::envoy::{stats_config, Envoy};
use crate::http::{self, Protocol, Request, Response};
use crate::mesh::{
    barrier_listener, certificate, default_profiles, ecds_reference, loopback, push_ecds, router,
    static_cluster, upstream_barrier, with_protocol, write_ecds, Build, Deployment, Filter,
    PushOutcome,
};
use crate::upstream::Upstream;

/// The waypoint's own identity.
pub const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
/// The HBONE port of Istio's waypoints (the harness binds an ephemeral one).
pub const HBONE_PORT: u16 = 15008;
/// The waypoint's workload, as its node metadata names it (what a signed
/// release's `workloads` must cover).
pub const WAYPOINT_WORKLOAD: &str = "default/waypoint";
/// The port every Service of the harness serves on.
const SERVICE_PORT: u16 = 80;

/// A Service the waypoint serves: its host, and the filters attached to it.
#[derive(Debug, Clone)]
pub struct Service {
    /// `NAME.NAMESPACE.svc.cluster.local`.
    pub host: String,
    pub filters: Vec<Filter>,
}

impl Service {
    /// The Service `name` in `default`, with `filters` attached to it.
    pub fn new(name: &str, filters: &[Filter]) -> Self {
        Self {
            host: format!("{name}.default.svc.cluster.local"),
            filters: filters.to_vec(),
        }
    }

    /// The waypoint filter chain Istio generates for it.
    pub fn chain(&self) -> String {
        format!("inbound-vip|{SERVICE_PORT}|http|{}", self.host)
    }
}

/// Describes a waypoint before it starts.
#[derive(Debug, Clone, Default)]
pub struct WaypointBuilder {
    services: Vec<Service>,
    workers: u32,
    ecds: bool,
}

impl WaypointBuilder {
    /// Adds a Service with its own filter chain (and VIP).
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// The waypoint's worker threads (`--concurrency`; default 1). Each
    /// request then goes through an HBONE connection of its own, so that
    /// [`Waypoint::send_on_every_worker`] can reach every worker.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// Delivers the filters over ECDS, as istiod delivers a WasmPlugin (the
    /// default inlines them, as an EnvoyFilter does); then
    /// [`Waypoint::push_filters`] updates one Service's filters alone.
    pub fn ecds(mut self) -> Self {
        self.ecds = true;
        self
    }
}

/// A running ztunnel stand-in, waypoint and upstream; stops on drop.
#[derive(Debug)]
pub struct Waypoint {
    pub waypoint: Envoy,
    pub ztunnel: Envoy,
    upstream: Upstream,
    /// (profile route, Service host) → the ztunnel listener that tunnels to
    /// the Service's VIP with the profile's certificate.
    entries: HashMap<(&'static str, String), SocketAddr>,
    services: Vec<Service>,
    workers: u32,
    ecds: bool,
    ecds_version: std::cell::Cell<u32>,
    barrier: SocketAddr,
    barriers: std::cell::Cell<u32>,
    dir: tempfile::TempDir,
}

impl Waypoint {
    /// Starts the waypoint with one Service, `filters` on its chain.
    pub async fn start(filters: &[Filter]) -> anyhow::Result<Self> {
        Self::builder()
            .service(Service::new("backend", filters))
            .start()
            .await
    }

    pub fn builder() -> WaypointBuilder {
        WaypointBuilder::default()
    }
}

impl WaypointBuilder {
    pub async fn start(self) -> anyhow::Result<Waypoint> {
        let dir = tempfile::Builder::new()
            .prefix("meshguard-waypoint-")
            .tempdir()?;
        let pki = Pki::new(dir.path())?;
        let upstream = Upstream::start().await?;
        let deployed: Vec<Service> = self
            .services
            .iter()
            .map(|s| Service {
                host: s.host.clone(),
                filters: Deployment::current().apply(&s.filters),
            })
            .collect();
        if self.ecds {
            for f in deployed.iter().flat_map(|s| &s.filters) {
                write_ecds(dir.path(), Build::current(), 1, f)?;
            }
        }
        let filters: Vec<Filter> = deployed.iter().flat_map(|s| s.filters.clone()).collect();
        let waypoint = Envoy::start_with_env(
            "waypoint",
            dir.path(),
            waypoint_bootstrap(&deployed, self.ecds, &pki, upstream.addr(), dir.path())?,
            self.workers,
            &Build::current().process_env(&filters)?,
        )
        .await?;
        let hbone = waypoint.listener("connect_terminate").await?;
        let barrier = waypoint.listener("barrier").await?;
        let profiles: Vec<_> = default_profiles()
            .into_iter()
            .filter(|p| p.identity.is_some())
            .collect();
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        for profile in &profiles {
            let Some(id) = profile.identity else { continue };
            let mut uris = vec![id];
            uris.extend_from_slice(profile.extra_uris);
            let cert = pki.issue_with_uris(&format!("ztunnel-{}", profile.route), &uris)?;
            let cluster = format!("hbone-{}", profile.route);
            for index in 0..deployed.len() {
                let name = format!("{cluster}-{index}");
                listeners.push(json!({
                    "name": name,
                    "address": loopback(0),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": name,
                            "cluster": cluster,
                            // ztunnel's CONNECT authority: the destination,
                            // here the Service's VIP.
                            "tunneling_config": {"hostname": format!("{}:{SERVICE_PORT}", vip(index)?)}
                        }
                    }]}]
                }));
            }
            let tls = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "common_tls_context": {
                        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
                        "tls_certificates": [certificate(&cert)],
                        "validation_context": {
                            "trusted_ca": {"filename": pki.ca_file()},
                            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": WAYPOINT_ID}}]
                        }
                    }
                }
            });
            let mut hbone_cluster = with_protocol(
                static_cluster(&cluster, hbone, Some(tls)),
                Some(Protocol::Http2),
            );
            if self.workers > 1 {
                // One tunnel per HBONE connection: the waypoint's kernel then
                // spreads them over its workers (a pooled connection would
                // pin every request to one worker).
                hbone_cluster["typed_extension_protocol_options"]
                    ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                    ["common_http_protocol_options"] = json!({"max_requests_per_connection": 1});
            }
            clusters.push(hbone_cluster);
        }
        let ztunnel = Envoy::start(
            "ztunnel",
            dir.path(),
            json!({
                "node": {"id": "ztunnel", "cluster": "ztunnel"},
                "static_resources": {"listeners": listeners, "clusters": clusters}
            }),
        )
        .await?;
        let mut entries = HashMap::new();
        for profile in &profiles {
            for (index, service) in deployed.iter().enumerate() {
                let addr = ztunnel
                    .listener(&format!("hbone-{}-{index}", profile.route))
                    .await?;
                entries.insert((profile.route, service.host.clone()), addr);
            }
        }
        Ok(Waypoint {
            waypoint,
            ztunnel,
            upstream,
            entries,
            services: self.services,
            workers: self.workers.max(1),
            ecds: self.ecds,
            ecds_version: std::cell::Cell::new(1),
            barrier,
            barriers: std::cell::Cell::new(0),
            dir,
        })
    }
}

/// The VIP of the harness's `index`th Service (240.240.0.0/16 is reserved,
/// so nothing ever answers there: the waypoint only matches on it).
fn vip(index: usize) -> anyhow::Result<std::net::Ipv4Addr> {
    let host = u8::try_from(index + 1)?;
    Ok(std::net::Ipv4Addr::new(240, 240, 0, host))
}

impl Waypoint {
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Waits until everything the waypoint forwarded before this call
    /// reached the upstream (see [`crate::mesh::Mesh::upstream_barrier`]).
    pub async fn upstream_barrier(&self) -> anyhow::Result<()> {
        let n = self.barriers.get() + 1;
        self.barriers.set(n);
        upstream_barrier(self.barrier, &self.upstream, n).await
    }

    /// After a barrier through the waypoint's Envoy, fails if any request
    /// reached the upstream.
    pub async fn assert_nothing_reached_upstream(&self, what: &str) {
        if let Err(e) = self.upstream_barrier().await {
            panic!("{what}: {e}");
        }
        self.upstream.assert_nothing_arrived(what);
    }

    /// Sends `request` from the workload whose certificate is `profile`'s,
    /// through its HBONE tunnel (HTTP/1.1 or HTTP/2 inside, per `request`),
    /// to the first Service.
    pub async fn send_as(&self, profile: &str, request: Request) -> anyhow::Result<Response> {
        let first = self
            .services
            .first()
            .ok_or_else(|| anyhow::anyhow!("the waypoint serves no Service"))?;
        self.send_to(&first.host, profile, request).await
    }

    /// As [`Waypoint::send_as`], to the Service `host`.
    pub async fn send_to(
        &self,
        host: &str,
        profile: &str,
        request: Request,
    ) -> anyhow::Result<Response> {
        let addr = self
            .entries
            .get(&(profile_route(profile)?, host.to_string()))
            .ok_or_else(|| anyhow::anyhow!("no mTLS profile {profile:?} to {host}"))?;
        http::send(*addr, &request).await
    }

    /// Sends `request(i)` to the Service `host` as `profile` on fresh HBONE
    /// connections, round after round until each worker thread accepted one
    /// (see [`Envoy::send_on_every_worker`]). Needs [`WaypointBuilder::workers`]
    /// above 1 (one tunnel per connection).
    pub async fn send_on_every_worker(
        &self,
        host: &str,
        profile: &str,
        per_round: usize,
        request: impl Fn(usize) -> Request,
    ) -> anyhow::Result<Vec<(usize, Response)>> {
        self.waypoint
            .send_on_every_worker("connect_terminate", self.workers, per_round, |i| {
                let request = request(i);
                async move { self.send_to(host, profile, request).await }
            })
            .await
    }

    /// Replaces the filters attached to the Service `host` (ECDS, as istiod
    /// pushes a changed WasmPlugin: the other Services' filters are not
    /// sent), and waits until the waypoint took or refused them.
    pub async fn push_filters(
        &self,
        host: &str,
        filters: &[Filter],
    ) -> anyhow::Result<PushOutcome> {
        anyhow::ensure!(self.ecds, "push_filters needs WaypointBuilder::ecds");
        anyhow::ensure!(
            self.services.iter().any(|s| s.host == host),
            "the waypoint serves no Service {host}"
        );
        let version = self.ecds_version.get() + 1;
        self.ecds_version.set(version);
        let filters = Deployment::current().apply(filters);
        push_ecds(
            &self.waypoint,
            self.dir.path(),
            Build::current(),
            version,
            &filters,
        )
        .await
    }
}

/// The profile's route as the harness's profiles spell it (`'static`).
fn profile_route(profile: &str) -> anyhow::Result<&'static str> {
    default_profiles()
        .into_iter()
        .find(|p| p.route == profile)
        .map(|p| p.route)
        .ok_or_else(|| anyhow::anyhow!("no profile {profile:?}"))
}

fn waypoint_bootstrap(
    services: &[Service],
    ecds: bool,
    pki: &Pki,
    upstream: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Value> {
    let cert = pki.issue("waypoint", WAYPOINT_ID)?;
    let tls = json!({
        "name": "tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2"],
                "tls_certificates": [certificate(&cert)],
                "validation_context": {"trusted_ca": {"filename": pki.ca_file()}}
            }
        }
    });
    // Istio's `connect_authority` filter (pilot/pkg/xds/filters). The two
    // original_dst addresses are hashable objects, so the pool of internal
    // connections is split by tunnel source and destination: an inner
    // connection, and the peer principal it carries, is never reused for a
    // tunnel from another workload (envoy#35711).
    let filter_state = |key: &str, factory: Option<&str>, format: &str| {
        let mut value = json!({
            "object_key": key,
            "format_string": {"text_format_source": {"inline_string": format}},
            "shared_with_upstream": "ONCE"
        });
        if let Some(factory) = factory {
            value["factory_key"] = json!(factory);
        }
        value
    };
    let connect_terminate = json!({
        "name": "connect_terminate",
        "address": loopback(0),
        // Per-worker connection counts under this name.
        "stat_prefix": "connect_terminate",
        "filter_chains": [{
            "name": "default",
            "transport_socket": tls,
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "connect_terminate",
                    "access_log": [{"name": "envoy.access_loggers.stderr", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
                        "log_format": {"text_format_source": {"inline_string":
                            "connect_terminate peer=%DOWNSTREAM_PEER_URI_SAN% connection=%CONNECTION_ID%\n"}}
                    }}],
                    "route_config": {"name": "default", "virtual_hosts": [{
                        "name": "default", "domains": ["*"],
                        "routes": [{
                            "match": {"connect_matcher": {}},
                            "route": {"cluster": "main_internal", "upgrade_configs": [
                                {"upgrade_type": "CONNECT", "connect_config": {}}
                            ]}
                        }]
                    }]},
                    "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                    "http2_protocol_options": {"allow_connect": true},
                    "http_filters": [
                        {"name": "connect_authority", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
                            "on_request_headers": [
                                filter_state("envoy.filters.listener.original_dst.local_ip", None, "%REQ(:AUTHORITY)%"),
                                filter_state("envoy.filters.listener.original_dst.remote_ip", None, "%DOWNSTREAM_REMOTE_ADDRESS%"),
                                filter_state("io.istio.peer_principal", Some("envoy.string"), "%DOWNSTREAM_PEER_URI_SAN%"),
                                filter_state("io.istio.local_principal", Some("envoy.string"), "%DOWNSTREAM_LOCAL_URI_SAN%")
                            ]
                        }},
                        router()
                    ]
                }
            }]
        }]
    });
    // One filter chain per Service, named as Istio names it; the matcher
    // picks it by the original destination (the VIP the tunnel asked for),
    // which original_dst restores from the filter state.
    let mut chains = Vec::new();
    let mut by_vip = serde_json::Map::new();
    for (index, service) in services.iter().enumerate() {
        let chain = service.chain();
        let mut http_filters = Vec::new();
        for f in &service.filters {
            http_filters.push(if ecds {
                ecds_reference(dir, Build::current(), f)
            } else {
                Build::current().http_filter(f)?
            });
        }
        http_filters.push(router());
        chains.push(json!({"name": chain, "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "waypoint_inbound",
                // What the proxy itself knows about the caller, per request.
                "access_log": [{"name": "envoy.access_loggers.stderr", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
                    "log_format": {"text_format_source": {"inline_string":
                        "waypoint_inbound chain=%FILTER_CHAIN_NAME% peer_principal=%FILTER_STATE(io.istio.peer_principal:PLAIN)% path=%REQ(:PATH)% status=%RESPONSE_CODE%\n"}}
                }}],
                "codec_type": "AUTO",
                "http_protocol_options": {"enable_trailers": true},
                "route_config": {"virtual_hosts": [{
                    "name": "inbound", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]
                }]},
                "http_filters": http_filters
            }
        }]}));
        let by_port = json!({"matcher_tree": {
            "input": {"name": "port", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput"}},
            "exact_match_map": {"map": {SERVICE_PORT.to_string(): {"action": {
                "name": chain,
                "typed_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": chain}
            }}}}
        }});
        by_vip.insert(vip(index)?.to_string(), json!({"matcher": by_port}));
    }
    let main_internal = json!({
        "name": "main_internal",
        "internal_listener": {},
        "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
        }}],
        "filter_chains": chains,
        "filter_chain_matcher": {"matcher_tree": {
            "input": {"name": "ip", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput"}},
            "exact_match_map": {"map": by_vip}
        }}
    });
    let internal_cluster = json!({
        "name": "main_internal",
        "load_assignment": {"cluster_name": "main_internal", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"envoy_internal_address": {"server_listener_name": "main_internal"}}
        }}]}]},
        "transport_socket": {
            "name": "internal_upstream",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
                "transport_socket": {"name": "raw_buffer", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                }}
            }
        }
    });
    Ok(json!({
        "node": {"id": "waypoint", "cluster": "waypoint.default",
                 "metadata": {"NAMESPACE": "default", "WORKLOAD_NAME": "waypoint"}},
        "stats_config": stats_config(),
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}
        }],
        "static_resources": {
            "listeners": [connect_terminate, main_internal, barrier_listener()],
            "clusters": [
                internal_cluster,
                with_protocol(static_cluster("upstream", upstream, None), Some(Protocol::Http1))
            ]
        }
    }))
}
