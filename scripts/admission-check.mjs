#!/usr/bin/env node
// Runs meshguard's ValidatingAdmissionPolicy (istio-manifests/admission/) offline,
// as the Kubernetes API server would on CREATE, with a real CEL implementation
// (@marcbachmann/cel-js, pinned in scripts/node/package-lock.json, installed by
// `make tools` into .tools/node), against the objects of YAML files:
//
//   node scripts/admission-check.mjs [--policy DIR] FILE...
//
// For every object the policy matches (its matchConstraints.resourceRules), one line:
//   admitted <Kind> <namespace>/<name>
//   refused  <Kind> <namespace>/<name>: <the message the API server would give>
// Exit status: 0 all admitted, 1 some refused, 2 tools missing or a policy this
// checker cannot run faithfully (it refuses features it does not model rather
// than guess: paramKind, matchConditions, namespace or object selectors,
// excluded resources, a binding's paramRef or matchResources).
//
// What it models of the API server (k8s.io/apiserver, validating admission
// policy): the binding must name the policy and Deny; `object` is the
// resource, `oldObject` null, `request` the CREATE request; `variables.<name>`
// are evaluated when first used, in declaration order available to later
// ones; each validation whose expression is false refuses with its
// messageExpression (when that yields a non-empty string), else its message;
// an expression that fails to evaluate refuses under failurePolicy Fail.
// The expressions are type-checked at load with every variable dynamic, as the
// API server compiles them; Kubernetes' own schema-typed checks (warnings in
// the policy's status) are not run.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.MESHGUARD_NODE_TOOLS ?? join(root, ".tools/node/node_modules");
const CEL_PACKAGE = "@marcbachmann/cel-js";
const CEL_VERSION = "8.0.0";
const missing = (what) => {
  console.error(`admission-check: ${what} is missing from ${nodeModules} (run \`make tools\`, which installs the pinned packages into .tools/node)`);
  process.exit(2);
};
const unusable = (what) => {
  console.error(`admission-check: ${what}`);
  process.exit(2);
};
for (const p of ["yaml", CEL_PACKAGE]) if (!existsSync(join(nodeModules, p, "package.json"))) missing(p);
const celVersion = JSON.parse(readFileSync(join(nodeModules, CEL_PACKAGE, "package.json"), "utf8")).version;
if (celVersion !== CEL_VERSION) missing(`${CEL_PACKAGE}@${CEL_VERSION} (found ${celVersion})`);
const YAML = await import(pathToFileURL(join(nodeModules, "yaml/dist/index.js")).href);
const { Environment } = await import(pathToFileURL(join(nodeModules, CEL_PACKAGE, "lib/index.js")).href);

let policyDir = join(root, "istio-manifests/admission");
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--policy") policyDir = resolve(args[++i] ?? ".");
  else if (args[i] === "--help" || args[i] === "-h") {
    console.log("usage: node scripts/admission-check.mjs [--policy DIR] FILE...");
    process.exit(0);
  } else files.push(args[i]);
}
if (files.length === 0) unusable("usage: node scripts/admission-check.mjs [--policy DIR] FILE...");

const readDocs = (file) => {
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  const errors = docs.flatMap((d) => d.errors.map((e) => e.message));
  if (errors.length) unusable(`${file}: ${errors.join("; ")}`);
  return docs.map((d) => d.toJS()).filter((d) => d && typeof d === "object");
};

// ---- the policy and its binding ---------------------------------------------------
const policyDocs = readdirSync(policyDir)
  .filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")
  .flatMap((f) => readDocs(join(policyDir, f)));
const policies = policyDocs.filter((d) => d.kind === "ValidatingAdmissionPolicy");
if (policies.length !== 1) unusable(`${policyDir}: expected one ValidatingAdmissionPolicy, found ${policies.length}`);
const policy = policies[0];
const name = policy.metadata?.name;
if (policy.apiVersion !== "admissionregistration.k8s.io/v1") unusable(`${name}: apiVersion ${policy.apiVersion} (meshguard ships admissionregistration.k8s.io/v1)`);
const binding = policyDocs.find((d) => d.kind === "ValidatingAdmissionPolicyBinding" && d.spec?.policyName === name);
if (!binding) unusable(`${policyDir}: no ValidatingAdmissionPolicyBinding names ${name}: the policy would refuse nothing`);
if (!(binding.spec.validationActions ?? []).includes("Deny")) unusable(`${binding.metadata?.name}: validationActions ${JSON.stringify(binding.spec.validationActions)} do not Deny`);
const spec = policy.spec ?? {};
const unsupported = [
  ["spec.paramKind", spec.paramKind],
  ["spec.matchConditions", spec.matchConditions],
  ["spec.matchConstraints.namespaceSelector", spec.matchConstraints?.namespaceSelector],
  ["spec.matchConstraints.objectSelector", spec.matchConstraints?.objectSelector],
  ["spec.matchConstraints.excludeResourceRules", spec.matchConstraints?.excludeResourceRules],
  ["binding spec.paramRef", binding.spec.paramRef],
  ["binding spec.matchResources", binding.spec.matchResources],
].filter(([, v]) => v !== undefined && !(Array.isArray(v) || typeof v === "object" ? Object.keys(v).length === 0 : false));
if (unsupported.length) unusable(`${name}: ${unsupported.map(([k]) => k).join(", ")} not modelled by this checker`);

const env = new Environment();
for (const v of ["object", "oldObject", "request", "params", "variables"]) env.registerVariable(v, "dyn");
const compile = (what, expression) => {
  const checked = env.check(expression);
  if (!checked.valid) unusable(`${name}: ${what}: ${checked.error.message}`);
  return env.parse(expression);
};
const variables = (spec.variables ?? []).map((v) => ({ name: v.name, run: compile(`variable ${v.name}`, v.expression) }));
const validations = (spec.validations ?? []).map((v, n) => ({
  ...v,
  run: compile(`validations[${n}]`, v.expression),
  messageRun: v.messageExpression ? compile(`validations[${n}].messageExpression`, v.messageExpression) : null,
}));
if (validations.length === 0) unusable(`${name}: no validations`);

// A rule matches a group, a version, a plural resource and CREATE.
const plural = (kind) => `${kind.toLowerCase()}s`;
const matches = (doc) => {
  const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/") : ["", doc.apiVersion];
  const has = (list, value) => (list ?? []).includes("*") || (list ?? []).includes(value);
  return (spec.matchConstraints?.resourceRules ?? []).some(
    (r) => has(r.apiGroups, group) && has(r.apiVersions, version) && has(r.resources, plural(doc.kind)) && has(r.operations, "CREATE"),
  );
};

// `variables` for one object: each evaluated on first use, once.
function lazyVariables(context) {
  const values = {};
  for (const v of variables) {
    let state = null;
    Object.defineProperty(values, v.name, {
      enumerable: true,
      get() {
        if (!state) {
          try {
            state = { value: v.run(context) };
          } catch (e) {
            state = { error: e };
          }
        }
        if (state.error) throw state.error;
        return state.value;
      },
    });
  }
  return values;
}

// The API server's answer for one object: null (admitted) or the message.
function admit(doc) {
  const [group, version] = doc.apiVersion.split("/");
  const context = {
    object: doc,
    oldObject: null,
    params: null,
    request: {
      operation: "CREATE",
      kind: { group, version, kind: doc.kind },
      resource: { group, version, resource: plural(doc.kind) },
      name: doc.metadata?.name ?? "",
      namespace: doc.metadata?.namespace ?? "",
    },
  };
  context.variables = lazyVariables(context);
  for (const v of validations) {
    let ok;
    try {
      ok = v.run(context);
    } catch (e) {
      if (spec.failurePolicy === "Ignore") continue;
      return `expression '${v.expression}' resulted in error: ${e.message.split("\n")[0]}`;
    }
    if (ok === true) continue;
    if (ok !== false) {
      if (spec.failurePolicy === "Ignore") continue;
      return `expression '${v.expression}' did not evaluate to a bool`;
    }
    if (v.messageRun) {
      try {
        const text = v.messageRun(context);
        if (typeof text === "string" && text.trim() !== "") return text;
      } catch {
        // The API server falls back to `message` too.
      }
    }
    return v.message ?? `failed expression: ${v.expression}`;
  }
  return null;
}

let refused = 0;
for (const file of files) {
  for (const doc of readDocs(file)) {
    if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string" || !matches(doc)) continue;
    const what = `${doc.kind} ${doc.metadata?.namespace ?? ""}/${doc.metadata?.name ?? "?"}`;
    const message = admit(doc);
    if (message === null) console.log(`admitted ${what}`);
    else {
      refused++;
      console.log(`refused  ${what}: ${message}`);
    }
  }
}
console.log(refused ? `admission-check: ${refused} refused by ${name}` : `admission-check: all admitted by ${name}`);
process.exit(refused ? 1 : 0);
