//! Two Service-attached policies on one ambient waypoint (two WasmPlugins,
//! each with a Service in `targetRefs`: two instances of the meshguard
//! module, named `NAMESPACE.NAME` by Istio, delivered over ECDS into that
//! Service's `inbound-vip|80|http|HOST` chain; the shape istiod generates,
//! written by the harness since no control plane runs here, see
//! `meshguard_host_tests::waypoint`). Each policy is signed for the waypoint
//! and scoped to its own Service (`release.services`).
//!
//! At Istio's `--concurrency 2`, over HTTP/1.1 and HTTP/2, every answer
//! checked on every worker (each request on an HBONE connection of its own,
//! [`Waypoint::send_on_every_worker`]): each Service's policy judges its own
//! Service's traffic only; integrity state is per plugin instance, so the two
//! serials never meet; one Service's signed policy moved onto the other
//! refuses instead of judging; canary and rollback of one leave the other
//! denying what it denies. Run in both deployments
//! (`MESHGUARD_TEST_DEPLOYMENT`): single-section identity plugins, or the
//! combined plugin with an identity section.

use std::time::Duration;

use meshguard_core::integrity::Release;
use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Deployment, Filter, PushOutcome};
use meshguard_host_tests::source::{release_key, signed_with, KEY_ID};
use meshguard_host_tests::waypoint::{Service, Waypoint, WAYPOINT_WORKLOAD};

const WORKERS: u32 = 2;
/// Requests at once per round (see workers.rs).
const PER_ROUND: usize = 8;
const ORDERS: &str = "orders";
const PAYMENTS: &str = "payments";
/// Time for an ECDS update Envoy took on its main thread to reach every
/// worker (it posts the new config to each).
const PROPAGATION: Duration = Duration::from_secs(1);

fn host(service: &str) -> String {
    format!("{service}.default.svc.cluster.local")
}

/// An identity policy that allows everything but `denied` paths.
fn policy(version: &str, denied: &[&str]) -> String {
    let paths: Vec<String> = denied.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        r#"{{"config_version": "{version}", "default_action": "allow",
  "rules": [{{"name": "denied", "action": "deny", "paths": [{}]}}]}}"#,
        paths.join(", ")
    )
}

/// `policy` signed for the waypoint and the Service `scope` at `serial`, as
/// the Service `service`'s WasmPlugin `default/<service>-policy`: an
/// identity plugin, or the combined plugin's identity section.
fn attached(service: &str, scope: &str, serial: u64, policy: &str) -> Filter {
    let combined = Deployment::current() == Deployment::Combined;
    let release = Release {
        filter: if combined { "meshguard" } else { "identity" }.into(),
        workloads: vec![WAYPOINT_WORKLOAD.into()],
        serial,
        not_before: None,
        not_after: None,
        services: Some(vec![host(scope)]),
    };
    let filter = if combined {
        let config = format!(r#"{{"identity": {policy}}}"#);
        Filter::combined(signed_with(&config, &release, KEY_ID, &release_key()))
    } else {
        Filter::identity(signed_with(policy, &release, KEY_ID, &release_key()))
    };
    filter
        .resource("default", &format!("{service}-policy"))
        .trusting_release_key()
}

async fn waypoint(orders: Filter, payments: Filter) -> Waypoint {
    Waypoint::builder()
        .service(Service::new(ORDERS, &[orders]))
        .service(Service::new(PAYMENTS, &[payments]))
        .workers(WORKERS)
        .ecds()
        .start()
        .await
        .expect("waypoint starts")
}

/// One expected answer: the path, its status and its deny reason.
type Row = (&'static str, u16, Option<&'static str>);

const DENIED: Option<&str> = Some("denied_by_rule");

/// For each `(service, rows)`, over HTTP/1.1 and HTTP/2: sends the rows'
/// paths round-robin to the Service until every worker answered some, and
/// checks each answer's status and deny reason; exactly the 200s reach the
/// upstream.
async fn judge(waypoint: &Waypoint, what: &str, services: &[(&str, &[Row])]) {
    for protocol in Protocol::ALL {
        for (service, rows) in services {
            let answers = waypoint
                .send_on_every_worker(&host(service), "frontend", PER_ROUND, |i| {
                    let (path, _, _) = rows[i % rows.len()];
                    Request::new("GET", &format!("{path}?n={i}")).protocol(protocol)
                })
                .await
                .unwrap();
            let mut passed = Vec::new();
            for (i, resp) in &answers {
                let (path, status, reason) = rows[i % rows.len()];
                let row = format!("{what}: {service} {path} over {protocol:?} (request {i})");
                assert_eq!(resp.status, status, "{row}: {resp:?}");
                assert_eq!(
                    resp.header("x-meshguard-deny-reason"),
                    reason,
                    "{row}: {}",
                    resp.text()
                );
                if status == 200 {
                    passed.push(format!("{path}?n={i}"));
                }
            }
            waypoint.upstream_barrier().await.unwrap();
            let mut arrived: Vec<String> = waypoint
                .upstream()
                .take()
                .into_iter()
                .map(|r| r.target)
                .collect();
            arrived.sort();
            passed.sort();
            assert_eq!(arrived, passed, "{what}: {service} over {protocol:?}");
        }
    }
}

/// Pushes `filter` as `service`'s, expecting `outcome`, and gives the
/// workers time to take it.
async fn push(waypoint: &Waypoint, service: &str, filter: Filter, outcome: PushOutcome) {
    assert_eq!(
        waypoint
            .push_filters(&host(service), &[filter])
            .await
            .unwrap(),
        outcome
    );
    tokio::time::sleep(PROPAGATION).await;
}

/// Orders denies `/admin/*`; payments denies `/internal/*`: each path is
/// allowed on the other Service.
const ORDERS_V1: &[Row] = &[
    ("/admin/users", 403, DENIED),
    ("/internal/ledger", 200, None),
    ("/api/items", 200, None),
];
const PAYMENTS_V1: &[Row] = &[
    ("/internal/ledger", 403, DENIED),
    ("/admin/users", 200, None),
    ("/debug/vars", 200, None),
];

/// Broken by hand: the store key made of the filter kind again
/// (`Instance::new` in filters/host/src/integrity.rs keying
/// `meshguard.integrity.<filter>`, as before issue 21): the two instances
/// shared one serial, payments' release was refused as `rollback` after
/// orders' serial 5, and payments' chain answered Envoy's own 500 (its ECDS
/// filter had no config): the first payments row failed.
#[tokio::test]
async fn each_service_policy_on_one_waypoint_judges_its_own_service_on_every_worker() {
    // Serials far apart: one shared serial would refuse the lower one.
    let waypoint = waypoint(
        attached(ORDERS, ORDERS, 5, &policy("orders-v5", &["/admin/*"])),
        attached(
            PAYMENTS,
            PAYMENTS,
            1,
            &policy("payments-v1", &["/internal/*"]),
        ),
    )
    .await;
    judge(
        &waypoint,
        "both policies",
        &[(ORDERS, ORDERS_V1), (PAYMENTS, PAYMENTS_V1)],
    )
    .await;
    let log = waypoint.waypoint.log();
    assert!(!log.contains("configuration refused"), "{log}");
    assert!(!log.contains("cannot admit"), "{log}");
}

/// Broken by hand: `Release::covers_chain` (filters/core/src/integrity/
/// load.rs) answering true for every chain a release names Services for:
/// the orders release moved onto payments judged payments' traffic
/// (`/internal/ledger` got 200 and reached the upstream).
#[tokio::test]
async fn one_services_signed_policy_is_not_accepted_for_the_other() {
    // Orders runs a newer serial than payments: the move below passes the
    // release order, so only the scope can refuse it.
    let orders_v2 = || attached(ORDERS, ORDERS, 2, &policy("orders-v2", &["/admin/*"]));
    let waypoint = waypoint(
        orders_v2(),
        attached(
            PAYMENTS,
            PAYMENTS,
            1,
            &policy("payments-v1", &["/internal/*"]),
        ),
    )
    .await;
    judge(
        &waypoint,
        "before the move",
        &[(ORDERS, ORDERS_V1), (PAYMENTS, PAYMENTS_V1)],
    )
    .await;
    // A WasmPlugin editor puts the release orders runs, byte for byte, into
    // payments' plugin (or points its `targetRefs` at payments).
    let moved = orders_v2().resource("default", "payments-policy");
    push(&waypoint, PAYMENTS, moved, PushOutcome::Accepted).await;
    // Payments' chain: every request refused, none judged by the orders
    // policy, nothing reaches the upstream; orders is untouched.
    let refused = Some("config_out_of_scope");
    judge(
        &waypoint,
        "orders' release in payments' plugin",
        &[
            (
                PAYMENTS,
                &[
                    ("/internal/ledger", 503, refused),
                    ("/admin/users", 503, refused),
                    ("/api/items", 503, refused),
                ],
            ),
            (ORDERS, ORDERS_V1),
        ],
    )
    .await;
    let label = if Deployment::current() == Deployment::Combined {
        "meshguard"
    } else {
        "identity"
    };
    let counted = waypoint
        .waypoint
        .metric(&format!(
            "meshguard_config_out_of_scope_denied_total{{filter=\"{label}\"}}"
        ))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(counted >= 6, "out-of-scope refusals counted: {counted}");
}

/// Broken by hand: the store key made of the filter kind again (as above):
/// the two serial-1 releases of different fingerprints collided at start
/// (`rollback`), and payments' chain answered 500 from the first row.
#[tokio::test]
async fn canary_and_rollback_of_one_services_policy_leave_the_other_denying() {
    let waypoint = waypoint(
        attached(ORDERS, ORDERS, 1, &policy("orders-v1", &["/admin/*"])),
        attached(
            PAYMENTS,
            PAYMENTS,
            1,
            &policy("payments-v1", &["/internal/*"]),
        ),
    )
    .await;
    judge(
        &waypoint,
        "v1 everywhere",
        &[(ORDERS, ORDERS_V1), (PAYMENTS, PAYMENTS_V1)],
    )
    .await;

    // Canary: orders v2 (serial 2) also denies /debug/*.
    let v2 = policy("orders-v2", &["/admin/*", "/debug/*"]);
    push(
        &waypoint,
        ORDERS,
        attached(ORDERS, ORDERS, 2, &v2),
        PushOutcome::Accepted,
    )
    .await;
    judge(
        &waypoint,
        "orders canary v2",
        &[
            (
                ORDERS,
                &[
                    ("/debug/vars", 403, DENIED),
                    ("/admin/users", 403, DENIED),
                    ("/api/items", 200, None),
                ],
            ),
            (PAYMENTS, PAYMENTS_V1),
        ],
    )
    .await;

    // A replay of the v1 release (serial 1, bytes this proxy ran): Envoy
    // takes it, and it refuses every orders request as superseded, never
    // judging with v1 (docs/integrity.md); payments is untouched.
    let v1 = policy("orders-v1", &["/admin/*"]);
    push(
        &waypoint,
        ORDERS,
        attached(ORDERS, ORDERS, 1, &v1),
        PushOutcome::Accepted,
    )
    .await;
    let superseded = Some("config_superseded");
    judge(
        &waypoint,
        "orders v1 replayed",
        &[
            (
                ORDERS,
                &[
                    ("/debug/vars", 503, superseded),
                    ("/admin/users", 503, superseded),
                    ("/api/items", 503, superseded),
                ],
            ),
            (PAYMENTS, PAYMENTS_V1),
        ],
    )
    .await;

    // The signed rollback: v1's policy released again at serial 3.
    push(
        &waypoint,
        ORDERS,
        attached(ORDERS, ORDERS, 3, &v1),
        PushOutcome::Accepted,
    )
    .await;
    judge(
        &waypoint,
        "orders rolled back",
        &[
            (
                ORDERS,
                &[("/debug/vars", 200, None), ("/admin/users", 403, DENIED)],
            ),
            (PAYMENTS, PAYMENTS_V1),
        ],
    )
    .await;

    // Payments' own release order is its own: its serial 2, below orders'
    // 3, is accepted.
    let payments_v2 = policy("payments-v2", &["/internal/*", "/debug/*"]);
    push(
        &waypoint,
        PAYMENTS,
        attached(PAYMENTS, PAYMENTS, 2, &payments_v2),
        PushOutcome::Accepted,
    )
    .await;
    judge(
        &waypoint,
        "payments v2",
        &[
            (
                PAYMENTS,
                &[
                    ("/debug/vars", 403, DENIED),
                    ("/internal/ledger", 403, DENIED),
                    ("/admin/users", 200, None),
                ],
            ),
            (
                ORDERS,
                &[("/debug/vars", 200, None), ("/admin/users", 403, DENIED)],
            ),
        ],
    )
    .await;
}
