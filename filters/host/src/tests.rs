//! The pipeline's callback sequences over a recording host: what it
//! releases, replaces, replies and resets, in table-driven sentences. The
//! sections' decisions are tested in the core; the real-Envoy tests are the
//! proof.

use base64::Engine as _;
use meshguard_core::audit::verify_header;
use meshguard_core::plugin::Shape;

use crate::fake::Fake;
use crate::host::{Attribute, Direction, Map, StreamHost};
use crate::reply::Flow;
use crate::root::{PluginRoot, StreamContext};

const AUDIT_KEY: &str = "bWVzaGd1YXJkLXRlc3QtYXVkaXQta2V5LTMyYnl0ZXM=";
const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";

const MASKING: &str = r#"{"rules": [{"name": "pii", "json_keys": ["password"], "detectors": ["email"],
                          "except_principals": ["cluster.local/ns/default/sa/auditor"]},
                         {"name": "auth", "headers": ["authorization"]}]}"#;

/// A host whose plugin config is `config` under `root_id`, with an mTLS
/// peer whose certificate this proxy's XFCC element shows with one URI SAN.
fn host(root_id: &str, config: &str) -> Fake {
    let mut host = Fake {
        config: config.as_bytes().to_vec(),
        now_ms: 1_700_000_000_000,
        ..Fake::default()
    };
    host.env
        .insert("MESHGUARD_AUDIT_KEY".into(), AUDIT_KEY.into());
    host.properties
        .insert("plugin_root_id".into(), root_id.into());
    host.properties
        .insert("plugin_name".into(), "default.test".into());
    peer(&mut host, FRONTEND, &format!("By={LOCAL};URI={FRONTEND}"));
    host
}

fn peer(host: &mut Fake, id: &str, xfcc: &str) {
    host.attributes.insert(Attribute::ConnectionMtls, vec![1]);
    host.attributes
        .insert(Attribute::TlsVersion, b"TLSv1.3".to_vec());
    host.attributes
        .insert(Attribute::PeerUriSan, id.as_bytes().to_vec());
    host.attributes
        .insert(Attribute::LocalUriSan, LOCAL.as_bytes().to_vec());
    host.maps
        .entry(Map::RequestHeaders)
        .or_default()
        .retain(|(n, _)| n != "x-forwarded-client-cert");
    host.maps
        .entry(Map::RequestHeaders)
        .or_default()
        .push(("x-forwarded-client-cert".into(), xfcc.into()));
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

struct Exchange {
    host: Fake,
    stream: StreamContext,
    root: PluginRoot,
}

impl Exchange {
    /// Configures the plugin, then sends the request headers.
    fn start(
        mut host: Fake,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        end: bool,
    ) -> (Self, Flow) {
        let mut root = PluginRoot::new(1);
        assert!(root.configure(&mut host), "the config loads");
        let mut stream = root.stream(&host);
        let request = host.maps.entry(Map::RequestHeaders).or_default();
        request.extend(pairs(&[
            (":method", method),
            (":path", path),
            (":authority", "svc"),
        ]));
        request.extend(pairs(headers));
        let flow = stream.request_headers(&mut host, end);
        (Self { host, stream, root }, flow)
    }

    fn chunk(&mut self, direction: Direction, data: &[u8], end: bool) -> Flow {
        self.host.push_body(direction, data);
        let size = self.host.body(direction, 0, usize::MAX).len();
        let flow = self.stream.body(&mut self.host, direction, size, end);
        if flow == Flow::Continue {
            // The host releases what was held.
            let released = self.host.take_body(direction);
            self.host.released.push((direction, released));
        }
        flow
    }

    fn trailers(&mut self, direction: Direction, trailers: &[(&str, &str)]) -> Flow {
        self.host
            .maps
            .insert(Map::trailers(direction), pairs(trailers));
        let flow = self.stream.trailers(&mut self.host, direction);
        if flow == Flow::Continue {
            let released = self.host.take_body(direction);
            self.host.released.push((direction, released));
        }
        flow
    }

    fn response(&mut self, headers: &[(&str, &str)], end: bool) -> Flow {
        self.host.maps.insert(Map::ResponseHeaders, pairs(headers));
        self.stream.response_headers(&mut self.host, end)
    }

    fn released(&self, direction: Direction) -> Vec<u8> {
        self.host
            .released
            .iter()
            .filter(|(d, _)| *d == direction)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.host.entry(Map::RequestHeaders, name)
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn a_request_body_ended_by_trailers_is_held_then_replaced_masked() {
    let (mut x, flow) = Exchange::start(
        host("meshguard-masking", MASKING),
        "POST",
        "/a?password=x",
        &[JSON, ("content-length", "30")],
        false,
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(x.header("content-length"), None);
    assert_eq!(x.header(":path"), Some("/a?password=%5BREDACTED%5D"));
    assert_eq!(
        x.chunk(Direction::Request, br#"{"password""#, false),
        Flow::Stop
    );
    assert_eq!(x.chunk(Direction::Request, br#": "x"}"#, false), Flow::Stop);
    let flow = x.trailers(Direction::Request, &[("authorization", "Basic x")]);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        x.released(Direction::Request),
        br#"{"password": "[REDACTED]"}"#
    );
    assert_eq!(
        x.host.entry(Map::RequestTrailers, "authorization"),
        Some("[REDACTED]")
    );
    assert!(x.host.replies.is_empty() && x.host.resets.is_empty());
    assert_eq!(
        x.host
            .published
            .get("meshguard_masking")
            .map(String::as_str),
        Some("masked:3")
    );
}

#[test]
fn a_response_that_cannot_be_masked_at_its_trailers_is_reset() {
    let (mut x, _) = Exchange::start(host("meshguard-masking", MASKING), "GET", "/a", &[], true);
    assert_eq!(x.response(&[JSON], false), Flow::Continue);
    assert_eq!(
        x.chunk(Direction::Response, br#"{"password": "#, false),
        Flow::Stop
    );
    assert_eq!(x.trailers(Direction::Response, &[]), Flow::Stop);
    assert_eq!(x.host.resets, [Direction::Response]);
    assert!(
        x.released(Direction::Response).is_empty(),
        "no byte left unmasked"
    );
    assert_eq!(
        x.host.counter("meshguard_masking_bodies_refused_total.direction=.=response;.;reason=.=malformed_json;.;"),
        1
    );
}

#[test]
fn a_grpc_request_is_answered_locally_and_never_held() {
    let (x, flow) = Exchange::start(
        host("meshguard-masking", MASKING),
        "POST",
        "/svc.Users/Get",
        &[("content-type", "application/grpc")],
        false,
    );
    assert_eq!(flow, Flow::Stop);
    assert_eq!(x.host.replies, [(415, Some("grpc".to_owned()))]);
}

#[test]
fn a_masked_body_the_host_refuses_resets_the_stream() {
    let (mut x, _) = Exchange::start(
        host("meshguard-masking", MASKING),
        "POST",
        "/a",
        &[JSON],
        false,
    );
    x.host.refuse_bodies = true;
    let flow = x.chunk(Direction::Request, br#"{"password": "x"}"#, true);
    assert_eq!(flow, Flow::Stop);
    assert_eq!(x.host.resets, [Direction::Request]);
    assert_eq!(
        x.host.counter(
            "meshguard_masking_bodies_refused_total.direction=.=request;.;reason=.=host_error;.;"
        ),
        1
    );
}

#[test]
fn a_body_without_anything_to_mask_is_released_unchanged() {
    let (mut x, _) = Exchange::start(
        host("meshguard-masking", MASKING),
        "POST",
        "/a",
        &[JSON],
        false,
    );
    assert_eq!(
        x.chunk(Direction::Request, br#"{"a": 1}"#, false),
        Flow::Stop
    );
    assert_eq!(x.chunk(Direction::Request, b"", true), Flow::Continue);
    assert_eq!(x.released(Direction::Request), br#"{"a": 1}"#);
    assert!(!x.host.published.contains_key("meshguard_masking"));
}

/// The combined plugin: every section in one stream context.
fn combined(audit_body: bool) -> String {
    let parts = if audit_body {
        r#"["method", "path", "body"]"#
    } else {
        r#"["method", "path"]"#
    };
    format!(
        r#"{{"identity": {{"default_action": "allow",
                          "rules": [{{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}}]}},
             "masking": {MASKING},
             "audit": {{"key_id": "k", "commands": [{{"name": "all", "parts": {parts}}}]}}}}"#
    )
}

#[test]
fn a_section_that_refuses_stops_the_rest() {
    let (x, flow) = Exchange::start(
        host("meshguard", &combined(false)),
        "GET",
        "//x/../admin/users",
        &[],
        true,
    );
    assert_eq!(flow, Flow::Stop);
    assert_eq!(x.host.replies, [(403, Some("denied_by_rule".to_owned()))]);
    // Neither masking nor audit saw it: no audit header, no record started.
    assert_eq!(x.header("x-meshguard-audit"), None);
    assert!(!x.host.published.contains_key("meshguard_request"));
}

#[test]
fn audit_hashes_and_records_what_masking_left() {
    let (mut x, flow) = Exchange::start(
        host("meshguard", &combined(true)),
        "POST",
        "/api/orders?password=x",
        &[JSON],
        false,
    );
    // The body command holds the headers (the EnvoyFilter shape).
    assert_eq!(flow, Flow::Stop);
    assert_eq!(
        x.chunk(Direction::Request, br#"{"password": "hunter2"}"#, true),
        Flow::Continue
    );
    let body = x.released(Direction::Request);
    assert_eq!(body, br#"{"password": "[REDACTED]"}"#);
    let stamp = verify_header(x.header("x-meshguard-audit").unwrap(), &base64_key()).unwrap();
    let section = meshguard_core::plugin::Plugin::compile(
        combined(true).as_bytes(),
        Shape::Combined,
        &|n| (n == "MESHGUARD_AUDIT_KEY").then(|| AUDIT_KEY.to_owned()),
        meshguard_core::plugin::Secrets::REQUIRE,
    )
    .unwrap();
    let policy = &section.audit.unwrap().policy;
    let want = policy
        .hash_request("POST", "/api/orders?password=%5BREDACTED%5D", "svc", &body)
        .unwrap();
    assert_eq!(
        stamp.command_sha256, want,
        "the hash covers the masked body and query"
    );
    assert_eq!(stamp.peer.as_deref(), Some(FRONTEND));
}

fn base64_key() -> Vec<u8> {
    meshguard_core::audit::decode_key(AUDIT_KEY).unwrap()
}

#[test]
fn every_section_reads_the_caller_the_proxy_could_establish() {
    let auditor = "spiffe://cluster.local/ns/default/sa/auditor";
    for (xfcc, masked) in [
        // One URI SAN: the auditor is exempt from masking.
        (format!("By={LOCAL};URI={auditor}"), false),
        // Two URI SANs: no usable identity, for masking as for identity.
        (format!("By={LOCAL};URI={auditor};URI={FRONTEND}"), true),
        // No element of this proxy's: nothing establishes a single SAN.
        (format!("By=spiffe://x/y;URI={auditor}"), true),
    ] {
        let mut h = host("meshguard-masking", MASKING);
        peer(&mut h, auditor, &xfcc);
        let (mut x, _) = Exchange::start(h, "POST", "/a", &[JSON], false);
        x.chunk(Direction::Request, br#"{"password": "x"}"#, true);
        let body = String::from_utf8(x.released(Direction::Request)).unwrap();
        assert_eq!(body.contains("[REDACTED]"), masked, "{xfcc}: {body}");
    }
}

#[test]
fn a_later_plugin_refuses_a_path_an_earlier_one_read_another_way() {
    let mut h = host("meshguard-masking", MASKING);
    // An earlier plugin judged `//admin/x` (BASE keeps `//`); this one reads
    // it as `/admin/x` (MERGE_SLASHES).
    h.published
        .insert("meshguard_request".into(), "v1\t//admin/x\t~\t~".into());
    let (x, flow) = Exchange::start(h, "GET", "//admin/x", &[], true);
    assert_eq!(flow, Flow::Stop);
    assert_eq!(x.host.replies, [(400, Some("ambiguous_path".to_owned()))]);
}

#[test]
fn the_canonical_target_and_host_are_what_the_upstream_receives() {
    let mut h = host("meshguard-identity", r#"{"default_action": "allow"}"#);
    h.maps.entry(Map::RequestHeaders).or_default();
    let mut root = PluginRoot::new(1);
    assert!(root.configure(&mut h));
    let mut stream = root.stream(&h);
    h.maps
        .get_mut(&Map::RequestHeaders)
        .unwrap()
        .extend(pairs(&[
            (":method", "GET"),
            (":path", "/a/./b/../%63%C3%A9"),
            (":authority", "API.Example.com.:8080"),
        ]));
    assert_eq!(stream.request_headers(&mut h, true), Flow::Continue);
    assert_eq!(h.entry(Map::RequestHeaders, ":path"), Some("/a/c%C3%A9"));
    assert_eq!(
        h.entry(Map::RequestHeaders, ":authority"),
        Some("api.example.com:8080")
    );
    for refused in ["api:80:80", "user@api", "[::1"] {
        let mut h = host("meshguard-identity", r#"{"default_action": "allow"}"#);
        let (x, flow) = Exchange::start_with_authority(h_take(&mut h), refused);
        assert_eq!(flow, Flow::Stop, "{refused}");
        assert_eq!(
            x.host.replies,
            [(403, Some("invalid_host".to_owned()))],
            "{refused}"
        );
    }
}

fn h_take(h: &mut Fake) -> Fake {
    std::mem::take(h)
}

impl Exchange {
    fn start_with_authority(mut host: Fake, authority: &str) -> (Self, Flow) {
        let mut root = PluginRoot::new(1);
        assert!(root.configure(&mut host));
        let mut stream = root.stream(&host);
        host.maps
            .entry(Map::RequestHeaders)
            .or_default()
            .extend(pairs(&[
                (":method", "GET"),
                (":path", "/"),
                (":authority", authority),
            ]));
        let flow = stream.request_headers(&mut host, true);
        (Self { host, stream, root }, flow)
    }
}

#[test]
fn an_unconfigured_plugin_refuses_every_request() {
    let mut h = host("meshguard", "{}");
    let mut root = PluginRoot::new(1);
    assert!(
        !root.configure(&mut h),
        "a config with no section is refused"
    );
    let mut stream = root.stream(&h);
    assert_eq!(stream.request_headers(&mut h, true), Flow::Stop);
    assert_eq!(
        h.replies,
        [(503, Some("meshguard_not_configured".to_owned()))]
    );
}

#[test]
fn caller_trailers_named_like_the_audit_headers_never_reach_the_upstream() {
    let (mut x, flow) = Exchange::start(
        host("meshguard", &combined(false)),
        "POST",
        "/api/x",
        &[JSON],
        false,
    );
    assert_eq!(flow, Flow::Continue);
    let flow = x.trailers(
        Direction::Request,
        &[
            ("X-Meshguard-Audit", "forged"),
            ("x-meshguard-command-sha256", "00"),
            ("x-other", "kept"),
        ],
    );
    assert_eq!(flow, Flow::Continue);
    let trailers = x
        .host
        .maps
        .get(&Map::RequestTrailers)
        .cloned()
        .unwrap_or_default();
    assert_eq!(trailers, pairs(&[("x-other", "kept")]));
}

#[test]
fn a_believed_intended_document_names_the_sections_that_differ() {
    use meshguard_core::integrity::{fingerprint, sign_answer, IntendedDocument};
    use meshguard_core::plugin::{section_fingerprints, Section};

    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let running = combined(false);
    let mut h = host("meshguard", &running);
    h.env
        .insert("MESHGUARD_TRUSTED_KEYS".into(), format!("release={public}"));
    h.env.insert(
        "MESHGUARD_SOURCE_OF_TRUTH".into(),
        r#"{"cluster": "truth", "path": "/v1/intended/{filter}"}"#.into(),
    );
    h.properties
        .insert("xds.node.metadata.NAMESPACE".into(), "default".into());
    h.properties
        .insert("xds.node.metadata.WORKLOAD_NAME".into(), "backend".into());
    let mut root = PluginRoot::new(1);
    assert!(root.configure(&mut h));
    root.tick(&mut h);
    assert_eq!(h.callouts.borrow().len(), 1, "the first tick polls at once");
    // The intended config differs from the running one in its masking section only.
    let intended = running.replace("auth", "authz");
    let mut sections = std::collections::BTreeMap::new();
    for (section, fp) in section_fingerprints(intended.as_bytes(), Shape::Combined).unwrap() {
        sections.insert(section.as_str().to_owned(), fp);
    }
    let document = IntendedDocument {
        filter: "meshguard".into(),
        workload: "default/backend".into(),
        fingerprint: fingerprint(intended.as_bytes()).unwrap(),
        config_version: None,
        expires: h.now_ms / 1000 + 60,
        // Published two minutes ago (Unix milliseconds).
        issued: h.now_ms - 120_000,
        sections: Some(sections),
    };
    let body = sign_answer(&document, "release", &key).unwrap();
    h.callout_answer = Some(("200".into(), body.clone()));
    root.callout_response(&mut h, 1, 3, body.len());
    let gauge = |section: Section| {
        h.gauge(&format!(
            "meshguard_config_section_drift.filter=.=meshguard;.;section=.={};.;",
            section.as_str()
        ))
    };
    assert_eq!(gauge(Section::Masking), Some(1));
    assert_eq!(gauge(Section::Identity), Some(0));
    assert_eq!(gauge(Section::Audit), Some(0));
    assert_eq!(
        h.gauge("meshguard_config_drift.filter=.=meshguard;.;"),
        Some(1)
    );
    // Its age in seconds, then again on a later tick (broken by hand: the
    // age computed as seconds minus milliseconds read 0 at both).
    let age = "meshguard_intended_document_age_seconds.filter=.=meshguard;.;";
    assert_eq!(h.gauge(age), Some(120));
    h.now_ms += 30_000;
    root.tick(&mut h);
    assert_eq!(h.gauge(age), Some(150));
}

#[test]
fn a_combined_plugin_records_its_own_sections_decisions_without_filter_state() {
    let config = combined(false).replace(
        r#""audit": {"#,
        r#""audit": {"collector": {"cluster": "collector", "path": "/records"}, "#,
    );
    let (mut x, flow) =
        Exchange::start(host("meshguard", &config), "POST", "/api/x", &[JSON], false);
    assert_eq!(flow, Flow::Continue);
    x.chunk(Direction::Request, br#"{"password": "x"}"#, true);
    x.response(&[(":status", "200")], true);
    x.stream.log(&mut x.host);
    // Nothing was published for another plugin: audit is in this one.
    assert!(!x.host.published.contains_key("meshguard_identity"));
    assert!(!x.host.published.contains_key("meshguard_masking"));
    // The record, flushed to the collector on the root's timer, carries both.
    x.root.tick(&mut x.host);
    let callouts = x.host.callouts.borrow();
    let body = callouts
        .iter()
        .find(|(cluster, _, _)| cluster == "collector")
        .map(|(_, _, body)| String::from_utf8_lossy(body).into_owned())
        .expect("a batch to the collector");
    assert!(
        body.contains(r#""decisions":{"identity":"allowed:default_allow","masking":"masked:1"}"#),
        "{body}"
    );
}

/// The release key's signing half, and a host of the identity plugin named
/// `plugin_name` that trusts and requires it, on the workload
/// `default/backend`.
fn signed_identity_host(plugin_name: &str) -> (ed25519_dalek::SigningKey, Fake) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let mut h = host("meshguard-identity", "");
    h.properties
        .insert("plugin_name".into(), plugin_name.into());
    h.env
        .insert("MESHGUARD_TRUSTED_KEYS".into(), format!("release={public}"));
    h.env
        .insert("MESHGUARD_REQUIRE_SIGNATURE".into(), "true".into());
    h.properties
        .insert("xds.node.metadata.NAMESPACE".into(), "default".into());
    h.properties
        .insert("xds.node.metadata.WORKLOAD_NAME".into(), "backend".into());
    (key, h)
}

/// Broken by hand: `vm_newest` returning a fresh cell for every root (no
/// sharing within the VM): the older root served the request until its next
/// refresh, and the first assertion failed.
#[test]
fn a_release_accepted_on_this_vm_supersedes_the_older_root_at_its_next_request() {
    use meshguard_core::integrity::{sign_release, Release};

    let (key, mut h) = signed_identity_host("default.superseded-test");
    let signed = |serial: u64| {
        let release = Release {
            filter: "identity".into(),
            workloads: vec!["default/backend".into()],
            serial,
            not_before: None,
            not_after: None,
            services: None,
        };
        let config = r#"{"default_action": "allow", "rules": []}"#;
        sign_release(config.as_bytes(), &release, "release", &key).unwrap()
    };
    let request = |h: &mut Fake, root: &mut PluginRoot| {
        let headers = h.maps.entry(Map::RequestHeaders).or_default();
        headers.retain(|(n, _)| !n.starts_with(':'));
        headers.extend(pairs(&[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "svc"),
        ]));
        root.stream(h).request_headers(h, true)
    };
    h.config = signed(1);
    let mut older = PluginRoot::new(1);
    assert!(older.configure(&mut h));
    assert_eq!(
        request(&mut h, &mut older),
        Flow::Continue,
        "serial 1 serves while newest"
    );
    h.config = signed(2);
    let mut newer = PluginRoot::new(2);
    assert!(newer.configure(&mut h));
    // No tick in between: the shared cell, not the refresh, carries serial 2.
    assert_eq!(
        request(&mut h, &mut older),
        Flow::Stop,
        "serial 1 after serial 2"
    );
    assert_eq!(h.replies, [(503, Some("config_superseded".to_owned()))]);
    assert_eq!(
        request(&mut h, &mut newer),
        Flow::Continue,
        "serial 2 serves"
    );
}

/// A later VM that refuses, at any stage, a config this proxy admitted
/// refuses its traffic with that stage's reason instead of failing
/// `on_configure`; a config never admitted is still refused there.
///
/// Broken by hand: the load stage's refusal answering `Configured::Refused`
/// whatever `admitted_here` (as before issue 21): `configure` returned false
/// for the admitted config and the second assertion failed.
#[test]
fn a_vm_that_cannot_load_a_config_this_proxy_admitted_refuses_every_request() {
    use meshguard_core::integrity::{sign_release, Release};

    let (key, mut h) = signed_identity_host("default.not-admitted-test");
    let release = Release {
        filter: "identity".into(),
        workloads: vec!["default/backend".into()],
        serial: 1,
        not_before: None,
        not_after: None,
        services: None,
    };
    let signed = |config: &str| sign_release(config.as_bytes(), &release, "release", &key).unwrap();
    h.config = signed(r#"{"default_action": "allow", "rules": []}"#);
    assert!(PluginRoot::new(1).configure(&mut h), "first admission");
    // A later VM whose environment revokes the key (the signature stage).
    h.env
        .insert("MESHGUARD_REVOKED_KEYS".into(), "release".into());
    let mut later = PluginRoot::new(2);
    assert!(
        later.configure(&mut h),
        "a config this proxy admitted never fails on_configure"
    );
    let headers = h.maps.entry(Map::RequestHeaders).or_default();
    headers.extend(pairs(&[
        (":method", "GET"),
        (":path", "/"),
        (":authority", "svc"),
    ]));
    assert_eq!(later.stream(&h).request_headers(&mut h, true), Flow::Stop);
    assert_eq!(h.replies, [(503, Some("revoked".to_owned()))]);
    assert_eq!(
        h.counter(&meshguard_core::metrics::tagged(
            meshguard_core::metrics::CONFIG_NOT_ADMITTED_DENIED,
            &[("filter", "identity"), ("reason", "revoked")]
        )),
        1
    );
    // Bytes this proxy never admitted are refused at load, as before.
    h.config = signed(r#"{"default_action": "deny", "rules": []}"#);
    assert!(!PluginRoot::new(3).configure(&mut h), "never admitted");
}

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

#[test]
fn a_streamed_request_held_by_audit_is_masked_once_and_never_leaves_raw() {
    // Masking releases each record it completes; audit (a body command)
    // holds the stream, so the host's buffer holds masked records followed
    // by new raw bytes. Masking reads only the raw ones.
    // Broken by hand: the pipeline never recorded the settled prefix
    // (`*settled = 0`): raw `mple.com"}` reached the buffer and this failed.
    let (mut x, flow) = Exchange::start(
        host("meshguard", &combined(true)),
        "POST",
        "/api/bulk",
        &[NDJSON],
        false,
    );
    assert_eq!(flow, Flow::Stop);
    let chunks: [&[u8]; 3] = [
        b"{\"password\": \"one\"}\n{\"mail\": \"ann@exa",
        b"mple.com\"}\n{\"password\":",
        b" \"three\"}\n",
    ];
    let mut buffers = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = i + 1 == chunks.len();
        let flow = x.chunk(Direction::Request, chunk, end);
        assert_eq!(flow, if end { Flow::Continue } else { Flow::Stop });
        buffers.push(String::from_utf8(x.host.body(Direction::Request, 0, usize::MAX)).unwrap());
    }
    // While audit held it, the buffer only ever grew by masked records.
    assert_eq!(buffers[0], "{\"password\": \"[REDACTED]\"}\n");
    assert_eq!(
        buffers[1],
        "{\"password\": \"[REDACTED]\"}\n{\"mail\": \"[REDACTED]\"}\n"
    );
    let body = x.released(Direction::Request);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "{\"password\": \"[REDACTED]\"}\n{\"mail\": \"[REDACTED]\"}\n{\"password\": \"[REDACTED]\"}\n"
    );
    let stamp = verify_header(x.header("x-meshguard-audit").unwrap(), &base64_key()).unwrap();
    let section = meshguard_core::plugin::Plugin::compile(
        combined(true).as_bytes(),
        Shape::Combined,
        &|n| (n == "MESHGUARD_AUDIT_KEY").then(|| AUDIT_KEY.to_owned()),
        meshguard_core::plugin::Secrets::REQUIRE,
    )
    .unwrap();
    let want = section
        .audit
        .unwrap()
        .policy
        .hash_request("POST", "/api/bulk", "svc", &body)
        .unwrap();
    assert_eq!(stamp.command_sha256, want, "audit hashed exactly what left");
}

/// Broken by hand: events completed only at the end of the buffer (the
/// blank-line check in `stream::next_end` made to never match mid-buffer):
/// nothing was released with the first chunk and this failed.
#[test]
fn a_streamed_response_leaves_event_by_event() {
    let (mut x, _) = Exchange::start(
        host("meshguard-masking", MASKING),
        "GET",
        "/chat",
        &[],
        true,
    );
    assert_eq!(
        x.response(&[("content-type", "text/event-stream")], false),
        Flow::Continue
    );
    assert_eq!(
        x.chunk(
            Direction::Response,
            b"data: {\"t\": \"a\"}\n\ndata: {\"password\": \"x",
            false
        ),
        Flow::Continue
    );
    assert_eq!(x.released(Direction::Response), b"data: {\"t\": \"a\"}\n\n");
    x.chunk(Direction::Response, b"y\"}\n\n", false);
    x.trailers(Direction::Response, &[]);
    assert_eq!(
        String::from_utf8_lossy(&x.released(Direction::Response)),
        "data: {\"t\": \"a\"}\n\ndata: {\"password\": \"[REDACTED]\"}\n\n"
    );
}

/// Broken by hand: the section asked `tunnel` about no headers (never a
/// tunnel): the upgrade was not refused and this failed.
#[test]
fn an_upgrade_on_a_masked_route_is_refused_or_passed_with_header_masking_only() {
    let upgrade = [
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("authorization", "Bearer x"),
    ];
    let (x, flow) = Exchange::start(
        host("meshguard-masking", MASKING),
        "GET",
        "/ws",
        &upgrade,
        false,
    );
    assert_eq!(flow, Flow::Stop);
    assert_eq!(x.host.replies, [(501, Some("upgrade".to_owned()))]);
    let passing = MASKING.replacen('{', r#"{"on_upgrade": "pass_unmasked", "#, 1);
    let (mut x, flow) = Exchange::start(
        host("meshguard-masking", &passing),
        "GET",
        "/ws",
        &upgrade,
        false,
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        x.header("authorization"),
        Some("[REDACTED]"),
        "headers are still masked"
    );
    assert_eq!(
        x.chunk(Direction::Request, b"\x81\x05{\"password\": 1}", false),
        Flow::Continue
    );
    assert_eq!(
        x.released(Direction::Request),
        b"\x81\x05{\"password\": 1}",
        "never held"
    );
    assert_eq!(
        x.host.counter(
            "meshguard_masking_bodies_skipped_total.direction=.=request;.;reason=.=upgrade;.;"
        ),
        1
    );
}

/// Broken by hand: the gate released nothing and kept the incomplete record
/// itself (no `HoldReplaced`): the trailers found no body to add it to and
/// the stream was reset; this failed.
#[test]
fn an_incomplete_record_stays_with_the_host_so_the_trailers_can_mask_it() {
    let (mut x, _) = Exchange::start(
        host("meshguard-masking", MASKING),
        "POST",
        "/bulk",
        &[NDJSON],
        false,
    );
    assert_eq!(
        x.chunk(Direction::Request, b"{\"password\": 1}\n{\"pass", false),
        Flow::Continue
    );
    // Nothing completes in this chunk: the host holds the record, raw.
    assert_eq!(
        x.chunk(Direction::Request, b"word\": 2}", false),
        Flow::Stop
    );
    assert_eq!(
        x.host.body(Direction::Request, 0, usize::MAX),
        b"{\"password\": 2}"
    );
    assert_eq!(x.trailers(Direction::Request, &[]), Flow::Continue);
    assert!(x.host.resets.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&x.released(Direction::Request)),
        "{\"password\": \"[REDACTED]\"}\n{\"password\": \"[REDACTED]\"}"
    );
}

/// The combined config, its audit records delivered to cluster `collector`.
fn combined_with_collector() -> String {
    combined(false).replace(
        r#""audit": {"#,
        r#""audit": {"collector": {"cluster": "collector", "path": "/records"}, "#,
    )
}

/// Batches the exchange's root sent to the collector.
fn collector_batches(x: &Exchange) -> usize {
    x.host
        .callouts
        .borrow()
        .iter()
        .filter(|(cluster, _, _)| cluster == "collector")
        .count()
}

/// A push replaces a plugin whose audit records are still on their way:
/// the retired root answers "not yet", keeps delivering, and says done
/// itself once the collector took them, or drops them (counted) when its
/// grace runs out; in both collector formats (NDJSON and OTLP JSON).
///
/// Broken by hand: `PluginRoot::done` returning true at once: the root was
/// deleted with its record undelivered and the first assertion failed; the
/// `format` key left out of the config: the OTLP case saw an NDJSON body.
#[test]
fn a_retired_config_delivers_its_audit_records_before_it_is_done() {
    for (format, body_starts) in [("ndjson", "{"), ("otlp_json", r#"{"resourceLogs":"#)] {
        a_retired_config_delivers_in(format, body_starts);
    }
}

fn a_retired_config_delivers_in(format: &str, body_starts: &str) {
    let config = combined_with_collector().replace(
        r#""path": "/records"}"#,
        &format!(r#""path": "/records", "format": "{format}"}}"#),
    );
    for (answer, delivered) in [(Some("200"), true), (None, false)] {
        let (mut x, _) = Exchange::start(host("meshguard", &config), "GET", "/api/x", &[], true);
        x.response(&[(":status", "200")], true);
        x.stream.log(&mut x.host);
        // The record waits for the timer's partial batch; the config retires.
        assert!(
            !x.root.done(&mut x.host),
            "not done with a record to deliver"
        );
        assert_eq!(
            collector_batches(&x),
            1,
            "retiring sends what waits at once ({format})"
        );
        let sent = x
            .host
            .callouts
            .borrow()
            .last()
            .map(|(_, _, body)| body.clone());
        assert!(
            sent.as_deref()
                .is_some_and(|b| b.starts_with(body_starts.as_bytes())),
            "{format}: {:?}",
            sent.as_deref().map(String::from_utf8_lossy)
        );
        assert_eq!(x.host.done_calls.get(), 0);
        match answer {
            Some(status) => {
                x.host.callout_answer = Some((status.into(), Vec::new()));
                let token = u32::try_from(x.host.callouts.borrow().len()).unwrap();
                x.root.callout_response(&mut x.host, token, 1, 0);
            }
            None => {
                // The collector never answers: the grace runs out.
                x.host.now_ms += 31_000;
                x.root.tick(&mut x.host);
            }
        }
        assert_eq!(
            x.host.done_calls.get(),
            1,
            "{format}: done, delivered={delivered}"
        );
        let dropped = x
            .host
            .counter("meshguard_audit_records_total.result=.=dropped;.;");
        assert_eq!(
            dropped,
            u64::from(!delivered),
            "{format}: delivered={delivered}"
        );
    }
}

/// A host that ends a config at once (Envoy destroying a dynamic module's
/// config) gets no "not yet": the record still waiting is handed over, no
/// callout is started that the host would cancel, and the plugin's next
/// config delivers it at its tick.
///
/// Broken by hand: `Audit::adopt` returning before pushing the lines: the
/// next config sent no batch and the last assertion failed.
#[test]
fn a_config_the_host_ends_at_once_hands_its_records_to_the_next_config() {
    let config = combined_with_collector();
    let (mut x, _) = Exchange::start(host("meshguard", &config), "GET", "/api/x", &[], true);
    x.response(&[(":status", "200")], true);
    x.stream.log(&mut x.host);
    let lines = x.root.hand_over(&mut x.host);
    assert_eq!(lines.len(), 1, "the record waits for the next config");
    assert_eq!(collector_batches(&x), 0, "no batch on a config going away");
    assert_eq!(x.host.done_calls.get(), 0);
    let (mut next, _) = Exchange::start(host("meshguard", &config), "GET", "/api/y", &[], true);
    assert!(next.root.adopt(&mut next.host, lines));
    next.root.tick(&mut next.host);
    assert_eq!(collector_batches(&next), 1, "the next config delivers it");
}
