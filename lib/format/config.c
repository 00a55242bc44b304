/* config.json of a DeepSeek-V4 checkpoint (spec §1) → dsq_v4_config, and quantities derived from the
 * config alone: attention kind and routing per block, KV-cache bytes (spec §6).  Parameter counts live
 * in inventory.c, where they are summed over the expected tensor inventory. */
#include "dsq_config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "dsq_json.h"

/* Limits on sizes a config may declare.  They keep every product the inventory and the counters form
 * (e.g. E·3·I·D per block times the block count) far inside uint64_t. */
#define CFG_MAX_VOCAB  (1ull << 24)
#define CFG_MAX_DIM    (1ull << 17) /* hidden_size, head_dim, ranks, inner dims */
#define CFG_MAX_COUNT  (1ull << 14) /* heads, groups, experts, top-k, hc_mult */
#define CFG_MAX_WINDOW (1ull << 24)
#define CFG_MAX_RATIO  (1ull << 16)
#define CFG_MAX_ITERS  100000ull
#define CFG_WARN_MAX   (64u * 1024u) /* cap on the warnings text */

/* Ratio of a CSA block (spec §1.2); every other positive ratio is HCA.  Block sizes of spec §2.4
 * (lib/format does not depend on lib/quant, so they are named here too). */
enum { CSA_RATIO = 4, FP8_BLOCK = 128, KV_FP8_BLOCK = 64, FP4_BLOCK = 32 };

typedef enum field_kind { F_U64, F_INT, F_F64, F_BOOL, F_I64 } field_kind;

typedef struct field {
    const char *key; /* HF config.json key */
    field_kind kind;
    size_t off; /* offset in dsq_v4_config */
    bool required;
    double def;        /* default when absent and not required */
    uint64_t min, max; /* integer range (F_U64 / F_INT) */
} field;

#define OFF(m) offsetof(dsq_v4_config, m)
/* spec §1.1.  Fields without a default are required.  Defaults are the reference ModelArgs values. */
static const field FIELDS[] = {
    {"vocab_size", F_U64, OFF(vocab_size), true, 0, 1, CFG_MAX_VOCAB},
    {"hidden_size", F_U64, OFF(dim), true, 0, 1, CFG_MAX_DIM},
    {"num_hidden_layers", F_INT, OFF(n_layers), true, 0, 1, DSQ_MAX_LAYERS},
    {"num_nextn_predict_layers", F_INT, OFF(n_mtp_layers), false, 0, 0, DSQ_MAX_LAYERS},
    {"num_hash_layers", F_INT, OFF(n_hash_layers), false, 0, 0, DSQ_MAX_LAYERS},
    {"num_attention_heads", F_INT, OFF(n_heads), true, 0, 1, CFG_MAX_COUNT},
    {"num_key_value_heads", F_INT, OFF(n_kv_heads), false, 1, 0, CFG_MAX_COUNT},
    {"head_dim", F_INT, OFF(head_dim), true, 0, 1, CFG_MAX_DIM},
    {"qk_rope_head_dim", F_INT, OFF(rope_head_dim), true, 0, 1, CFG_MAX_DIM},
    {"q_lora_rank", F_INT, OFF(q_lora_rank), true, 0, 1, CFG_MAX_DIM},
    {"o_lora_rank", F_INT, OFF(o_lora_rank), true, 0, 1, CFG_MAX_DIM},
    {"o_groups", F_INT, OFF(o_groups), true, 0, 1, CFG_MAX_COUNT},
    {"moe_intermediate_size", F_INT, OFF(moe_inter_dim), true, 0, 1, CFG_MAX_DIM},
    {"n_routed_experts", F_INT, OFF(n_routed_experts), true, 0, 1, CFG_MAX_COUNT},
    {"n_shared_experts", F_INT, OFF(n_shared_experts), false, 1, 0, CFG_MAX_COUNT},
    {"num_experts_per_tok", F_INT, OFF(n_activated_experts), true, 0, 1, CFG_MAX_COUNT},
    {"routed_scaling_factor", F_F64, OFF(route_scale), true, 0, 0, 0},
    {"swiglu_limit", F_F64, OFF(swiglu_limit), false, 10.0, 0, 0},
    {"sliding_window", F_INT, OFF(window_size), true, 0, 1, CFG_MAX_WINDOW},
    {"rope_theta", F_F64, OFF(rope_theta), false, 10000.0, 0, 0},
    {"compress_rope_theta", F_F64, OFF(compress_rope_theta), false, 160000.0, 0, 0},
    {"index_n_heads", F_INT, OFF(index_n_heads), true, 0, 1, CFG_MAX_COUNT},
    {"index_head_dim", F_INT, OFF(index_head_dim), true, 0, 1, CFG_MAX_DIM},
    {"index_topk", F_INT, OFF(index_topk), true, 0, 1, CFG_MAX_COUNT},
    {"hc_mult", F_INT, OFF(hc_mult), true, 0, 1, 64},
    {"hc_sinkhorn_iters", F_INT, OFF(hc_sinkhorn_iters), false, 20, 1, CFG_MAX_ITERS},
    {"hc_eps", F_F64, OFF(hc_eps), false, 1e-6, 0, 0},
    {"rms_norm_eps", F_F64, OFF(norm_eps), false, 1e-6, 0, 0},
    {"bos_token_id", F_I64, OFF(bos_token_id), false, 0, 0, 0},
    {"eos_token_id", F_I64, OFF(eos_token_id), false, 1, 0, 0},
    {"max_position_embeddings", F_U64, OFF(max_position_embeddings), false, 1048576, 0, UINT64_MAX},
    {"tie_word_embeddings", F_BOOL, OFF(tie_word_embeddings), false, 0, 0, 0},
};
#undef OFF

/* Keys read by special code below, or informative keys of released configs (no warning). */
static const char *const KNOWN_KEYS[] = {
    "model_type",        "compress_ratios", "rope_scaling",   "quantization_config", "expert_dtype",
    "scoring_func",      "architectures",   "attention_bias", "attention_dropout",   "hidden_act",
    "initializer_range", "norm_topk_prob",  "topk_method",    "torch_dtype",         "transformers_version",
    "use_cache",         "auto_map",        "_name_or_path",  "pad_token_id",
};

typedef struct parser {
    const char *what;
    dsq_err *err;
    size_t n_problems;
    dsq_status first;
    char *warn; /* heap, newline-separated */
    size_t warn_len;
} parser;

static void problem(parser *p, dsq_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(parser *p, dsq_status s, const char *fmt, ...) {
    char line[DSQ_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (p->n_problems++ == 0) p->first = s;
    dsq_err_set(p->err, s, "%s: %s", p->what, line);
}

static void warn(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(parser *p, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t len = strlen(line);
    if (p->warn_len + len + 2 > CFG_WARN_MAX) return;
    char *w = dsq_realloc(p->warn, p->warn_len + len + 2);
    if (!w) return; /* warnings are best effort */
    memcpy(w + p->warn_len, line, len);
    p->warn_len += len;
    w[p->warn_len++] = '\n';
    w[p->warn_len] = 0;
    p->warn = w;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

/* Read an integer member into *out within [min, max]; records the problem and returns false otherwise.
 * `key` is the full name used in messages (e.g. "rope_scaling.original_max_position_embeddings"). */
static bool read_u64(parser *p, const cJSON *v, const char *key, uint64_t min, uint64_t max, uint64_t *out) {
    if (!cJSON_IsNumber(v)) {
        problem(p, DSQ_ERR_JSON, "\"%s\" must be an integer, not %s", key, json_type_name(v));
        return false;
    }
    uint64_t u;
    if (!dsq_json_u64(v, &u)) {
        double d = v->valuedouble;
        if (isfinite(d) && d < 0 && floor(d) == d)
            problem(p, DSQ_ERR_RANGE, "\"%s\" must be non-negative, got %.17g", key, d);
        else
            problem(p, DSQ_ERR_RANGE, "\"%s\" must be an exact integer, got %.17g", key, d);
        return false;
    }
    if (u < min || u > max) {
        problem(p, DSQ_ERR_RANGE, "\"%s\" = %llu is outside [%llu, %llu]", key, (unsigned long long)u,
                (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = u;
    return true;
}

static bool read_f64(parser *p, const cJSON *v, const char *key, double *out) {
    if (!cJSON_IsNumber(v)) {
        problem(p, DSQ_ERR_JSON, "\"%s\" must be a number, not %s", key, json_type_name(v));
        return false;
    }
    if (!dsq_json_f64(v, out)) {
        problem(p, DSQ_ERR_RANGE, "\"%s\" must be finite", key);
        return false;
    }
    return true;
}

static const char *read_str(parser *p, const cJSON *v, const char *key) {
    if (!cJSON_IsString(v) || !v->valuestring) {
        problem(p, DSQ_ERR_JSON, "\"%s\" must be a string, not %s", key, json_type_name(v));
        return NULL;
    }
    return v->valuestring;
}

static void read_field(parser *p, const cJSON *root, const field *f, dsq_v4_config *c) {
    char *dst = (char *)c + f->off;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, f->key);
    if (!v) {
        if (f->required) {
            problem(p, DSQ_ERR_MISSING, "required field \"%s\" is missing", f->key);
            return;
        }
        switch (f->kind) {
        case F_U64:
            *(uint64_t *)dst = (uint64_t)f->def;
            break;
        case F_INT:
            *(int *)dst = (int)f->def;
            break;
        case F_F64:
            *(double *)dst = f->def;
            break;
        case F_BOOL:
            *(bool *)dst = f->def != 0;
            break;
        case F_I64:
            *(int64_t *)dst = (int64_t)f->def;
            break;
        }
        return;
    }
    uint64_t u;
    switch (f->kind) {
    case F_U64:
        if (read_u64(p, v, f->key, f->min, f->max, &u)) *(uint64_t *)dst = u;
        break;
    case F_INT:
        if (read_u64(p, v, f->key, f->min, f->max, &u)) *(int *)dst = (int)u;
        break;
    case F_F64:
        read_f64(p, v, f->key, (double *)dst);
        break;
    case F_BOOL:
        if (!cJSON_IsBool(v))
            problem(p, DSQ_ERR_JSON, "\"%s\" must be a boolean, not %s", f->key, json_type_name(v));
        else
            *(bool *)dst = cJSON_IsTrue(v);
        break;
    case F_I64: {
        /* Token ids are informative; HF allows a list for eos_token_id: take its first entry. */
        const cJSON *x = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 0) : v;
        int64_t i;
        if (!x || !cJSON_IsNumber(x))
            problem(p, DSQ_ERR_JSON, "\"%s\" must be an integer, not %s", f->key, json_type_name(x ? x : v));
        else if (!dsq_json_i64(x, &i))
            problem(p, DSQ_ERR_RANGE, "\"%s\" must be an exact integer", f->key);
        else
            *(int64_t *)dst = i;
        break;
    }
    }
}

static void read_compress_ratios(parser *p, const cJSON *root, dsq_v4_config *c) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "compress_ratios");
    if (!v) {
        problem(p, DSQ_ERR_MISSING, "required field \"compress_ratios\" is missing");
        return;
    }
    if (!cJSON_IsArray(v)) {
        problem(p, DSQ_ERR_JSON, "\"compress_ratios\" must be an array, not %s", json_type_name(v));
        return;
    }
    int n = cJSON_GetArraySize(v);
    if (n > DSQ_MAX_LAYERS) {
        problem(p, DSQ_ERR_RANGE, "\"compress_ratios\" has %d entries, more than the %d supported", n, DSQ_MAX_LAYERS);
        return;
    }
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char key[48];
        snprintf(key, sizeof key, "compress_ratios[%d]", i);
        uint64_t r;
        if (read_u64(p, e, key, 0, CFG_MAX_RATIO, &r)) c->compress_ratios[i] = (int)r;
    }
    c->n_compress_ratios = n;
}

static void read_rope_scaling(parser *p, const cJSON *root, dsq_v4_config *c) {
    c->has_yarn = false;
    c->rope_factor = 1.0;
    c->original_seq_len = 0;
    c->beta_fast = 32.0;
    c->beta_slow = 1.0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!v || cJSON_IsNull(v)) return;
    if (!cJSON_IsObject(v)) {
        problem(p, DSQ_ERR_JSON, "\"rope_scaling\" must be an object, not %s", json_type_name(v));
        return;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(v, "rope_type");
    const char *type = t ? read_str(p, t, "rope_scaling.type") : NULL;
    if (!t) {
        problem(p, DSQ_ERR_MISSING, "required field \"rope_scaling.type\" is missing");
        return;
    }
    if (!type) return;
    if (strcmp(type, "yarn") != 0) {
        problem(p, DSQ_ERR_UNSUPPORTED, "\"rope_scaling.type\" is \"%s\"; only \"yarn\" is defined for V4", type);
        return;
    }
    c->has_yarn = true;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, "factor");
    if (!f)
        problem(p, DSQ_ERR_MISSING, "required field \"rope_scaling.factor\" is missing");
    else if (read_f64(p, f, "rope_scaling.factor", &c->rope_factor) && !(c->rope_factor >= 1.0))
        problem(p, DSQ_ERR_CONFIG, "\"rope_scaling.factor\" = %g must be >= 1", c->rope_factor);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(v, "original_max_position_embeddings");
    if (!o)
        problem(p, DSQ_ERR_MISSING, "required field \"rope_scaling.original_max_position_embeddings\" is missing");
    else
        read_u64(p, o, "rope_scaling.original_max_position_embeddings", 1, UINT64_MAX, &c->original_seq_len);
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(v, "beta_fast");
    if (bf) read_f64(p, bf, "rope_scaling.beta_fast", &c->beta_fast);
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(v, "beta_slow");
    if (bs) read_f64(p, bs, "rope_scaling.beta_slow", &c->beta_slow);
    if (!(c->beta_fast > 0) || !(c->beta_slow > 0))
        problem(p, DSQ_ERR_CONFIG, "\"rope_scaling.beta_fast\" and \"beta_slow\" must be positive");
}

static void read_quant_config(parser *p, const cJSON *root, dsq_v4_config *c) {
    c->weight_block_n = c->weight_block_k = FP8_BLOCK;
    c->has_quant_config = false;
    c->scale_ue8m0 = false;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!q || cJSON_IsNull(q)) return;
    if (!cJSON_IsObject(q)) {
        problem(p, DSQ_ERR_JSON, "\"quantization_config\" must be an object, not %s", json_type_name(q));
        return;
    }
    c->has_quant_config = true;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    const char *method = m ? read_str(p, m, "quantization_config.quant_method") : NULL;
    if (method && strcmp(method, "fp8") != 0)
        problem(p, DSQ_ERR_UNSUPPORTED, "\"quantization_config.quant_method\" is \"%s\"; expected \"fp8\"", method);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "fmt");
    const char *fs = fmt ? read_str(p, fmt, "quantization_config.fmt") : NULL;
    if (fs && strcmp(fs, "e4m3") != 0)
        problem(p, DSQ_ERR_UNSUPPORTED, "\"quantization_config.fmt\" is \"%s\"; expected \"e4m3\"", fs);
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(q, "scale_fmt");
    const char *ss = sf && !cJSON_IsNull(sf) ? read_str(p, sf, "quantization_config.scale_fmt") : NULL;
    if (ss) {
        if (strcmp(ss, "ue8m0") == 0)
            c->scale_ue8m0 = true;
        else
            problem(p, DSQ_ERR_UNSUPPORTED, "\"quantization_config.scale_fmt\" is \"%s\"; expected \"ue8m0\"", ss);
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (b) {
        if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) != 2) {
            problem(p, DSQ_ERR_JSON, "\"quantization_config.weight_block_size\" must be an array of 2 integers");
            return;
        }
        uint64_t bn, bk;
        bool ok =
            read_u64(p, cJSON_GetArrayItem(b, 0), "quantization_config.weight_block_size[0]", 1, CFG_MAX_DIM, &bn);
        ok &= read_u64(p, cJSON_GetArrayItem(b, 1), "quantization_config.weight_block_size[1]", 1, CFG_MAX_DIM, &bk);
        if (ok && (bn != FP8_BLOCK || bk != FP8_BLOCK))
            problem(p, DSQ_ERR_UNSUPPORTED,
                    "\"quantization_config.weight_block_size\" is [%llu, %llu]; only [128, 128] is supported",
                    (unsigned long long)bn, (unsigned long long)bk);
    }
}

static void read_strings(parser *p, const cJSON *root, dsq_v4_config *c) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!mt) {
        problem(p, DSQ_ERR_MISSING, "required field \"model_type\" is missing");
    } else {
        const char *s = read_str(p, mt, "model_type");
        if (s && strcmp(s, "deepseek_v4") != 0)
            problem(p, DSQ_ERR_UNSUPPORTED, "\"model_type\" is \"%s\", not \"deepseek_v4\"", s);
    }
    c->expert_fp4 = false; /* absent: FP8 experts (Base and early configs), spec §1.1 */
    const cJSON *ed = cJSON_GetObjectItemCaseSensitive(root, "expert_dtype");
    if (ed && !cJSON_IsNull(ed)) {
        const char *s = read_str(p, ed, "expert_dtype");
        if (s && strcmp(s, "fp4") == 0)
            c->expert_fp4 = true;
        else if (s && strcmp(s, "fp8") != 0)
            problem(p, DSQ_ERR_UNSUPPORTED, "\"expert_dtype\" is \"%s\"; expected \"fp4\" or \"fp8\"", s);
    }
    strcpy(c->score_func, "sqrtsoftplus");
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(root, "scoring_func");
    if (sf) {
        const char *s = read_str(p, sf, "scoring_func");
        if (s && strcmp(s, "sqrtsoftplus") != 0)
            problem(p, DSQ_ERR_UNSUPPORTED, "\"scoring_func\" is \"%s\"; V4 defines only \"sqrtsoftplus\"", s);
    }
}

static bool is_known_key(const char *k) {
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        if (!strcmp(k, FIELDS[i].key)) return true;
    for (size_t i = 0; i < sizeof KNOWN_KEYS / sizeof KNOWN_KEYS[0]; i++)
        if (!strcmp(k, KNOWN_KEYS[i])) return true;
    return false;
}

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* Cross-field rules (spec §1, §2.4): run only when every field read cleanly, so one bad field is
 * reported once, not again as an inconsistency. */
static void check_consistency(parser *p, const cJSON *root, dsq_v4_config *c) {
    int blocks = c->n_layers + c->n_mtp_layers;
    if (blocks > DSQ_MAX_LAYERS)
        problem(p, DSQ_ERR_RANGE, "\"num_hidden_layers\" + \"num_nextn_predict_layers\" = %d exceeds %d", blocks,
                DSQ_MAX_LAYERS);
    if (c->n_compress_ratios < blocks) {
        problem(p, DSQ_ERR_CONFIG,
                "\"compress_ratios\" has %d entries; num_hidden_layers + num_nextn_predict_layers = %d + %d = %d",
                c->n_compress_ratios, c->n_layers, c->n_mtp_layers, blocks);
    } else if (c->n_compress_ratios > blocks) {
        /* A later Flash revision adds dspark_* speculative blocks with their own ratios (configs/README.md).
         * Extra entries are accepted only beside such fields; they are not part of the V4 model. */
        bool dspark = false;
        for (const cJSON *m = root->child; m; m = m->next)
            if (m->string && !strncmp(m->string, "dspark", 6)) dspark = true;
        if (dspark)
            warn(p,
                 "compress_ratios: %d entries beyond num_hidden_layers + num_nextn_predict_layers = %d belong to "
                 "dspark_* blocks and are ignored",
                 c->n_compress_ratios - blocks, blocks);
        else
            problem(p, DSQ_ERR_CONFIG,
                    "\"compress_ratios\" has %d entries; num_hidden_layers + num_nextn_predict_layers = %d + %d = %d",
                    c->n_compress_ratios, c->n_layers, c->n_mtp_layers, blocks);
    }
    if (c->n_hash_layers > c->n_layers)
        problem(p, DSQ_ERR_CONFIG, "\"num_hash_layers\" = %d exceeds \"num_hidden_layers\" = %d", c->n_hash_layers,
                c->n_layers);
    if (c->n_kv_heads != 1)
        problem(p, DSQ_ERR_CONFIG, "\"num_key_value_heads\" = %d; V4 has exactly one shared KV head", c->n_kv_heads);
    if (c->n_shared_experts != 1)
        problem(p, DSQ_ERR_CONFIG, "\"n_shared_experts\" = %d; V4 has exactly one shared expert", c->n_shared_experts);
    if (c->rope_head_dim % 2)
        problem(p, DSQ_ERR_CONFIG, "\"qk_rope_head_dim\" = %d must be even (rotary pairs)", c->rope_head_dim);
    if (c->head_dim <= c->rope_head_dim)
        problem(p, DSQ_ERR_CONFIG, "\"head_dim\" = %d must exceed \"qk_rope_head_dim\" = %d", c->head_dim,
                c->rope_head_dim);
    else if ((c->head_dim - c->rope_head_dim) % KV_FP8_BLOCK)
        problem(p, DSQ_ERR_CONFIG, "\"head_dim\" - \"qk_rope_head_dim\" = %d must be a multiple of %d (KV FP8 blocks)",
                c->head_dim - c->rope_head_dim, KV_FP8_BLOCK);
    if (c->index_head_dim < c->rope_head_dim)
        problem(p, DSQ_ERR_CONFIG, "\"index_head_dim\" = %d is smaller than \"qk_rope_head_dim\" = %d",
                c->index_head_dim, c->rope_head_dim);
    if (!is_pow2((uint64_t)c->index_head_dim) || c->index_head_dim % FP4_BLOCK)
        problem(p, DSQ_ERR_CONFIG,
                "\"index_head_dim\" = %d must be a power of two and a multiple of %d (Hadamard, FP4 blocks)",
                c->index_head_dim, FP4_BLOCK);
    if (c->n_heads % c->o_groups)
        problem(p, DSQ_ERR_CONFIG, "\"num_attention_heads\" = %d is not a multiple of \"o_groups\" = %d", c->n_heads,
                c->o_groups);
    if (c->n_activated_experts > c->n_routed_experts)
        problem(p, DSQ_ERR_CONFIG, "\"num_experts_per_tok\" = %d exceeds \"n_routed_experts\" = %d",
                c->n_activated_experts, c->n_routed_experts);
    /* Inputs of FP8 linears are quantized in 1x128 blocks (spec §2.4): their K must be a multiple of 128.
     * That covers D (wq_a, wkv, experts w1/w3, ...), ql (wq_b, indexer wq_b), G·ol (wo_b), I (w2). */
    struct {
        const char *what;
        uint64_t v;
    } k_dims[] = {
        {"hidden_size", c->dim},
        {"q_lora_rank", (uint64_t)c->q_lora_rank},
        {"o_groups * o_lora_rank", (uint64_t)c->o_groups * (uint64_t)c->o_lora_rank},
        {"moe_intermediate_size", (uint64_t)c->moe_inter_dim},
    };
    for (size_t i = 0; i < sizeof k_dims / sizeof k_dims[0]; i++)
        if (k_dims[i].v % FP8_BLOCK)
            problem(p, DSQ_ERR_CONFIG, "\"%s\" = %llu must be a multiple of %d (FP8 activation blocks)", k_dims[i].what,
                    (unsigned long long)k_dims[i].v, FP8_BLOCK);
    if (c->route_scale <= 0)
        problem(p, DSQ_ERR_CONFIG, "\"routed_scaling_factor\" = %g must be positive", c->route_scale);
    if (c->swiglu_limit <= 0) problem(p, DSQ_ERR_CONFIG, "\"swiglu_limit\" = %g must be positive", c->swiglu_limit);
    if (c->rope_theta <= 1 || c->compress_rope_theta <= 1)
        problem(p, DSQ_ERR_CONFIG, "\"rope_theta\" and \"compress_rope_theta\" must exceed 1");
    if (c->hc_eps < 0 || c->norm_eps <= 0)
        problem(p, DSQ_ERR_CONFIG, "\"hc_eps\" must be >= 0 and \"rms_norm_eps\" > 0");
    bool compressed = false;
    for (int b = 0; b < blocks && b < c->n_compress_ratios; b++)
        if (c->compress_ratios[b] > 0) compressed = true;
    if (compressed && !c->has_yarn)
        warn(p, "rope_scaling: absent; compressed layers use plain RoPE with compress_rope_theta");
    if (c->tie_word_embeddings)
        problem(p, DSQ_ERR_CONFIG, "\"tie_word_embeddings\" is true; V4 has distinct embed and head matrices");
}

dsq_status dsq_config_parse(const char *json, size_t len, const char *what, dsq_v4_config *out, char **warnings,
                            dsq_err *err) {
    memset(out, 0, sizeof *out);
    if (warnings) *warnings = NULL;
    if (!what) what = "config.json";
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &root, err));
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: top level is not a JSON object", what);
    }
    parser p = {what, err, 0, DSQ_OK, NULL, 0};
    read_strings(&p, root, out);
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) read_field(&p, root, &FIELDS[i], out);
    read_compress_ratios(&p, root, out);
    read_rope_scaling(&p, root, out);
    read_quant_config(&p, root, out);
    for (const cJSON *m = root->child; m; m = m->next)
        if (m->string && !is_known_key(m->string)) warn(&p, "unknown field \"%s\" ignored", m->string);
    if (p.n_problems == 0) check_consistency(&p, root, out);
    cJSON_Delete(root);
    if (warnings)
        *warnings = p.warn;
    else
        dsq_free(p.warn);
    if (p.n_problems) {
        memset(out, 0, sizeof *out);
        if (warnings) {
            dsq_free(*warnings);
            *warnings = NULL;
        }
        return p.first;
    }
    return DSQ_OK;
}

dsq_status dsq_config_load(const char *path, dsq_v4_config *out, char **warnings, dsq_err *err) {
    if (warnings) *warnings = NULL;
    char *text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(path, DSQ_CONFIG_MAX_BYTES, &text, &len, err));
    dsq_status s = dsq_config_parse(text, len, path, out, warnings, err);
    dsq_free(text);
    return s;
}

/* ---- derived per-block quantities ------------------------------------------------------------ */

int dsq_config_ratio(const dsq_v4_config *c, int block) {
    if (block < 0 || block >= c->n_compress_ratios) return 0;
    return c->compress_ratios[block];
}

dsq_attn_kind dsq_config_attn_kind(const dsq_v4_config *c, int block) {
    int r = dsq_config_ratio(c, block);
    return r == 0 ? DSQ_ATTN_SLIDING : r == CSA_RATIO ? DSQ_ATTN_CSA : DSQ_ATTN_HCA;
}

dsq_routing dsq_config_routing(const dsq_v4_config *c, int block) {
    /* spec §4.7 / pitfall 16: MTP blocks (block >= n_layers) are never hash layers. */
    return block < c->n_hash_layers && block < c->n_layers ? DSQ_ROUTE_HASH : DSQ_ROUTE_SCORE;
}

const char *dsq_attn_kind_name(dsq_attn_kind k) {
    switch (k) {
    case DSQ_ATTN_SLIDING:
        return "sliding";
    case DSQ_ATTN_CSA:
        return "CSA";
    case DSQ_ATTN_HCA:
        return "HCA";
    }
    return "?";
}

const char *dsq_routing_name(dsq_routing r) { return r == DSQ_ROUTE_HASH ? "hash" : "score"; }

/* ---- KV cache (spec §6) ------------------------------------------------------------------------ */

void dsq_config_kv_bytes(const dsq_v4_config *c, dsq_kv_bytes *out) {
    memset(out, 0, sizeof *out);
    uint64_t hd = (uint64_t)c->head_dim, rd = (uint64_t)c->rope_head_dim, ihd = (uint64_t)c->index_head_dim;
    uint64_t nd = hd - rd;
    /* Compact entry: rope dims in bf16, non-rope dims e4m3 + one E8M0 scale per 64 (spec §6.1);
     * indexer key: packed e2m1 + one E8M0 scale per 32. */
    uint64_t kv_compact = rd * 2 + nd + dsq_ceil_div(nd, KV_FP8_BLOCK);
    uint64_t idx_compact = ihd / 2 + dsq_ceil_div(ihd, FP4_BLOCK);
    uint64_t kv_bf16 = hd * 2, idx_bf16 = ihd * 2;
    int blocks = c->n_layers + c->n_mtp_layers;
    for (int b = 0; b < blocks; b++) {
        uint64_t r = (uint64_t)dsq_config_ratio(c, b);
        uint64_t W = (uint64_t)c->window_size;
        out->fixed_compact += W * kv_compact;
        out->fixed_bf16 += W * kv_bf16;
        if (r == 0) continue;
        /* Compressor states, f32 KV + SC (spec §6.1): overlap [2r][2d], non-overlap [r][d]. */
        uint64_t state;
        if (r == CSA_RATIO) {
            state = 2 * (2 * r) * (2 * hd) * 4 + 2 * (2 * r) * (2 * ihd) * 4;
            out->per_token_compact += (double)(kv_compact + idx_compact) / (double)r;
            out->per_token_bf16 += (double)(kv_bf16 + idx_bf16) / (double)r;
        } else {
            state = 2 * r * hd * 4;
            out->per_token_compact += (double)kv_compact / (double)r;
            out->per_token_bf16 += (double)kv_bf16 / (double)r;
        }
        out->fixed_compact += state;
        out->fixed_bf16 += state;
    }
}

static const struct {
    const char *encoding, *kv, *index;
} kv_layouts[] = {
    {"bf16", "kv_bf16", "index_bf16"},   {"compact", "kv_compact", "index_fp4"},
    {"fp4", "kv_fp4", "index_fp4"},      {"int4", "kv_int4", "index_fp4"},
    {"compact-idx8", "kv_compact", "index_fp8"},
};

const char *dsq_config_kv_encoding_name(const char *encoding) {
    for (size_t i = 0; encoding && i < sizeof kv_layouts / sizeof kv_layouts[0]; i++)
        if (!strcmp(encoding, kv_layouts[i].encoding)) return kv_layouts[i].encoding;
    return NULL;
}

bool dsq_config_kv_layout(const char *encoding, const char **kv_format, const char **index_format) {
    for (size_t i = 0; encoding && i < sizeof kv_layouts / sizeof kv_layouts[0]; i++)
        if (!strcmp(encoding, kv_layouts[i].encoding)) {
            if (kv_format) *kv_format = kv_layouts[i].kv;
            if (index_format) *index_format = kv_layouts[i].index;
            return true;
        }
    return false;
}

/* Entry formats (formats/spec/dsq.md §6.1): the rope part of a packed kv entry is bf16; scales are UE8M0
 * bytes except kv_int4's bf16 ones. */
uint64_t dsq_config_kv_format_bytes(const dsq_v4_config *c, const char *format) {
    uint64_t hd = (uint64_t)c->head_dim, rd = (uint64_t)c->rope_head_dim, ihd = (uint64_t)c->index_head_dim;
    uint64_t nd = hd - rd;
    if (!strcmp(format, "kv_bf16")) return hd * 2;
    if (!strcmp(format, "kv_compact")) return rd * 2 + nd + dsq_ceil_div(nd, KV_FP8_BLOCK);
    if (!strcmp(format, "kv_fp4")) return rd * 2 + dsq_ceil_div(nd, 2) + dsq_ceil_div(nd, FP4_BLOCK);
    if (!strcmp(format, "kv_int4")) return rd * 2 + dsq_ceil_div(nd, 2) + 2 * dsq_ceil_div(nd, FP4_BLOCK);
    if (!strcmp(format, "index_bf16")) return ihd * 2;
    if (!strcmp(format, "index_fp4")) return dsq_ceil_div(ihd, 2) + dsq_ceil_div(ihd, FP4_BLOCK);
    if (!strcmp(format, "index_fp8")) return ihd + dsq_ceil_div(ihd, FP4_BLOCK);
    return 0;
}

double dsq_config_kv_per_token(const dsq_v4_config *c, const char *encoding) {
    const char *kf = NULL, *xf = NULL;
    if (!dsq_config_kv_layout(encoding, &kf, &xf)) return NAN;
    uint64_t kvb = dsq_config_kv_format_bytes(c, kf), ib = dsq_config_kv_format_bytes(c, xf);
    double bpt = 0;
    for (int b = 0; b < c->n_layers + c->n_mtp_layers; b++) {
        uint64_t r = (uint64_t)dsq_config_ratio(c, b);
        if (r == 0) continue;
        bpt += (double)(r == CSA_RATIO ? kvb + ib : kvb) / (double)r;
    }
    return bpt;
}
