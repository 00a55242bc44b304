/* A tokenizer.json rebuilt from a GGUF's tokenizer.ggml.* keys (dsq_tokenizer.h: dsq_tok_open on a
 * .gguf).  llama.cpp's GGUF names the pre-tokenizer instead of spelling its regexes: dsq's exporter
 * also stores the source's pre_tokenizer JSON under dsq.tokenizer.pre_tokenizer, which is used when
 * present; otherwise "deepseek-v3" stands for DeepSeek V3/V4's own Split sequence (spec §7).  Token
 * types: 1 normal → vocab, 3 control → special added token, 4 user-defined → added token, 5 unused
 * ([PADn] padding) → dropped. */
#include <string.h>

#include "dsq_gguf.h"
#include "dsq_json.h"
#include "dsq_tokenizer.h"
#include "gguf_internal.h"

/* DeepSeek V3/V4 tokenizer.json's pre_tokenizer (the vocabulary's published file). */
static const char DEEPSEEK_V3_PRE[] =
    "{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\u4e00-\\u9fa5\\u3040-\\u309f\\u30a0-\\u30ff]+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[!\\\"#$%&'()*+,\\\\-./:;<=>?@\\\\[\\\\\\\\\\\\]^_`{|}~][A-Za-z]+|"
    "[^\\r\\n\\\\p{L}\\\\p{P}\\\\p{S}]?[\\\\p{L}\\\\p{M}]+| ?[\\\\p{P}\\\\p{S}]+[\\r\\n]*|\\\\s*[\\r\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}";

const char *dsq__gguf_deepseek_v3_pre(void) { return DEEPSEEK_V3_PRE; }

static cJSON *str_n(const char *s, uint64_t n) {
    char *c = dsq_malloc((size_t)n + 1);
    if (!c) return NULL;
    memcpy(c, s, (size_t)n);
    c[n] = 0;
    cJSON *j = cJSON_CreateString(c);
    dsq_free(c);
    return j;
}

dsq_status dsq__gguf_tokenizer_json(const char *path, char **out, size_t *out_len, dsq_err *err) {
    *out = NULL;
    dsq_gguf *g = NULL;
    DSQ_TRY(dsq_gguf_open(path, &g, err));
    dsq_status st = DSQ_OK;
    char *model = dsq_gguf_get_str(g, "tokenizer.ggml.model"), *pre = dsq_gguf_get_str(g, "tokenizer.ggml.pre");
    char *pre_json = dsq_gguf_get_str(g, "dsq.tokenizer.pre_tokenizer");
    const dsq_gguf_kv *toks = dsq_gguf_find_kv(g, "tokenizer.ggml.tokens"), *types = dsq_gguf_find_kv(g, "tokenizer.ggml.token_type"),
                      *merges = dsq_gguf_find_kv(g, "tokenizer.ggml.merges");
    cJSON *root = cJSON_CreateObject(), *pt = NULL;
    if (!model || strcmp(model, "gpt2") || !toks || !merges)
        st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: no byte-level BPE tokenizer (tokenizer.ggml.model \"gpt2\" with tokens and merges)", path);
    else if (pre_json) {
        if (dsq_json_parse(pre_json, strlen(pre_json), "dsq.tokenizer.pre_tokenizer", &pt, err) != DSQ_OK) st = DSQ_ERR_JSON;
    } else if (pre && !strcmp(pre, "deepseek-v3")) {
        if (dsq_json_parse(DEEPSEEK_V3_PRE, strlen(DEEPSEEK_V3_PRE), "deepseek-v3", &pt, err) != DSQ_OK) st = DSQ_ERR_JSON;
    } else
        st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" (dsq rebuilds deepseek-v3 only)", path, pre ? pre : "?");
    cJSON *added = NULL, *vocab = NULL, *mg = NULL;
    if (st == DSQ_OK) {
        cJSON_AddStringToObject(root, "version", "1.0");
        added = cJSON_AddArrayToObject(root, "added_tokens");
        cJSON_AddNullToObject(root, "normalizer");
        cJSON_AddItemToObject(root, "pre_tokenizer", pt);
        pt = NULL;
        cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", true);
        cJSON_AddBoolToObject(dec, "trim_offsets", true);
        cJSON_AddBoolToObject(dec, "use_regex", true);
        cJSON *m = cJSON_AddObjectToObject(root, "model");
        cJSON_AddStringToObject(m, "type", "BPE");
        cJSON_AddBoolToObject(m, "byte_fallback", false);
        cJSON_AddBoolToObject(m, "fuse_unk", false);
        vocab = cJSON_AddObjectToObject(m, "vocab");
        mg = cJSON_AddArrayToObject(m, "merges");
        if (!added || !vocab || !mg) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; st == DSQ_OK && i < toks->n; i++) {
        const char *s;
        uint64_t len, type = 1;
        if (!dsq_gguf_kv_arr_str(g, toks, i, &s, &len) || (types && !dsq_gguf_kv_arr_u64(types, i, &type))) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tokenizer.ggml.tokens/token_type entry %llu", path, (unsigned long long)i);
            break;
        }
        if (memchr(s, 0, (size_t)len)) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: token %llu holds a NUL byte", path, (unsigned long long)i);
            break;
        }
        if (type == 5) continue;
        cJSON *txt = str_n(s, len);
        if (!txt) {
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            break;
        }
        if (type == 3 || type == 4) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddItemToObject(a, "content", txt);
            cJSON_AddBoolToObject(a, "single_word", false);
            cJSON_AddBoolToObject(a, "lstrip", false);
            cJSON_AddBoolToObject(a, "rstrip", false);
            cJSON_AddBoolToObject(a, "normalized", false);
            cJSON_AddBoolToObject(a, "special", type == 3);
            cJSON_AddItemToArray(added, a);
        } else {
            if (cJSON_GetObjectItemCaseSensitive(vocab, txt->valuestring)) {
                st = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: token %llu repeats an earlier token", path, (unsigned long long)i);
                cJSON_Delete(txt);
                break;
            }
            cJSON_AddNumberToObject(vocab, txt->valuestring, (double)i);
            cJSON_Delete(txt);
        }
    }
    for (uint64_t i = 0; st == DSQ_OK && i < merges->n; i++) {
        const char *s;
        uint64_t len;
        cJSON *x = dsq_gguf_kv_arr_str(g, merges, i, &s, &len) && !memchr(s, 0, (size_t)len) ? str_n(s, len) : NULL;
        if (!x) st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tokenizer.ggml.merges entry %llu", path, (unsigned long long)i);
        else cJSON_AddItemToArray(mg, x);
    }
    if (st == DSQ_OK) {
        char *text = cJSON_PrintUnformatted(root);
        if (!text) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        else {
            *out = dsq_strdup(text);
            *out_len = *out ? strlen(*out) : 0;
            if (!*out) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            cJSON_free(text);
        }
    }
    cJSON_Delete(pt);
    cJSON_Delete(root);
    dsq_free(model);
    dsq_free(pre);
    dsq_free(pre_json);
    dsq_gguf_close(g);
    return st;
}
