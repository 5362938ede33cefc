//! The Istio deployment artefacts, checked offline and against real
//! components: `make manifests` output (both extension APIs generated from one
//! definition, the combined plugin and the single-section plugins, every
//! kustomize overlay rendered with `kubectl kustomize`) validated against
//! Istio's schema (the pinned @kubernetes-models/istio for WasmPlugin,
//! meshguard's own structural schema for TrafficExtension) plus what those
//! schemas miss, negative cases the validator must catch, the chain order,
//! failure policies and attachments the manifests promise, both body-command
//! EnvoyFilters' Wasm configs running body commands in a real Envoy, the one
//! OCI image pushed to and pulled from a real registry with skopeo, every
//! overlay piped from `kubectl kustomize` into `meshguard validate -` as a
//! platform team's CI would, and the shipped ValidatingAdmissionPolicy run
//! with a real CEL implementation against every overlay and hostile edits.
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
use meshguard_core::plugin::PATH_NORMALIZATION_ENV;
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::envoy::{stats_config, Envoy};
use meshguard_host_tests::http::{self, Request};
use meshguard_host_tests::manifests::{
    self, admission_check, generate, kustomize, rendered_dir, write_docs, yaml_to_json, Outcome,
    BODY_COMMAND_OVERLAYS, OVERLAYS, SECTION_OVERLAYS,
};
use meshguard_host_tests::mesh::AUDIT_KEY;
use meshguard_host_tests::oci::{layout_dir, read_wasm_image};
use meshguard_host_tests::registry::{oci_reference, skopeo, Registry};
use meshguard_host_tests::upstream::Upstream;
use meshguard_host_tests::{repo_root, wasm_module};
use serde_json::{json, Value};

/// The sections, in request order.
const SECTIONS: [&str; 3] = ["identity", "masking", "audit"];
/// The combined plugin: its resource name, pluginName, `filter` label and image.
const COMBINED: &str = "meshguard";
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

/// Every rendered overlay that holds meshguard extensions.
fn extension_overlays() -> impl Iterator<Item = (&'static str, &'static str)> {
    OVERLAYS
        .into_iter()
        .chain(SECTION_OVERLAYS)
        .chain([BODY_COMMAND_OVERLAYS[1]])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn one_doc(path: &Path) -> Value {
    let docs = yaml_to_json(path).unwrap();
    assert_eq!(docs.len(), 1, "{}", path.display());
    docs.into_iter().next().unwrap()
}

/// The digest of dist/meshguard.wasm, the one module every plugin runs.
fn module_sha() -> String {
    sha256_hex(&std::fs::read(wasm_module(COMBINED).unwrap()).unwrap())
}

/// The meshguard plugin named `name` (`meshguard`, `meshguard-<section>`)
/// among `docs` (either API).
fn extension<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            KINDS.contains(&d["kind"].as_str().unwrap_or("")) && d["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {name} in {docs:?}"))
}

fn extension_mut<'a>(docs: &'a mut [Value], name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| {
            KINDS.contains(&d["kind"].as_str().unwrap_or("")) && d["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Every meshguard extension among `docs`.
fn extensions(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| {
            KINDS.contains(&d["kind"].as_str().unwrap_or(""))
                && d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "meshguard"
        })
        .collect()
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
        "body-commands/envoyfilter-meshguard.yaml".into(),
        "stats/istio-operator.yaml".into(),
        "observability/kustomization.yaml".into(),
        "admission/kustomization.yaml".into(),
        "release/kustomization.yaml".into(),
        "components/istio-pre-1.27/kustomization.yaml".into(),
    ];
    for (mode, api) in OVERLAYS
        .into_iter()
        .chain(SECTION_OVERLAYS)
        .chain(BODY_COMMAND_OVERLAYS)
    {
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
    for done in [
        "validate-manifests: all valid",
        "admission-check: all admitted by meshguard-trust-settings",
    ] {
        assert!(
            outcome.stdout.contains(done),
            "{done}: {}",
            outcome.output()
        );
    }
    // Each example config went through the filters' own validator first.
    for (config, kind) in [
        ("examples/meshguard/combined.json", "valid meshguard policy"),
        (
            "examples/meshguard/body-commands.json",
            "valid meshguard policy",
        ),
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
    for dir in ["rendered", "audit", "body-commands"] {
        for entry in std::fs::read_dir(rendered_dir().join(dir)).unwrap() {
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
}

/// The committed base is valid YAML, names no namespace, workload or digest,
/// and is exactly what the one definition generates: the combined plugin in
/// base/<api>/, the single-section plugins in base/sections/<api>/; the
/// committed overlays render from a checkout.
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
        let files = std::iter::once((base.join(api).join("meshguard.yaml"), COMBINED.to_string()))
            .chain(SECTIONS.map(|s| {
                (
                    base.join("sections").join(api).join(format!("{s}.yaml")),
                    format!("meshguard-{s}"),
                )
            }));
        for (path, name) in files {
            let doc = one_doc(&path);
            assert_eq!(doc["metadata"]["name"], name.as_str(), "{path:?}");
            assert_eq!(wasm(&doc)["pluginName"], name.as_str(), "{path:?}");
            assert!(doc["metadata"].get("namespace").is_none(), "{path:?}");
            for key in ["selector", "targetRefs", "targetRef"] {
                assert!(doc["spec"].get(key).is_none(), "{path:?} {key}");
            }
            assert!(wasm(&doc).get("sha256").is_none(), "{path:?}");
            // One image for every plugin.
            assert!(
                wasm(&doc)["url"]
                    .as_str()
                    .unwrap()
                    .starts_with("oci://registry.example.com/meshguard/meshguard:"),
                "{path:?}"
            );
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
        .chain(SECTION_OVERLAYS)
        .chain(BODY_COMMAND_OVERLAYS)
    {
        let dir = repo_root().join(format!("istio-manifests/overlays/{mode}/{api}"));
        let outcome = kustomize(&dir).unwrap();
        assert!(outcome.success(), "{}: {}", dir.display(), outcome.output());
    }
}

/// The digest Istio checks for an oci:// url is the image manifest's, and the
/// one image carries the module just built; the annotation names the module.
/// Every plugin of every overlay, under both APIs, and both EnvoyFilters.
#[test]
fn every_sha256_is_the_digest_istio_checks_for_the_module_just_built() {
    rendered();
    let image = read_wasm_image(&layout_dir(COMBINED)).unwrap();
    assert_eq!(sha256_hex(&image.plugin_wasm), module_sha());
    for (mode, api) in extension_overlays() {
        let docs = overlay(mode, api);
        let found = extensions(&docs);
        assert!(!found.is_empty(), "{mode}-{api}");
        for doc in found {
            let url = wasm(doc)["url"].as_str().unwrap();
            assert!(
                url.starts_with("oci://registry.example.com/meshguard/meshguard:"),
                "{url}"
            );
            assert_eq!(
                format!("sha256:{}", wasm(doc)["sha256"].as_str().unwrap()),
                image.manifest_digest,
                "{mode}-{api} {}",
                doc["metadata"]["name"]
            );
            assert_eq!(
                doc["metadata"]["annotations"]["meshguard.io/module-sha256"],
                module_sha().as_str()
            );
        }
    }
    for file in [
        "audit/envoyfilter-body-commands.yaml",
        "body-commands/envoyfilter-meshguard.yaml",
    ] {
        let filter = one_doc(&rendered_file(file));
        let remote = &filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
            ["config"]["vm_config"]["code"]["remote"];
        assert_eq!(
            format!("sha256:{}", remote["sha256"].as_str().unwrap()),
            image.manifest_digest,
            "{file}"
        );
        assert!(remote["http_uri"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("oci://registry.example.com/meshguard/meshguard:"));
        assert_eq!(
            filter["metadata"]["annotations"]["meshguard.io/module-sha256"],
            module_sha().as_str()
        );
    }
}

/// The proxy-level variables every meshguard plugin of a proxy shares: the
/// integrity trust anchors (the intended version and fingerprint are per
/// plugin: the source of truth carries them) and the one path normalization.
fn trust_anchors() -> Vec<&'static str> {
    meshguard_core::integrity::ALL_ENV
        .into_iter()
        .filter(|n| !n.starts_with("MESHGUARD_INTENDED"))
        .chain([PATH_NORMALIZATION_ENV])
        .collect()
}

/// Whether `doc` takes `name` from the proxy (`valueFrom: HOST`, no value).
fn host_env(doc: &Value, name: &str) -> bool {
    wasm(doc)["vmConfig"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == name && e["valueFrom"] == "HOST" && e.get("value").is_none())
}

/// Secrets and trust anchors come from the proxy's environment, never from
/// the manifest (docs/integrity.md): every entry is HOST.
fn assert_env_from_the_proxy(doc: &Value, secrets: &[&str]) {
    for name in trust_anchors().into_iter().chain(secrets.iter().copied()) {
        assert!(host_env(doc, name), "{}: {name}", doc["metadata"]["name"]);
    }
    for e in wasm(doc)["vmConfig"]["env"].as_array().unwrap() {
        assert_eq!(e["valueFrom"], "HOST", "{e}");
    }
}

/// A WasmPlugin and a TrafficExtension of one plugin carry the same fields.
fn assert_same_under_both_apis(p: &Value, t: &Value, what: &str) {
    assert_eq!(p["kind"], "WasmPlugin");
    assert_eq!(t["kind"], "TrafficExtension");
    assert_eq!(phase(p), phase(t), "{what}");
    assert_eq!(p["spec"]["priority"], t["spec"]["priority"], "{what}");
    assert_eq!(p["spec"]["match"], json!([{"mode": "SERVER"}]), "{what}");
    assert_eq!(p["spec"]["match"], t["spec"]["match"], "{what}");
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
        assert_eq!(wasm(p)[field], wasm(t)[field], "{what} {field}");
    }
    assert_eq!(p["metadata"], t["metadata"], "{what}");
}

/// The order and failure policies docs/deploy.md argues for, the same under
/// both APIs (one definition), with the Istio 1.24-1.26 exception: the
/// combined plugin at AUTHZ 25 with FAIL_RELOAD, just after where the single
/// identity plugin sits; the single-section plugins where they always were.
#[test]
fn phases_priorities_and_failure_policies_are_equal_under_both_apis() {
    rendered();
    for mode in ["sidecar", "waypoint", "service"] {
        let plugins = overlay(mode, "wasmplugin");
        let traffic = overlay(mode, "trafficextension");
        assert_eq!(extensions(&plugins).len(), 1, "{mode}: one plugin");
        let (p, t) = (extension(&plugins, COMBINED), extension(&traffic, COMBINED));
        assert_same_under_both_apis(p, t, mode);
        assert_eq!(phase(t), "AUTHZ");
        assert_eq!(t["spec"]["priority"], 25);
        assert_eq!(wasm(t)["failStrategy"], "FAIL_RELOAD");
        assert_eq!(wasm(t)["pluginName"], COMBINED);
        let config = &wasm(t)["pluginConfig"];
        for section in SECTIONS {
            assert!(config[section].is_object(), "{mode}: {section}");
        }
        assert_env_from_the_proxy(t, &["MESHGUARD_MASK_HASH_KEY", "MESHGUARD_AUDIT_KEY"]);
        // The extensions carry header-only audit commands.
        for command in config["audit"]["commands"].as_array().unwrap() {
            for part in command["parts"].as_array().unwrap() {
                assert!(
                    part.is_string() && part != "body",
                    "{command} needs the EnvoyFilter"
                );
            }
        }
    }

    let plugins = overlay("sidecar", "wasmplugin-sections");
    let traffic = overlay("sidecar", "trafficextension-sections");
    for section in SECTIONS {
        let name = format!("meshguard-{section}");
        assert_same_under_both_apis(
            extension(&plugins, &name),
            extension(&traffic, &name),
            &name,
        );
    }
    let [identity, masking, audit] =
        SECTIONS.map(|s| extension(&traffic, &format!("meshguard-{s}")));
    assert_eq!(phase(identity), "AUTHZ");
    assert_eq!(phase(masking), "STATS");
    assert_eq!(phase(audit), "UNSPECIFIED");
    assert_eq!(audit["spec"]["phase"], "UNSPECIFIED");
    assert_eq!(
        extension(&plugins, "meshguard-audit")["spec"]["phase"],
        "UNSPECIFIED_PHASE"
    );
    assert_eq!(
        [identity, masking, audit].map(|d| d["spec"]["priority"].as_i64().unwrap()),
        [30, 20, 10]
    );
    assert_eq!(wasm(identity)["failStrategy"], "FAIL_CLOSE");
    assert_eq!(wasm(masking)["failStrategy"], "FAIL_CLOSE");
    assert_eq!(wasm(audit)["failStrategy"], "FAIL_RELOAD");
    assert_env_from_the_proxy(identity, &[]);
    assert_env_from_the_proxy(masking, &["MESHGUARD_MASK_HASH_KEY"]);
    assert_env_from_the_proxy(audit, &["MESHGUARD_AUDIT_KEY"]);
    // A separately owned identity plugin runs before a combined plugin
    // without the identity section, in the same phase.
    let combined = extension(&overlay("sidecar", "trafficextension"), COMBINED).clone();
    assert_eq!(phase(&combined), phase(identity));
    assert!(combined["spec"]["priority"].as_i64() < identity["spec"]["priority"].as_i64());

    // Istio 1.24-1.26: only the failStrategy of the plugins on FAIL_RELOAD
    // differs, marked.
    let old = overlay("sidecar", "wasmplugin-istio-1.24");
    let new = overlay("sidecar", "wasmplugin");
    let mut o = extension(&old, COMBINED).clone();
    let n = extension(&new, COMBINED);
    assert_eq!(o["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(
        o["metadata"]["annotations"]["meshguard.io/compat"],
        "istio-pre-1.27"
    );
    o["spec"]["failStrategy"] = n["spec"]["failStrategy"].clone();
    o["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("meshguard.io/compat");
    assert_eq!(&o, n);
    // The same component under the single-section base: audit only.
    let sections = render_team_overlay(
        "compat-",
        "resources: [../../dist/istio/base/sections/wasmplugin]\ncomponents: [../../dist/istio/release, ../../dist/istio/components/istio-pre-1.27]\n",
    );
    for section in SECTIONS {
        let doc = extension(&sections, &format!("meshguard-{section}"));
        assert_eq!(doc["spec"]["failStrategy"], "FAIL_CLOSE", "{section}");
        assert_eq!(
            doc["metadata"]["annotations"]
                .get("meshguard.io/compat")
                .is_some(),
            section == "audit",
            "{section}"
        );
    }

    // The EnvoyFilters: the combined one first in the inbound chain (where an
    // authorization filter must sit, present on every workload), the audit
    // one before the router (where the audit plugin sits).
    for (file, root_id, secrets, operation) in [
        (
            "body-commands/envoyfilter-meshguard.yaml",
            COMBINED,
            &["MESHGUARD_MASK_HASH_KEY", "MESHGUARD_AUDIT_KEY"][..],
            "INSERT_FIRST",
        ),
        (
            "audit/envoyfilter-body-commands.yaml",
            "meshguard-audit",
            &["MESHGUARD_AUDIT_KEY"][..],
            "INSERT_BEFORE",
        ),
    ] {
        let filter = one_doc(&rendered_file(file));
        let patches = filter["spec"]["configPatches"].as_array().unwrap();
        let extension = &patches[0];
        assert_eq!(extension["applyTo"], "EXTENSION_CONFIG");
        let wasm = &extension["patch"]["value"]["typed_config"]["config"];
        assert_eq!(wasm["allow_on_headers_stop_iteration"], true, "{file}");
        assert_eq!(wasm["failure_policy"], "FAIL_RELOAD", "{file}");
        assert_eq!(wasm["root_id"], root_id, "{file}");
        let host_keys = wasm["vm_config"]["environment_variables"]["host_env_keys"]
            .as_array()
            .unwrap();
        for name in trust_anchors().into_iter().chain(secrets.iter().copied()) {
            assert!(host_keys.contains(&json!(name)), "{file}: {name}");
        }
        assert!(wasm["vm_config"]["environment_variables"]
            .get("key_values")
            .is_none());
        let insert = &patches[1];
        assert_eq!(insert["applyTo"], "HTTP_FILTER");
        assert_eq!(insert["match"]["context"], "SIDECAR_INBOUND");
        let chain = &insert["match"]["listener"]["filterChain"]["filter"];
        assert_eq!(
            chain["name"],
            "envoy.filters.network.http_connection_manager"
        );
        assert_eq!(insert["patch"]["operation"], operation, "{file}");
        if operation == "INSERT_BEFORE" {
            assert_eq!(chain["subFilter"]["name"], "envoy.filters.http.router");
        } else {
            assert!(chain.get("subFilter").is_none(), "{file}");
        }
        assert_eq!(
            insert["patch"]["value"]["name"],
            extension["patch"]["value"]["name"]
        );
    }
}

/// Renders a kustomization written into target/ (kustomize takes relative
/// paths only: two levels below the repository root, pointing at dist/istio/).
fn render_team_overlay(prefix: &str, kustomization: &str) -> Vec<Value> {
    rendered();
    let target = repo_root().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&target)
        .unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    let outcome = kustomize(dir.path()).unwrap();
    assert!(outcome.success(), "{}", outcome.output());
    let out = dir.path().join("rendered.yaml");
    std::fs::write(&out, &outcome.stdout).unwrap();
    let validated = manifests::validate(&[&out], &[]).unwrap();
    assert!(validated.success(), "{}", validated.output());
    yaml_to_json(&out).unwrap()
}

/// Sidecar overlays select pods; waypoint overlays attach to the waypoint
/// Gateway, service overlays to one Service, under both APIs, the combined
/// plugin alone or the three single-section plugins; the waypoint's proxy
/// gets the same keys and trust anchors a sidecar gets.
#[test]
fn every_overlay_attaches_its_filters_as_documented() {
    rendered();
    for (mode, api) in OVERLAYS.into_iter().chain(SECTION_OVERLAYS) {
        let docs = overlay(mode, api);
        let mut names: Vec<&str> = extensions(&docs)
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        let want: &[&str] = if api.ends_with("-sections") {
            &["meshguard-audit", "meshguard-identity", "meshguard-masking"]
        } else {
            &[COMBINED]
        };
        assert_eq!(names, want, "{mode}-{api}");
        for doc in extensions(&docs) {
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

/// The body-command overlays: the combined plugin as the EnvoyFilter and
/// no extension; or identity and masking as extensions and audit as the
/// EnvoyFilter, both selecting the same pods, never both audit variants.
#[test]
fn the_body_command_overlays_swap_the_extension_for_the_envoyfilter() {
    let combined = overlay("sidecar", "body-commands");
    assert!(extensions(&combined).is_empty(), "{combined:?}");
    let filters: Vec<&Value> = combined
        .iter()
        .filter(|d| d["kind"] == "EnvoyFilter")
        .collect();
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0]["metadata"]["name"], COMBINED);
    let docs = overlay("sidecar", "wasmplugin-sections-body-commands");
    for name in ["meshguard-identity", "meshguard-masking"] {
        let doc = extension(&docs, name);
        assert_eq!(
            doc["spec"]["selector"],
            json!({"matchLabels": {"app": "orders"}})
        );
    }
    assert!(!docs
        .iter()
        .any(|d| KINDS.contains(&d["kind"].as_str().unwrap_or(""))
            && d["metadata"]["name"] == "meshguard-audit"));
    let sections: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "EnvoyFilter").collect();
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0]["metadata"]["name"], "meshguard-audit");
    for filter in [filters[0], sections[0]] {
        assert_eq!(filter["metadata"]["namespace"], "shop");
        assert_eq!(
            filter["spec"]["workloadSelector"],
            json!({"labels": {"app": "orders"}})
        );
        assert_eq!(
            filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
                ["allow_on_headers_stop_iteration"],
            true
        );
    }
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
/// for every base of both APIs and every overlay with extensions, each
/// meshguard extension valid (the combined plugin as `meshguard`), and every
/// variable it takes from the proxy (`valueFrom: HOST`: trust anchors,
/// MESHGUARD_MASK_HASH_KEY, MESHGUARD_AUDIT_KEY) listed as provided by the
/// proxy. With `--env`, the same pipe checks them as that proxy would: a
/// proxy without the secret keys refuses masking's `hash` rules (in the
/// combined plugin too, whose masking section is the first to need a key)
/// and the audit filter, one with them accepts everything. (Broken by
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
    let targets = [
        "base/wasmplugin",
        "base/trafficextension",
        "base/sections/wasmplugin",
        "base/sections/trafficextension",
    ]
    .into_iter()
    .map(String::from)
    .chain(extension_overlays().map(|(mode, api)| format!("overlays/{mode}/{api}")));
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
        } else if target.contains("sections") {
            &SECTIONS
        } else {
            &[COMBINED]
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
                "masking" | COMBINED => {
                    assert!(message.contains("MESHGUARD_MASK_HASH_KEY"), "{target}: {r}")
                }
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
    let docs = render_team_overlay(
        "team-overlay-",
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: payments
resources:
- ../../dist/istio/base/trafficextension
components:
- ../../dist/istio/release
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
    );
    assert_eq!(extensions(&docs).len(), 1);
    let doc = extension(&docs, COMBINED);
    assert_eq!(doc["metadata"]["namespace"], "payments");
    assert_eq!(doc["spec"]["targetRefs"][0]["name"], "billing");
    assert_eq!(doc["spec"]["wasm"]["imagePullSecret"], "registry-pull");
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
const WP_SECTIONS: (&str, &str) = ("sidecar", "wasmplugin-sections");
const TE_SECTIONS: (&str, &str) = ("sidecar", "trafficextension-sections");
const WAYPOINT_TE: (&str, &str) = ("waypoint", "trafficextension");

/// A single-section plugin of the sidecar overlay of `kind`, selecting the
/// same pods as the combined plugin's overlay.
fn single(kind: &str, section: &str) -> Value {
    let (mode, api) = if kind == "WasmPlugin" {
        WP_SECTIONS
    } else {
        TE_SECTIONS
    };
    extension(&overlay(mode, api), &format!("meshguard-{section}")).clone()
}

/// The combined plugin without `section` (owned by a separate plugin).
fn without_section(docs: &mut [Value], section: &str) {
    remove(
        wasm_mut(extension_mut(docs, COMBINED)),
        &format!("/pluginConfig/{section}"),
    );
}

/// Every case the validator must report, for both APIs, for the combined and
/// the single-section plugins. (Broken by hand: the validator recognising
/// only pluginName `meshguard-<section>`, as before the combined plugin,
/// passed the combined plugin's wrong digest, the first combined case.)
#[test]
fn the_validator_reports_what_istios_schema_misses() {
    let cases = [
        Broken {
            what: "selector and targetRefs",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
                    "/spec/wasm/sha256",
                    json!("0".repeat(64)),
                )
            },
            expect: "is not the manifest digest",
        },
        Broken {
            what: "a sha256 that is not the image's (single-section plugin)",
            overlay: WP_SECTIONS,
            edit: |d| {
                set(
                    extension_mut(d, "meshguard-masking"),
                    "/spec/sha256",
                    json!("0".repeat(64)),
                )
            },
            expect: "is not the manifest digest",
        },
        Broken {
            what: "a malformed sha256",
            overlay: WP,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
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
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
                    "/spec/phase",
                    json!("AUTHORIZATION"),
                )
            },
            expect: "/spec/phase must be equal to one of the allowed values",
        },
        Broken {
            what: "WasmPlugin's phase spelling in a TrafficExtension",
            overlay: TE_SECTIONS,
            edit: |d| {
                set(
                    extension_mut(d, "meshguard-audit"),
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
                    extension_mut(d, COMBINED),
                    "/spec/pluginNmae",
                    json!(COMBINED),
                )
            },
            expect: "unknown field spec.pluginNmae",
        },
        Broken {
            what: "an unknown field (TrafficExtension)",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, COMBINED),
                    "/spec/wasm/vmConfig/envs",
                    json!([]),
                )
            },
            expect: "unknown field spec.wasm.vmConfig.envs",
        },
        Broken {
            what: "no url",
            overlay: WP,
            edit: |d| remove(extension_mut(d, COMBINED), "/spec/url"),
            expect: "url is required",
        },
        Broken {
            what: "no url (TrafficExtension)",
            overlay: TE,
            edit: |d| remove(extension_mut(d, COMBINED), "/spec/wasm/url"),
            expect: "must have required property 'url'",
        },
        Broken {
            what: "both wasm and lua",
            overlay: TE,
            edit: |d| {
                set(
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
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
                    extension_mut(d, COMBINED),
                    "/spec/targetRefs/0/namespace",
                    json!("istio-system"),
                )
            },
            expect: "cross namespace referencing is not currently supported",
        },
        Broken {
            what: "FAIL_OPEN on the combined plugin",
            overlay: WP,
            edit: |d| {
                set(
                    extension_mut(d, COMBINED),
                    "/spec/failStrategy",
                    json!("FAIL_OPEN"),
                )
            },
            expect: "FAIL_OPEN skips a crashed meshguard plugin meshguard and every section it runs (identity: an authorization bypass; masking: unmasked data; audit: unaudited commands)",
        },
        Broken {
            what: "FAIL_OPEN on a combined plugin renamed so that only its url says meshguard",
            overlay: TE,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                doc["metadata"] = json!({"name": "payments-auth", "namespace": "shop"});
                set(doc, "/spec/wasm/pluginName", json!("payments-auth"));
                set(doc, "/spec/wasm/failStrategy", json!("FAIL_OPEN"));
            },
            expect: "FAIL_OPEN skips a crashed meshguard plugin payments-auth and every section it runs",
        },
        Broken {
            what: "FAIL_OPEN on a single-section plugin",
            overlay: TE_SECTIONS,
            edit: |d| {
                set(
                    extension_mut(d, "meshguard-masking"),
                    "/spec/wasm/failStrategy",
                    json!("FAIL_OPEN"),
                )
            },
            expect: "FAIL_OPEN skips a crashed meshguard-masking: unmasked data",
        },
        Broken {
            what: "a combined config the plugin refuses",
            overlay: TE,
            edit: |d| {
                let rules = wasm_mut(extension_mut(d, COMBINED))["pluginConfig"]["masking"]
                    ["rules"]
                    .as_array_mut()
                    .unwrap();
                rules[0]["strategy"] = json!("shred");
            },
            expect: "pluginConfig refused by `meshguard validate --filter meshguard`",
        },
        Broken {
            what: "a single-section config the plugin refuses",
            overlay: TE_SECTIONS,
            edit: |d| {
                let rules = wasm_mut(extension_mut(d, "meshguard-masking"))["pluginConfig"]
                    ["rules"]
                    .as_array_mut()
                    .unwrap();
                rules[0]["strategy"] = json!("shred");
            },
            expect: "pluginConfig refused by `meshguard validate --filter masking`",
        },
        Broken {
            what: "a body command in a combined WasmPlugin",
            overlay: WP,
            edit: |d| {
                set(
                    wasm_mut(extension_mut(d, COMBINED)),
                    "/pluginConfig/audit/commands/0/parts",
                    json!(["method", "path", {"json_pointer": "/sql"}]),
                )
            },
            expect: "needs allow_on_headers_stop_iteration: true; a WasmPlugin cannot set it (requests would stall): use istio-manifests/body-commands/envoyfilter-meshguard.yaml",
        },
        Broken {
            what: "a body command in a single-section TrafficExtension",
            overlay: TE_SECTIONS,
            edit: |d| {
                set(
                    wasm_mut(extension_mut(d, "meshguard-audit")),
                    "/pluginConfig/commands/0/parts",
                    json!(["method", "body"]),
                )
            },
            expect: "needs allow_on_headers_stop_iteration: true; a WasmPlugin cannot set it (requests would stall): use istio-manifests/audit/envoyfilter-body-commands.yaml",
        },
        Broken {
            what: "an inline secret",
            overlay: TE,
            edit: |d| {
                env_inline(
                    extension_mut(d, COMBINED),
                    "MESHGUARD_AUDIT_KEY",
                    "c2VjcmV0LWtleS1pbmxpbmU=",
                )
            },
            expect: "MESHGUARD_AUDIT_KEY is a secret",
        },
        Broken {
            what: "an inline trust anchor beside the config",
            overlay: WP,
            edit: |d| env_inline(extension_mut(d, COMBINED), "MESHGUARD_HEALTH_PATHS", "/*"),
            expect: "MESHGUARD_HEALTH_PATHS judges the config: pass it with valueFrom: HOST",
        },
        Broken {
            what: "an inline path normalization",
            overlay: WP_SECTIONS,
            edit: |d| {
                env_inline(
                    extension_mut(d, "meshguard-identity"),
                    "MESHGUARD_PATH_NORMALIZATION",
                    "NONE",
                )
            },
            expect: "MESHGUARD_PATH_NORMALIZATION judges the config: pass it with valueFrom: HOST",
        },
        Broken {
            what: "masking before identity",
            overlay: TE_SECTIONS,
            edit: |d| set(extension_mut(d, "meshguard-masking"), "/spec/phase", json!("AUTHN")),
            expect: "is masking -> identity -> audit (meshguard-masking, meshguard-identity, meshguard-audit); meshguard needs identity -> masking -> audit",
        },
        Broken {
            what: "a combined plugin and a single-section plugin of one of its sections",
            overlay: WP,
            edit: |d| d.push(single("WasmPlugin", "identity")),
            expect: "the identity section is selected more than once on",
        },
        Broken {
            what: "a single masking plugin after a combined plugin whose audit it should precede",
            overlay: TE,
            edit: |d| {
                without_section(d, "masking");
                d.push(single("TrafficExtension", "masking"));
            },
            expect: "is identity -> audit -> masking (meshguard (identity, audit), meshguard-masking); meshguard needs identity -> masking -> audit",
        },
        Broken {
            what: "a single identity plugin tied with a combined plugin",
            overlay: TE,
            edit: |d| {
                without_section(d, "identity");
                set(extension_mut(d, COMBINED), "/spec/priority", json!(30));
                d.push(single("TrafficExtension", "identity"));
            },
            expect: "meshguard and meshguard-identity share phase and priority: their order is undefined",
        },
        Broken {
            what: "both audit variants in one deployment",
            overlay: WP_SECTIONS,
            edit: |d| {
                let body = overlay("sidecar", "wasmplugin-sections-body-commands");
                let filter = body
                    .iter()
                    .find(|x| x["kind"] == "EnvoyFilter")
                    .unwrap()
                    .clone();
                d.push(filter);
            },
            expect: "the audit section both as an extension (meshguard-audit) and as an EnvoyFilter (meshguard-audit)",
        },
        Broken {
            what: "the combined plugin as an extension and as the body-command EnvoyFilter",
            overlay: TE,
            edit: |d| {
                let body = overlay("sidecar", "body-commands");
                let filter = body
                    .iter()
                    .find(|x| x["kind"] == "EnvoyFilter")
                    .unwrap()
                    .clone();
                d.push(filter);
            },
            expect: "the identity, masking, audit sections both as an extension (meshguard) and as an EnvoyFilter (meshguard)",
        },
        Broken {
            what: "a canary whose selector overlaps the stable one",
            overlay: WP,
            edit: |d| {
                let mut canary = extension(d, COMBINED).clone();
                canary["metadata"]["name"] = json!("canary-meshguard");
                canary["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
                d.push(canary);
            },
            expect: "select overlapping pods: the identity, masking, audit sections would run twice",
        },
        Broken {
            what: "both APIs for one workload",
            overlay: WP,
            edit: |d| {
                let traffic = overlay("sidecar", "trafficextension");
                d.push(extension(&traffic, COMBINED).clone());
            },
            expect: "the identity section is selected more than once",
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

    // Valid: stable and canary in one deployment, with disjoint selectors
    // and the canary's names prefixed (docs/operations.md); a combined plugin
    // beside a separately owned plugin of the section it does not run.
    let mut stable_and_canary = overlay("sidecar", "trafficextension");
    let stable = extension_mut(&mut stable_and_canary, COMBINED);
    stable["spec"]["selector"]["matchLabels"]["track"] = json!("stable");
    let mut canary = stable.clone();
    canary["metadata"]["name"] = json!("canary-meshguard");
    canary["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
    stable_and_canary.push(canary);
    let mut separate_identity = overlay("sidecar", "wasmplugin");
    without_section(&mut separate_identity, "identity");
    separate_identity.push(single("WasmPlugin", "identity"));
    let mut separate_audit = overlay("sidecar", "trafficextension");
    without_section(&mut separate_audit, "audit");
    separate_audit.push(single("TrafficExtension", "audit"));
    for (name, docs) in [
        ("canary", stable_and_canary),
        ("separate-identity", separate_identity),
        ("separate-audit", separate_audit),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        write_docs(&path, &docs).unwrap();
        let outcome = manifests::validate(&[&path], &[]).unwrap();
        assert!(outcome.success(), "{name}: {}", outcome.output());
    }

    // The EnvoyFilters without the knob body commands need, or FAIL_OPEN (the
    // keys as indented in the rendered file: the comments name them too).
    for (file, from, to, expect) in [
        (
            "audit/envoyfilter-body-commands.yaml",
            "\n            allow_on_headers_stop_iteration: true",
            "\n            allow_on_headers_stop_iteration: false",
            "needs allow_on_headers_stop_iteration: true",
        ),
        (
            "body-commands/envoyfilter-meshguard.yaml",
            "\n            allow_on_headers_stop_iteration: true",
            "\n            allow_on_headers_stop_iteration: false",
            "needs allow_on_headers_stop_iteration: true",
        ),
        (
            "body-commands/envoyfilter-meshguard.yaml",
            "\n            failure_policy: FAIL_RELOAD",
            "\n            failure_policy: FAIL_OPEN",
            "FAIL_OPEN skips a crashed meshguard plugin meshguard and every section it runs",
        ),
    ] {
        let original = read(&rendered_file(file));
        assert!(original.contains(from), "{file}");
        let path = dir.path().join("envoyfilter.yaml");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        let outcome = manifests::validate(&[&path], &[]).unwrap();
        assert_eq!(outcome.code, 1, "{file}: {}", outcome.output());
        assert!(
            outcome.stdout.contains(expect),
            "{file}: {expect}: {}",
            outcome.output()
        );
    }

    // One definition, both APIs: a TrafficExtension whose priority drifted
    // from its WasmPlugin's is reported when both are validated.
    let mut traffic = overlay("sidecar", "trafficextension");
    set(
        extension_mut(&mut traffic, COMBINED),
        "/spec/priority",
        json!(26),
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
            .contains("meshguard: priority differs between the APIs"),
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

/// The audit EnvoyFilter's Wasm config, as rendered, in a real Envoy: the
/// knobs the WasmPlugin lacks are accepted and a body command is hashed and
/// signed. (The module comes from dist/ instead of the registry, and the key
/// inline instead of from the proxy's environment: everything else is the
/// manifest.)
#[tokio::test]
async fn the_audit_envoyfilter_runs_body_commands_in_a_real_envoy() {
    body_commands_in_a_real_envoy("audit/envoyfilter-body-commands.yaml").await;
}

/// The combined plugin's EnvoyFilter, likewise: root id `meshguard` with the
/// knob runs its audit section's body command and its masking section, keys
/// inline. Its identity section is left out: the test's caller has no mesh
/// certificate, which the example policy requires.
#[tokio::test]
async fn the_combined_envoyfilter_runs_body_commands_in_a_real_envoy() {
    body_commands_in_a_real_envoy("body-commands/envoyfilter-meshguard.yaml").await;
}

async fn body_commands_in_a_real_envoy(file: &str) {
    let filter = one_doc(&rendered_file(file));
    let patches = filter["spec"]["configPatches"].as_array().unwrap();
    let name = patches[1]["patch"]["value"]["name"].as_str().unwrap();
    let mut typed_config = patches[0]["patch"]["value"]["typed_config"].clone();
    let config = &mut typed_config["config"];
    config["vm_config"]["code"] = json!({"local": {"filename": wasm_module(COMBINED).unwrap()}});
    let env = &mut config["vm_config"]["environment_variables"];
    env["key_values"]["MESHGUARD_AUDIT_KEY"] = json!(AUDIT_KEY);
    env["key_values"]["MESHGUARD_MASK_HASH_KEY"] = json!("a-mask-hash-key-of-32-bytes-long");
    env.as_object_mut().unwrap().remove("host_env_keys");
    let mut plugin_config: Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    let combined = config["root_id"] == COMBINED;
    let audit = if combined {
        plugin_config.as_object_mut().unwrap().remove("identity");
        config["configuration"]["value"] = json!(plugin_config.to_string());
        plugin_config["audit"].clone()
    } else {
        plugin_config.clone()
    };
    let collector_cluster = audit["collector"]["cluster"].as_str().unwrap().to_string();

    let upstream = Upstream::start().await.unwrap();
    let collector = Collector::start().await.unwrap();
    let cluster = |name: &str, addr: std::net::SocketAddr| {
        json!({"name": name, "type": "STATIC", "connect_timeout": "5s",
               "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": {"socket_address": {"address": "127.0.0.1", "port_value": addr.port()}}}}]}]}})
    };
    let bootstrap = json!({
        "node": {"id": "envoyfilter", "cluster": "orders.shop"},
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
            "clusters": [cluster("upstream", upstream.addr()), cluster(&collector_cluster, collector.addr())]
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let envoy = Envoy::start("envoyfilter", dir.path(), bootstrap)
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
    // What the upstream received, read at the upstream: the response that
    // echoes it is masked by the response rules (a timestamp that passes
    // Luhn reads as a card: `ts` came back as `*********4123`).
    let received = upstream.take_one().await.unwrap();
    let key = base64_decode(AUDIT_KEY);
    let stamp = verify_header(
        received
            .header("x-meshguard-audit")
            .expect("audit header upstream"),
        &key,
    )
    .expect("the upstream can verify the header");
    let policy = AuditPolicy::from_json(audit.to_string().as_bytes()).unwrap();
    let expected = policy
        .hash_request("POST", "/graphql", "backend.default.svc", body.as_bytes())
        .unwrap();
    assert_eq!(
        stamp.command_sha256, expected,
        "the body command was hashed"
    );
    assert_eq!(
        received.header("x-meshguard-command-sha256"),
        Some(hex(&expected).as_str())
    );
    assert_eq!(
        received.body,
        body.as_bytes(),
        "the body reached the upstream intact"
    );

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
    let reload = format!("envoy_wasm_{}_vm_reload", name.replace('-', "_"));
    assert!(
        stats.contains(&reload),
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

/// `make oci`'s one image: a valid OCI layout in Istio's compat variant
/// carrying dist/meshguard.wasm, pushed to a real registry and pulled back
/// with skopeo, digests intact.
#[tokio::test]
async fn oci_images_are_istio_compat_and_survive_a_real_registry() {
    rendered(); // builds dist/oci
    let registry = Registry::start().await.unwrap();
    let pulled = tempfile::tempdir().unwrap();
    let layout = layout_dir(COMBINED);
    let image = read_wasm_image(&layout).unwrap();
    assert_eq!(sha256_hex(&image.plugin_wasm), module_sha());
    // The per-filter images of older builds are gone: nothing pulls them.
    for section in SECTIONS {
        assert!(!layout_dir(section).exists(), "{section}");
    }
    assert_eq!(
        read(&repo_root().join("dist/oci/digests.txt")),
        format!("{COMBINED} {}\n", image.manifest_digest)
    );
    let tag = image.tag.clone().expect("the layout names its tag");
    let remote = registry.reference(&format!("platform/meshguard/{COMBINED}"), &tag);
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
        "the registry serves the manifest Istio's sha256 pins"
    );
    let back = pulled.path().join(COMBINED);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &oci_reference(&back, &tag),
    ])
    .await
    .unwrap();
    let image_back = read_wasm_image(&back).unwrap();
    assert_eq!(image_back.manifest_digest, image.manifest_digest);
    assert_eq!(
        sha256_hex(&image_back.plugin_wasm),
        module_sha(),
        "plugin.wasm survives the round trip"
    );
}

/// The variables a `vmConfig.env` entry list holds, by name.
fn env_mut(doc: &mut Value) -> &mut Vec<Value> {
    wasm_mut(doc)["vmConfig"]["env"].as_array_mut().unwrap()
}

/// The `vmConfig.env` entry named `name`.
fn env_entry<'a>(doc: &'a mut Value, name: &str) -> &'a mut Value {
    env_mut(doc)
        .iter_mut()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn drop_env(doc: &mut Value, name: &str) {
    env_mut(doc).retain(|e| e["name"] != name);
}

/// The combined plugin, renamed so that neither its name, labels, annotations
/// nor pluginName say meshguard (its url still does).
fn renamed(doc: &mut Value) {
    let namespace = doc["metadata"]["namespace"].clone();
    doc["metadata"] = json!({"name": "payments-auth", "namespace": namespace});
    wasm_mut(doc)["pluginName"] = json!("payments-auth");
}

/// The shipped ValidatingAdmissionPolicy, run with a real CEL implementation
/// (scripts/admission-check.mjs, @marcbachmann/cel-js): every rendered overlay
/// of both APIs, the combined and the single-section plugins, and a team's
/// overlay, is admitted; another vendor's WasmPlugin is not its business.
/// (Broken by hand: the `required` list without MESHGUARD_PATH_NORMALIZATION
/// failed the comparison with the definition at the end; `variables.wasm`
/// reading `spec` for both kinds refused every TrafficExtension overlay
/// already in `make manifests`, which runs the same check.)
#[test]
fn the_admission_policy_admits_every_shipped_overlay() {
    rendered();
    let mut paths: Vec<PathBuf> = extension_overlays()
        .chain([BODY_COMMAND_OVERLAYS[0]])
        .map(|(mode, api)| rendered_file(&format!("rendered/{mode}-{api}.yaml")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-vendor.yaml");
    write_docs(
        &other,
        &[
            json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                 "metadata": {"name": "rate-limit", "namespace": "shop"},
                 "spec": {"url": "oci://ghcr.io/example/ratelimit:1", "failStrategy": "FAIL_OPEN",
                          "vmConfig": {"env": [{"name": "LIMIT", "value": "10"}]}}}),
        ],
    )
    .unwrap();
    paths.push(other);
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let outcome = admission_check(&refs).unwrap();
    assert!(outcome.success(), "{}", outcome.output());
    for path in &paths {
        for doc in extensions(&yaml_to_json(path).unwrap()) {
            let line = format!(
                "admitted {} shop/{}",
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            );
            assert!(
                outcome.stdout.contains(&line),
                "{line}: {}",
                outcome.output()
            );
        }
    }
    assert!(outcome
        .stdout
        .contains("admitted WasmPlugin shop/rate-limit"));
    assert!(outcome
        .stdout
        .contains("admission-check: all admitted by meshguard-trust-settings"));

    // The trust variables the policy requires are the ones the definition
    // gives every plugin, which are the proxy-level variables of the core.
    let policy = one_doc(&repo_root().join("istio-manifests/admission/policy.yaml"));
    let required = policy["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "required")
        .unwrap()["expression"]
        .as_str()
        .unwrap()
        .to_string();
    let mut in_policy: Vec<&str> = required
        .split('\'')
        .filter(|t| t.starts_with("MESHGUARD_"))
        .collect();
    let definition = one_doc(&repo_root().join("istio-manifests/definition.yaml"));
    let mut in_definition: Vec<&str> = definition["common"]["hostEnv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut anchors = trust_anchors();
    for list in [&mut in_policy, &mut in_definition, &mut anchors] {
        list.sort_unstable();
    }
    assert_eq!(in_policy, in_definition);
    assert_eq!(in_definition, anchors);
}

/// Hostile edits of the shipped manifests, each refused by the admission
/// policy with the message it gives: an editor of a WasmPlugin or
/// TrafficExtension cannot change what judges its config. (Broken by hand:
/// the `inline` variable checking only `valueFrom == 'HOST'` admitted "HOST
/// with a value beside it"; `isMeshguard` without the variable names admitted
/// "renamed everywhere, its url moved".)
#[test]
fn the_admission_policy_refuses_hostile_edits() {
    const INLINE: &str = "must come from the proxy (valueFrom: HOST, no value): an inline value lets whoever edits this resource choose what judges its config";
    let cases = [
        Broken {
            what: "an inline trusted key (WasmPlugin)",
            overlay: WP,
            edit: |d| env_inline(extension_mut(d, COMBINED), "MESHGUARD_TRUSTED_KEYS", "editor=AAAA"),
            expect: "refused  WasmPlugin shop/meshguard: meshguard: vmConfig.env MESHGUARD_TRUSTED_KEYS must come from the proxy",
        },
        Broken {
            what: "an inline on-drift lifting a quarantine (single-section TrafficExtension)",
            overlay: TE_SECTIONS,
            edit: |d| env_inline(extension_mut(d, "meshguard-identity"), "MESHGUARD_ON_DRIFT", "report"),
            expect: "refused  TrafficExtension shop/meshguard-identity: meshguard: vmConfig.env MESHGUARD_ON_DRIFT must come from the proxy",
        },
        Broken {
            what: "inline health paths on a waypoint",
            overlay: WAYPOINT_TE,
            edit: |d| env_inline(extension_mut(d, COMBINED), "MESHGUARD_HEALTH_PATHS", "/*"),
            expect: "vmConfig.env MESHGUARD_HEALTH_PATHS must come from the proxy",
        },
        Broken {
            what: "MESHGUARD_REVOKED_KEYS dropped",
            overlay: TE,
            edit: |d| drop_env(extension_mut(d, COMBINED), "MESHGUARD_REVOKED_KEYS"),
            expect: "refused  TrafficExtension shop/meshguard: meshguard: vmConfig.env lacks MESHGUARD_REVOKED_KEYS (valueFrom: HOST): a trust setting the plugin is not given is one it judges configs without",
        },
        Broken {
            what: "MESHGUARD_REQUIRE_SIGNATURE dropped (single-section WasmPlugin)",
            overlay: WP_SECTIONS,
            edit: |d| drop_env(extension_mut(d, "meshguard-masking"), "MESHGUARD_REQUIRE_SIGNATURE"),
            expect: "refused  WasmPlugin shop/meshguard-masking: meshguard: vmConfig.env lacks MESHGUARD_REQUIRE_SIGNATURE",
        },
        Broken {
            what: "renamed, its revocations dropped",
            overlay: WP,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                renamed(doc);
                drop_env(doc, "MESHGUARD_REVOKED_KEYS");
            },
            expect: "refused  WasmPlugin shop/payments-auth: meshguard: vmConfig.env lacks MESHGUARD_REVOKED_KEYS",
        },
        Broken {
            what: "renamed everywhere, its url moved, a revocation list inline",
            overlay: TE,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                renamed(doc);
                wasm_mut(doc)["url"] = json!("oci://registry.example.com/platform/auth:1.0");
                env_inline(doc, "MESHGUARD_REVOKED_KEYS", "");
            },
            expect: "refused  TrafficExtension shop/payments-auth: meshguard: vmConfig.env MESHGUARD_REVOKED_KEYS must come from the proxy",
        },
        Broken {
            what: "renamed everywhere but a pluginName in other case",
            overlay: WP,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                renamed(doc);
                wasm_mut(doc)["url"] = json!("oci://registry.example.com/platform/auth:1.0");
                wasm_mut(doc)["pluginName"] = json!("MeshGuard");
                drop_env(doc, "MESHGUARD_REVOKED_KEYS");
            },
            expect: "refused  WasmPlugin shop/payments-auth: meshguard: vmConfig.env lacks MESHGUARD_REVOKED_KEYS",
        },
        Broken {
            what: "the name in other case, inline, beside the HOST entry",
            overlay: WP,
            edit: |d| {
                env_mut(extension_mut(d, COMBINED))
                    .push(json!({"name": "meshguard_health_paths", "value": "/*"}))
            },
            expect: "vmConfig.env meshguard_health_paths must come from the proxy",
        },
        Broken {
            what: "a duplicate of a name, inline, after the HOST entry",
            overlay: TE,
            edit: |d| {
                env_mut(extension_mut(d, COMBINED))
                    .push(json!({"name": "MESHGUARD_HEALTH_PATHS", "value": "/*"}))
            },
            expect: "vmConfig.env MESHGUARD_HEALTH_PATHS must come from the proxy",
        },
        Broken {
            what: "valueFrom INLINE said out loud",
            overlay: WP,
            edit: |d| {
                *env_entry(extension_mut(d, COMBINED), "MESHGUARD_MIN_SERIAL") = json!({"name": "MESHGUARD_MIN_SERIAL", "valueFrom": "INLINE", "value": "0"});
            },
            expect: "vmConfig.env MESHGUARD_MIN_SERIAL must come from the proxy",
        },
        Broken {
            what: "valueFrom in other case",
            overlay: TE,
            edit: |d| {
                env_entry(extension_mut(d, COMBINED), "MESHGUARD_MIN_SERIAL")["valueFrom"] = json!("host");
            },
            expect: "vmConfig.env MESHGUARD_MIN_SERIAL must come from the proxy",
        },
        Broken {
            what: "HOST with a value beside it",
            overlay: WP,
            edit: |d| {
                env_entry(extension_mut(d, COMBINED), "MESHGUARD_ON_DRIFT")["value"] = json!("report");
            },
            expect: "vmConfig.env MESHGUARD_ON_DRIFT must come from the proxy",
        },
        Broken {
            what: "a TrafficExtension whose env moved to the WasmPlugin's path",
            overlay: TE,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                let vm = wasm_mut(doc).as_object_mut().unwrap().remove("vmConfig").unwrap();
                doc["spec"]["vmConfig"] = vm;
            },
            expect: "refused  TrafficExtension shop/meshguard: meshguard: vmConfig.env lacks MESHGUARD_TRUSTED_KEYS, MESHGUARD_REVOKED_KEYS",
        },
        Broken {
            what: "a WasmPlugin whose env moved to the TrafficExtension's path",
            overlay: WP,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                let vm = doc["spec"].as_object_mut().unwrap().remove("vmConfig").unwrap();
                doc["spec"]["wasm"] = json!({"vmConfig": vm});
            },
            expect: "refused  WasmPlugin shop/meshguard: meshguard: vmConfig.env lacks MESHGUARD_TRUSTED_KEYS, MESHGUARD_REVOKED_KEYS",
        },
        Broken {
            what: "FAIL_OPEN",
            overlay: TE,
            edit: |d| {
                wasm_mut(extension_mut(d, COMBINED))["failStrategy"] = json!("FAIL_OPEN");
            },
            expect: "refused  TrafficExtension shop/meshguard: meshguard: failStrategy FAIL_OPEN would skip a crashed meshguard plugin and every check it runs",
        },
        Broken {
            what: "an inline audit key",
            overlay: WP,
            edit: |d| env_inline(extension_mut(d, COMBINED), "MESHGUARD_AUDIT_KEY", "c2VjcmV0LWtleS1pbmxpbmU="),
            expect: "vmConfig.env MESHGUARD_AUDIT_KEY must come from the proxy",
        },
        Broken {
            what: "the variable a config's key_env names, inline",
            overlay: TE,
            edit: |d| {
                let doc = extension_mut(d, COMBINED);
                wasm_mut(doc)["pluginConfig"]["audit"]["key_env"] = json!("ORDERS_AUDIT_KEY");
                env_mut(doc).push(json!({"name": "ORDERS_AUDIT_KEY", "value": "c2VjcmV0LWtleS1pbmxpbmU="}));
            },
            expect: "vmConfig.env ORDERS_AUDIT_KEY must come from the proxy",
        },
        Broken {
            what: "Lua in place of the module",
            overlay: TE,
            edit: |d| {
                let spec = &mut extension_mut(d, COMBINED)["spec"];
                spec.as_object_mut().unwrap().remove("wasm");
                spec["lua"] = json!({"inlineCode": "function envoy_on_request(h) end"});
            },
            expect: "refused  TrafficExtension shop/meshguard: meshguard: vmConfig.env lacks MESHGUARD_TRUSTED_KEYS",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    for (n, case) in cases.iter().enumerate() {
        let mut docs = overlay(case.overlay.0, case.overlay.1);
        (case.edit)(&mut docs);
        let path = dir.path().join(format!("hostile-{n}.yaml"));
        write_docs(&path, &docs).unwrap();
        let outcome = admission_check(&[&path]).unwrap();
        assert_eq!(outcome.code, 1, "{}: {}", case.what, outcome.output());
        assert!(
            outcome.stdout.contains(case.expect),
            "{}: expected {:?}:\n{}",
            case.what,
            case.expect,
            outcome.output()
        );
        let refusals = outcome
            .stdout
            .lines()
            .filter(|l| l.starts_with("refused"))
            .count();
        assert_eq!(
            refusals,
            1,
            "{}: only the edited resource: {}",
            case.what,
            outcome.output()
        );
        if case.expect.contains("must come from the proxy") {
            assert!(
                outcome.stdout.contains(INLINE),
                "{}: {}",
                case.what,
                outcome.output()
            );
        }
    }
}
