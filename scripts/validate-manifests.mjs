#!/usr/bin/env node
// Offline validation of rendered Istio manifests (dist/istio by default).
//
//   node scripts/validate-manifests.mjs [--root REPO] [PATH...]   (files or directories)
//
// For every Kubernetes object found:
//  1. Istio's own schema, through @kubernetes-models/istio (pinned, installed by
//     `make tools` into .tools/node): enums (failStrategy, phase...), types,
//     required fields such as `url`. TrafficExtension (Istio >= 1.30), which no
//     published package carries yet, against meshguard's own structural schema
//     written from Istio's API reference (scripts/trafficextension-schema.mjs,
//     run with ajv), unknown fields included.
//  2. What that package does not check:
//     - unknown fields, against the property names of the package's type
//       declarations for the kind (generated from Istio's CRDs);
//     - the CRD's CEL rules it skips: at most one of selector / targetRef /
//       targetRefs; `url` present and non-empty; `sha256` ^[a-f0-9]{64}$;
//       (TrafficExtension) exactly one of wasm / lua, no cross-namespace targetRefs,
//       no `value` with valueFrom: HOST;
//     - targetRefs that Istio can attach: Gateway (group gateway.networking.k8s.io),
//       GatewayClass, Service (group "" or core), ServiceEntry (networking.istio.io).
//  3. meshguard's rules for its own plugins: WasmPlugins and TrafficExtensions
//     whose pluginName is `meshguard` (the combined plugin: the sections its
//     pluginConfig names) or meshguard-<section> (one section), or whose url
//     names the meshguard image (the module then runs what the pluginName
//     selects, as the proxy would), and EnvoyFilters carrying a meshguard Wasm
//     filter (root id meshguard or meshguard-<section>):
//     - `sha256` is present and is the digest Istio will check: the image
//       manifest digest of dist/oci/meshguard for oci:// urls (whose plugin.wasm
//       must be dist/meshguard.wasm), the module's digest otherwise; the
//       meshguard.io/module-sha256 annotation is the module's digest;
//     - never FAIL_OPEN; inbound only (match mode SERVER);
//     - no secret key and no integrity trust anchor inline in vmConfig.env;
//     - the pluginConfig passes `meshguard validate --filter <meshguard|section>`
//       with the manifest's own env (INLINE values; a throwaway masking hash key
//       for HOST);
//     - audit commands with `body`/`json_pointer` parts only where
//       allow_on_headers_stop_iteration is set (the EnvoyFilter), never in a
//       WasmPlugin or TrafficExtension, which cannot set it;
//     - per deployment, on the same workloads: the sections of every meshguard
//       plugin, in the order Istio runs the plugins, are identity -> masking ->
//       audit, each at most once (a combined plugin beside a single-section
//       plugin of one of its sections, both APIs, or a canary whose selector
//       overlaps the stable one would run a section twice), no two plugins tie
//       on phase and priority, and no section both as an extension and as an
//       EnvoyFilter;
//     - API parity: a plugin's WasmPlugins and TrafficExtensions carry the same
//       phase, priority, failStrategy, type, match, pluginName and env (resources
//       annotated meshguard.io/compat, changed for an older Istio, excepted).
//     A deployment is a multi-document file (a `kubectl kustomize` output);
//     single-document files are grouped by directory.
//  4. kustomization.yaml: every resource, component and patch file exists; no
//     section both as an extension and as an EnvoyFilter.
//
// Exit status: 0 valid, 1 invalid manifests, 2 tools missing (run `make tools`).
// Environment: MESHGUARD_NODE_TOOLS (node_modules dir), MESHGUARD_CLI (a built
// `meshguard` binary; default `cargo run -q --locked -p meshguard-cli --`).
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gunzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
let root = resolve(here, "..");
const paths = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--root") root = resolve(args[++i] ?? ".");
  else if (args[i] === "--help" || args[i] === "-h") {
    console.log("usage: node scripts/validate-manifests.mjs [--root REPO] [PATH...]");
    process.exit(0);
  } else paths.push(args[i]);
}
if (paths.length === 0) paths.push(join(root, "dist/istio"));

const nodeModules = process.env.MESHGUARD_NODE_TOOLS ?? join(root, ".tools/node/node_modules");
const istioPkg = join(nodeModules, "@kubernetes-models/istio");
function toolsMissing(what) {
  console.error(`validate-manifests: ${what} is missing (run \`make tools\`, which installs the pinned packages into .tools/node)`);
  process.exit(2);
}
if (!existsSync(join(istioPkg, "package.json"))) toolsMissing(`@kubernetes-models/istio in ${nodeModules}`);
const istioVersion = JSON.parse(readFileSync(join(istioPkg, "package.json"), "utf8")).version;
if (istioVersion !== "3.0.1") toolsMissing(`@kubernetes-models/istio@3.0.1 (found ${istioVersion})`);
if (!existsSync(join(nodeModules, "yaml/package.json"))) toolsMissing(`yaml in ${nodeModules}`);
if (!existsSync(join(nodeModules, "ajv/package.json"))) toolsMissing(`ajv in ${nodeModules}`);
const YAML = await import(pathToFileURL(join(nodeModules, "yaml/dist/index.js")).href);
const Ajv = (await import(pathToFileURL(join(nodeModules, "ajv/dist/ajv.js")).href)).default;
const { trafficExtensionSchema, trafficExtensionRules } = await import(pathToFileURL(join(here, "trafficextension-schema.mjs")).href);
const validateTrafficExtension = new Ajv({ allErrors: true, strict: false }).compile(trafficExtensionSchema);

// The sections, in the order a request meets them (filters/core/src/plugin.rs).
const FILTERS = ["identity", "masking", "audit"];
// The combined plugin's pluginName (root id), `filter` label and image.
const COMBINED = "meshguard";
const WHAT_FAIL_OPEN_LOSES = { identity: "an authorization bypass", masking: "unmasked data", audit: "unaudited commands" };
const PHASE_ORDER = { AUTHN: 0, AUTHZ: 1, STATS: 2, UNSPECIFIED: 3 };
const SECRET_ENV = ["MESHGUARD_AUDIT_KEY", "MESHGUARD_MASK_HASH_KEY"];
// Integrity settings that judge the config (docs/integrity.md): inline values
// sit in the resource whoever edits the config can edit.
// (MESHGUARD_PATH_NORMALIZATION: one reading of a path per proxy, which no
// plugin's editor may choose.)
const TRUST_ENV = ["MESHGUARD_TRUSTED_KEYS", "MESHGUARD_REVOKED_KEYS", "MESHGUARD_REQUIRE_SIGNATURE", "MESHGUARD_MIN_SERIAL", "MESHGUARD_DRAIN_GRACE_SECONDS",
  "MESHGUARD_ON_DRIFT", "MESHGUARD_HEALTH_PATHS", "MESHGUARD_SOURCE_OF_TRUTH", "MESHGUARD_INTENDED_VERSION", "MESHGUARD_INTENDED_FINGERPRINT",
  "MESHGUARD_PATH_NORMALIZATION"];
const VALIDATION_HASH_KEY = "manifest-validation-only-not-a-real-key";
const SHA256 = /^[a-f0-9]{64}$/;

let failures = 0;
const report = (file, what, problems) => {
  if (problems.length === 0) {
    console.log(`ok    ${file}: ${what}`);
    return;
  }
  failures++;
  for (const p of problems) console.log(`error ${file}: ${what}: ${p}`);
};

// ---- files -----------------------------------------------------------------
function yamlFiles(p) {
  const s = statSync(p);
  if (s.isFile()) return [p];
  return readdirSync(p)
    .sort()
    .flatMap((e) => yamlFiles(join(p, e)))
    .filter((f) => /\.ya?ml$/.test(f));
}
const files = paths.flatMap((p) => {
  if (!existsSync(p)) {
    console.log(`error ${p}: no such file or directory (run \`make manifests\`)`);
    failures++;
    return [];
  }
  return yamlFiles(p);
});

// ---- type declarations of the package -> allowed property names -------------
function tokenize(src) {
  src = src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const tokens = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$.]*|\d+|=>|[{}<>\[\]():;?|,&=])/y;
  let m;
  while (re.lastIndex < src.length && (m = re.exec(src))) tokens.push(m[1]);
  return tokens;
}
function parseDeclaration(src, kind) {
  const t = tokenize(src);
  let i = t.findIndex((tok, j) => tok === "interface" && t[j + 1] === `I${kind}`);
  if (i < 0) return null;
  i += 2;
  const parseType = () => {
    const branches = [primary()];
    while (t[i] === "|" || t[i] === "&") {
      i++;
      branches.push(primary());
    }
    return branches.find((b) => b.kind === "object" || b.kind === "array") ?? { kind: "any" };
  };
  const primary = () => {
    const tok = t[i];
    if (tok === "{") return object();
    if (tok === "(") {
      i++;
      const inner = parseType();
      i++; // )
      return inner;
    }
    if (tok === "Array" && t[i + 1] === "<") {
      i += 2;
      const item = parseType();
      i++; // >
      return { kind: "array", item };
    }
    i++;
    if (t[i] === "<") { // other generics: skip
      let depth = 0;
      do {
        if (t[i] === "<") depth++;
        if (t[i] === ">") depth--;
        i++;
      } while (depth > 0 && i < t.length);
    }
    while (t[i] === "[" && t[i + 1] === "]") i += 2;
    return { kind: "any" };
  };
  const object = () => {
    i++; // {
    const props = {};
    let index = null;
    while (i < t.length && t[i] !== "}") {
      if (t[i] === "[") { // [key: string]: T
        while (t[i] !== "]") i++;
        i += 2; // ] :
        index = parseType();
      } else {
        const name = t[i].startsWith('"') ? JSON.parse(t[i]) : t[i];
        i++;
        if (t[i] === "?") i++;
        i++; // :
        props[name] = parseType();
      }
      if (t[i] === ";" || t[i] === ",") i++;
    }
    i++; // }
    const free = Object.keys(props).length === 0 && index === null;
    return free ? { kind: "any" } : { kind: "object", props, index };
  };
  return object();
}
function unknownFields(value, shape, path, out) {
  if (!shape || shape.kind === "any" || value === null || typeof value !== "object") return;
  if (shape.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, n) => unknownFields(v, shape.item, `${path}[${n}]`, out));
    return;
  }
  if (Array.isArray(value)) return;
  for (const [key, v] of Object.entries(value)) {
    const next = Object.hasOwn(shape.props, key) ? shape.props[key] : shape.index;
    if (!next) out.push(`unknown field ${path ? `${path}.` : ""}${key} (not in Istio's schema for this kind: a typo is silently dropped by Istio)`);
    else unknownFields(v, next, path ? `${path}.${key}` : key, out);
  }
}
const models = new Map();
async function model(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (!models.has(key)) {
    const [group, version] = apiVersion.split("/");
    const base = join(istioPkg, group, version ?? "", kind);
    if (!version || !existsSync(`${base}.js`)) models.set(key, null);
    else {
      const cls = (await import(pathToFileURL(`${base}.js`).href))[kind];
      const shape = parseDeclaration(readFileSync(`${base}.d.ts`, "utf8"), kind);
      models.set(key, { cls, shape });
    }
  }
  return models.get(key);
}

// ---- digests -----------------------------------------------------------------
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
let digestCache = null;
// The one module every meshguard plugin runs.
const MODULE = "dist/meshguard.wasm";
const LAYOUT = `dist/oci/${COMBINED}`;
function moduleDigest() {
  const path = join(root, MODULE);
  if (!existsSync(path)) return { error: `${MODULE} is missing (run \`make wasm\`)` };
  return { digest: sha256(readFileSync(path)) };
}
function tarEntries(tar) {
  const entries = new Map();
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString("latin1").replace(/\0.*$/s, "");
    const size = parseInt(header.subarray(124, 136).toString("latin1").replace(/\0.*$/s, "").trim() || "0", 8);
    entries.set(name.replace(/^\.\//, ""), tar.subarray(off + 512, off + 512 + size));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}
// The manifest digest of dist/oci/meshguard, after checking the image is the
// compat variant Istio pulls and carries this very module.
function ociDigest() {
  if (digestCache) return digestCache;
  const layout = join(root, LAYOUT);
  digestCache = (() => {
    const blob = (d) => readFileSync(join(layout, "blobs", ...d.split(":")));
    if (!existsSync(join(layout, "index.json"))) return { error: `no OCI layout ${LAYOUT} (run \`make oci\`)` };
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
    const desc = index.manifests?.[0];
    if (!desc) return { error: `${LAYOUT}/index.json lists no manifest` };
    const manifestBytes = blob(desc.digest);
    if (`sha256:${sha256(manifestBytes)}` !== desc.digest) return { error: `${LAYOUT}: manifest blob does not match its digest` };
    const manifest = JSON.parse(manifestBytes.toString("utf8"));
    const layers = manifest.layers ?? [];
    if (layers.length !== 1 || layers[0].mediaType !== "application/vnd.oci.image.layer.v1.tar+gzip")
      return { error: `${LAYOUT}: not a compat Wasm image (one application/vnd.oci.image.layer.v1.tar+gzip layer)` };
    const wasm = tarEntries(gunzipSync(blob(layers[0].digest))).get("plugin.wasm");
    if (!wasm) return { error: `${LAYOUT}: the layer has no plugin.wasm` };
    const module = moduleDigest();
    if (module.error) return module;
    if (sha256(wasm) !== module.digest) return { error: `${LAYOUT}: plugin.wasm is not ${MODULE} (stale image: run \`make oci\`)` };
    return { digest: desc.digest.split(":")[1] };
  })();
  return digestCache;
}
function checkDigest(url, sha, problems) {
  if (sha === undefined || sha === null || sha === "") {
    problems.push("sha256 is missing: a meshguard module must be pinned by digest");
    return;
  }
  if (!SHA256.test(String(sha))) {
    problems.push(`sha256 ${JSON.stringify(sha)} does not match ^[a-f0-9]{64}$`);
    return;
  }
  const oci = !/^(file|https?):\/\//.test(url);
  const expected = oci ? ociDigest() : moduleDigest();
  if (expected.error) problems.push(expected.error);
  else if (expected.digest !== sha)
    problems.push(oci
      ? `sha256 ${sha} is not the manifest digest ${expected.digest} of ${LAYOUT} (for an oci:// url Istio checks the image manifest digest)`
      : `sha256 ${sha} is not the digest ${expected.digest} of ${MODULE}`);
}

// ---- which meshguard plugin ---------------------------------------------------------
// The module runs the combined config under any root id but a section's
// (filters/core/src/plugin.rs, Shape::from_root_id): `meshguard-<section>` or
// `<section>` runs that section alone, anything else (`meshguard`, empty) the
// combined config.
function shapeOf(rootId) {
  const name = (rootId ?? "").replace(/^meshguard-/, "");
  return FILTERS.includes(name) ? name : COMBINED;
}
// Whether a module url names the meshguard image (…/meshguard:TAG,
// …/meshguard@sha256:…, …/meshguard.wasm).
const namesMeshguardImage = (url) => typeof url === "string" && /\/meshguard(\.wasm)?([:@][^/]*)?$/i.test(url);
// The meshguard plugin a WasmPlugin/TrafficExtension (its Wasm fields `view`)
// or an EnvoyFilter's Wasm config (`rootId`, `url`, `config`) is, or null:
// { name, filter (what `meshguard validate --filter` takes), sections }.
function meshguardPlugin(rootId, url, config) {
  const known = rootId === COMBINED || /^meshguard-(identity|masking|audit)$/.test(rootId ?? "");
  if (!known && !namesMeshguardImage(url)) return null;
  const filter = shapeOf(rootId);
  // A combined config runs the sections it names; one it cannot be read
  // from (an EnvoyFilter template) is taken to name all three.
  const sections = filter !== COMBINED ? [filter]
    : config && typeof config === "object" && !Array.isArray(config) ? FILTERS.filter((f) => f in config) : [...FILTERS];
  return { name: rootId || "(no pluginName)", filter, sections };
}
const described = (p) => (p.filter === COMBINED ? `${p.name} (${p.sections.join(", ") || "no section"})` : p.name);

// ---- meshguard validate --------------------------------------------------------
function meshguardValidate(filter, configText, env) {
  const cmd = process.env.MESHGUARD_CLI ? [process.env.MESHGUARD_CLI] : ["cargo", "run", "-q", "--locked", "-p", "meshguard-cli", "--"];
  const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MESHGUARD_")));
  const run = spawnSync(cmd[0], [...cmd.slice(1), "validate", "--filter", filter, "-"], {
    cwd: root,
    input: configText,
    env: { ...childEnv, ...env },
    encoding: "utf8",
  });
  if (run.error) return `cannot run ${cmd.join(" ")}: ${run.error.message}`;
  if (run.status !== 0) return `pluginConfig refused by \`meshguard validate --filter ${filter}\`: ${(run.stderr || run.stdout).trim()}`;
  return null;
}
function bodyCommands(config) {
  return (config?.commands ?? [])
    .filter((c) => (c.parts ?? []).some((p) => p === "body" || (p && typeof p === "object" && "json_pointer" in p)))
    .map((c) => c.name);
}
function checkPluginConfig(filter, config, env, allowStopIteration, problems) {
  // `filter`: a section, or meshguard (the combined config).
  if (config === undefined || config === null) {
    problems.push("no plugin configuration");
    return;
  }
  const validationEnv = { ...env };
  if ((filter === "masking" || filter === COMBINED) && !validationEnv.MESHGUARD_MASK_HASH_KEY) validationEnv.MESHGUARD_MASK_HASH_KEY = VALIDATION_HASH_KEY;
  const error = meshguardValidate(filter, JSON.stringify(config), validationEnv);
  if (error) problems.push(error);
  const audit = filter === "audit" ? config : filter === COMBINED ? config?.audit : undefined;
  if (audit && !allowStopIteration) {
    const body = bodyCommands(audit);
    const variant = filter === COMBINED ? "istio-manifests/body-commands/envoyfilter-meshguard.yaml" : "istio-manifests/audit/envoyfilter-body-commands.yaml";
    if (body.length)
      problems.push(`audit commands ${JSON.stringify(body)} hash the body, which needs allow_on_headers_stop_iteration: true; a WasmPlugin cannot set it (requests would stall): use ${variant}, or header-only parts`);
  }
}

// ---- per kind ----------------------------------------------------------------------
const extensions = [];
// The fields meshguard checks, wherever the API puts them (TrafficExtension
// nests the Wasm fields under spec.wasm and spells the last phase UNSPECIFIED).
function extensionView(doc) {
  const spec = doc.spec ?? {};
  const w = doc.kind === "TrafficExtension" ? spec.wasm ?? {} : spec;
  const phase = spec.phase === undefined || spec.phase === "UNSPECIFIED_PHASE" ? "UNSPECIFIED" : spec.phase;
  return {
    url: w.url, sha256: w.sha256, pluginName: w.pluginName, failStrategy: w.failStrategy ?? "FAIL_CLOSE",
    type: w.type ?? "HTTP", env: w.vmConfig?.env ?? [], pluginConfig: w.pluginConfig,
    phase, priority: spec.priority ?? 0, match: spec.match ?? [],
    targeting: spec.selector ?? spec.targetRefs ?? spec.targetRef ?? null,
  };
}
// What Istio can attach an extension to with targetRefs (istio/api
// type/v1beta1 PolicyTargetReference, traffic_extension.proto).
const TARGET_GROUPS = { Gateway: ["gateway.networking.k8s.io"], GatewayClass: ["gateway.networking.k8s.io"], Service: ["", "core"], ServiceEntry: ["networking.istio.io"] };
function checkTargetRefs(doc, problems) {
  const refs = doc.spec?.targetRefs ?? (doc.spec?.targetRef ? [doc.spec.targetRef] : []);
  for (const [n, ref] of refs.entries()) {
    const groups = TARGET_GROUPS[ref?.kind];
    if (!groups) problems.push(`targetRefs[${n}]: kind ${ref?.kind} cannot be targeted (${Object.keys(TARGET_GROUPS).join(", ")})`);
    else if (!groups.includes(ref.group ?? "")) problems.push(`targetRefs[${n}]: a ${ref.kind} is in group ${groups.map((g) => JSON.stringify(g)).join(" or ")}, not ${JSON.stringify(ref.group ?? "")}`);
    if (ref?.namespace && ref.namespace !== doc.metadata?.namespace) problems.push(`targetRefs[${n}]: cross-namespace references are not supported`);
  }
}
function checkExtension(doc, unit, problems) {
  const spec = doc.spec ?? {};
  const view = extensionView(doc);
  const targeting = ["selector", "targetRef", "targetRefs"].filter((k) => spec[k] !== undefined && spec[k] !== null);
  if (targeting.length > 1) problems.push(`${targeting.join(" and ")} are both set: Istio allows only one of selector, targetRef, targetRefs`);
  checkTargetRefs(doc, problems);
  if (doc.kind === "TrafficExtension" && spec.wasm === undefined) return; // a Lua extension
  if (typeof view.url !== "string" || view.url.trim() === "") problems.push("url is required");
  else if (!/^(oci|file|https?):\/\//.test(view.url) && /^[a-z][a-z0-9+.-]*:\/\//.test(view.url)) problems.push(`url scheme of ${view.url} is not oci, file, http or https`);
  if (view.sha256 !== undefined && !SHA256.test(String(view.sha256))) problems.push(`sha256 ${JSON.stringify(view.sha256)} does not match ^[a-f0-9]{64}$`);
  const plugin = meshguardPlugin(view.pluginName, view.url, view.pluginConfig);
  if (!plugin) return;
  if (typeof view.url === "string" && view.url) checkDigest(view.url, view.sha256, problems);
  const annotated = doc.metadata?.annotations?.["meshguard.io/module-sha256"];
  const module = moduleDigest();
  if (annotated !== undefined && !module.error && annotated !== module.digest)
    problems.push(`annotation meshguard.io/module-sha256 ${annotated} is not the digest ${module.digest} of ${MODULE}`);
  if (view.failStrategy === "FAIL_OPEN") problems.push(failOpen(plugin));
  if (view.type !== "HTTP") problems.push("meshguard filters are HTTP filters (type: HTTP)");
  const modes = view.match.map((m) => m.mode ?? "UNDEFINED");
  if (modes.length === 0 || modes.some((m) => m !== "SERVER")) problems.push("meshguard filters act on inbound traffic: match: [{mode: SERVER}]");
  const env = {};
  for (const e of view.env) {
    if ((e.valueFrom ?? "INLINE") === "INLINE") {
      if (SECRET_ENV.includes(e.name)) problems.push(`${e.name} is a secret: pass it with valueFrom: HOST, never inline in the manifest`);
      if (TRUST_ENV.includes(e.name)) problems.push(`${e.name} judges the config: pass it with valueFrom: HOST (proxy-level env), never inline beside the config`);
      env[e.name] = e.value ?? "";
    }
  }
  checkPluginConfig(plugin.filter, view.pluginConfig, env, false, problems);
  extensions.push({ doc, plugin, view, unit });
}
// What FAIL_OPEN loses: a crashed VM is skipped, with every section it runs.
function failOpen(plugin) {
  const lost = plugin.sections.map((s) => (plugin.sections.length > 1 ? `${s}: ` : "") + WHAT_FAIL_OPEN_LOSES[s]).join("; ");
  return plugin.filter === COMBINED
    ? `failStrategy FAIL_OPEN skips a crashed meshguard plugin ${plugin.name} and every section it runs (${lost})`
    : `failStrategy FAIL_OPEN skips a crashed ${plugin.name}: ${lost}`;
}

// The Wasm filter configs an EnvoyFilter adds, with meshguard root ids.
const envoyFilters = [];
function checkEnvoyFilter(doc, unit, problems) {
  for (const [n, patch] of (doc.spec?.configPatches ?? []).entries()) {
    const typed = patch.patch?.value?.typed_config;
    if (!typed || typed["@type"] !== "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm") continue;
    const config = typed.config ?? {};
    const remote = config.vm_config?.code?.remote;
    const uri = remote?.http_uri?.uri;
    const text = config.configuration?.value;
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      parsed = undefined;
    }
    const plugin = meshguardPlugin(config.root_id, uri, parsed);
    if (!plugin) continue;
    const where = `configPatches[${n}]`;
    if (!uri) problems.push(`${where}: vm_config.code.remote.http_uri.uri is required`);
    else checkDigest(uri, remote.sha256, problems);
    if (config.failure_policy === "FAIL_OPEN" || config.fail_open === true) problems.push(`${where}: ${failOpen(plugin)}`);
    const vars = config.vm_config?.environment_variables ?? {};
    for (const k of SECRET_ENV) if (vars.key_values && k in vars.key_values) problems.push(`${where}: ${k} is a secret: list it in host_env_keys, never in key_values`);
    for (const k of TRUST_ENV) if (vars.key_values && k in vars.key_values) problems.push(`${where}: ${k} judges the config: list it in host_env_keys, never in key_values`);
    if (parsed === undefined) {
      problems.push(`${where}: configuration.value is not JSON`);
      continue;
    }
    checkPluginConfig(plugin.filter, parsed, { ...(vars.key_values ?? {}) }, config.allow_on_headers_stop_iteration === true, problems);
    envoyFilters.push({ unit, namespace: doc.metadata?.namespace ?? "", plugin });
    const inserted = (doc.spec.configPatches ?? []).some((p) => p.applyTo === "HTTP_FILTER" && p.patch?.value?.name === patch.patch.value.name);
    if (!inserted) problems.push(`${where}: no HTTP_FILTER patch references the extension config ${patch.patch.value.name}`);
  }
}
const shown = (unit) => relative(process.cwd(), unit) || ".";
const shared = (a, b) => a.sections.filter((s) => b.sections.includes(s));
function checkChainOrder() {
  const groups = new Map();
  for (const p of extensions) {
    const key = `${p.unit} ${p.doc.metadata?.namespace ?? ""} ${JSON.stringify(p.view.targeting)}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(p);
  }
  const problems = [];
  for (const plugins of groups.values()) {
    const rank = (p) => [PHASE_ORDER[p.view.phase] ?? 3, -p.view.priority];
    const sorted = [...plugins].sort((a, b) => {
      const [x, y] = [rank(a), rank(b)];
      return x[0] - y[0] || x[1] - y[1];
    });
    // What the workloads run, section by section, in the order Istio runs the plugins.
    const order = sorted.flatMap((p) => p.plugin.sections.map((section) => ({ section, by: p })));
    const where = `${shown(plugins[0].unit)}: ${plugins[0].doc.metadata?.namespace ?? "(no namespace)"}/${JSON.stringify(plugins[0].view.targeting ?? "all")}`;
    const repeated = FILTERS.filter((f) => order.filter((o) => o.section === f).length > 1);
    if (repeated.length) {
      for (const f of repeated) {
        const by = order.filter((o) => o.section === f).map((o) => `${o.by.doc.kind} ${o.by.plugin.name}`);
        problems.push(`the ${f} section is selected more than once on ${where} (${by.join(", ")}): the workload would run it twice (never apply a WasmPlugin and a TrafficExtension of one plugin, nor a combined plugin and a single-section plugin of the same section)`);
      }
      continue;
    }
    const sections = order.map((o) => o.section);
    const wanted = FILTERS.filter((f) => sections.includes(f));
    if (sections.join() !== wanted.join())
      problems.push(`chain order on ${where} is ${sections.join(" -> ")} (${sorted.map((p) => described(p.plugin)).join(", ")}); meshguard needs ${wanted.join(" -> ")} (refused callers must not reach masking/audit; audit hashes what masking left)`);
    for (let n = 1; n < sorted.length; n++) {
      const [x, y] = [rank(sorted[n - 1]), rank(sorted[n])];
      if (x[0] === y[0] && x[1] === y[1]) problems.push(`${sorted[n - 1].plugin.name} and ${sorted[n].plugin.name} share phase and priority: their order is undefined`);
    }
  }
  // Two plugins running a section in one deployment whose selectors overlap:
  // matchLabels can only narrow, so a selector whose labels include all of
  // another's picks a subset of its pods (no selector: every pod of the
  // namespace). Those pods would run the section twice (stable + canary
  // overlays need disjoint selectors, e.g. track: stable / track: canary).
  const labelsOf = (p) => (p.doc.spec?.targetRefs || p.doc.spec?.targetRef ? null : p.doc.spec?.selector?.matchLabels ?? {});
  for (let i = 0; i < extensions.length; i++)
    for (let j = i + 1; j < extensions.length; j++) {
      const [a, b] = [extensions[i], extensions[j]];
      const both = shared(a.plugin, b.plugin);
      if (a.unit !== b.unit || !both.length || (a.doc.metadata?.namespace ?? "") !== (b.doc.metadata?.namespace ?? "")) continue;
      const [la, lb] = [labelsOf(a), labelsOf(b)];
      if (!la || !lb || JSON.stringify(a.view.targeting) === JSON.stringify(b.view.targeting)) continue;
      const within = (x, y) => Object.entries(x).every(([k, v]) => y[k] === v);
      if (within(la, lb) || within(lb, la))
        problems.push(`${shown(a.unit)}: ${a.doc.metadata?.name} (${JSON.stringify(la)}) and ${b.doc.metadata?.name} (${JSON.stringify(lb)}) select overlapping pods: the ${both.join(", ")} section${both.length > 1 ? "s" : ""} would run twice on them (use disjoint selectors)`);
    }
  // A section as an extension and as an EnvoyFilter in one deployment.
  for (const e of envoyFilters)
    for (const p of extensions.filter((p) => p.unit === e.unit && (p.doc.metadata?.namespace ?? "") === e.namespace)) {
      const both = shared(e.plugin, p.plugin);
      if (both.length)
        problems.push(`${shown(e.unit)}: the ${both.join(", ")} section${both.length > 1 ? "s" : ""} both as an extension (${p.plugin.name}) and as an EnvoyFilter (${e.plugin.name}): the workloads would run ${both.length > 1 ? "them" : "it"} twice`);
    }
  report("(all meshguard extensions)", "filter chain order", problems);
}
// One definition, both APIs: what Istio runs must not depend on the API used.
const PARITY_FIELDS = ["phase", "priority", "failStrategy", "type", "match", "pluginName", "env"];
function checkApiParity() {
  const problems = [];
  for (const name of new Set(extensions.map((p) => p.plugin.name))) {
    const of = (kind) => extensions.filter((p) => p.plugin.name === name && p.doc.kind === kind && !p.doc.metadata?.annotations?.["meshguard.io/compat"]);
    const [plugins, traffic] = [of("WasmPlugin"), of("TrafficExtension")];
    if (!plugins.length || !traffic.length) continue;
    for (const field of PARITY_FIELDS) {
      const values = new Map();
      for (const p of [...plugins, ...traffic]) {
        const v = JSON.stringify(p.view[field]);
        if (!values.has(v)) values.set(v, `${p.doc.kind} in ${shown(p.unit)}`);
      }
      if (values.size > 1) problems.push(`${name}: ${field} differs between the APIs: ${[...values].map(([v, where]) => `${v} (${where})`).join(" vs ")}`);
    }
  }
  report("(WasmPlugin vs TrafficExtension)", "API parity", problems);
}

function checkKustomization(file, doc, shown) {
  const problems = [];
  const dir = dirname(file);
  const listed = [];
  for (const r of doc.resources ?? []) {
    const p = join(dir, r);
    if (!existsSync(p)) problems.push(`resource ${r} does not exist`);
    else if (statSync(p).isFile()) listed.push(...YAML.parseAllDocuments(readFileSync(p, "utf8")).map((d) => d.toJS()));
  }
  for (const c of doc.components ?? []) if (!existsSync(join(dir, c, "kustomization.yaml"))) problems.push(`component ${c} has no kustomization.yaml`);
  for (const patch of doc.patches ?? []) if (patch?.path && !existsSync(join(dir, patch.path))) problems.push(`patch ${patch.path} does not exist`);
  for (const gen of doc.configMapGenerator ?? [])
    for (const f of [...(gen.files ?? []), ...(gen.envs ?? [])]) if (!existsSync(join(dir, f.includes("=") ? f.split("=")[1] : f))) problems.push(`configMapGenerator ${gen.name}: file ${f} does not exist`);
  // A section both as an extension and as an EnvoyFilter (a template's config
  // is a placeholder: a combined EnvoyFilter is taken to run every section).
  const wasmOf = (d) => (d?.kind === "TrafficExtension" ? d.spec?.wasm : d?.kind === "WasmPlugin" ? d.spec : null);
  const asExtensions = listed.map((d) => wasmOf(d) && meshguardPlugin(wasmOf(d).pluginName, wasmOf(d).url, wasmOf(d).pluginConfig)).filter(Boolean);
  const asFilters = listed
    .filter((d) => d?.kind === "EnvoyFilter")
    .flatMap((d) => (d.spec?.configPatches ?? []).map((p) => p.patch?.value?.typed_config?.config))
    .filter((c) => c?.root_id !== undefined)
    .map((c) => meshguardPlugin(c.root_id, c.vm_config?.code?.remote?.http_uri?.uri, undefined))
    .filter(Boolean);
  for (const e of asFilters)
    for (const p of asExtensions) {
      const both = shared(e, p);
      if (both.length) problems.push(`lists ${p.name} as an extension and ${e.name} as an EnvoyFilter: the workload would run the ${both.join(", ")} section${both.length > 1 ? "s" : ""} twice`);
    }
  report(shown, "Kustomization", problems);
}


// The package declares no spec for IstioOperator (its CRD preserves unknown
// fields): the top-level keys are checked against the IstioOperatorSpec field
// names (istio/api operator/v1alpha1), and the one field meshguard needs by type.
const ISTIO_OPERATOR_SPEC = ["profile", "installPackagePath", "hub", "tag", "resourceSuffix", "namespace", "revision", "compatibilityVersion", "meshConfig", "components", "values", "unvalidatedValues"];
function checkIstioOperator(doc, problems) {
  for (const key of Object.keys(doc)) if (!["apiVersion", "kind", "metadata", "spec", "status"].includes(key)) problems.push(`unknown field ${key}`);
  for (const key of Object.keys(doc.spec ?? {})) if (!ISTIO_OPERATOR_SPEC.includes(key)) problems.push(`unknown field spec.${key} (IstioOperatorSpec has ${ISTIO_OPERATOR_SPEC.join(", ")})`);
  const tags = doc.spec?.meshConfig?.defaultConfig?.extraStatTags;
  if (tags !== undefined && !(Array.isArray(tags) && tags.every((t) => typeof t === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(t))))
    problems.push("spec.meshConfig.defaultConfig.extraStatTags must be a list of tag names");
}

// ---- main ------------------------------------------------------------------------------
function schemaProblems(doc, m) {
  if (!m.cls) {
    const problems = [];
    if (!validateTrafficExtension(doc))
      for (const e of validateTrafficExtension.errors) {
        const where = e.instancePath || "/";
        if (e.keyword === "additionalProperties") problems.push(`unknown field ${where.slice(1).replaceAll("/", ".")}${where === "/" ? "" : "."}${e.params.additionalProperty} (not in Istio's TrafficExtension API: a typo is refused or silently dropped)`);
        else problems.push(`schema: ${where} ${e.message}${e.params?.allowedValues ? ` (${e.params.allowedValues.join(", ")})` : ""}`);
      }
    return [...problems, ...trafficExtensionRules(doc)];
  }
  const problems = [];
  try {
    new m.cls(doc).validate();
  } catch (e) {
    const details = e.errors ?? e.details;
    if (Array.isArray(details)) problems.push(...details.map((d) => `schema: ${d.instancePath || "/"} ${d.message}${d.params?.allowedValues ? ` (${d.params.allowedValues.join(", ")})` : ""}`));
    else problems.push(`schema: ${e.message}`);
  }
  if (doc.kind === "IstioOperator") checkIstioOperator(doc, problems);
  else if (m.shape) unknownFields(doc, m.shape, "", problems);
  else problems.push(`no type declaration for ${doc.kind} to check field names against`);
  return problems;
}
for (const file of files) {
  const shown = relative(process.cwd(), file) || file;
  let docs;
  try {
    docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  } catch (e) {
    report(shown, "YAML", [e.message]);
    continue;
  }
  // A multi-document file (a kustomize output) is one deployment; single
  // documents are grouped with their directory (a kustomize base).
  const unit = docs.length > 1 ? file : dirname(file);
  for (const parsed of docs) {
    if (parsed.errors.length) {
      report(shown, "YAML", parsed.errors.map((e) => e.message));
      continue;
    }
    const doc = parsed.toJS();
    if (!doc || typeof doc !== "object") continue;
    if (basename(file) === "kustomization.yaml") {
      checkKustomization(file, doc, shown);
      continue;
    }
    if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string") {
      console.log(`skip  ${shown}: not a Kubernetes object (${Object.keys(doc).slice(0, 3).join(", ")})`);
      continue;
    }
    const what = `${doc.kind} ${doc.metadata?.namespace ?? ""}/${doc.metadata?.name ?? "?"}`;
    const group = doc.apiVersion.split("/")[0];
    if (!group.endsWith("istio.io")) {
      console.log(`skip  ${shown}: ${what} (${doc.apiVersion} is not an Istio API)`);
      continue;
    }
    const ownSchema = doc.kind === "TrafficExtension" && doc.apiVersion === "extensions.istio.io/v1alpha1";
    const m = ownSchema ? {} : await model(doc.apiVersion, doc.kind);
    if (!m) {
      report(shown, what, [`${doc.apiVersion} ${doc.kind} is not an Istio kind known to @kubernetes-models/istio@${istioVersion}`]);
      continue;
    }
    const problems = schemaProblems(doc, m);
    if (doc.kind === "WasmPlugin" || doc.kind === "TrafficExtension") checkExtension(doc, unit, problems);
    if (doc.kind === "EnvoyFilter") checkEnvoyFilter(doc, unit, problems);
    report(shown, what, problems);
  }
}
if (extensions.length) {
  checkChainOrder();
  checkApiParity();
}
console.log(failures ? `validate-manifests: ${failures} invalid` : "validate-manifests: all valid");
process.exit(failures ? 1 : 0);
