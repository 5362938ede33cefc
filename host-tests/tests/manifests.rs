//! The Istio deployment artefacts, checked offline and against real
//! components: `make manifests` output (both extension APIs generated from one
//! definition, every kustomize overlay rendered with `kubectl kustomize`)
//! validated against Istio's schema (the pinned @kubernetes-models/istio for
//! WasmPlugin, meshguard's own structural schema for TrafficExtension) plus what
//! those schemas miss, negative cases the validator must catch, the chain order,
//! failure policies and attachments the manifests promise, the audit
//! EnvoyFilter's Wasm config running body commands in a real Envoy, the OCI
//! images pushed to and pulled from a real registry with skopeo, and every
//! overlay piped from `kubectl kustomize` into `meshguard validate -` as a
//! platform team's CI would.
//!
//! Needs `make tools` (node packages in .tools/node, docker-registry, skopeo),
//! kubectl (for `kubectl kustomize`) and `make wasm`; a missing tool fails the
//! test with that advice.

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
use meshguard_host_tests::manifests::{
    self, generate, kustomize, rendered_dir, write_docs, yaml_to_json, Outcome, OVERLAYS,
};
use meshguard_host_tests::mesh::AUDIT_KEY;
use meshguard_host_tests::oci::{layout_dir, read_wasm_image};
use meshguard_host_tests::registry::{oci_reference, skopeo, Registry};
use meshguard_host_tests::{repo_root, wasm_module};
use serde_json::{json, Value};

const FILTERS: [&str; 3] = ["identity", "masking", "audit"];
const KINDS: [&str; 2] = ["WasmPlugin", "TrafficExtension"];

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

/// The documents of a rendered overlay.
fn overlay(mode: &str, api: &str) -> Vec<Value> {
    yaml_to_json(&rendered_file(&format!("rendered/{mode}-{api}.yaml"))).unwrap()
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

/// meshguard's extension for `filter` among `docs` (either API).
fn extension<'a>(docs: &'a [Value], filter: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            KINDS.contains(&d["kind"].as_str().unwrap_or(""))
                && d["metadata"]["name"] == format!("meshguard-{filter}")
        })
        .unwrap_or_else(|| panic!("no meshguard-{filter} in {docs:?}"))
}

fn extension_mut<'a>(docs: &'a mut [Value], filter: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| {
            KINDS.contains(&d["kind"].as_str().unwrap_or(""))
                && d["metadata"]["name"] == format!("meshguard-{filter}")
        })
        .unwrap_or_else(|| panic!("no meshguard-{filter}"))
}

/// The Wasm fields, wherever the API puts them.
fn wasm(doc: &Value) -> &Value {
    if doc["kind"] == "TrafficExtension" {
        &doc["spec"]["wasm"]
    } else {
        &doc["spec"]
    }
}

fn wasm_mut(doc: &mut Value) -> &mut Value {
    if doc["kind"] == "TrafficExtension" {
        &mut doc["spec"]["wasm"]
    } else {
        &mut doc["spec"]
    }
}

/// The phase in one spelling (WasmPlugin says UNSPECIFIED_PHASE).
fn phase(doc: &Value) -> String {
    match doc["spec"]["phase"].as_str().unwrap_or("UNSPECIFIED") {
        "UNSPECIFIED_PHASE" => "UNSPECIFIED".into(),
        other => other.into(),
    }
}

#[test]
fn rendered_manifests_pass_istios_schema_and_meshguards_checks() {
    let outcome = rendered();
    let mut files = vec![
        "audit/envoyfilter-body-commands.yaml".to_string(),
        "stats/istio-operator.yaml".into(),
        "observability/kustomization.yaml".into(),
        "release/kustomization.yaml".into(),
        "rendered/sidecar-wasmplugin-body-commands.yaml".into(),
        "components/istio-pre-1.27/kustomization.yaml".into(),
    ];
    for (mode, api) in OVERLAYS {
        files.push(format!("rendered/{mode}-{api}.yaml"));
        files.push(format!("overlays/{mode}/{api}/kustomization.yaml"));
    }
    for file in &files {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(file.as_str())),
            "{file} not validated:\n{}",
            outcome.output()
        );
    }
    for check in ["filter chain order", "API parity"] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.ends_with(check)),
            "{check}:\n{}",
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
    for entry in std::fs::read_dir(rendered_dir().join("rendered"))
        .unwrap()
        .chain(std::fs::read_dir(rendered_dir()).unwrap())
    {
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

/// The committed base is valid YAML, names no namespace, workload or digest,
/// and is exactly what the one definition generates; the committed overlays
/// render from a checkout.
#[test]
fn the_base_is_valid_yaml_and_what_the_definition_generates() {
    let check = generate(&["--check"]).unwrap();
    assert!(check.success(), "{}", check.output());
    assert!(
        check.stdout.contains("base/ is up to date"),
        "{}",
        check.output()
    );
    let base = repo_root().join("istio-manifests/base");
    for api in ["wasmplugin", "trafficextension"] {
        for filter in FILTERS {
            let path = base.join(api).join(format!("{filter}.yaml"));
            let doc = one_doc(&path);
            assert!(doc["metadata"].get("namespace").is_none(), "{path:?}");
            for key in ["selector", "targetRefs", "targetRef"] {
                assert!(doc["spec"].get(key).is_none(), "{path:?} {key}");
            }
            assert!(wasm(&doc).get("sha256").is_none(), "{path:?}");
            // Only the example policy names the example namespace.
            let mut rest = doc.clone();
            remove(wasm_mut(&mut rest), "/pluginConfig");
            let rest = rest.to_string();
            assert!(
                !rest.contains("shop") && !rest.contains("orders"),
                "{path:?}: {rest}"
            );
        }
    }
    for (mode, api) in OVERLAYS
        .into_iter()
        .chain([("sidecar", "wasmplugin-body-commands")])
    {
        let dir = repo_root().join(format!("istio-manifests/overlays/{mode}/{api}"));
        let outcome = kustomize(&dir).unwrap();
        assert!(outcome.success(), "{}: {}", dir.display(), outcome.output());
    }
}

/// The digest Istio checks for an oci:// url is the image manifest's, and the
/// image carries the module just built; the annotation names the module. In
/// every overlay, under both APIs.
#[test]
fn every_sha256_is_the_digest_istio_checks_for_the_module_just_built() {
    rendered();
    for (mode, api) in OVERLAYS {
        let docs = overlay(mode, api);
        for filter in FILTERS {
            let doc = extension(&docs, filter);
            let url = wasm(doc)["url"].as_str().unwrap();
            assert!(url.starts_with("oci://"), "{url}");
            let image = read_wasm_image(&layout_dir(filter)).unwrap();
            assert_eq!(
                format!("sha256:{}", wasm(doc)["sha256"].as_str().unwrap()),
                image.manifest_digest,
                "{mode}-{api} {filter}"
            );
            assert_eq!(
                sha256_hex(&image.plugin_wasm),
                module_sha(filter),
                "{filter}"
            );
            assert_eq!(
                doc["metadata"]["annotations"]["meshguard.io/module-sha256"],
                module_sha(filter).as_str()
            );
        }
    }
    let filter = one_doc(&rendered_file("audit/envoyfilter-body-commands.yaml"));
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

/// The order and failure policies docs/deploy.md argues for, the same under
/// both APIs (one definition), with the Istio 1.24-1.26 exception.
#[test]
fn phases_priorities_and_failure_policies_are_equal_under_both_apis() {
    rendered();
    for mode in ["sidecar", "waypoint", "service"] {
        let plugins = overlay(mode, "wasmplugin");
        let traffic = overlay(mode, "trafficextension");
        for filter in FILTERS {
            let (p, t) = (extension(&plugins, filter), extension(&traffic, filter));
            assert_eq!(p["kind"], "WasmPlugin");
            assert_eq!(t["kind"], "TrafficExtension");
            assert_eq!(phase(p), phase(t), "{mode} {filter}");
            assert_eq!(p["spec"]["priority"], t["spec"]["priority"]);
            assert_eq!(p["spec"]["match"], json!([{"mode": "SERVER"}]));
            assert_eq!(p["spec"]["match"], t["spec"]["match"]);
            for field in [
                "url",
                "sha256",
                "failStrategy",
                "type",
                "pluginName",
                "imagePullPolicy",
                "vmConfig",
                "pluginConfig",
            ] {
                assert_eq!(wasm(p)[field], wasm(t)[field], "{mode} {filter} {field}");
            }
            assert_eq!(p["metadata"], t["metadata"], "{mode} {filter}");
        }
        let (identity, masking, audit) = (
            extension(&traffic, "identity"),
            extension(&traffic, "masking"),
            extension(&traffic, "audit"),
        );
        assert_eq!(phase(identity), "AUTHZ");
        assert_eq!(phase(masking), "STATS");
        assert_eq!(phase(audit), "UNSPECIFIED");
        assert_eq!(audit["spec"]["phase"], "UNSPECIFIED");
        assert_eq!(
            extension(&plugins, "audit")["spec"]["phase"],
            "UNSPECIFIED_PHASE"
        );
        assert_eq!(wasm(identity)["failStrategy"], "FAIL_CLOSE");
        assert_eq!(wasm(masking)["failStrategy"], "FAIL_CLOSE");
        assert_eq!(wasm(audit)["failStrategy"], "FAIL_RELOAD");
        // Secrets and trust anchors come from the proxy's environment, never
        // from the manifest (docs/integrity.md).
        let host_env = |doc: &Value, name: &str| {
            wasm(doc)["vmConfig"]["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name && e["valueFrom"] == "HOST" && e.get("value").is_none())
        };
        assert!(host_env(masking, "MESHGUARD_MASK_HASH_KEY"));
        assert!(host_env(audit, "MESHGUARD_AUDIT_KEY"));
        for doc in [identity, masking, audit] {
            for name in trust_anchors() {
                assert!(host_env(doc, name), "{name}");
            }
            for e in wasm(doc)["vmConfig"]["env"].as_array().unwrap() {
                assert_eq!(e["valueFrom"], "HOST", "{e}");
            }
        }
        // The extensions carry header-only audit commands.
        for command in wasm(audit)["pluginConfig"]["commands"].as_array().unwrap() {
            for part in command["parts"].as_array().unwrap() {
                assert!(
                    part.is_string() && part != "body",
                    "{command} needs the EnvoyFilter"
                );
            }
        }
    }
    // Istio 1.24-1.26: only the audit filter's failStrategy differs, marked.
    let old = overlay("sidecar", "wasmplugin-istio-1.24");
    let new = overlay("sidecar", "wasmplugin");
    for filter in FILTERS {
        let (o, n) = (extension(&old, filter), extension(&new, filter));
        assert_eq!(o["spec"]["failStrategy"], "FAIL_CLOSE", "{filter}");
        let mut o = o.clone();
        if filter == "audit" {
            assert_eq!(
                o["metadata"]["annotations"]["meshguard.io/compat"],
                "istio-pre-1.27"
            );
            o["spec"]["failStrategy"] = n["spec"]["failStrategy"].clone();
            o["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove("meshguard.io/compat");
        }
        assert_eq!(&o, n, "{filter}");
    }

    let filter = one_doc(&rendered_file("audit/envoyfilter-body-commands.yaml"));
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
}

/// Sidecar overlays select pods; waypoint overlays attach to the waypoint
/// Gateway, service overlays to one Service, under both APIs; the waypoint's
/// proxy gets the same keys and trust anchors a sidecar gets.
#[test]
fn every_overlay_attaches_its_filters_as_documented() {
    rendered();
    for (mode, api) in OVERLAYS {
        let docs = overlay(mode, api);
        for filter in FILTERS {
            let doc = extension(&docs, filter);
            assert_eq!(doc["metadata"]["namespace"], "shop", "{mode}-{api}");
            let spec = &doc["spec"];
            match mode {
                "sidecar" => {
                    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "orders"}}));
                    assert!(spec.get("targetRefs").is_none());
                }
                "waypoint" => {
                    assert_eq!(
                        spec["targetRefs"],
                        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}])
                    );
                    assert!(spec.get("selector").is_none());
                }
                _ => {
                    assert_eq!(
                        spec["targetRefs"],
                        json!([{"group": "", "kind": "Service", "name": "orders"}])
                    );
                    assert!(spec.get("selector").is_none());
                }
            }
        }
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let trust = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "meshguard-trust")
            .unwrap_or_else(|| panic!("{mode}-{api}: no meshguard-trust ConfigMap"));
        assert_eq!(trust["metadata"]["namespace"], "shop");
        if mode == "sidecar" {
            assert!(kinds.contains(&"PeerAuthentication"), "{mode}-{api}");
            continue;
        }
        let gateway = docs
            .iter()
            .find(|d| d["kind"] == "Gateway")
            .unwrap_or_else(|| panic!("{mode}-{api}: no waypoint"));
        assert_eq!(gateway["metadata"]["name"], "waypoint");
        assert_eq!(gateway["spec"]["gatewayClassName"], "istio-waypoint");
        assert_eq!(
            gateway["spec"]["listeners"],
            json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}])
        );
        let params = &gateway["spec"]["infrastructure"]["parametersRef"];
        assert_eq!(params["kind"], "ConfigMap");
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == params["name"])
            .unwrap_or_else(|| panic!("{mode}-{api}: no {params}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployment.yaml");
        std::fs::write(&path, config["data"]["deployment"].as_str().unwrap()).unwrap();
        let deployment = one_doc(&path);
        assert_eq!(
            proxy_env(&deployment),
            proxy_env(&one_doc(
                &repo_root().join("istio-manifests/workload/orders-proxy-env.yaml")
            )),
            "the waypoint's proxy gets what a sidecar gets"
        );
    }
}

/// The body-command overlay: identity and masking as extensions, audit as
/// the EnvoyFilter, both selecting the same pods, never both audit variants.
#[test]
fn the_body_command_overlay_swaps_the_audit_extension_for_the_envoyfilter() {
    let docs = overlay("sidecar", "wasmplugin-body-commands");
    for filter in ["identity", "masking"] {
        let doc = extension(&docs, filter);
        assert_eq!(
            doc["spec"]["selector"],
            json!({"matchLabels": {"app": "orders"}})
        );
    }
    assert!(!docs
        .iter()
        .any(|d| KINDS.contains(&d["kind"].as_str().unwrap_or(""))
            && d["metadata"]["name"] == "meshguard-audit"));
    let filters: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "EnvoyFilter").collect();
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0]["metadata"]["namespace"], "shop");
    assert_eq!(
        filters[0]["spec"]["workloadSelector"],
        json!({"labels": {"app": "orders"}})
    );
    assert_eq!(
        filters[0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            ["allow_on_headers_stop_iteration"],
        true
    );
}

/// `kubectl kustomize DIR | meshguard validate - ARGS`, as a platform team's
/// CI pipes it (pipefail: a kustomize failure fails it too).
fn kustomize_into_validate(dir: &Path, args: &[&str]) -> Outcome {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$KUBECTL" kustomize "$DIR" | "$MESHGUARD" validate - "$@""#)
        .arg("bash")
        .args(args)
        .env(
            "KUBECTL",
            meshguard_host_tests::registry::tool("kubectl").unwrap(),
        )
        .env("DIR", dir)
        .env("MESHGUARD", meshguard_host_tests::meshguard_cli())
        .current_dir(repo_root())
        .output()
        .unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The shipped manifests pass the project's own validator as a platform
/// team's CI runs it: `kubectl kustomize DIR | meshguard validate -` exits 0
/// for the base of both APIs and every overlay, each meshguard extension
/// valid, and every variable it takes from the proxy (`valueFrom: HOST`:
/// trust anchors, MESHGUARD_MASK_HASH_KEY, MESHGUARD_AUDIT_KEY) listed as
/// provided by the proxy. With `--env`, the same pipe checks them as that
/// proxy would: a proxy without the secret keys refuses masking's `hash`
/// rules and the audit filter, one with them accepts everything. (Broken by
/// hand: `validate` compiling masking without the stand-in hash key, as
/// before, makes the plain pipe exit 1 on every masking extension.)
#[test]
fn every_overlay_piped_from_kustomize_into_meshguard_validate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    // No trust anchor: the example configs are unsigned, and a proxy that
    // asks for integrity refuses the audit example's `integrity` section
    // (unsigned_integrity), as it should.
    let trust = "# a proxy without trust anchors\nMESHGUARD_DRAIN_GRACE_SECONDS=45\n";
    let without_keys = write("proxy-without-keys.env", trust);
    let with_keys = write(
        "proxy.env",
        &format!(
            "{trust}MESHGUARD_MASK_HASH_KEY=a-mask-hash-key-of-32-bytes-long\nMESHGUARD_AUDIT_KEY={AUDIT_KEY}\n"
        ),
    );
    let targets = ["base/wasmplugin", "base/trafficextension"]
        .into_iter()
        .map(String::from)
        .chain(
            OVERLAYS
                .into_iter()
                .chain([("sidecar", "wasmplugin-body-commands")])
                .map(|(mode, api)| format!("overlays/{mode}/{api}")),
        );
    for target in targets {
        let dir = repo_root().join("istio-manifests").join(&target);
        // Which extensions the overlay holds, and what each takes from the proxy.
        let rendered = kustomize(&dir).unwrap();
        assert!(rendered.success(), "{target}: {}", rendered.output());
        let yaml = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(yaml.path(), &rendered.stdout).unwrap();
        let extensions: Vec<(String, Vec<String>)> = yaml_to_json(yaml.path())
            .unwrap()
            .iter()
            .filter(|d| KINDS.contains(&d["kind"].as_str().unwrap_or("")))
            .map(|d| {
                let filter = d["metadata"]["labels"]["meshguard.io/filter"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let host: Vec<String> = wasm(d)["vmConfig"]["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["valueFrom"] == "HOST")
                    .map(|e| e["name"].as_str().unwrap().to_string())
                    .collect();
                (filter, host)
            })
            .collect();
        let wanted: &[&str] = if target.ends_with("body-commands") {
            &["identity", "masking"] // audit is the EnvoyFilter (skipped, said so)
        } else {
            &FILTERS
        };
        let mut filters: Vec<&str> = extensions.iter().map(|(f, _)| f.as_str()).collect();
        filters.sort_unstable();
        let mut sorted = wanted.to_vec();
        sorted.sort_unstable();
        assert_eq!(filters, sorted, "{target}");

        // As a user pipes it: exit 0, each extension valid, HOST variables listed.
        let text = kustomize_into_validate(&dir, &[]);
        assert_eq!(text.code, 0, "{target}: {}", text.output());
        for (filter, host) in &extensions {
            let valid = text
                .stdout
                .lines()
                .position(|l| {
                    l.contains(&format!(
                        "({filter} filter, from its pluginName): valid {filter} policy"
                    ))
                })
                .unwrap_or_else(|| panic!("{target}: {filter} not valid: {}", text.output()));
            assert_eq!(
                text.stdout.lines().nth(valid + 1),
                Some(
                    format!(
                        "  provided by the proxy (valueFrom: HOST; --env checks them): {}",
                        host.join(", ")
                    )
                    .as_str()
                ),
                "{target}: {filter}: {}",
                text.output()
            );
        }
        for secret in ["MESHGUARD_MASK_HASH_KEY", "MESHGUARD_AUDIT_KEY"] {
            let hosts = extensions
                .iter()
                .any(|(_, h)| h.iter().any(|n| n == secret));
            assert!(
                hosts || target.ends_with("body-commands") && secret == "MESHGUARD_AUDIT_KEY",
                "{target}: nothing takes {secret} from the proxy"
            );
        }

        // With --env, as that proxy would.
        let json = kustomize_into_validate(&dir, &["--output", "json", "--env", &without_keys]);
        assert_eq!(json.code, 1, "{target}: {}", json.output());
        let results: Value = serde_json::from_str(&json.stdout).unwrap();
        for r in results.as_array().unwrap() {
            let filter = r["filter"].as_str().unwrap();
            assert_eq!(r["provided_by_proxy"], json!([]), "{target}: {r}");
            let message = r["error"]["message"].as_str().unwrap_or("");
            match filter {
                "identity" => assert_eq!(r["valid"], true, "{target}: {r}"),
                "masking" => assert!(message.contains("MESHGUARD_MASK_HASH_KEY"), "{target}: {r}"),
                _ => assert!(
                    message.contains("env MESHGUARD_AUDIT_KEY: the key is empty"),
                    "{target}: {r}"
                ),
            }
        }
        let full = kustomize_into_validate(&dir, &["--env", &with_keys]);
        assert_eq!(full.code, 0, "{target}: {}", full.output());
        assert!(
            !full.stdout.contains("provided by the proxy"),
            "{target}: {}",
            full.output()
        );
    }
}

/// The meshguard variables a Deployment patch gives the istio-proxy container,
/// with where each comes from; its extraStatTags annotation is every metric tag.
fn proxy_env(patch: &Value) -> Vec<(String, Value)> {
    let annotation = patch["spec"]["template"]["metadata"]["annotations"]
        ["sidecar.istio.io/extraStatTags"]
        .as_str()
        .unwrap();
    assert_eq!(annotation.split(',').collect::<Vec<_>>(), TAG_NAMES);
    let proxy = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(proxy["name"], "istio-proxy");
    let mut env: Vec<(String, Value)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["valueFrom"].clone(),
            )
        })
        .collect();
    env.sort_by(|a, b| a.0.cmp(&b.0));
    env
}

/// A team's own overlay: another namespace, another Service, another
/// registry path, the base untouched; it renders and validates.
#[test]
fn a_teams_own_overlay_needs_no_edit_of_the_base() {
    rendered();
    // Kustomize takes relative paths only: the overlay lives in target/,
    // two levels below the repository root, and points at dist/istio/.
    let target = repo_root().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("team-overlay-")
        .tempdir_in(&target)
        .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: payments
resources:
- {base}
components:
- {release}
patches:
- target:
    group: extensions.istio.io
    labelSelector: app.kubernetes.io/part-of=meshguard
  patch: |-
    - op: add
      path: /spec/targetRefs
      value:
      - kind: Service
        group: ""
        name: billing
    - op: add
      path: /spec/wasm/imagePullSecret
      value: registry-pull
"#,
            base = "../../dist/istio/base/trafficextension",
            release = "../../dist/istio/release",
        ),
    )
    .unwrap();
    let outcome = kustomize(dir.path()).unwrap();
    assert!(outcome.success(), "{}", outcome.output());
    let out = dir.path().join("rendered.yaml");
    std::fs::write(&out, &outcome.stdout).unwrap();
    let validated = manifests::validate(&[&out], &[]).unwrap();
    assert!(validated.success(), "{}", validated.output());
    let docs = yaml_to_json(&out).unwrap();
    for filter in FILTERS {
        let doc = extension(&docs, filter);
        assert_eq!(doc["metadata"]["namespace"], "payments");
        assert_eq!(doc["spec"]["targetRefs"][0]["name"], "billing");
        assert_eq!(doc["spec"]["wasm"]["imagePullSecret"], "registry-pull");
    }
}

/// The component a team adds to the kustomization of its own workloads: any
/// Deployment, whatever its name, gets the sidecar's meshguard environment.
#[test]
fn the_sidecar_env_component_patches_any_deployment() {
    rendered();
    let component = repo_root().join("istio-manifests/components/sidecar-proxy-env/proxy-env.yaml");
    let orders = repo_root().join("istio-manifests/workload/orders-proxy-env.yaml");
    assert_eq!(
        proxy_env(&one_doc(&component)),
        proxy_env(&one_doc(&orders))
    );
    let target = repo_root().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("team-app-")
        .tempdir_in(&target)
        .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [app.yaml]\ncomponents: [../../dist/istio/components/sidecar-proxy-env]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        r#"{"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "payments-api", "namespace": "payments"},
            "spec": {"selector": {"matchLabels": {"app": "payments"}},
                     "template": {"metadata": {"labels": {"app": "payments"}},
                                  "spec": {"containers": [{"name": "app", "image": "payments:1"}]}}}}"#,
    )
    .unwrap();
    let outcome = kustomize(dir.path()).unwrap();
    assert!(outcome.success(), "{}", outcome.output());
    let out = dir.path().join("out.yaml");
    std::fs::write(&out, &outcome.stdout).unwrap();
    let mut deployment = one_doc(&out);
    assert_eq!(deployment["metadata"]["name"], "payments-api");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    assert!(
        containers.iter().any(|c| c["name"] == "app"),
        "{containers:?}"
    );
    containers.retain(|c| c["name"] == "istio-proxy");
    assert_eq!(proxy_env(&deployment), proxy_env(&one_doc(&orders)));
}

#[test]
fn every_metric_tag_is_in_the_extra_stat_tags() {
    let operator = one_doc(&repo_root().join("istio-manifests/stats/istio-operator.yaml"));
    assert_eq!(
        operator["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"],
        json!(TAG_NAMES)
    );
    let patch = one_doc(&repo_root().join("istio-manifests/workload/orders-proxy-env.yaml"));
    let env = proxy_env(&patch);
    for (name, from) in &env {
        assert!(
            from["secretKeyRef"].is_object()
                || from["configMapKeyRef"]["name"] == "meshguard-trust",
            "{name}: {from}"
        );
    }
    let mut names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = vec!["MESHGUARD_AUDIT_KEY", "MESHGUARD_MASK_HASH_KEY"];
    want.extend(trust_anchors());
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want);
}

/// One broken deployment: which rendered overlay, how to break it, and what
/// the validator must say.
struct Broken {
    what: &'static str,
    overlay: (&'static str, &'static str),
    edit: fn(&mut Vec<Value>),
    expect: &'static str,
}

/// Sets the value at a JSON pointer whose parent exists.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent}"))
    {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => other[key] = value,
    }
}

fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    doc.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(key))
        .unwrap_or_else(|| panic!("{pointer}"));
}

fn env_inline(doc: &mut Value, name: &str, value: &str) {
    for e in wasm_mut(doc)["vmConfig"]["env"].as_array_mut().unwrap() {
        if e["name"] == name {
            *e = json!({"name": name, "value": value});
        }
    }
}

const WP: (&str, &str) = ("sidecar", "wasmplugin");
const TE: (&str, &str) = ("sidecar", "trafficextension");
const WAYPOINT_TE: (&str, &str) = ("waypoint", "trafficextension");

#[test]
fn the_validator_reports_what_istios_schema_misses() {
    let cases = [
        Broken {
            what: "selector and targetRefs",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/targetRefs",
                    json!([{"kind": "Service", "name": "orders"}]),
                )
            },
            expect: "selector and targetRefs are both set",
        },
        Broken {
            what: "selector and targetRefs (TrafficExtension)",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/targetRefs",
                    json!([{"kind": "Service", "name": "orders"}]),
                )
            },
            expect: "selector and targetRefs are both set",
        },
        Broken {
            what: "a sha256 that is not the image's",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/wasm/sha256",
                    json!("0".repeat(64)),
                )
            },
            expect: "is not the manifest digest",
        },
        Broken {
            what: "a malformed sha256",
            overlay: WP,
            edit: |d| {
                let doc = extension_mut(d, "identity");
                let upper = doc["spec"]["sha256"].as_str().unwrap().to_uppercase();
                set(doc, "/spec/sha256", json!(upper));
            },
            expect: "does not match ^[a-f0-9]{64}$",
        },
        Broken {
            what: "a wrong failStrategy",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/failStrategy",
                    json!("FAIL_SOMETIMES"),
                )
            },
            expect: "/spec/failStrategy must be equal to one of the allowed values",
        },
        Broken {
            what: "a wrong failStrategy (TrafficExtension)",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/wasm/failStrategy",
                    json!("FAIL_SOMETIMES"),
                )
            },
            expect: "/spec/wasm/failStrategy must be equal to one of the allowed values",
        },
        Broken {
            what: "failStrategy where WasmPlugin has it, in a TrafficExtension",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/failStrategy",
                    json!("FAIL_CLOSE"),
                )
            },
            expect: "unknown field spec.failStrategy",
        },
        Broken {
            what: "a wrong phase",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/phase",
                    json!("AUTHORIZATION"),
                )
            },
            expect: "/spec/phase must be equal to one of the allowed values",
        },
        Broken {
            what: "WasmPlugin's phase spelling in a TrafficExtension",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "audit"),
                    "/spec/phase",
                    json!("UNSPECIFIED_PHASE"),
                )
            },
            expect: "/spec/phase must be equal to one of the allowed values",
        },
        Broken {
            what: "an unknown field",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/pluginNmae",
                    json!("meshguard-identity"),
                )
            },
            expect: "unknown field spec.pluginNmae",
        },
        Broken {
            what: "an unknown field (TrafficExtension)",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/wasm/vmConfig/envs",
                    json!([]),
                )
            },
            expect: "unknown field spec.wasm.vmConfig.envs",
        },
        Broken {
            what: "no url",
            overlay: WP,
            edit: |d| remove(extension_mut(d, "identity"), "/spec/url"),
            expect: "url is required",
        },
        Broken {
            what: "no url (TrafficExtension)",
            overlay: TE,
            edit: |d| remove(extension_mut(d, "identity"), "/spec/wasm/url"),
            expect: "must have required property 'url'",
        },
        Broken {
            what: "both wasm and lua",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/lua",
                    json!({"inlineCode": "function envoy_on_request(h) end"}),
                )
            },
            expect: "exactly one of wasm or lua must be set",
        },
        Broken {
            what: "a waypoint Gateway without its group",
            overlay: WAYPOINT_TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/targetRefs",
                    json!([{"kind": "Gateway", "name": "waypoint"}]),
                )
            },
            expect: "a Gateway is in group \"gateway.networking.k8s.io\"",
        },
        Broken {
            what: "a cross-namespace targetRef",
            overlay: WAYPOINT_TE,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/targetRefs/0/namespace",
                    json!("istio-system"),
                )
            },
            expect: "cross namespace referencing is not currently supported",
        },
        Broken {
            what: "FAIL_OPEN",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, "identity"),
                    "/spec/failStrategy",
                    json!("FAIL_OPEN"),
                )
            },
            expect: "FAIL_OPEN skips a crashed meshguard-identity: an authorization bypass",
        },
        Broken {
            what: "FAIL_OPEN (TrafficExtension)",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, "masking"),
                    "/spec/wasm/failStrategy",
                    json!("FAIL_OPEN"),
                )
            },
            expect: "FAIL_OPEN skips a crashed meshguard-masking: unmasked data",
        },
        Broken {
            what: "a pluginConfig the filter refuses",
            overlay: TE,
            edit: |d| {
                let rules = wasm_mut(extension_mut(d, "masking"))["pluginConfig"]["rules"]
                    .as_array_mut()
                    .unwrap();
                rules[0]["strategy"] = json!("shred");
            },
            expect: "pluginConfig refused by `meshguard validate --filter masking`",
        },
        Broken {
            what: "a body command in a WasmPlugin",
            overlay: WP,
            edit: |d| {
                set(
                    wasm_mut(extension_mut(d, "audit")),
                    "/pluginConfig/commands/0/parts",
                    json!(["method", "path", {"json_pointer": "/sql"}]),
                )
            },
            expect: "needs allow_on_headers_stop_iteration: true",
        },
        Broken {
            what: "a body command in a TrafficExtension",
            overlay: TE,
            edit: |d| {
                set(
                    wasm_mut(extension_mut(d, "audit")),
                    "/pluginConfig/commands/0/parts",
                    json!(["method", "body"]),
                )
            },
            expect: "needs allow_on_headers_stop_iteration: true",
        },
        Broken {
            what: "an inline secret",
            overlay: TE,
            edit: |d| {
                env_inline(
                    extension_mut(d, "audit"),
                    "MESHGUARD_AUDIT_KEY",
                    "c2VjcmV0LWtleS1pbmxpbmU=",
                )
            },
            expect: "MESHGUARD_AUDIT_KEY is a secret",
        },
        Broken {
            what: "an inline trust anchor beside the config",
            overlay: WP,
            edit: |d| env_inline(extension_mut(d, "identity"), "MESHGUARD_HEALTH_PATHS", "/*"),
            expect: "MESHGUARD_HEALTH_PATHS judges the config: pass it with valueFrom: HOST",
        },
        Broken {
            what: "masking before identity",
            overlay: TE,
            edit: |d| set(extension_mut(d, "masking"), "/spec/phase", json!("AUTHN")),
            expect: "is masking -> identity -> audit; meshguard needs identity -> masking -> audit",
        },
        Broken {
            what: "both audit variants in one deployment",
            overlay: WP,
            edit: |d| {
                let body = overlay("sidecar", "wasmplugin-body-commands");
                let filter = body
                    .iter()
                    .find(|x| x["kind"] == "EnvoyFilter")
                    .unwrap()
                    .clone();
                d.push(filter);
            },
            expect: "meshguard-audit both as an extension and as an EnvoyFilter",
        },
        Broken {
            what: "a canary whose selector overlaps the stable one",
            overlay: WP,
            edit: |d| {
                let mut canary = extension(d, "identity").clone();
                canary["metadata"]["name"] = json!("canary-meshguard-identity");
                canary["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
                d.push(canary);
            },
            expect: "select overlapping pods: meshguard-identity would run twice",
        },
        Broken {
            what: "both APIs for one workload",
            overlay: WP,
            edit: |d| {
                let mut traffic = overlay("sidecar", "trafficextension");
                let identity = extension_mut(&mut traffic, "identity").clone();
                d.push(identity);
            },
            expect: "meshguard-identity selected more than once",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    for (n, case) in cases.iter().enumerate() {
        let mut docs = overlay(case.overlay.0, case.overlay.1);
        (case.edit)(&mut docs);
        let path = dir.path().join(format!("case-{n}.yaml"));
        write_docs(&path, &docs).unwrap();
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

    // Stable and canary in one deployment, with disjoint selectors and the
    // canary's names prefixed (docs/operations.md): valid.
    let mut docs = overlay("sidecar", "trafficextension");
    let mut canaries = Vec::new();
    for filter in FILTERS {
        let stable = extension_mut(&mut docs, filter);
        stable["spec"]["selector"]["matchLabels"]["track"] = json!("stable");
        let mut canary = stable.clone();
        canary["metadata"]["name"] = json!(format!("canary-meshguard-{filter}"));
        canary["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
        canaries.push(canary);
    }
    docs.extend(canaries);
    let path = dir.path().join("canary.yaml");
    write_docs(&path, &docs).unwrap();
    let outcome = manifests::validate(&[&path], &[]).unwrap();
    assert!(outcome.success(), "{}", outcome.output());

    // The EnvoyFilter without the knob body commands need.
    let original = read(&rendered_file("audit/envoyfilter-body-commands.yaml"));
    let knob = "\n            allow_on_headers_stop_iteration: true";
    assert!(original.contains(knob));
    let path = dir.path().join("envoyfilter.yaml");
    std::fs::write(
        &path,
        original.replacen(
            knob,
            "\n            allow_on_headers_stop_iteration: false",
            1,
        ),
    )
    .unwrap();
    let outcome = manifests::validate(&[&path], &[]).unwrap();
    assert_eq!(outcome.code, 1, "{}", outcome.output());
    assert!(
        outcome
            .stdout
            .contains("needs allow_on_headers_stop_iteration: true"),
        "{}",
        outcome.output()
    );

    // One definition, both APIs: a TrafficExtension whose priority drifted
    // from its WasmPlugin's is reported when both are validated.
    let mut traffic = overlay("sidecar", "trafficextension");
    set(
        extension_mut(&mut traffic, "identity"),
        "/spec/priority",
        json!(31),
    );
    let te = dir.path().join("te.yaml");
    write_docs(&te, &traffic).unwrap();
    let outcome = manifests::validate(
        &[&te, &rendered_file("rendered/sidecar-wasmplugin.yaml")],
        &[],
    )
    .unwrap();
    assert_eq!(outcome.code, 1, "{}", outcome.output());
    assert!(
        outcome
            .stdout
            .contains("meshguard-identity: priority differs between the APIs"),
        "{}",
        outcome.output()
    );
}

#[test]
fn without_the_node_packages_the_validator_says_to_run_make_tools() {
    let outcome = manifests::validate(
        &[&repo_root().join("istio-manifests/base/mtls/peer-authentication.yaml")],
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
    let filter = one_doc(&rendered_file("audit/envoyfilter-body-commands.yaml"));
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
    // Envoy names the plugin's stats after config.name (a WasmPlugin's:
    // namespace.name), which is what the dashboard and the VM-reload alert select.
    let stats = envoy.prometheus().await.unwrap();
    assert!(
        stats.contains("envoy_wasm_meshguard_audit_vm_reload"),
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
