#!/usr/bin/env node
// Generates meshguard's Istio resources for BOTH extension APIs from the one
// definition, istio-manifests/definition.yaml:
//
//   node scripts/generate-manifests.mjs [--check]
//       istio-manifests/base/wasmplugin/        WasmPlugin per filter (Istio <= 1.29)
//       istio-manifests/base/trafficextension/  TrafficExtension per filter (Istio >= 1.30)
//     --check writes nothing and exits 1 when base/ differs from what the
//     definition generates (the manifest tests run it).
//
//   node scripts/generate-manifests.mjs release DIR --repository REPO --tag TAG
//       DIR/kustomization.yaml: a kustomize Component that points every filter,
//       under either API, at REPO/<filter>:TAG pinned by the digest Istio checks
//       (the image manifest digest of dist/oci/<filter> for oci://), plus the
//       module's own digest as an annotation. `make manifests` writes it.
//
// Both APIs get the same phase, priority, failStrategy, match, type, env and
// pluginConfig: the only differences are where the API puts each field
// (TrafficExtension nests the Wasm fields under spec.wasm) and the spelling of
// the unspecified phase (WasmPlugin UNSPECIFIED_PHASE, TrafficExtension UNSPECIFIED).
// Exit status: 0 done, 1 --check found differences or bad input, 2 tools missing.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.MESHGUARD_NODE_TOOLS ?? join(root, ".tools/node/node_modules");
if (!existsSync(join(nodeModules, "yaml/package.json"))) {
  console.error(`generate-manifests: the yaml package is missing from ${nodeModules} (run \`make tools\`)`);
  process.exit(2);
}
const YAML = await import(pathToFileURL(join(nodeModules, "yaml/dist/index.js")).href);

const fail = (message) => {
  console.error(`generate-manifests: ${message}`);
  process.exit(1);
};
const FILTERS = ["identity", "masking", "audit"];
const PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED"];
const FAIL_STRATEGIES = ["FAIL_CLOSE", "FAIL_RELOAD"];
export const API = {
  wasmplugin: { kind: "WasmPlugin", istio: "Istio 1.24-1.29; 1.30+ still serves it" },
  trafficextension: { kind: "TrafficExtension", istio: "Istio >= 1.30" },
};

function readDefinition() {
  const path = join(root, "istio-manifests/definition.yaml");
  const doc = YAML.parseDocument(readFileSync(path, "utf8"));
  if (doc.errors.length) fail(`${path}: ${doc.errors.map((e) => e.message).join("; ")}`);
  const def = doc.toJS();
  const names = Object.keys(def?.filters ?? {});
  if (names.join() !== FILTERS.join()) fail(`definition.yaml: filters must be ${FILTERS.join(", ")} in request order (found ${names.join(", ")})`);
  for (const [name, f] of Object.entries(def.filters)) {
    if (!PHASES.includes(f.phase)) fail(`definition.yaml: filters.${name}.phase ${f.phase} is not one of ${PHASES.join(", ")}`);
    if (!Number.isInteger(f.priority)) fail(`definition.yaml: filters.${name}.priority must be an integer`);
    if (!FAIL_STRATEGIES.includes(f.failStrategy)) fail(`definition.yaml: filters.${name}.failStrategy must be one of ${FAIL_STRATEGIES.join(", ")} (never FAIL_OPEN)`);
    if (!existsSync(join(root, f.config ?? ""))) fail(`definition.yaml: filters.${name}.config ${f.config} does not exist`);
  }
  return def;
}

function workspaceVersion() {
  const m = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(join(root, "Cargo.toml"), "utf8"));
  if (!m) fail("no workspace version in Cargo.toml");
  return m[1];
}

// The fields both APIs share, in the order they are written.
function wasmFields(def, name, url) {
  const f = def.filters[name];
  const env = [...def.common.hostEnv, ...(f.hostEnv ?? [])].map((n) => ({ name: n, valueFrom: "HOST" }));
  return {
    url,
    imagePullPolicy: def.common.imagePullPolicy,
    // Envoy root_id: the filter registers under this name.
    pluginName: `meshguard-${name}`,
    failStrategy: f.failStrategy,
    type: def.common.type,
    vmConfig: { env },
    pluginConfig: JSON.parse(readFileSync(join(root, f.config), "utf8")),
  };
}

function resource(def, api, name, url) {
  const f = def.filters[name];
  const metadata = {
    name: `meshguard-${name}`,
    labels: { "app.kubernetes.io/part-of": "meshguard", "meshguard.io/filter": name },
  };
  const wasm = wasmFields(def, name, url);
  if (api === "wasmplugin") {
    const { url: u, imagePullPolicy, pluginName, failStrategy, type, vmConfig, pluginConfig } = wasm;
    return {
      apiVersion: "extensions.istio.io/v1alpha1",
      kind: "WasmPlugin",
      metadata,
      spec: {
        url: u, imagePullPolicy, pluginName,
        phase: f.phase === "UNSPECIFIED" ? "UNSPECIFIED_PHASE" : f.phase,
        priority: f.priority,
        failStrategy, type,
        match: def.common.match,
        vmConfig, pluginConfig,
      },
    };
  }
  return {
    apiVersion: "extensions.istio.io/v1alpha1",
    kind: "TrafficExtension",
    metadata,
    spec: { phase: f.phase, priority: f.priority, match: def.common.match, wasm },
  };
}

const HEADER = (what) =>
  `# GENERATED by scripts/generate-manifests.mjs from istio-manifests/definition.yaml:\n` +
  `# edit the definition, never this file (the manifest tests compare them).\n${what}`;

function render(docs, header) {
  // YAML 1.1 quoting: Kubernetes' YAML readers take an unquoted `on`, `yes` or
  // a bare date as a boolean or a timestamp.
  const text = docs.map((d) => YAML.stringify(d, { lineWidth: 0, version: "1.1" })).join("---\n");
  return `${header}\n${text}`;
}

function baseFiles(def) {
  const version = workspaceVersion();
  const files = new Map();
  for (const [api, { kind, istio }] of Object.entries(API)) {
    const dir = `istio-manifests/base/${api}`;
    for (const name of FILTERS) {
      const doc = resource(def, api, name, `oci://${def.repository}/${name}:${version}`);
      files.set(`${dir}/${name}.yaml`, render([doc], HEADER(
        `# meshguard ${name} as a ${kind} (${istio}). No namespace, no selector or\n` +
        `# targetRefs, no digest: an overlay adds them (istio-manifests/overlays/, docs/deploy.md).`)));
    }
    const kustomization = {
      apiVersion: "kustomize.config.k8s.io/v1beta1",
      kind: "Kustomization",
      resources: FILTERS.map((n) => `${n}.yaml`),
    };
    files.set(`${dir}/kustomization.yaml`, render([kustomization], HEADER(
      `# The three meshguard filters as ${kind}s (${istio}). Use ONE of the two bases\n` +
      `# for a workload: both would run every filter twice.`)));
  }
  return files;
}

// ---- release component ---------------------------------------------------------
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
function release(def, dir, repository, tag) {
  const patches = [];
  for (const name of FILTERS) {
    const module = join(root, `dist/meshguard_${name}.wasm`);
    const index = join(root, `dist/oci/${name}/index.json`);
    if (!existsSync(module)) fail(`${relative(root, module)} is missing (make wasm)`);
    if (!existsSync(index)) fail(`${relative(root, index)} is missing (make oci)`);
    const manifestDigest = JSON.parse(readFileSync(index, "utf8")).manifests?.[0]?.digest?.split(":")[1];
    if (!/^[a-f0-9]{64}$/.test(manifestDigest ?? "")) fail(`${relative(root, index)} names no sha256 manifest digest`);
    const url = `oci://${repository}/${name}:${tag}`;
    const metadata = { name: `meshguard-${name}`, annotations: { "meshguard.io/module-sha256": sha256(readFileSync(module)) } };
    // For oci:// Istio checks `sha256` against the image MANIFEST digest
    // (pkg/wasm/imagefetcher.go), not the module's.
    const pin = { url, sha256: manifestDigest };
    for (const api of Object.keys(API)) {
      const kind = API[api].kind;
      const spec = api === "wasmplugin" ? pin : { wasm: pin };
      patches.push({
        target: { group: "extensions.istio.io", kind, name: `meshguard-${name}` },
        patch: YAML.stringify({ apiVersion: "extensions.istio.io/v1alpha1", kind, metadata, spec }, { version: "1.1" }),
      });
    }
  }
  const component = { apiVersion: "kustomize.config.k8s.io/v1alpha1", kind: "Component", patches };
  mkdirSync(dir, { recursive: true });
  const out = join(dir, "kustomization.yaml");
  writeFileSync(out, render([component],
    `# GENERATED by \`make manifests\` (scripts/generate-manifests.mjs release): the\n` +
    `# registry (${repository}), tag (${tag}) and digests of the modules just built,\n` +
    `# for both APIs. Overlays list it under \`components:\`.`));
  console.log(`${relative(process.cwd(), out)}: ${repository} ${tag}`);
}

// ---- main ----------------------------------------------------------------------
const args = process.argv.slice(2);
const def = readDefinition();
if (args[0] === "release") {
  const dir = args[1];
  const opt = (name) => {
    const i = args.indexOf(name);
    return i > 0 ? args[i + 1] : undefined;
  };
  const repository = opt("--repository") ?? def.repository;
  const tag = opt("--tag") ?? workspaceVersion();
  if (!dir) fail("usage: generate-manifests.mjs release DIR [--repository REPO] [--tag TAG]");
  release(def, resolve(dir), repository, tag);
} else if (args.length === 0 || (args.length === 1 && args[0] === "--check")) {
  const check = args[0] === "--check";
  let stale = 0;
  for (const [file, text] of baseFiles(def)) {
    const path = join(root, file);
    const current = existsSync(path) ? readFileSync(path, "utf8") : null;
    if (current === text) continue;
    if (check) {
      console.log(`stale ${file}: not what istio-manifests/definition.yaml generates (run node scripts/generate-manifests.mjs)`);
      stale++;
    } else {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
      console.log(`wrote ${file}`);
    }
  }
  if (check) console.log(stale ? `generate-manifests: ${stale} stale` : "generate-manifests: base/ is up to date");
  process.exit(stale ? 1 : 0);
} else {
  fail("usage: generate-manifests.mjs [--check] | release DIR [--repository REPO] [--tag TAG]");
}
