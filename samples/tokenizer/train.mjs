// Trains the sample model's byte-level BPE tokenizer (vocab 512) from samples/text/sample.txt and
// writes samples/tokenizer/tokenizer.json plus samples/tokenizer/sample.ids.json (the ids this
// trainer gives the text; tests/test_demo_tokenizer.c checks that the C tokenizer agrees).
//
//   node samples/tokenizer/train.mjs [TEXT [OUTDIR]]
//
// Layout: id 0 <｜begin▁of▁sentence｜> and id 1 <｜end▁of▁sentence｜> (special added tokens, the
// config's BOS/EOS), ids 2..257 the 256 byte-level symbols (byte b at 2 + b), ids 258..511 the
// merges.  Training is deterministic: the most frequent adjacent pair wins, ties go to the pair
// whose symbols come first in id order; a pair whose concatenation is already a token is never
// merged.  No dependencies beyond Node.js.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const textPath = process.argv[2] ?? join(here, '..', 'text', 'sample.txt');
const outDir = process.argv[3] ?? here;
const VOCAB = 512;
const SPECIALS = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'];
const FIRST_BYTE_ID = SPECIALS.length;
// Pre-tokenizer: words with their leading space, numbers, punctuation runs, white space.
const SPLIT = " ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100...
const byteChar = [];
{
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    byteChar.push(String.fromCodePoint(keep ? b : 256 + extra++));
  }
}

const text = readFileSync(textPath, 'utf8');
const re = new RegExp(SPLIT, 'gu');
const pieces = text.match(re) ?? [];
const enc = new TextEncoder();

// Words as arrays of ids; counts of distinct words.
const tokens = [...SPECIALS.map(() => null), ...byteChar]; // id -> byte-level string (specials null)
const idOf = new Map(byteChar.map((c, b) => [c, FIRST_BYTE_ID + b]));
const words = new Map();
for (const p of pieces) {
  const key = Array.from(enc.encode(p), (b) => FIRST_BYTE_ID + b).join(',');
  words.set(key, (words.get(key) ?? 0) + 1);
}
const wordList = [...words.entries()].map(([k, n]) => ({ ids: k.split(',').map(Number), n }));

const merges = [];
const banned = new Set();
while (tokens.length < VOCAB) {
  const counts = new Map();
  for (const w of wordList)
    for (let i = 0; i + 1 < w.ids.length; i++) {
      const k = w.ids[i] * 65536 + w.ids[i + 1];
      if (!banned.has(k)) counts.set(k, (counts.get(k) ?? 0) + w.n);
    }
  let best = -1, bestN = 0;
  for (const [k, n] of counts) if (n > bestN || (n === bestN && k < best)) { best = k; bestN = n; }
  if (best < 0) break; // nothing left to merge
  const a = Math.floor(best / 65536), b = best % 65536;
  const s = tokens[a] + tokens[b];
  if (idOf.has(s)) { banned.add(best); continue; }
  const id = tokens.length;
  tokens.push(s);
  idOf.set(s, id);
  merges.push(`${tokens[a]} ${tokens[b]}`);
  for (const w of wordList) {
    const out = [];
    for (let i = 0; i < w.ids.length; i++) {
      if (i + 1 < w.ids.length && w.ids[i] === a && w.ids[i + 1] === b) { out.push(id); i++; }
      else out.push(w.ids[i]);
    }
    w.ids = out;
  }
}

// The text's ids under the trained merges (same segmentation as training).
const keys = [...words.keys()];
const segment = new Map(keys.map((k, i) => [k, wordList[i].ids]));
const ids = [];
for (const p of pieces) ids.push(...segment.get(Array.from(enc.encode(p), (b) => FIRST_BYTE_ID + b).join(',')));

const vocab = {};
for (let id = FIRST_BYTE_ID; id < tokens.length; id++) vocab[tokens[id]] = id;
const tok = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: SPECIALS.map((content, id) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  })),
  normalizer: null,
  pre_tokenizer: {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: SPLIT }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, vocab, merges,
  },
};
writeFileSync(join(outDir, 'tokenizer.json'), JSON.stringify(tok) + '\n');
writeFileSync(join(outDir, 'sample.ids.json'), JSON.stringify(ids) + '\n');
const bytes = enc.encode(text).length;
console.log(`tokenizer.json: ${tokens.length} ids (${merges.length} merges); sample: ${bytes} bytes -> ${ids.length} ids`);
