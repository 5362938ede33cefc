// meshguard's own structural schema of Istio's TrafficExtension
// (extensions.istio.io/v1alpha1, Istio >= 1.30), written from Istio's API
// reference (istio/api extensions/v1alpha1/traffic_extension.proto and the
// reference page proxy_extensions/v1alpha1/traffic_extension): no npm package
// carries the kind yet (@kubernetes-models/istio 3.0.1, the newest, stops at
// WasmPlugin). A JSON Schema for ajv, plus the CRD's CEL rules as code below,
// because ajv does not run CEL. Unknown fields are refused everywhere except in
// pluginConfig (a google.protobuf.Struct) and metadata.
const str = { type: "string" };
const labels = { type: "object", additionalProperties: { type: "string", maxLength: 63 } };

const workloadSelector = {
  type: "object",
  additionalProperties: false,
  properties: { matchLabels: { ...labels, maxProperties: 4096 } },
};
const policyTargetReference = {
  type: "object",
  additionalProperties: false,
  required: ["kind", "name"],
  properties: {
    group: { type: "string", maxLength: 253, pattern: "^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" },
    kind: { type: "string", minLength: 1, maxLength: 63, pattern: "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$" },
    name: { type: "string", minLength: 1, maxLength: 253 },
    namespace: str,
  },
};
const trafficSelector = {
  type: "object",
  additionalProperties: false,
  properties: {
    mode: { enum: ["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] },
    ports: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["number"],
        properties: { number: { type: "integer", minimum: 1, maximum: 65535 } },
      },
    },
  },
};
const envVar = {
  type: "object",
  additionalProperties: false,
  required: ["name"],
  properties: {
    name: { type: "string", minLength: 1, maxLength: 256 },
    value: { type: "string", maxLength: 2048 },
    valueFrom: { enum: ["INLINE", "HOST"] },
  },
};
const wasmConfig = {
  type: "object",
  additionalProperties: false,
  required: ["url"],
  properties: {
    url: { type: "string", minLength: 1 },
    sha256: { type: "string", pattern: "(^$|^[a-f0-9]{64}$)" },
    imagePullPolicy: { enum: ["UNSPECIFIED_POLICY", "IfNotPresent", "Always"] },
    imagePullSecret: { type: "string", minLength: 1, maxLength: 253 },
    verificationKey: str,
    pluginConfig: { type: "object" },
    pluginName: { type: "string", minLength: 1, maxLength: 256 },
    failStrategy: { enum: ["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"] },
    vmConfig: {
      type: "object",
      additionalProperties: false,
      properties: { env: { type: "array", maxItems: 256, items: envVar } },
    },
    type: { enum: ["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"] },
  },
};

export const trafficExtensionSchema = {
  type: "object",
  required: ["apiVersion", "kind", "metadata", "spec"],
  additionalProperties: false,
  properties: {
    apiVersion: { const: "extensions.istio.io/v1alpha1" },
    kind: { const: "TrafficExtension" },
    metadata: { type: "object", required: ["name"], properties: { name: { type: "string", minLength: 1 } } },
    spec: {
      type: "object",
      additionalProperties: false,
      properties: {
        selector: workloadSelector,
        targetRefs: { type: "array", maxItems: 16, items: policyTargetReference },
        phase: { enum: ["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] },
        priority: { type: ["integer", "null"], minimum: -2147483648, maximum: 2147483647 },
        match: { type: "array", items: trafficSelector },
        wasm: wasmConfig,
        lua: {
          type: "object",
          additionalProperties: false,
          required: ["inlineCode"],
          properties: { inlineCode: { type: "string", minLength: 1, maxLength: 65536 } },
        },
      },
    },
    status: { type: "object" },
  },
};

// The CRD's x-kubernetes-validations (CEL), which no JSON Schema validator runs.
export function trafficExtensionRules(doc) {
  const spec = doc?.spec ?? {};
  const problems = [];
  const has = (o, k) => o && o[k] !== undefined && o[k] !== null;
  if (has(spec, "selector") && has(spec, "targetRefs")) problems.push("selector and targetRefs are both set: only one of targetRefs or selector can be set");
  if (has(spec, "wasm") === has(spec, "lua")) problems.push("exactly one of wasm or lua must be set");
  for (const [n, ref] of (spec.targetRefs ?? []).entries())
    if (ref && ref.namespace) problems.push(`targetRefs[${n}].namespace: cross namespace referencing is not currently supported`);
  for (const [n, e] of (spec.wasm?.vmConfig?.env ?? []).entries())
    if (e && e.valueFrom === "HOST" && e.value !== undefined) problems.push(`wasm.vmConfig.env[${n}]: value may only be set when valueFrom is INLINE`);
  const names = (spec.wasm?.vmConfig?.env ?? []).map((e) => e?.name);
  const dup = names.filter((n, i) => names.indexOf(n) !== i);
  if (dup.length) problems.push(`wasm.vmConfig.env: duplicate names ${[...new Set(dup)].join(", ")} (a list-map keyed by name)`);
  const url = spec.wasm?.url;
  if (typeof url === "string") {
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(url)?.[1]?.toLowerCase();
    if (scheme !== undefined && !["http", "https", "file", "oci"].includes(scheme)) problems.push("url must have schema one of [http, https, file, oci]");
  }
  for (const [n, m] of (spec.match ?? []).entries()) {
    const nums = (m?.ports ?? []).map((p) => p?.number);
    if (new Set(nums).size !== nums.length) problems.push(`match[${n}].ports: duplicate port numbers (a list-map keyed by number)`);
  }
  return problems;
}
