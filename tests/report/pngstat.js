// Decode a PNG (8-bit RGB or RGBA, non-interlaced, as Chromium writes screenshots) and print
// {"width":W,"height":H,"colors":N,"non_background":F} where colors counts distinct RGB values
// (capped at 100000) and non_background is the share of pixels differing from the most common colour.
// Used by tests/test_report.c to check that a screenshot is not blank.
'use strict';
const fs = require('fs');
const zlib = require('zlib');

const buf = fs.readFileSync(process.argv[2]);
const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
if (buf.length < 8 || !buf.subarray(0, 8).equals(sig)) throw new Error('not a PNG');
let pos = 8, width = 0, height = 0, depth = 0, ctype = 0, interlace = 0;
const idat = [];
while (pos + 8 <= buf.length) {
  const len = buf.readUInt32BE(pos), type = buf.toString('latin1', pos + 4, pos + 8);
  const data = buf.subarray(pos + 8, pos + 8 + len);
  if (type === 'IHDR') {
    width = data.readUInt32BE(0); height = data.readUInt32BE(4);
    depth = data[8]; ctype = data[9]; interlace = data[12];
  } else if (type === 'IDAT') idat.push(data);
  else if (type === 'IEND') break;
  pos += 12 + len;
}
if (depth !== 8 || (ctype !== 2 && ctype !== 6) || interlace !== 0)
  throw new Error(`unsupported PNG: depth ${depth} colour type ${ctype} interlace ${interlace}`);
const bpp = ctype === 6 ? 4 : 3, stride = width * bpp;
const raw = zlib.inflateSync(Buffer.concat(idat));
if (raw.length !== height * (stride + 1)) throw new Error('bad image data length');
const img = Buffer.alloc(height * stride);
for (let y = 0; y < height; y++) {
  const f = raw[y * (stride + 1)], src = y * (stride + 1) + 1, dst = y * stride;
  for (let x = 0; x < stride; x++) {
    const a = x >= bpp ? img[dst + x - bpp] : 0, b = y > 0 ? img[dst - stride + x] : 0;
    const c = x >= bpp && y > 0 ? img[dst - stride + x - bpp] : 0;
    let v = raw[src + x];
    if (f === 1) v += a;
    else if (f === 2) v += b;
    else if (f === 3) v += (a + b) >> 1;
    else if (f === 4) {
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    } else if (f !== 0) throw new Error('bad filter ' + f);
    img[dst + x] = v & 255;
  }
}
const counts = new Map();
for (let i = 0; i < img.length; i += bpp) {
  const key = (img[i] << 16) | (img[i + 1] << 8) | img[i + 2];
  if (counts.size < 100000 || counts.has(key)) counts.set(key, (counts.get(key) || 0) + 1);
}
let top = 0;
for (const v of counts.values()) top = Math.max(top, v);
const n = width * height;
console.log(JSON.stringify({ width, height, colors: counts.size, non_background: (n - top) / n }));
