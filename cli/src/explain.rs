//! `meshguard explain`: what the identity filter would decide for one request,
//! computed by the filter's own `resolve_peer` and `evaluate`.

use std::io::Write;
use std::process::ExitCode;

use meshguard_core::identity::{
    xfcc, Decision, IdentityPolicy, IdentitySource, Judgement, Mode, Peer, RequestInfo, TlsVersion,
    Transport,
};
use meshguard_core::integrity::IntegrityEnv;
use meshguard_core::spiffe::{normalize_principal_text, SpiffeId};
use serde_json::{json, Value};

use crate::output::Output;
use crate::policy_file::PolicyFile;

/// Exit status of `explain` when the policy denies the request.
const DENY_EXIT: u8 = 2;

/// Show what the identity filter decides for one request, and why.
///
/// The connection is mTLS with `--peer` as the client certificate's URI SAN,
/// unless `--plaintext` or `--no-client-cert` says otherwise.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the request is allowed; 2 when the policy denies it \
                        (also in dry-run mode, where the filter would still let it pass); \
                        1 on errors (invalid config, bad arguments).\n\n\
                        Example:\n  meshguard explain policy.json \
                        --peer cluster.local/ns/default/sa/frontend --method POST --path /api/orders"
)]
pub struct Args {
    /// Identity policy (the plugin JSON); `-` reads standard input. Its
    /// `signature` and `integrity` sections are accepted but not checked here.
    config: String,
    /// The caller's client certificate URI SAN: `spiffe://TD/ns/NS/sa/SA` or Istio's
    /// `TD/ns/NS/sa/SA`. Required unless --plaintext or --no-client-cert.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present_any = ["plaintext", "no_client_cert"],
        conflicts_with_all = ["plaintext", "no_client_cert"]
    )]
    peer: Option<String>,
    /// The request's `:path` (a query string is ignored for matching, as in the filter).
    #[arg(long, value_name = "P")]
    path: String,
    /// The request's `:method`.
    #[arg(long, value_name = "M", default_value = "GET")]
    method: String,
    /// The request's `:authority` (a port is ignored for matching).
    #[arg(long, value_name = "H", default_value = "localhost")]
    host: String,
    /// The caller connects without TLS.
    #[arg(long, conflicts_with_all = ["no_client_cert", "tls_version"])]
    plaintext: bool,
    /// The negotiated TLS version, as Envoy reports it (`connection.tls_version`).
    #[arg(long, value_name = "V", default_value = "TLSv1.3")]
    tls_version: String,
    /// The caller connects over TLS but presents no client certificate.
    #[arg(long)]
    no_client_cert: bool,
    /// The filter runs on an ambient waypoint and the caller came through an
    /// HBONE tunnel: --peer is the tunnel peer's identity, as Istio puts it in
    /// filter state (`io.istio.peer_principal`); the transport is mTLS, TLS 1.3.
    #[arg(long, conflicts_with_all = ["plaintext", "no_client_cert", "tls_version"])]
    waypoint: bool,
    /// The `x-forwarded-client-cert` header as the caller sent it (read only
    /// when the peer is one of `identity.trusted_gateways`). The sidecar's
    /// own element about an mTLS peer, `By=<local identity>;URI=<peer>`
    /// (a certificate with exactly one URI SAN), is appended as Istio's
    /// inbound sidecar appends it, unless the header already ends with an
    /// element `By=<local identity>` (to simulate other certificates).
    #[arg(long, value_name = "HEADER")]
    xfcc: Option<String>,
    /// This proxy's own certificate URI SAN (`connection.uri_san_local_certificate`):
    /// its XFCC element establishes how many URI SANs the peer certificate has.
    #[arg(long, value_name = "ID", default_value = DEFAULT_LOCAL_IDENTITY)]
    local_identity: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The proxy identity `explain` assumes when none is given.
const DEFAULT_LOCAL_IDENTITY: &str = "cluster.local/ns/default/sa/this-proxy";

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    let file = PolicyFile::read(&args.config)?;
    // The filter's load, without an integrity environment: `signature` and
    // `integrity` are split off as the filter does, but not enforced here
    // (`meshguard validate` checks them).
    let policy = match file.load_identity(&IntegrityEnv::default()) {
        Ok((_, policy)) => policy,
        Err(error) => {
            eprintln!("{}", file.invalid(&error));
            return Ok(ExitCode::FAILURE);
        }
    };

    let peer_uri = args.peer.as_deref().map(normalize_principal_text);
    let transport = if args.plaintext {
        Transport::from_host(Some(false), None, None)
    } else if args.waypoint {
        Transport::hbone(peer_uri.as_deref().unwrap_or_default())
    } else if args.no_client_cert {
        Transport::from_host(Some(false), Some(&args.tls_version), None)
    } else {
        Transport::from_host(Some(true), Some(&args.tls_version), peer_uri.as_deref())
    };
    if let Some(Err(e)) = peer_uri.as_deref().map(SpiffeId::parse_uri) {
        eprintln!(
            "note: --peer is not a valid SPIFFE ID (it {e}): the filter sees an mTLS peer without identity"
        );
    }
    if transport.tls_version() == Some(TlsVersion::Unknown) {
        eprintln!(
            "note: --tls-version {:?} is not a version the filter knows: it satisfies no min_tls_version",
            args.tls_version
        );
    }

    let received = RequestInfo {
        path: &args.path,
        method: &args.method,
        host: &args.host,
    };
    let local = normalize_principal_text(&args.local_identity).into_owned();
    // What the filter reads: the header as the caller sent it, with the
    // element Istio's sidecar appends about an mTLS peer (APPEND_FORWARD),
    // unless the header given already ends with this proxy's element.
    let own = transport
        .certificate_identity()
        .filter(|_| transport.is_mtls() && !args.waypoint)
        .map(|peer| format!("By={local};URI={peer}"));
    let xfcc = match (args.xfcc.clone(), own) {
        (Some(header), Some(_)) if xfcc::ends_with_element_by(&header, &local) => Some(header),
        (Some(header), Some(own)) if !header.is_empty() => Some(format!("{header},{own}")),
        (Some(_) | None, Some(own)) => Some(own),
        (header, None) => header,
    };
    let read_xfcc = || (xfcc.clone(), Some(local.clone()));
    let shadow = policy.shadow().map(|shadow| {
        (
            shadow,
            shadow.judge(transport.clone(), read_xfcc, &received),
        )
    });
    let Judgement {
        peer,
        decision,
        forwarded_path,
    } = policy.judge(transport, read_xfcc, &received);
    let gateway = matches!(peer.source, IdentitySource::Gateway(_));
    if args.xfcc.is_some() && !gateway {
        eprintln!("note: --xfcc did not name the caller: the direct peer is not an mTLS peer listed in identity.trusted_gateways");
    }
    if gateway && peer.identity.is_none() {
        eprintln!(
            "note: the peer is a trusted gateway but XFCC names no usable caller it vouched for"
        );
    }
    if let Some(path) = &forwarded_path {
        eprintln!("note: the filter matches and forwards the canonical path {path:?}");
    }
    let request = RequestInfo {
        path: forwarded_path.as_deref().unwrap_or(&args.path),
        ..received
    };

    let mut out = std::io::stdout().lock();
    if args.json || output.is_json() {
        let mut value = to_json(&policy, &decision, &peer, &request);
        if let (Some((shadow_policy, shadow)), Some(fields)) = (&shadow, value.as_object_mut()) {
            let mut candidate = to_json(shadow_policy, &shadow.decision, &shadow.peer, &request);
            if let Some(candidate_fields) = candidate.as_object_mut() {
                // Never enforced: no mode, and the request's fate is the enforced policy's.
                for key in ["mode", "request_passes", "request"] {
                    candidate_fields.remove(key);
                }
                candidate_fields.insert(
                    "agrees".into(),
                    json!(shadow.decision.is_deny() == decision.is_deny()),
                );
            }
            fields.insert("shadow".into(), candidate);
        }
        writeln!(out, "{value}")?;
    } else {
        write!(out, "{}", to_text(&policy, &decision, &peer))?;
        if let Some((shadow_policy, shadow)) = &shadow {
            let agrees = if shadow.decision.is_deny() == decision.is_deny() {
                "agrees"
            } else {
                "DISAGREES"
            };
            write!(
                out,
                "shadow ({agrees}, never enforced): {}",
                to_text(shadow_policy, &shadow.decision, &shadow.peer)
            )?;
        }
    }
    out.flush()?;
    Ok(if decision.is_deny() {
        ExitCode::from(DENY_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}

fn to_text(policy: &IdentityPolicy, decision: &Decision, peer: &Peer) -> String {
    let verdict = match (decision.is_deny(), policy.mode()) {
        (false, _) => "ALLOW",
        (true, Mode::Enforce) => "DENY",
        (true, Mode::DryRun) => "DENY (dry-run: the request would pass)",
    };
    let source = match &peer.source {
        IdentitySource::Certificate => "certificate".to_string(),
        IdentitySource::Gateway(gateway) => format!("gateway {gateway}"),
    };
    let (security, version) = transport_parts(&peer.transport);
    let transport = match version {
        Some(v) => format!("{security} {v}"),
        None => security.to_string(),
    };
    format!(
        "{verdict}\nreason: {} ({})\ndecided by: {}\npeer: {} (source: {source})\ntransport: {transport}\n",
        decision.reason.code(),
        decision.reason.describe(),
        policy.describe(decision.decided_by),
        peer.identity.as_ref().map_or("none", SpiffeId::as_str),
    )
}

fn to_json(
    policy: &IdentityPolicy,
    decision: &Decision,
    peer: &Peer,
    request: &RequestInfo<'_>,
) -> Value {
    let (source, gateway) = match &peer.source {
        IdentitySource::Certificate => ("certificate", None),
        IdentitySource::Gateway(gateway) => ("gateway", Some(gateway.as_str())),
    };
    let (security, version) = transport_parts(&peer.transport);
    json!({
        "decision": if decision.is_deny() { "deny" } else { "allow" },
        "mode": policy.mode().as_str(),
        "request_passes": !decision.is_deny() || policy.mode() == Mode::DryRun,
        "reason": decision.reason.code(),
        "description": decision.reason.describe(),
        "decided_by": policy.describe(decision.decided_by),
        "rule": policy.rule_name(decision.decided_by),
        "peer": {
            "identity": peer.identity.as_ref().map(SpiffeId::as_str),
            "source": source,
            "gateway": gateway,
        },
        "transport": {
            "security": security,
            "tls_version": version,
        },
        "request": {
            "method": request.method,
            "path": request.path,
            "host": request.host,
        },
    })
}

fn transport_parts(transport: &Transport) -> (&'static str, Option<&'static str>) {
    (
        transport.security(),
        transport.tls_version().map(TlsVersion::as_str),
    )
}
