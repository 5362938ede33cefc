// Rewrites the rows of docs/testing.md's mutation table for the runs given
// (`name|files`), from target/mutants/<name>/mutants.out. A row is found by
// its first cell (the run's files); rows of runs not given stay as they are.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";

const [doc, ...runs] = process.argv.slice(2);

const lines = (path) =>
  existsSync(path)
    ? readFileSync(path, "utf8").split("\n").filter((l) => l.trim() !== "")
    : [];

let text = readFileSync(doc, "utf8");
const git = (...args) => execFileSync("git", args, { encoding: "utf8" }).trim();
for (const run of runs) {
  const [name, files] = run.split("|");
  const out = `target/mutants/${name}/mutants.out`;
  if (!existsSync(out)) throw new Error(`${out} is missing`);
  const caught = lines(`${out}/caught.txt`).length;
  const timeout = lines(`${out}/timeout.txt`).length;
  const unviable = lines(`${out}/unviable.txt`).length;
  const missed = lines(`${out}/missed.txt`);
  const total = caught + timeout + unviable + missed.length;
  // `path:line:col: replace ... ` -> `line: replace ...` (the file is the row's).
  const survivors = missed
    .map((m) => m.replace(/^[^:]*\/([^/:]+):(\d+):\d+: /, "$1:$2 ").replace(/\|/g, "\\|"))
    .map((m) => `\`${m}\``)
    .join("<br>");
  const first = files
    .split(" ")
    .map((f) => `\`${f}\``)
    .join(" + ");
  // The commit the run's files are from (`+changes` when they differ from it).
  const dirty = git("status", "--porcelain", "--", ...files.split(" ")) !== "";
  const at = `${git("rev-parse", "--short", "HEAD")}${dirty ? " +changes" : ""}`;
  const row = `| ${first} | ${total} | ${unviable} | ${caught} | ${timeout} | ${missed.length} | ${survivors || "none"} | ${at} |`;
  const pattern = new RegExp(`^\\| ${first.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\|.*$`, "m");
  if (!pattern.test(text)) throw new Error(`no row for ${first} in ${doc}`);
  text = text.replace(pattern, row);
  console.log(row);
}
writeFileSync(doc, text);
