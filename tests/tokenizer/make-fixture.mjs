// Writes tests/tokenizer/fixture.jsonl: the strings the C tokenizer must encode exactly as the
// JavaScript reference does (reference.mjs computes the expected ids).  Run by hand after editing:
//     node tests/tokenizer/make-fixture.mjs > tests/tokenizer/fixture.jsonl
// Deterministic (seeded PRNG).  Line formats:
//   {"name": N, "text": S}     S is valid UTF-8 without NUL
//   {"name": N, "b64": B}      raw bytes (invalid UTF-8, NULs); the reference reads them with
//                              TextDecoder("utf-8", {ignoreBOM: true}) → U+FFFD replacements
//   {"name": N, "decode": [ids]}  ids to decode (reference: decode() and decode(skip_special_tokens))
// Characters are limited to Unicode 14 and earlier so that PCRE2's tables (Unicode 14 in PCRE2 10.42)
// and the JavaScript engine's agree.

const out = [];
const add = (name, text) => out.push({ name, text });
const addBytes = (name, bytes) => out.push({ name, b64: Buffer.from(bytes).toString("base64") });
const addDecode = (name, ids) => out.push({ name, decode: ids });

let seed = 0x2545f491;
const rand = () => {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
};
const pick = (a) => a[Math.floor(rand() * a.length)];
const randInt = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

// ---- English prose ------------------------------------------------------------------------------
const prose = [
  "Hello, my dog is cute",
  "The quick brown fox jumps over the lazy dog.",
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  "I can't believe it's not butter! We'll see, won't we? They're here; you've been warned; I'd go; she'll stay.",
  "\"Quoted speech,\" she said, \"is 'nested' sometimes.\"",
  "Dr. Smith arrived at 5 p.m. on Jan. 3rd, i.e. after the U.S. holiday (e.g. New Year's Day).",
  "Well... I don't know -- maybe? Perhaps!! No way!!! Really?!",
  "Mixed CASE words LIKE THIS and camelCase and snake_case and kebab-case and PascalCase.",
  "In 1969, Apollo 11 landed on the Moon; Neil Armstrong said: \"That's one small step for [a] man.\"",
  "Email me at john.doe+tag@example.com or visit https://www.example.org/path/to/page?query=1&x=y#frag.",
  "The year was 2024 and the price rose from $1,234.56 to $12,345.67 (a 900% increase).",
  "A sentence with an em dash—like this—and an en dash – like that.",
  "Smart quotes: “double” and ‘single’ and apostrophes in don’t and it’s.",
  "Bullet list:\n- first item\n- second item\n  - nested item\n* star item\n1. numbered",
  "Title\n=====\n\nParagraph one.\n\nParagraph two has two lines\nright here.\n",
  "TL;DR: the model's perplexity dropped by 0.3 nats/token after the fix.",
  "Abbreviations: NASA, FBI, CIA, UNESCO, and acronyms like LLM, GPU, CPU, RAM.",
  "  Leading spaces and trailing spaces  ",
  "a",
  "I",
  " the",
  "Supercalifragilisticexpialidocious is a long word; pneumonoultramicroscopicsilicovolcanoconiosis is longer.",
  "Shakespeare: To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer",
  "She sells sea-shells on the sea-shore. The shells she sells are sea-shells, I'm sure.",
  "Question? Answer! Statement. Exclamation! Interrobang‽ Ellipsis…",
  "Parentheses (like these) and [brackets] and {braces} and <angles>.",
  "Hashtags #AI #MachineLearning and mentions @openai @deepseek_ai.",
  "Ordinals: 1st, 2nd, 3rd, 4th, 21st, 22nd, 101st, 1000th.",
  "Time: 12:30:45, 23:59, 00:00; ratio 16:9; score 3-2.",
  "The café's naïve façade — déjà vu in Zürich, São Paulo and Kraków.",
  "Ünïcödé äccents in Gérman wörds: Straße, Größe, Fußgänger, Mädchen.",
  "He said 'hello' and she said 'goodbye'; they'd've stayed if they'd known.",
  "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS !@#$%^&*()",
  "lowercase sentence without punctuation at all just words flowing",
  "Tab\tseparated\tvalues\there",
  "Windows line endings\r\nsecond line\r\nthird line\r\n",
  "Old Mac line endings\rsecond\rthird",
  "x",
  ".",
  "?!",
];
prose.forEach((s, i) => add(`prose-${i}`, s));

// ---- Code ---------------------------------------------------------------------------------------
const code = [
  "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello, world\\n\");\n    return 0;\n}\n",
  "static inline uint64_t dsq_ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }",
  "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * y[i];\n}\n",
  "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
  "import numpy as np\nx = np.arange(10).reshape(2, 5)\nprint(x.T @ x)\n",
  "class Foo(Base):\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n        self._cache = {}\n",
  "const add = (a, b) => a + b;\nexport default function App() {\n  return <div className=\"app\">{add(1, 2)}</div>;\n}\n",
  "async function f() { await Promise.all([p1, p2]); } // comment\n/* block */",
  "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
  "impl<'a, T: Clone + Send> Iterator for Iter<'a, T> { type Item = &'a T; }",
  "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
  "public static void main(String[] args) throws IOException { System.out.println(args.length); }",
  "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 100 GROUP BY u.id HAVING n >= 3;",
  "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\" | tr a-z A-Z; done 2>&1 | tee log\n",
  "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>T</title></head>\n<body><p>Hi&nbsp;there</p></body>\n</html>",
  "{\"name\": \"dsq\", \"version\": \"0.1.0\", \"deps\": [\"zstd\", \"cjson\"], \"n\": 42, \"ok\": true, \"x\": null}",
  "\\documentclass{article}\n\\begin{equation}\n  E = mc^2 \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}",
  "main :: IO ()\nmain = mapM_ print $ take 10 $ filter even [1..]",
  "(defun square (x) (* x x))\n(mapcar #'square '(1 2 3))",
  "my_regex = r\"^(?P<year>\\d{4})-(?P<month>\\d{2})$|[A-Za-z_]\\w*\"",
  "x = [1,2,3];y={'a':1,'b':[2,3]};z=(x,y)",
  "if(a&&b||!c){d^=e<<2>>1;f|=~g%3;}",
  "    indented with four spaces\n        and eight\n            and twelve\n",
  "\t\tdouble tab indent\n\t\t\ttriple\n",
  "// TODO(alice): fix this!!!\n// FIXME: off-by-one\n",
  "Makefile:\nall: build/dsq\n\t$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)\n",
  "diff --git a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,4 @@\n-old line\n+new line\n context\n",
  "user@host:~/src$ make -j2 && ./build/dsq tokenize model.json - < input.txt",
  "0x7fffffff 0xDEADBEEF 0b1010 0o755 1e-9 3.14159f 6.02214076e23 -0.0 NaN Inf",
  "array[i][j] = matrix[i * cols + j]; ptr->field.sub = &obj; *p++ = **q;",
  "print(f\"{name!r:>10} {value:08.3f} {{literal}}\")",
  "`backticks` and ```code fences```\n```python\nprint(1)\n```",
  "SELECT * FROM t WHERE name LIKE '%O''Brien%' -- comment\n",
  "template <typename T> constexpr T max(T a, T b) noexcept { return a < b ? b : a; }",
  "local t = {1, 2, 3}\nfor i, v in ipairs(t) do print(i, v) end",
  "<?php echo htmlspecialchars($_GET['q'] ?? '', ENT_QUOTES); ?>",
  "PS C:\\Users\\me> Get-ChildItem -Recurse | Where-Object { $_.Length -gt 1MB }",
  "key1=value1\nkey2 = \"value two\"\n[section]\nnested.key = 3\n",
  "---\ntitle: YAML\nlist:\n  - a\n  - b: c\n...\n",
  "mov rax, [rbp-8]\nadd rax, 1\njmp .L2\n",
];
code.forEach((s, i) => add(`code-${i}`, s));

// ---- Numbers ------------------------------------------------------------------------------------
let digits = "";
for (let len = 1; len <= 40; len++) {
  digits = "";
  for (let k = 0; k < len; k++) digits += String(randInt(0, 9));
  add(`number-len${len}`, digits);
}
[
  "3.14159265358979323846", "-42", "+7", "1,000,000", "1.000.000,50", "1 000 000", "12345678901234567890123",
  "2024-06-01", "06/01/2024", "10:45:30.123", "+1 (555) 123-4567", "192.168.0.1", "v1.2.3-rc.4",
  "x1y22z333w4444", "abc123def4567ghi", "1st2nd3rd", "99 bottles", "0.000001", "1e10 2E-5", "½ ¼ ¾",
  "٠١٢٣٤٥٦٧٨٩ ١٢٣٤", "１２３４５ ６７", "४५६ ७८९", "²³¹ x²+y²", "Ⅻ Ⅳ ⅷ", "①②③ ⑩", "一二三 四五六", "𝟏𝟐𝟑 𝟗",
  "123456789 987654321 111 2222 33333", "0", "00", "000", "0000", "1234 5678 9012 3456", "3.0.0.0.0.1",
  "price: 1,234.5678 EUR", "π≈3.14159", "10% 20‰ 30‱",
].forEach((s, i) => add(`number-${i}`, s));

// ---- CJK ----------------------------------------------------------------------------------------
[
  "你好，世界！", "我爱自然语言处理。", "深度求索（DeepSeek）发布了新的模型V4。", "人工智能正在改变世界，2024年是关键的一年。",
  "今天天气很好，我们去公园散步吧。", "龥龦龧 edge of the range", "中文English混合text测试123", "「引号」『书名号』《书名》〈单〉",
  "こんにちは、世界！", "私は日本語を勉強しています。", "カタカナとひらがなと漢字が混ざった文章です。", "ラーメン・スーシ・テンプラ",
  "ｶﾀｶﾅ half-width katakana ｱｲｳｴｵ", "ゟ゠ヿ boundary kana", "안녕하세요, 세계!", "한국어 텍스트와 English가 섞여 있습니다.",
  "中華人民共和國 繁體字 測試", "𠀀𠀁𠮷 extension B characters", "㐀㐁 extension A", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
  "中文　全角空格　测试", "“中文引号”和‘单引号’", "数学：１＋１＝２", "東京都渋谷区1-2-3", "北京 上海 广州 深圳",
  "一", "一二", "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳", "日本語の文章、句読点。そして改行\n次の行",
  "漢字かなカナ漢字かなカナ", "〇〡〢〣", "ㄅㄆㄇㄈ 注音", "ᄀᄁᄂ 자모", "中文\n\n\n换行", "中 文 空 格", "你好123世界456",
  "模型的参数量为1.6T，激活参数为49B。",
].forEach((s, i) => add(`cjk-${i}`, s));

// ---- Emoji (Unicode ≤ 13) -----------------------------------------------------------------------
[
  "😀😃😄😁", "I ❤️ NY", "👍🏽 thumbs up medium skin", "👨‍👩‍👧‍👦 family ZWJ", "🏳️‍🌈 flag", "🇯🇵🇺🇸🇨🇳 flags",
  "1️⃣ 2️⃣ #️⃣ keycaps", "🔥🔥🔥 fire", "emoji at end 🎉", "🎉 emoji at start", "text🙂inline🙃emoji", "👩🏻‍💻 technologist",
  "🤖 + 🧠 = 🚀", "☕ ☀ ★ ✓ ✗ ✈", "🐶🐱🐭🐹🐰🦊🐻🐼", "👁️‍🗨️ eye in speech bubble", "🧑‍🤝‍🧑", "©️ ®️ ™️",
  "🀄🃏🎴", "emoji\u200dzwj alone", "❤\ufe0f vs ❤\ufe0e", "😂😂😂😂😂😂😂😂😂😂", "🦀 Rust 🐍 Python 🐹 Go", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 tag sequence",
].forEach((s, i) => add(`emoji-${i}`, s));

// ---- Combining marks and other scripts ----------------------------------------------------------
[
  "e\u0301 vs é (NFD vs NFC)", "a\u0300\u0301\u0302\u0303\u0304 stacked", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ zalgo", "नमस्ते दुनिया", "हिन्दी में लिखा गया वाक्य।",
  "مرحبا بالعالم", "اللُّغَةُ العَرَبِيَّةُ", "שָׁלוֹם עוֹלָם", "สวัสดีชาวโลก", "Tiếng Việt có dấu: Đây là một câu.",
  "Ελληνικά: Γειά σου Κόσμε", "Русский текст: Привет, мир!", "Українська: Ґанок, їжак, є", "Հայերեն լեզու", "ქართული ენა",
  "தமிழ் மொழி", "తెలుగు భాష", "ಕನ್ನಡ", "മലയാളം", "বাংলা ভাষা", "ਪੰਜਾਬੀ", "ગુજરાતી", "සිංහල", "ភាសាខ្មែរ", "ພາສາລາວ",
  "မြန်မာဘာသာ", "አማርኛ", "ᠮᠣᠩᠭᠣᠯ", "ꦗꦮ", "n\u0303 \u0308u i\u0307", "\u0301 leading combining mark", "x\u20dd enclosing circle",
  "ﬁ ﬂ ligatures", "Å Å Å (three forms)", "ǅ ǈ titlecase digraphs",
].forEach((s, i) => add(`script-${i}`, s));

// ---- Whitespace ---------------------------------------------------------------------------------
for (const n of [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 64]) add(`spaces-${n}`, "a" + " ".repeat(n) + "b");
for (const n of [1, 2, 3, 8]) add(`tabs-${n}`, "x" + "\t".repeat(n) + "y");
for (const n of [1, 2, 3, 4, 10]) add(`newlines-${n}`, "line" + "\n".repeat(n) + "next");
[
  " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n", "\n ", " \n \n ", "\t\n\t\n", "   \n\n   x", "x   ", "   x",
  "x \n y", "x  \n  y", "a \t b", "end with newline\n", "end with spaces and newline   \n", "\n\n\nstart newlines",
  "nbsp\u00a0here", "ideographic\u3000space", "line\u2028separator", "para\u2029separator", "nel\u0085char",
  "bom\ufeffinside", "\ufeffbom at start", "zwsp\u200binside", "thin\u2009space", "narrow\u202fnbsp", "ogham\u1680space",
  "vt\u000bff\u000cchars", "mixed \u00a0 \u3000 \t \n spaces", "    ", "\r", "\r\r\n\n", "  \t  \n  \t  ", "word \u00a0\u00a0 word",
  "trailing nbsp\u00a0", "x\u180ey mongolian vowel separator",
].forEach((s, i) => add(`ws-${i}`, s));

// ---- Special tokens in text ---------------------------------------------------------------------
[
  "<｜begin▁of▁sentence｜>Hello", "<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
  "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜></think>", "<｜User｜><｜User｜><｜User｜>",
  "text<｜Assistant｜>text", " <｜User｜> spaces around ", "<｜User｜", "<｜User|>", "<|User|>", "<｜user｜>",
  "<|EOT|>", "a<|EOT|>b", "<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
  "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁799｜>", "<｜place▁holder▁no▁800｜>", "<｜▁pad▁｜>", "<think>reasoning</think>answer",
  "<｜end▁of▁sentence｜><｜end▁of▁sentence｜>", "<｜｜>", "｜｜", "<｜", "｜>", "<<｜User｜>>", "<｜User｜>\n\n", "\n<｜User｜>",
  "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>42<｜tool▁output▁end｜><｜tool▁outputs▁end｜>", "<｜DSML｜tool_calls>",
  "<｜begin▁of▁sentence｜>", "<｜latest_reminder｜>be brief",
].forEach((s, i) => add(`special-${i}`, s));

// ---- Invalid UTF-8 (raw bytes) ------------------------------------------------------------------
const enc = (s) => [...Buffer.from(s, "utf8")];
[
  [0x80], [0xbf], [0xc0, 0x80], [0xc1, 0xbf], [0xc2], [0xc2, 0x41], [0xe0, 0x80, 0x80], [0xe0, 0xa0], [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf], [0xef, 0xbf], [0xf0, 0x80, 0x80, 0x80], [0xf0, 0x90, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80], [0xfe], [0xff], [0xff, 0xfe],
  [...enc("hello "), 0xff, ...enc(" world")], [...enc("中"), 0xe4, 0xb8, ...enc("文")], [...enc("abc"), 0xe4],
  [0xe4, ...enc("abc")], [...enc("😀").slice(0, 3), ...enc("x")], [0x00], [...enc("a"), 0x00, ...enc("b")],
  [...enc("<｜User｜>"), 0xc3, ...enc("<｜Assistant｜>")], [...enc("<｜Us"), 0xff, ...enc("er｜>")], [0xc3, 0x28, 0xa0, 0xa1],
  [0xe2, 0x28, 0xa1, 0xe2, 0x82, 0x28], [0xf0, 0x28, 0x8c, 0xbc, 0xf0, 0x90, 0x28, 0xbc, 0xf0, 0x28, 0x8c, 0x28],
  [...enc("123"), 0x80, ...enc("456")], [0x20, 0x80, 0x20, 0x80, 0x20],
].forEach((b, i) => addBytes(`invalid-${i}`, b));
for (let i = 0; i < 8; i++) {
  const b = [];
  const n = randInt(4, 60);
  for (let k = 0; k < n; k++) b.push(rand() < 0.5 ? randInt(0x20, 0x7e) : randInt(0, 255));
  addBytes(`random-bytes-${i}`, b);
}

// ---- Miscellaneous ------------------------------------------------------------------------------
[
  "", "∑∫√∞≠≤≥±×÷∂∇", "€£¥₹₩₽ ¢ $", "→ ← ↑ ↓ ⇒ ⇔", "┌─┬─┐\n│a│b│\n└─┴─┘", "| col1 | col2 |\n|------|------|\n| 1 | 2 |",
  "C:\\Windows\\System32\\drivers\\etc\\hosts", "/usr/local/lib/python3.11/site-packages/numpy/__init__.py",
  "!!!!!!!!!!", "..........", "??!!??", "------", "======", "______", "******", "~~~~", "''''", "\"\"\"\"",
  "&amp; &lt; &gt; &quot; &#39; &#x27;", "SGVsbG8gV29ybGQhIFRoaXMgaXMgYmFzZTY0IGVuY29kZWQgdGV4dC4=",
  "00000000: 7f45 4c46 0201 0100 0000 0000 0000 0000  .ELF............", "a".repeat(300), "ab".repeat(150),
  "word ".repeat(60), "1234567890".repeat(20), "中".repeat(100), "😀".repeat(40), " ".repeat(100), "\n".repeat(50),
  "x".repeat(1000) + " " + "y".repeat(1000), "...---...", "a-b_c.d/e\\f:g;h", "key: value, key2: 'value2'",
  "mailto:someone@example.com?subject=Hi%20there", "%E4%B8%AD%E6%96%87 url-encoded", "<script>alert('x')</script>",
  "don't DON'T Don't 's 't 're 've 'm 'll 'd", "it’s they’re we’ve", "'s", "'", "a'b'c'", "l'homme d'affaires",
  "A.B.C. D.E.F.", "U.S.A.", "3.14.15", "$100", "#hashtag", "@mention", "%percent", "^caret", "&and", "*star",
  "(paren)", "-dash", "+plus", "=equals", "[bracket]", "{brace}", "|pipe", "\\backslash", "/slash", ":colon", ";semicolon",
  "<less", ">greater", ",comma", ".period", "?question", "!bang", "`tick", "~tilde", "_under",
].forEach((s, i) => add(`misc-${i}`, s));

// ---- Random mixtures ----------------------------------------------------------------------------
const pool = [
  ...prose, ...code.slice(0, 10), "你好", "世界", "こんにちは", "カタカナ", "한국어", "😀", "👍🏽", "🇯🇵", "e\u0301",
  "नमस्ते", "مرحبا", "123", "4567", "89", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "<｜User｜>", "<｜Assistant｜>",
  "<|EOT|>", "'s", "'ll", "...", "!?", "—", "“", "”", "€", "∑", "x²", "１２", "٣٤", "\ufeff",
];
for (let i = 0; i < 40; i++) {
  let s = "";
  const parts = randInt(2, 12);
  for (let k = 0; k < parts; k++) s += pick(pool) + (rand() < 0.3 ? " " : "");
  add(`mix-${i}`, s);
}

// ---- Long texts (≥ 2048 bytes: the C encoder's word cache is on) --------------------------------
for (let i = 0; i < 4; i++) {
  let s = "";
  while (s.length < 3000 + i * 4000) s += pick(pool) + pick(["", " ", "\n", "  ", ". "]);
  add(`long-mix-${i}`, s);
}
add("long-prose", prose.join(" ").repeat(3));
add("long-code", code.join("\n"));

// ---- Decoding -----------------------------------------------------------------------------------
addDecode("decode-hello", [19923, 14, 1026, 6397, 344, 33125]);
addDecode("decode-specials", [0, 128803, 6366, 128804, 1718, 37947, 32, 1]);
addDecode("decode-empty", []);
addDecode("decode-pad-eot", [2, 128805, 2]);
for (let i = 0; i < 16; i++) {
  const ids = [];
  const n = randInt(1, 30);
  for (let k = 0; k < n; k++) {
    const r = rand();
    // byte tokens split multi-byte characters; specials sit between byte-level runs
    ids.push(r < 0.4 ? randInt(3, 260) : r < 0.5 ? pick([0, 1, 2, 128803, 128804, 128805, 128800]) : randInt(3, 127999));
  }
  addDecode(`decode-random-${i}`, ids);
}

const names = new Set();
for (const e of out) {
  if (names.has(e.name)) throw new Error(`duplicate fixture name ${e.name}`);
  names.add(e.name);
  if (e.text !== undefined && (e.text.includes("\0") || e.text.isWellFormed?.() === false))
    throw new Error(`${e.name}: text entries must be valid UTF-8 without NUL; use bytes`);
  process.stdout.write(JSON.stringify(e) + "\n");
}
process.stderr.write(`fixture: ${out.length} entries\n`);
