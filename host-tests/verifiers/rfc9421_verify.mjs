// Verifies meshguard's RFC 9421 signatures with npm's http-message-signatures.
//
// Usage: node rfc9421_verify.mjs CASES.json   (the format of rfc9421_verify.py)
// Prints one JSON list: [{"name": N, "valid": bool, "error": text}].
//
// The library selects the member whose keyid and tag the key lookup accepts,
// requires the covered components and parameters, checks created/expires
// against the clock and the signature with the key (the algorithm from the
// key table). It does not check Content-Digest against the body: this script
// does, with node's own crypto, as an application using it must.
import { createHash, createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const modules = process.env.MESHGUARD_NODE_TOOLS ?? resolve(import.meta.dirname, "../../.tools/node/node_modules");
const require = createRequire(join(modules, "noop.js"));
const { httpbis, createVerifier } = require("http-message-signatures");

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));

function keyOf(spec) {
  return spec.alg === "hmac-sha256"
    ? Buffer.from(spec.secret_base64, "base64")
    : createPublicKey(spec.public_pem);
}

const verdicts = [];
for (const c of doc.cases) {
  const spec = doc.keys[c.kid];
  const request = c.request;
  const headers = {};
  for (const [name, value] of request.headers) {
    const lower = name.toLowerCase();
    (headers[lower] ??= []).push(value);
  }
  const body = Buffer.from(request.body_base64 ?? "", "base64");
  const message = {
    method: request.method,
    url: "http://" + request.authority + request.target,
    headers,
  };
  const required = [...doc.required, ...(body.length ? ["content-digest"] : [])];
  try {
    const valid = await httpbis.verifyMessage(
      {
        requiredFields: required,
        requiredParams: ["created", "keyid", "alg", "tag"],
        keyLookup: async (params) =>
          params.keyid === c.kid && params.tag === doc.tag
            ? { id: c.kid, algs: [spec.alg], verify: createVerifier(keyOf(spec), spec.alg) }
            : null,
      },
      message,
    );
    let error = valid === true ? "" : `verifyMessage returned ${valid}`;
    if (valid === true && required.includes("content-digest")) {
      const digest = /^sha-256=:([A-Za-z0-9+/=]+):$/.exec((headers["content-digest"] ?? []).join(", "));
      const actual = createHash("sha256").update(body).digest("base64");
      if (!digest || digest[1] !== actual) error = "content-digest does not match the body";
    }
    verdicts.push({ name: c.name, valid: error === "", error });
  } catch (e) {
    verdicts.push({ name: c.name, valid: false, error: `${e.name}: ${e.message}` });
  }
}
console.log(JSON.stringify(verdicts));
