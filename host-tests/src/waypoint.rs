//! An Istio ambient waypoint, reproduced with the same Envoy: what
//! `pilot/pkg/networking/core/listener_waypoint.go` generates, reduced to one
//! service.
//!
//! ```text
//! test ──HTTP──▶ "ztunnel" (Envoy, tcp_proxy tunneling: HTTP/2 CONNECT over
//!                mTLS with the profile's SPIFFE certificate = HBONE)
//!          ──HBONE──▶ waypoint `connect_terminate` listener (mTLS, CONNECT;
//!                     set_filter_state io.istio.peer_principal =
//!                     %DOWNSTREAM_PEER_URI_SAN%, shared ONCE)
//!          ──internal──▶ `main_internal` internal listener
//!                     [meshguard filters, as Istio attaches a WasmPlugin /
//!                      TrafficExtension with targetRefs] ──▶ recording upstream
//! ```
//!
//! On the inner listener the connection carries no TLS at all: the caller's
//! identity exists only as the filter state the waypoint's own Envoy set from
//! the tunnel's verified certificate. Requests are plain HTTP/1.1 or HTTP/2
//! inside the tunnel, as an application behind ztunnel sends them.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::certs::Pki;
use crate::envoy::{stats_config, Envoy};
use crate::http::{self, Protocol, Request, Response};
use crate::mesh::{
    barrier_listener, certificate, default_profiles, loopback, router, static_cluster,
    upstream_barrier, with_protocol, Filter,
};
use crate::upstream::Upstream;

/// The waypoint's own identity.
pub const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
/// The HBONE port of Istio's waypoints (the harness binds an ephemeral one).
pub const HBONE_PORT: u16 = 15008;

/// A running ztunnel stand-in, waypoint and upstream; stops on drop.
#[derive(Debug)]
pub struct Waypoint {
    pub waypoint: Envoy,
    pub ztunnel: Envoy,
    upstream: Upstream,
    /// Profile route → the ztunnel listener that tunnels with its certificate.
    entries: HashMap<&'static str, SocketAddr>,
    barrier: SocketAddr,
    barriers: std::cell::Cell<u32>,
    _dir: tempfile::TempDir,
}

impl Waypoint {
    /// Starts the waypoint with `filters` on its inner listener.
    pub async fn start(filters: &[Filter]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("meshguard-waypoint-")
            .tempdir()?;
        let pki = Pki::new(dir.path())?;
        let upstream = Upstream::start().await?;
        let filters = crate::mesh::Deployment::current().apply(filters);
        let waypoint = Envoy::start_with_env(
            "waypoint",
            dir.path(),
            waypoint_bootstrap(&filters, &pki, upstream.addr())?,
            1,
            &crate::mesh::Build::current().process_env(&filters)?,
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
            let name = format!("hbone-{}", profile.route);
            listeners.push(json!({
                "name": name,
                "address": loopback(0),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": name,
                        "cluster": name,
                        // ztunnel's CONNECT authority: the destination pod's address.
                        "tunneling_config": {"hostname": upstream.addr().to_string()}
                    }
                }]}]
            }));
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
            clusters.push(with_protocol(
                static_cluster(&name, hbone, Some(tls)),
                Some(Protocol::Http2),
            ));
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
            let addr = ztunnel
                .listener(&format!("hbone-{}", profile.route))
                .await?;
            entries.insert(profile.route, addr);
        }
        Ok(Self {
            waypoint,
            ztunnel,
            upstream,
            entries,
            barrier,
            barriers: std::cell::Cell::new(0),
            _dir: dir,
        })
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// After a barrier (see [`crate::mesh::Mesh::upstream_barrier`]) through
    /// the waypoint's Envoy, fails if any request reached the upstream.
    pub async fn assert_nothing_reached_upstream(&self, what: &str) {
        let n = self.barriers.get() + 1;
        self.barriers.set(n);
        if let Err(e) = upstream_barrier(self.barrier, &self.upstream, n).await {
            panic!("{what}: {e}");
        }
        self.upstream.assert_nothing_arrived(what);
    }

    /// Sends `request` from the workload whose certificate is `profile`'s,
    /// through its HBONE tunnel (HTTP/1.1 or HTTP/2 inside, per `request`).
    pub async fn send_as(&self, profile: &str, request: Request) -> anyhow::Result<Response> {
        let addr = self
            .entries
            .get(profile)
            .ok_or_else(|| anyhow::anyhow!("no mTLS profile {profile:?}"))?;
        http::send(*addr, &request).await
    }
}

fn waypoint_bootstrap(
    filters: &[Filter],
    pki: &Pki,
    upstream: SocketAddr,
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
                                filter_state("envoy.filters.listener.original_dst.local_ip", Some("envoy.string"), "%REQ(:AUTHORITY)%"),
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
    let mut http_filters = Vec::new();
    for f in filters {
        http_filters.push(crate::mesh::Build::current().http_filter(f)?);
    }
    http_filters.push(router());
    let main_internal = json!({
        "name": "main_internal",
        "internal_listener": {},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "waypoint_inbound",
                // What the proxy itself knows about the caller, per request.
                "access_log": [{"name": "envoy.access_loggers.stderr", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
                    "log_format": {"text_format_source": {"inline_string":
                        "waypoint_inbound peer_principal=%FILTER_STATE(io.istio.peer_principal:PLAIN)% path=%REQ(:PATH)% status=%RESPONSE_CODE%\n"}}
                }}],
                "codec_type": "AUTO",
                "http_protocol_options": {"enable_trailers": true},
                "route_config": {"virtual_hosts": [{
                    "name": "inbound", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]
                }]},
                "http_filters": http_filters
            }
        }]}]
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
        "node": {"id": "waypoint", "cluster": "waypoint.default"},
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
