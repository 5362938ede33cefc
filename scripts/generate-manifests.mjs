#!/usr/bin/env node
// Generates meshguard's Istio resources for BOTH extension APIs from the one
// definition, istio-manifests/definition.yaml:
//
//   node scripts/generate-manifests.mjs [--check]
//       istio-manifests/base/wasmplugin/        the combined plugin `meshguard` as a WasmPlugin (Istio <= 1.29)
//       istio-manifests/base/trafficextension/  ... as a TrafficExtension (Istio >= 1.30)
//       istio-manifests/base/sections/{wasmplugin,trafficextension}/
//                                               the single-section plugins meshguard-<section>
//     --check writes nothing and exits 1 when base/ differs from what the
//     definition generates (the manifest tests run it).
//
//   node scripts/generate-manifests.mjs release DIR --repository REPO --tag TAG
//       DIR/kustomization.yaml: a kustomize Component that points every meshguard
//       plugin, under either API, at REPO/<image>:TAG (the one module,
//       dist/meshguard.wasm) pinned by the digest Istio checks (the image
//       manifest digest of dist/oci/<image> for oci://), plus the module's own
//       digest as an annotation. `make manifests` writes it.
//
// Both APIs get the same phase, priority, failStrategy, match, type, env and
// pluginConfig: the only differences are where the API puts each field
// (TrafficExtension nests the Wasm fields under spec.wasm) and the spelling of
// the unspecified phase (WasmPlugin UNSPECIFIED_PHASE, TrafficExtension UNSPECIFIED).
// Exit status: 0 done, 1 --check found differences or bad input, 2 tools missing.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
const COMBINED = "meshguard";
const PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED"];
const FAIL_STRATEGIES = ["FAIL_CLOSE", "FAIL_RELOAD"];
export const API = {
  wasmplugin: { kind: "WasmPlugin", istio: "Istio 1.24-1.29; 1.30+ still serves it" },
  trafficextension: { kind: "TrafficExtension", istio: "Istio >= 1.30" },
};

function checkPlugin(at, f) {
  if (!PHASES.includes(f?.phase)) fail(`definition.yaml: ${at}.phase ${f?.phase} is not one of ${PHASES.join(", ")}`);
  if (!Number.isInteger(f.priority)) fail(`definition.yaml: ${at}.priority must be an integer`);
  if (!FAIL_STRATEGIES.includes(f.failStrategy)) fail(`definition.yaml: ${at}.failStrategy must be one of ${FAIL_STRATEGIES.join(", ")} (never FAIL_OPEN)`);
  if (!existsSync(join(root, f.config ?? ""))) fail(`definition.yaml: ${at}.config ${f.config} does not exist`);
}

function readDefinition() {
  const path = join(root, "istio-manifests/definition.yaml");
  const doc = YAML.parseDocument(readFileSync(path, "utf8"));
  if (doc.errors.length) fail(`${path}: ${doc.errors.map((e) => e.message).join("; ")}`);
  const def = doc.toJS();
  const names = Object.keys(def?.filters ?? {});
  if (names.join() !== FILTERS.join()) fail(`definition.yaml: filters must be ${FILTERS.join(", ")} in request order (found ${names.join(", ")})`);
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(def.image ?? "")) fail("definition.yaml: image must name the one image of dist/meshguard.wasm");
  checkPlugin("combined", def.combined);
  for (const [name, f] of Object.entries(def.filters)) checkPlugin(`filters.${name}`, f);
  return def;
}

// Every plugin the definition describes: the combined one first, then the
// single-section ones in request order. `name` is the resource name and the
// pluginName (Envoy root id), `filter` the meshguard.io/filter label (the
// `filter` metric label and release scope).
function plugins(def) {
  return [
    { name: COMBINED, filter: COMBINED, ...def.combined },
    ...FILTERS.map((f) => ({ name: `meshguard-${f}`, filter: f, ...def.filters[f] })),
  ];
}

function workspaceVersion() {
  const m = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(join(root, "Cargo.toml"), "utf8"));
  if (!m) fail("no workspace version in Cargo.toml");
  return m[1];
}

// The fields both APIs share, in the order they are written.
function wasmFields(def, plugin, url) {
  const env = [...def.common.hostEnv, ...(plugin.hostEnv ?? [])].map((n) => ({ name: n, valueFrom: "HOST" }));
  return {
    url,
    imagePullPolicy: def.common.imagePullPolicy,
    // Envoy root_id: what the module runs (meshguard: the combined config).
    pluginName: plugin.name,
    failStrategy: plugin.failStrategy,
    type: def.common.type,
    vmConfig: { env },
    pluginConfig: JSON.parse(readFileSync(join(root, plugin.config), "utf8")),
  };
}

function resource(def, api, plugin, url) {
  const metadata = {
    name: plugin.name,
    labels: { "app.kubernetes.io/part-of": "meshguard", "meshguard.io/filter": plugin.filter },
  };
  const wasm = wasmFields(def, plugin, url);
  if (api === "wasmplugin") {
    const { url: u, imagePullPolicy, pluginName, failStrategy, type, vmConfig, pluginConfig } = wasm;
    return {
      apiVersion: "extensions.istio.io/v1alpha1",
      kind: "WasmPlugin",
      metadata,
      spec: {
        url: u, imagePullPolicy, pluginName,
        phase: plugin.phase === "UNSPECIFIED" ? "UNSPECIFIED_PHASE" : plugin.phase,
        priority: plugin.priority,
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
    spec: { phase: plugin.phase, priority: plugin.priority, match: def.common.match, wasm },
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
  const url = `oci://${def.repository}/${def.image}:${version}`;
  const files = new Map();
  const [combined, ...sections] = plugins(def);
  for (const [api, { kind, istio }] of Object.entries(API)) {
    const kustomization = (resources) => ({
      apiVersion: "kustomize.config.k8s.io/v1beta1",
      kind: "Kustomization",
      resources,
    });
    const dir = `istio-manifests/base/${api}`;
    files.set(`${dir}/meshguard.yaml`, render([resource(def, api, combined, url)], HEADER(
      `# meshguard, the combined plugin (identity, masking and audit in one VM), as a\n` +
      `# ${kind} (${istio}). No namespace, no selector or targetRefs, no digest: an\n` +
      `# overlay adds them (istio-manifests/overlays/, docs/deploy.md).`)));
    files.set(`${dir}/kustomization.yaml`, render([kustomization(["meshguard.yaml"])], HEADER(
      `# meshguard as ONE ${kind} running every section (${istio}): the\n` +
      `# recommended deployment. Never beside ../sections/${api} or the other API for\n` +
      `# the same workloads: a section would run twice.`)));
    const sectionsDir = `istio-manifests/base/sections/${api}`;
    for (const plugin of sections)
      files.set(`${sectionsDir}/${plugin.filter}.yaml`, render([resource(def, api, plugin, url)], HEADER(
        `# meshguard ${plugin.filter} alone (the single-section plugin ${plugin.name}, the same\n` +
        `# module) as a ${kind} (${istio}). No namespace, no selector or targetRefs, no\n` +
        `# digest: an overlay adds them (istio-manifests/overlays/, docs/deploy.md).`)));
    files.set(`${sectionsDir}/kustomization.yaml`, render([kustomization(FILTERS.map((n) => `${n}.yaml`))], HEADER(
      `# The three sections as separate ${kind}s (${istio}), each with its own VM:\n` +
      `# for sections owned by different teams, with different failure policies, or\n` +
      `# phased in one at a time (docs/deploy.md). Use ONE base for a workload.`)));
  }
  return files;
}

// ---- release component ---------------------------------------------------------
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
function release(def, dir, repository, tag) {
  const module = join(root, "dist/meshguard.wasm");
  const index = join(root, `dist/oci/${def.image}/index.json`);
  if (!existsSync(module)) fail(`${relative(root, module)} is missing (make wasm)`);
  if (!existsSync(index)) fail(`${relative(root, index)} is missing (make oci)`);
  const manifestDigest = JSON.parse(readFileSync(index, "utf8")).manifests?.[0]?.digest?.split(":")[1];
  if (!/^[a-f0-9]{64}$/.test(manifestDigest ?? "")) fail(`${relative(root, index)} names no sha256 manifest digest`);
  const url = `oci://${repository}/${def.image}:${tag}`;
  const metadata = { name: "meshguard-plugins", annotations: { "meshguard.io/module-sha256": sha256(readFileSync(module)) } };
  // For oci:// Istio checks `sha256` against the image MANIFEST digest
  // (pkg/wasm/imagefetcher.go), not the module's.
  const pin = { url, sha256: manifestDigest };
  // Every meshguard plugin (the combined one and the single-section ones)
  // pulls the same image: one patch per API, by label.
  const patches = Object.values(API).map(({ kind }) => ({
    target: { group: "extensions.istio.io", kind, labelSelector: "app.kubernetes.io/part-of=meshguard" },
    patch: YAML.stringify({ apiVersion: "extensions.istio.io/v1alpha1", kind, metadata, spec: kind === "WasmPlugin" ? pin : { wasm: pin } }, { version: "1.1" }),
  }));
  const component = { apiVersion: "kustomize.config.k8s.io/v1alpha1", kind: "Component", patches };
  mkdirSync(dir, { recursive: true });
  const out = join(dir, "kustomization.yaml");
  writeFileSync(out, render([component],
    `# GENERATED by \`make manifests\` (scripts/generate-manifests.mjs release): the\n` +
    `# registry (${repository}), tag (${tag}) and digest of the module just built\n` +
    `# (dist/meshguard.wasm, image ${def.image}), for every meshguard plugin under both\n` +
    `# APIs. Overlays list it under \`components:\`.`));
  console.log(`${relative(process.cwd(), out)}: ${repository}/${def.image}:${tag}`);
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
  const files = baseFiles(def);
  // A generated directory holds only what the definition generates (a file
  // left from an older layout would still be listed by nothing, or worse, by
  // a copy of an old overlay).
  const generatedDirs = new Set([...files.keys()].map((f) => dirname(f)));
  for (const dir of generatedDirs) {
    const abs = join(root, dir);
    if (!existsSync(abs)) continue;
    for (const entry of readdirSync(abs)) {
      const file = `${dir}/${entry}`;
      if (files.has(file) || !/\.ya?ml$/.test(entry)) continue;
      if (check) {
        console.log(`stale ${file}: not generated by istio-manifests/definition.yaml (run node scripts/generate-manifests.mjs)`);
        stale++;
      } else {
        rmSync(join(root, file));
        console.log(`removed ${file}`);
      }
    }
  }
  for (const [file, text] of files) {
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
  process.exit(check && stale ? 1 : 0);
} else {
  fail("usage: generate-manifests.mjs [--check] | release DIR [--repository REPO] [--tag TAG]");
}
