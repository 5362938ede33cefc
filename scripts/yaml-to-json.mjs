#!/usr/bin/env node
// Prints the YAML documents of FILE as one JSON array, with the pinned `yaml`
// package of .tools/node (for tests and scripts that read the manifests,
// alert rules and promtool tests without a YAML parser of their own).
//   node scripts/yaml-to-json.mjs FILE
// Exit status 2 when the package is missing (run `make tools`).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const nodeModules = process.env.MESHGUARD_NODE_TOOLS ?? join(root, ".tools/node/node_modules");
const entry = join(nodeModules, "yaml/dist/index.js");
if (!existsSync(entry)) {
  console.error(`yaml-to-json: the yaml package is missing from ${nodeModules} (run \`make tools\`)`);
  process.exit(2);
}
const YAML = await import(pathToFileURL(entry).href);
const file = process.argv[2];
if (!file) {
  console.error("usage: node scripts/yaml-to-json.mjs FILE");
  process.exit(2);
}
const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
const errors = docs.flatMap((d) => d.errors.map((e) => e.message));
if (errors.length) {
  console.error(`yaml-to-json: ${file}: ${errors.join("; ")}`);
  process.exit(1);
}
process.stdout.write(JSON.stringify(docs.map((d) => d.toJS())));
