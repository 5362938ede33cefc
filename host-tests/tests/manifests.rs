//! The Istio deployment artefacts, checked offline and against real
//! components: `make manifests` output validated against Istio's schema (the
//! pinned @kubernetes-models/istio) plus what that schema misses, negative
//! cases the validator must catch, the chain order and failure policies the
//! manifests promise, the audit EnvoyFilter's Wasm config running body
//! commands in a real Envoy, and the OCI images pushed to and pulled from a
//! real registry with skopeo.
//!
//! Needs `make tools` (node packages in .tools/node, docker-registry, skopeo)
//! and `make wasm`; a missing tool fails the test with that advice.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use meshguard_core::audit::{verify_header, AuditPolicy};
use meshguard_core::canonical::{hex, sha256_hex};
use meshguard_core::metrics::TAG_NAMES;
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::echo::EchoServer;
use meshguard_host_tests::envoy::{stats_config, Envoy};
use meshguard_host_tests::http::{self, Request};
use meshguard_host_tests::manifests::{self, rendered_dir, yaml_to_json, Outcome};
use meshguard_host_tests::mesh::AUDIT_KEY;
use meshguard_host_tests::oci::{layout_dir, read_wasm_image};
use meshguard_host_tests::registry::{oci_reference, skopeo, Registry};
use meshguard_host_tests::{repo_root, wasm_module};
use serde_json::{json, Value};

const FILTERS: [&str; 3] = ["identity", "masking", "audit"];

/// `make manifests`' script, run once for all tests of this file (it rewrites
/// dist/istio and dist/oci, which the other tests read).
fn rendered() -> &'static Outcome {
    static RENDER: OnceLock<Result<Outcome, String>> = OnceLock::new();
    match RENDER.get_or_init(|| manifests::render().map_err(|e| format!("{e:#}"))) {
        Ok(outcome) => {
            assert!(
                outcome.success(),
                "scripts/render-manifests.sh failed:\n{}",
                outcome.output()
            );
            outcome
        }
        Err(e) => panic!("{e}"),
    }
}

fn rendered_file(name: &str) -> PathBuf {
    rendered();
    rendered_dir().join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn one_doc(path: &Path) -> Value {
    let docs = yaml_to_json(path).unwrap();
    assert_eq!(docs.len(), 1, "{}", path.display());
    docs.into_iter().next().unwrap()
}

fn module_sha(filter: &str) -> String {
    sha256_hex(&std::fs::read(wasm_module(&format!("meshguard_{filter}")).unwrap()).unwrap())
}

#[test]
fn rendered_manifests_pass_istios_schema_and_meshguards_checks() {
    let outcome = rendered();
    for file in [
        "identity-wasmplugin.yaml",
        "masking-wasmplugin.yaml",
        "audit-wasmplugin.yaml",
        "audit-envoyfilter-body-commands.yaml",
        "peer-authentication.yaml",
        "stats/istio-operator.yaml",
        "kustomization.yaml",
        "observability/kustomization.yaml",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(file)),
            "{file} not validated:\n{}",
            outcome.output()
        );
    }
    assert!(
        outcome.stdout.contains("validate-manifests: all valid"),
        "{}",
        outcome.output()
    );
    // Each example config went through the filters' own validator first.
    for (config, kind) in [
        ("examples/identity/strict.json", "valid identity policy"),
        ("examples/masking/pii.json", "valid masking policy"),
        ("examples/audit/commands.json", "valid audit policy"),
        ("examples/audit/body-commands.json", "valid audit policy"),
    ] {
        assert!(
            outcome.stderr.contains(&format!("{config}: {kind}")),
            "{config} not validated:\n{}",
            outcome.output()
        );
    }
    // No placeholder survives rendering.
    for entry in std::fs::read_dir(rendered_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = read(&path);
            assert!(
                !text.contains("@SHA256@") && !text.contains("@PLUGIN_CONFIG"),
                "{}",
                path.display()
            );
        }
    }
}

/// The digest Istio checks for an oci:// url is the image manifest's, and the
/// image carries the module just built; the annotation names the module.
#[test]
fn every_sha256_is_the_digest_istio_checks_for_the_module_just_built() {
    for filter in FILTERS {
        let plugin = one_doc(&rendered_file(&format!("{filter}-wasmplugin.yaml")));
        let spec = &plugin["spec"];
        let url = spec["url"].as_str().unwrap();
        assert!(url.starts_with("oci://"), "{url}");
        let image = read_wasm_image(&layout_dir(filter)).unwrap();
        assert_eq!(
            format!("sha256:{}", spec["sha256"].as_str().unwrap()),
            image.manifest_digest,
            "{filter}"
        );
        assert_eq!(
            sha256_hex(&image.plugin_wasm),
            module_sha(filter),
            "{filter}"
        );
        assert_eq!(
            plugin["metadata"]["annotations"]["meshguard.io/module-sha256"],
            module_sha(filter).as_str()
        );
    }
    let filter = one_doc(&rendered_file("audit-envoyfilter-body-commands.yaml"));
    let remote = &filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
        ["vm_config"]["code"]["remote"];
    let image = read_wasm_image(&layout_dir("audit")).unwrap();
    assert_eq!(
        format!("sha256:{}", remote["sha256"].as_str().unwrap()),
        image.manifest_digest
    );
}

/// The integrity variables every filter of a proxy shares (the intended
/// version and fingerprint are per filter: the source of truth carries them).
fn trust_anchors() -> Vec<&'static str> {
    meshguard_core::integrity::ALL_ENV
        .into_iter()
        .filter(|n| !n.starts_with("MESHGUARD_INTENDED"))
        .collect()
}

/// The order and failure policies docs/deploy.md argues for.
#[test]
fn phases_priorities_and_failure_policies_give_the_intended_chain() {
    let plugin = |f: &str| one_doc(&rendered_file(&format!("{f}-wasmplugin.yaml")))["spec"].clone();
    let (identity, masking, audit) = (plugin("identity"), plugin("masking"), plugin("audit"));
    assert_eq!(identity["phase"], "AUTHZ");
    assert_eq!(masking["phase"], "STATS");
    assert_eq!(audit["phase"], "UNSPECIFIED_PHASE");
    assert_eq!(identity["failStrategy"], "FAIL_CLOSE");
    assert_eq!(masking["failStrategy"], "FAIL_CLOSE");
    assert_eq!(audit["failStrategy"], "FAIL_RELOAD");
    for spec in [&identity, &masking, &audit] {
        assert_eq!(spec["match"], json!([{"mode": "SERVER"}]));
        assert_eq!(spec["selector"], json!({"matchLabels": {"app": "orders"}}));
        assert!(spec.get("targetRefs").is_none());
    }
    // Secrets come from the proxy's environment, never from the manifest.
    let host_env = |spec: &Value, name: &str| {
        spec["vmConfig"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == name && e["valueFrom"] == "HOST" && e.get("value").is_none())
    };
    assert!(host_env(&masking, "MESHGUARD_MASK_HASH_KEY"));
    assert!(host_env(&audit, "MESHGUARD_AUDIT_KEY"));
    // So do the integrity trust anchors: nothing that judges the config sits
    // inline beside it (docs/integrity.md).
    for spec in [&identity, &masking, &audit] {
        for name in trust_anchors() {
            assert!(host_env(spec, name), "{name}");
        }
        for e in spec["vmConfig"]["env"].as_array().unwrap() {
            assert_eq!(e["valueFrom"], "HOST", "{e}");
        }
    }
    // The plain WasmPlugin carries header-only commands.
    let config: Value = audit["pluginConfig"].clone();
    for command in config["commands"].as_array().unwrap() {
        for part in command["parts"].as_array().unwrap() {
            assert!(
                part.is_string() && part != "body",
                "{command} needs the EnvoyFilter"
            );
        }
    }

    let filter = one_doc(&rendered_file("audit-envoyfilter-body-commands.yaml"));
    let patches = filter["spec"]["configPatches"].as_array().unwrap();
    let extension = &patches[0];
    assert_eq!(extension["applyTo"], "EXTENSION_CONFIG");
    let wasm = &extension["patch"]["value"]["typed_config"]["config"];
    assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
    assert_eq!(wasm["root_id"], "meshguard-audit");
    let host_keys = &wasm["vm_config"]["environment_variables"]["host_env_keys"];
    assert_eq!(host_keys[0], "MESHGUARD_AUDIT_KEY");
    for name in trust_anchors() {
        assert!(
            host_keys.as_array().unwrap().contains(&json!(name)),
            "{name}"
        );
    }
    assert!(wasm["vm_config"]["environment_variables"]
        .get("key_values")
        .is_none());
    let insert = &patches[1];
    assert_eq!(insert["applyTo"], "HTTP_FILTER");
    assert_eq!(insert["match"]["context"], "SIDECAR_INBOUND");
    assert_eq!(
        insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_eq!(insert["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        insert["patch"]["value"]["name"],
        extension["patch"]["value"]["name"]
    );
    // The default kustomization applies the WasmPlugin variant only.
    let kustomization = one_doc(&rendered_file("kustomization.yaml"));
    let resources = kustomization["resources"].as_array().unwrap();
    assert!(resources.contains(&json!("audit-wasmplugin.yaml")));
    assert!(!resources.contains(&json!("audit-envoyfilter-body-commands.yaml")));
}

#[test]
fn every_metric_tag_is_in_the_extra_stat_tags() {
    let operator = one_doc(&repo_root().join("istio-manifests/stats/istio-operator.yaml"));
    assert_eq!(
        operator["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"],
        json!(TAG_NAMES)
    );
    let patch = one_doc(&repo_root().join("istio-manifests/workload/orders-proxy-env.yaml"));
    let annotation = patch["spec"]["template"]["metadata"]["annotations"]
        ["sidecar.istio.io/extraStatTags"]
        .as_str()
        .unwrap();
    assert_eq!(annotation.split(',').collect::<Vec<_>>(), TAG_NAMES);
    let proxy = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(proxy["name"], "istio-proxy");
    let env: Vec<&str> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let from = &e["valueFrom"];
            assert!(
                from["secretKeyRef"].is_object()
                    || from["configMapKeyRef"]["name"] == "meshguard-trust",
                "{e}"
            );
            e["name"].as_str().unwrap()
        })
        .collect();
    let mut want = vec!["MESHGUARD_AUDIT_KEY", "MESHGUARD_MASK_HASH_KEY"];
    want.extend(trust_anchors());
    let (mut env, mut want) = (env, want);
    env.sort_unstable();
    want.sort_unstable();
    assert_eq!(env, want);
}

/// One broken manifest: which rendered file, how to break it, and what the
/// validator must say.
struct Broken {
    what: &'static str,
    file: &'static str,
    from: &'static str,
    to: String,
    expect: &'static str,
}

fn sha_line(text: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with("sha256:"))
        .unwrap()
        .to_string()
}

#[test]
fn the_validator_reports_what_istios_schema_misses() {
    let identity = read(&rendered_file("identity-wasmplugin.yaml"));
    let cases = [
        Broken {
            what: "selector and targetRefs",
            file: "identity-wasmplugin.yaml",
            from: "  selector:\n",
            to: "  targetRefs:\n  - kind: Service\n    name: orders\n  selector:\n".into(),
            expect: "selector and targetRefs are both set",
        },
        Broken {
            what: "a sha256 that is not the image's",
            file: "identity-wasmplugin.yaml",
            from: "SHA_LINE",
            to: format!("  sha256: \"{}\"", "0".repeat(64)),
            expect: "is not the manifest digest",
        },
        Broken {
            what: "a malformed sha256",
            file: "identity-wasmplugin.yaml",
            from: "SHA_LINE",
            to: sha_line(&identity)
                .to_uppercase()
                .replace("SHA256", "sha256"),
            expect: "does not match ^[a-f0-9]{64}$",
        },
        Broken {
            what: "a wrong failStrategy",
            file: "identity-wasmplugin.yaml",
            from: "failStrategy: FAIL_CLOSE",
            to: "failStrategy: FAIL_SOMETIMES".into(),
            expect: "/spec/failStrategy must be equal to one of the allowed values",
        },
        Broken {
            what: "a wrong phase",
            file: "identity-wasmplugin.yaml",
            from: "phase: AUTHZ",
            to: "phase: AUTHORIZATION".into(),
            expect: "/spec/phase must be equal to one of the allowed values",
        },
        Broken {
            what: "an unknown field",
            file: "identity-wasmplugin.yaml",
            from: "  pluginName:",
            to: "  pluginNmae: meshguard-identity\n  pluginName:".into(),
            expect: "unknown field spec.pluginNmae",
        },
        Broken {
            what: "no url",
            file: "identity-wasmplugin.yaml",
            from: "  url: ",
            to: "  # url: ".into(),
            expect: "url is required",
        },
        Broken {
            what: "FAIL_OPEN",
            file: "identity-wasmplugin.yaml",
            from: "failStrategy: FAIL_CLOSE",
            to: "failStrategy: FAIL_OPEN".into(),
            expect: "FAIL_OPEN skips a crashed meshguard-identity: an authorization bypass",
        },
        Broken {
            what: "a pluginConfig the filter refuses",
            file: "masking-wasmplugin.yaml",
            from: r#""strategy":"remove""#,
            to: r#""strategy":"shred""#.into(),
            expect: "pluginConfig refused by `meshguard validate --filter masking`",
        },
        Broken {
            what: "a body command in a WasmPlugin",
            file: "audit-wasmplugin.yaml",
            from: r#""parts":["method","path","query"]"#,
            to: r#""parts":["method","path",{"json_pointer":"/sql"}]"#.into(),
            expect: "needs allow_on_headers_stop_iteration: true",
        },
        Broken {
            what: "an inline secret",
            file: "audit-wasmplugin.yaml",
            from: "- name: MESHGUARD_AUDIT_KEY\n      valueFrom: HOST",
            to: "- name: MESHGUARD_AUDIT_KEY\n      value: c2VjcmV0LWtleS1pbmxpbmU=".into(),
            expect: "MESHGUARD_AUDIT_KEY is a secret",
        },
        Broken {
            what: "an inline trust anchor beside the config",
            file: "identity-wasmplugin.yaml",
            from: "- name: MESHGUARD_HEALTH_PATHS\n      valueFrom: HOST",
            to: "- name: MESHGUARD_HEALTH_PATHS\n      value: /*".into(),
            expect: "MESHGUARD_HEALTH_PATHS judges the config: pass it with valueFrom: HOST",
        },
        Broken {
            what: "the EnvoyFilter without allow_on_headers_stop_iteration",
            file: "audit-envoyfilter-body-commands.yaml",
            from: "\n            allow_on_headers_stop_iteration: true",
            to: "\n            allow_on_headers_stop_iteration: false".into(),
            expect: "needs allow_on_headers_stop_iteration: true",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let original = read(&rendered_file(case.file));
        let from = if case.from == "SHA_LINE" {
            sha_line(&original)
        } else {
            case.from.to_string()
        };
        assert!(
            original.contains(&from),
            "{}: {from:?} not in {}",
            case.what,
            case.file
        );
        let path = dir.path().join(case.file);
        std::fs::write(&path, original.replacen(&from, &case.to, 1)).unwrap();
        let outcome = manifests::validate(&[&path], &[]).unwrap();
        assert_eq!(outcome.code, 1, "{}: {}", case.what, outcome.output());
        assert!(
            outcome.stdout.contains(case.expect),
            "{}: expected {:?}:\n{}",
            case.what,
            case.expect,
            outcome.output()
        );
    }

    // Masking before identity: validated together, the chain order is wrong.
    let masking = read(&rendered_file("masking-wasmplugin.yaml"));
    let early = dir.path().join("masking-early.yaml");
    std::fs::write(&early, masking.replacen("phase: STATS", "phase: AUTHN", 1)).unwrap();
    let outcome = manifests::validate(
        &[
            &rendered_file("identity-wasmplugin.yaml"),
            &early,
            &rendered_file("audit-wasmplugin.yaml"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(outcome.code, 1, "{}", outcome.output());
    assert!(
        outcome.stdout.contains(
            "is masking -> identity -> audit; meshguard needs identity -> masking -> audit"
        ),
        "{}",
        outcome.output()
    );
}

#[test]
fn without_the_node_packages_the_validator_says_to_run_make_tools() {
    let outcome = manifests::validate(
        &[&repo_root().join("istio-manifests/peer-authentication.yaml")],
        &[("MESHGUARD_NODE_TOOLS", "/nonexistent/node_modules")],
    )
    .unwrap();
    assert_eq!(outcome.code, 2, "{}", outcome.output());
    assert!(
        outcome.stderr.contains("run `make tools`"),
        "{}",
        outcome.output()
    );
}

/// The EnvoyFilter's Wasm config, as rendered, in a real Envoy: the knobs the
/// WasmPlugin lacks are accepted and a body command is hashed and signed.
/// (The module comes from dist/ instead of the registry, and the key inline
/// instead of from the proxy's environment: everything else is the manifest.)
#[tokio::test]
async fn the_audit_envoyfilter_runs_body_commands_in_a_real_envoy() {
    let filter = one_doc(&rendered_file("audit-envoyfilter-body-commands.yaml"));
    let patches = filter["spec"]["configPatches"].as_array().unwrap();
    let name = patches[1]["patch"]["value"]["name"].as_str().unwrap();
    let mut typed_config = patches[0]["patch"]["value"]["typed_config"].clone();
    let config = &mut typed_config["config"];
    config["vm_config"]["code"] =
        json!({"local": {"filename": wasm_module("meshguard_audit").unwrap()}});
    let env = &mut config["vm_config"]["environment_variables"];
    env["key_values"]["MESHGUARD_AUDIT_KEY"] = json!(AUDIT_KEY);
    env.as_object_mut().unwrap().remove("host_env_keys");
    let plugin_config = config["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let collector_cluster = serde_json::from_str::<Value>(&plugin_config).unwrap()["collector"]
        ["cluster"]
        .as_str()
        .unwrap()
        .to_string();

    let echo = EchoServer::start().await.unwrap();
    let collector = Collector::start().await.unwrap();
    let cluster = |name: &str, addr: std::net::SocketAddr| {
        json!({"name": name, "type": "STATIC", "connect_timeout": "5s",
               "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": {"socket_address": {"address": "127.0.0.1", "port_value": addr.port()}}}}]}]}})
    };
    let bootstrap = json!({
        "node": {"id": "envoyfilter-audit", "cluster": "orders.shop"},
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [{
                "name": "inbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "route_config": {"virtual_hosts": [{"name": "inbound", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]}]},
                        "http_filters": [
                            {"name": name, "typed_config": typed_config},
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [cluster("upstream", echo.addr()), cluster(&collector_cluster, collector.addr())]
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let envoy = Envoy::start("envoyfilter-audit", dir.path(), bootstrap)
        .await
        .unwrap();
    let addr = envoy.listener("inbound").await.unwrap();

    let body = r#"{"query": "mutation { cancel(order: 7) }", "variables": {"reason": "dup"}, "operationName": "x"}"#;
    let resp = http::send(
        addr,
        &Request::new("POST", "/graphql")
            .header("content-type", "application/json")
            .body(body),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), envoy.log());
    let echoed = resp.json().unwrap();
    let key = base64_decode(AUDIT_KEY);
    let stamp = verify_header(
        echoed["headers"]["x-meshguard-audit"]
            .as_str()
            .expect("audit header upstream"),
        &key,
    )
    .expect("the upstream can verify the header");
    let policy = AuditPolicy::from_json(plugin_config.as_bytes()).unwrap();
    let expected = policy
        .hash_request("POST", "/graphql", "backend.default.svc", body.as_bytes())
        .unwrap();
    assert_eq!(
        stamp.command_sha256, expected,
        "the body command was hashed"
    );
    assert_eq!(
        echoed["headers"]["x-meshguard-command-sha256"],
        hex(&expected)
    );
    assert_eq!(echoed["body"], body, "the body reached the upstream intact");

    // Records reach the collector named in the config.
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.lines().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no record at the collector:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Envoy names the plugin's stats after config.name (Istio: namespace.name),
    // which is what the dashboard and the VM-reload alert select.
    let stats = envoy.prometheus().await.unwrap();
    assert!(
        stats.contains("envoy_wasm_shop_meshguard_audit_vm_reload"),
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("envoy_wasm"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// `make oci`'s images: valid OCI layouts in Istio's compat variant, pushed to
/// a real registry and pulled back with skopeo, digests intact.
#[tokio::test]
async fn oci_images_are_istio_compat_and_survive_a_real_registry() {
    rendered(); // builds dist/oci
    let registry = Registry::start().await.unwrap();
    let pulled = tempfile::tempdir().unwrap();
    for filter in FILTERS {
        let layout = layout_dir(filter);
        let image = read_wasm_image(&layout).unwrap();
        assert_eq!(
            sha256_hex(&image.plugin_wasm),
            module_sha(filter),
            "{filter}"
        );
        let tag = image.tag.clone().expect("the layout names its tag");
        let remote = registry.reference(&format!("meshguard/{filter}"), &tag);
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &oci_reference(&layout, &tag),
            &remote,
        ])
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nregistry log:\n{}", registry.log()));
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote])
            .await
            .unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(&raw)),
            image.manifest_digest,
            "{filter}: the registry serves the manifest Istio's sha256 pins"
        );
        let back = pulled.path().join(filter);
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &oci_reference(&back, &tag),
        ])
        .await
        .unwrap();
        let image_back = read_wasm_image(&back).unwrap();
        assert_eq!(
            image_back.manifest_digest, image.manifest_digest,
            "{filter}"
        );
        assert_eq!(
            sha256_hex(&image_back.plugin_wasm),
            module_sha(filter),
            "{filter}: plugin.wasm survives the round trip"
        );
    }
}
