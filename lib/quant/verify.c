/* dsq verify: a container's checksums and metadata, and its fidelity to the source checkpoint. */
#define XXH_STATIC_LINKING_ONLY
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "dsq_codec.h"
#include "dsq_config.h"
#include "dsq_convert.h"
#include "dsq_inventory.h"
#include "dsq_json.h"

/* Views into read-only mappings are dropped from the resident set as they are consumed. */
#define DROP_CHUNK ((size_t)64 << 20)
static void drop_pages(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1), b = (uintptr_t)p + n;
    if (n) madvise((void *)a, b - a, MADV_DONTNEED);
}

static uint64_t hash_dropping(const void *p, uint64_t n) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done > DROP_CHUNK ? DROP_CHUNK : (size_t)(n - done);
        XXH3_64bits_update(&st, (const uint8_t *)p + done, k);
        drop_pages((const uint8_t *)p + done, k);
        done += k;
    }
    return (uint64_t)XXH3_64bits_digest(&st);
}

/* dsq_codec_compare over row chunks of ≤ 64 MiB of the reference, merging the statistics. */
static dsq_status compare_chunked(const dsq_qtensor *ref, const dsq_qtensor *test, const dsq_codec_options *co,
                                  dsq_codec_errstats *out, dsq_err *err) {
    dsq_codec_layout lr, lt;
    DSQ_TRY(dsq_codec_layout_of(ref->enc, ref->rows, ref->cols, ref->group, &lr, err));
    DSQ_TRY(dsq_codec_layout_of(test->enc, test->rows, test->cols, test->group, &lt, err));
    uint64_t step = 128;
    while (step * 2 * lr.row_bytes <= DROP_CHUNK && step < ref->rows) step *= 2;
    memset(out, 0, sizeof *out);
    for (uint64_t r0 = 0; r0 < ref->rows; r0 += step) {
        uint64_t n = ref->rows - r0 < step ? ref->rows - r0 : step;
        dsq_qtensor a = *ref, b = *test;
        a.rows = b.rows = n;
        a.data = (const uint8_t *)ref->data + r0 * lr.row_bytes;
        b.data = (const uint8_t *)test->data + r0 * lt.row_bytes;
        uint64_t ra = lr.block_rows ? r0 / lr.block_rows : 0, rb = lt.block_rows ? r0 / lt.block_rows : 0;
        uint64_t sra = lr.scale_cols * (uint64_t)lr.scale_size, srb = lt.scale_cols * (uint64_t)lt.scale_size;
        if (ref->scales) a.scales = (const uint8_t *)ref->scales + ra * sra;
        if (test->scales) b.scales = (const uint8_t *)test->scales + rb * srb;
        if (ref->mins) a.mins = (const uint8_t *)ref->mins + ra * lr.scale_cols * (uint64_t)lr.min_size;
        if (test->mins) b.mins = (const uint8_t *)test->mins + rb * lt.scale_cols * (uint64_t)lt.min_size;
        dsq_codec_errstats e;
        DSQ_TRY(dsq_codec_compare(&a, &b, co, &e, err));
        out->n += e.n;
        out->sum_sq_ref += e.sum_sq_ref;
        out->sum_sq_test += e.sum_sq_test;
        out->sum_sq_diff += e.sum_sq_diff;
        out->dot += e.dot;
        if (e.max_abs > out->max_abs) out->max_abs = e.max_abs;
        drop_pages(a.data, (size_t)(n * lr.row_bytes));
        drop_pages(b.data, (size_t)(n * lt.row_bytes));
    }
    return DSQ_OK;
}

#define NOTE(expr)                                                                                                     \
    do {                                                                                                               \
        dsq_status s_ = (expr);                                                                                        \
        if (s_ != DSQ_OK && first == DSQ_OK) first = s_;                                                               \
    } while (0)

/* The encoding a checkpoint stores a (weight dtype, scale dtype) pair in (spec §3), or 0. */
static dsq_encoding natural_encoding(int dtype, int scale_dtype) {
    switch (dtype) {
    case DSQ_DTYPE_F32: return scale_dtype < 0 ? DSQ_ENC_F32 : 0;
    case DSQ_DTYPE_F16: return scale_dtype < 0 ? DSQ_ENC_F16 : 0;
    case DSQ_DTYPE_BF16: return scale_dtype < 0 ? DSQ_ENC_BF16 : 0;
    case DSQ_DTYPE_I64: return scale_dtype < 0 ? DSQ_ENC_I64 : 0;
    case DSQ_DTYPE_I32: return scale_dtype < 0 ? DSQ_ENC_I32 : 0;
    case DSQ_DTYPE_F8_E4M3:
        return scale_dtype == DSQ_DTYPE_F8_E8M0 ? DSQ_ENC_FP8_B128 : scale_dtype == DSQ_DTYPE_F32 ? DSQ_ENC_FP8_B128_F32 : 0;
    case DSQ_DTYPE_I8: return scale_dtype == DSQ_DTYPE_F8_E8M0 ? DSQ_ENC_MXFP4 : 0;
    case DSQ_DTYPE_U8: /* MXFP4, or ModelOpt NVFP4 (dsq_modelopt.h) with an F8_E4M3 weight_scale */
        return scale_dtype == DSQ_DTYPE_F8_E8M0 ? DSQ_ENC_MXFP4 : scale_dtype == DSQ_DTYPE_F8_E4M3 ? DSQ_ENC_NVFP4 : 0;
    }
    return 0;
}

/* ModelOpt NVFP4: the 4 bytes of the checkpoint's STEM.weight_scale_2 equal the stored tensor scale
 * part `ts` of source s (false when the checkpoint lacks it). */
static bool same_modelopt_scale(const dsq_st *st, const dsq_ctr_source *s, const uint8_t *ts) {
    char name[640];
    size_t n = strlen(s->name);
    if (n < 7 || n > 600 || strcmp(s->name + n - 7, ".weight") != 0) return false;
    memcpy(name, s->name, n - 7);
    strcpy(name + n - 7, ".weight_scale_2");
    const dsq_st_tensor *g = dsq_st_find(st, name);
    bool same = g && g->n_bytes == 4 && g->data && memcmp(g->data, ts, 4) == 0;
    if (g) dsq_st_release(st, g);
    return same;
}

/* Logical shape of source s inside t (the slice, without the squeezed axis). */
static int source_shape(const dsq_ctr_tensor *t, const dsq_ctr_source *s, uint64_t *shape) {
    if (t->rank == 0) return 0;
    int r = 0;
    if (!s->squeeze) shape[r++] = s->count;
    for (int d = 1; d < t->rank; d++) shape[r++] = t->shape[d];
    return r;
}

/* The config readers use (inspect, eval: metadata model.config, an object parsed as config.json);
 * files.config.json (what export writes back) must say the same. */
static dsq_status check_metadata(dsq_ctr_reader *r, dsq_v4_config *cfg, bool *have_cfg, dsq_err *err) {
    const char *f = dsq_ctr_path(r);
    size_t len;
    const char *text = dsq_ctr_metadata(r, &len);
    cJSON *m = NULL;
    *have_cfg = false;
    DSQ_TRY(dsq_json_parse(text, len, f, &m, err));
    dsq_status first = DSQ_OK;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(m, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "dsq") != 0)
        NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata: \"format\" is not \"dsq\"", f));
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "model"), "config");
    if (!cJSON_IsObject(mc)) {
        NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata has no model.config object (inspect and eval need it)", f));
    } else {
        char *ct = cJSON_PrintUnformatted(mc);
        dsq_status s = ct ? dsq_config_parse(ct, strlen(ct), "metadata model.config", cfg, NULL, err)
                          : dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", f);
        cJSON_free(ct);
        NOTE(s);
        *have_cfg = s == DSQ_OK;
    }
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files");
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(files, "config.json");
    if (cj && !cJSON_IsString(cj)) NOTE(dsq_err_set(err, DSQ_ERR_JSON, "%s: metadata: files.config.json is not a string", f));
    if (cJSON_IsString(cj)) {
        cJSON *fj = NULL;
        dsq_status s = dsq_json_parse(cj->valuestring, strlen(cj->valuestring), "metadata files.config.json", &fj, err);
        NOTE(s);
        if (s == DSQ_OK && cJSON_IsObject(mc) && !cJSON_Compare(fj, mc, true))
            NOTE(dsq_err_set(err, DSQ_ERR_CONFIG,
                             "%s: metadata: files.config.json and model.config disagree (export writes one, eval reads "
                             "the other)",
                             f));
        cJSON_Delete(fj);
    }
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(m, "kv_cache");
    if (*have_cfg) {
        const cJSON *enc = cJSON_GetObjectItemCaseSensitive(kv, "encoding");
        char *want = dsq_convert_kv_cache_json(cfg, cJSON_IsString(enc) ? enc->valuestring : NULL);
        cJSON *wj = NULL;
        if (!want || (dsq_json_parse(want, strlen(want), "kv", &wj, NULL) == DSQ_OK && !cJSON_Compare(wj, kv, true)))
            NOTE(dsq_err_set(err, DSQ_ERR_CONFIG, "%s: metadata: kv_cache does not match the config", f));
        cJSON_Delete(wj);
        dsq_free(want);
    }
    cJSON_Delete(m);
    return first;
}

/* The inventory the container's sources describe must be what the config expects, and every weight
 * the config expects must resolve as the readers look it up (a source record, else a stored name). */
static dsq_status check_inventory(dsq_ctr_reader *r, const dsq_v4_config *c, dsq_err *err) {
    dsq_tensor_desc *d = NULL;
    size_t n = 0;
    DSQ_TRY(dsq_ctr_describe_sources(r, &d, &n, err));
    dsq_status first = DSQ_OK;
    if (n) {
        dsq_inv_report rep;
        NOTE(dsq_inv_check(c, d, n, dsq_ctr_path(r), &rep, err));
    }
    dsq_free(d);
    dsq_inv *inv = NULL;
    DSQ_TRY(dsq_inv_expected(c, NULL, &inv, err));
    for (size_t i = 0; i < dsq_inv_count(inv); i++) {
        const char *name = dsq_inv_at(inv, i)->name;
        size_t len = strlen(name);
        if (len > 6 && !strcmp(name + len - 6, ".scale")) continue; /* folded into their weight's SCALES part */
        if (!dsq_ctr_find_source(r, name, NULL, NULL) && !dsq_ctr_find(r, name))
            NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: %s: no stored tensor or source record holds it", dsq_ctr_path(r),
                             name));
    }
    dsq_inv_free(inv);
    return first;
}

/* Whether `stored` is `src` without one dot-separated component equal to the decimal `idx`
 * ("P ffn.experts.w1.weight" from "P ffn.experts.5.w1.weight", idx 5). */
static bool stack_name_ok(const char *stored, const char *src, uint64_t idx) {
    char dec[24];
    int dl = snprintf(dec, sizeof dec, "%llu.", (unsigned long long)idx);
    size_t ls = strlen(stored), lc = strlen(src);
    if (lc != ls + (size_t)dl) return false;
    for (size_t i = 0; i <= ls; i++) {
        if ((i == 0 || src[i - 1] == '.') && !strncmp(src + i, dec, (size_t)dl) && !strcmp(src + i + dl, stored + i) &&
            !strncmp(src, stored, i))
            return true;
        if (i < ls && src[i] != stored[i]) break;
    }
    return false;
}

/* Whether `stored` is the fusion of the sources' names: common prefix and suffix (at dots), the
 * differing middles joined by '_' ("…compressor.wkv_wgate.weight" from "…wkv.weight" and "…wgate.weight"). */
static bool fused_name_ok(const char *stored, const dsq_ctr_tensor *t) {
    const char *a = t->sources[0].name;
    size_t pre = strlen(a), suf = strlen(a);
    for (uint32_t k = 1; k < t->n_sources; k++) {
        const char *b = t->sources[k].name;
        size_t i = 0, la = strlen(a), lb = strlen(b), j = 0;
        while (i < pre && a[i] && a[i] == b[i]) i++;
        pre = i;
        while (j < suf && j < la && j < lb && a[la - 1 - j] == b[lb - 1 - j]) j++;
        suf = j;
    }
    while (pre > 0 && a[pre - 1] != '.') pre--;
    size_t la = strlen(a);
    while (suf > 0 && a[la - suf] != '.') suf--;
    char want[2 * DSQ_FILE_MAX_NAME + 64];
    size_t w = 0;
    if (pre >= sizeof want) return false;
    memcpy(want, a, pre);
    w = pre;
    for (uint32_t k = 0; k < t->n_sources; k++) {
        const char *b = t->sources[k].name;
        size_t lb = strlen(b);
        if (lb < pre + suf) return false;
        size_t mid = lb - pre - suf;
        if (w + mid + 2 + suf >= sizeof want) return false;
        if (k) want[w++] = '_';
        memcpy(want + w, b + pre, mid);
        w += mid;
    }
    memcpy(want + w, a + la - suf, suf);
    w += suf;
    want[w] = 0;
    return !strcmp(want, stored);
}

/* Stored names agree with the source records (spec §5.5): a tensor holding one checkpoint tensor
 * whole keeps its name; a stack of squeezed sources drops the index component; a fusion joins the
 * differing components; no stored name is another tensor's source (the readers look names up as
 * sources first, so it would be unreachable or shadowed). */
static dsq_status check_names(const dsq_ctr_reader *r, dsq_err *err) {
    const char *f = dsq_ctr_path(r);
    dsq_status first = DSQ_OK;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i), *owner = NULL;
        if (dsq_ctr_find_source(r, t->name, &owner, NULL) && owner != t)
            NOTE(dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s: its name is a source of tensor %s", f, t->name,
                             owner->name));
        if (t->n_sources == 0) continue;
        const dsq_ctr_source *s = &t->sources[0];
        bool squeeze = s->squeeze, ok = true;
        for (uint32_t k = 1; k < t->n_sources; k++) ok = ok && t->sources[k].squeeze == squeeze;
        if (!ok) {
            NOTE(dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s: its sources mix stacked and row-range records", f,
                             t->name));
            continue;
        }
        const char *bad = NULL;
        if (squeeze) {
            for (uint32_t k = 0; k < t->n_sources && !bad; k++)
                if (!stack_name_ok(t->name, t->sources[k].name, t->sources[k].start)) bad = t->sources[k].name;
        } else if (t->n_sources == 1) {
            if (strcmp(t->name, s->name) != 0) bad = s->name;
        } else if (!fused_name_ok(t->name, t)) {
            bad = s->name;
        }
        if (bad)
            NOTE(dsq_err_set(err, DSQ_ERR_FORMAT,
                             "%s: tensor %s: stored name disagrees with its source record %s (formats/spec/dsq.md §5.5)",
                             f, t->name, bad));
    }
    return first;
}

/* NaN/Inf codes and scales: in verify's checksum pass (dsq_ctr_verify_with; one problem per part, the
 * pass moves on to the next part) and in export's copy (dsq_ctr_export_options.scan). */
dsq_status dsq_convert_scan_piece(void *ctx, const dsq_ctr_tensor *t, int p, uint64_t offset, const uint8_t *b,
                                  size_t n, dsq_err *err) {
    dsq_nonfinite_scan *c = ctx;
    dsq_nf_kind k = dsq_codec_part_nf_kind(t->encoding, (dsq_codec_part)t->parts[p].kind);
    if (k == DSQ_NF_NONE) return DSQ_OK;
    uint64_t at = dsq_codec_find_nonfinite(k, b, n);
    if (at == UINT64_MAX) return DSQ_OK;
    c->found++;
    at += offset / dsq_nf_kind_size(k);
    char en[40];
    return dsq_err_set(err, DSQ_ERR_NONFINITE,
                       "%s: tensor %s: %s element %llu is NaN or infinite (%s; --allow-nonfinite accepts it)",
                       c->path, t->name, dsq_ctr_part_kind_name(t->parts[p].kind), (unsigned long long)at,
                       dsq_ctr_tensor_encoding_name(t, en, sizeof en));
}

/* Add e to the comma-separated list unless already there (whole names: "fp8-row" is not in
 * "fp8-row-e8m0"). */
static void add_encoding(dsq_verify_family *f, const char *e) {
    size_t n = strlen(e);
    for (const char *p = f->encodings; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, e, n) == 0) return;
        p += len;
        if (*p == ',') p++;
    }
    if (strlen(f->encodings) + strlen(e) + 2 >= sizeof f->encodings) return;
    if (f->encodings[0]) strcat(f->encodings, ",");
    strcat(f->encodings, e);
}

/* Compare each source of t with the checkpoint. */
static dsq_status compare_source(const dsq_ctr_reader *r, const dsq_st *st, const dsq_ctr_tensor *t, uint32_t k,
                                 dsq_verify_report *rep, dsq_err *err);

/* Compare each source of t with the checkpoint, dropping the pages of both after each source so the
 * resident set stays at one source's bytes whatever the size of a stack. */
static dsq_status compare_tensor(const dsq_ctr_reader *r, const dsq_st *st, const dsq_ctr_tensor *t,
                                 dsq_verify_report *rep, dsq_err *err) {
    dsq_status first = DSQ_OK;
    for (uint32_t k = 0; k < t->n_sources; k++) {
        NOTE(compare_source(r, st, t, k, rep, err));
        const dsq_st_tensor *g = dsq_st_find(st, t->sources[k].name);
        const dsq_st_tensor *gs = t->sources[k].scale_name ? dsq_st_find(st, t->sources[k].scale_name) : NULL;
        if (g) dsq_st_release(st, g);
        if (gs) dsq_st_release(st, gs);
        dsq_ctr_release(r, t);
    }
    return first;
}

static dsq_status compare_source(const dsq_ctr_reader *r, const dsq_st *st, const dsq_ctr_tensor *t, uint32_t k,
                                 dsq_verify_report *rep, dsq_err *err) {
    const char *f = dsq_ctr_path(r);
    dsq_status first = DSQ_OK;
    do {
        const dsq_ctr_source *s = &t->sources[k];
        dsq_tensor_role role;
        dsq_inv_classify(s->name, &role);
        dsq_verify_family *fam = &rep->family[role.family < DSQ_VERIFY_FAMILIES ? role.family : DSQ_FAMILY_OTHER];
        fam->sources++;
        rep->sources++;
        const dsq_st_tensor *g = dsq_st_find(st, s->name), *gs = s->scale_name ? dsq_st_find(st, s->scale_name) : NULL;
        if (!g || (s->scale_name && !gs)) {
            NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s: source %s is not in the checkpoint", f, t->name,
                             g ? s->scale_name : s->name));
            continue;
        }
        if ((int)g->dtype != (int)s->dtype || (gs && (int)gs->dtype != s->scale_dtype)) {
            NOTE(dsq_err_set(err, DSQ_ERR_DTYPE, "%s: tensor %s: source %s has dtype %s in the checkpoint, %s recorded", f,
                             t->name, s->name, dsq_dtype_name(g->dtype), dsq_dtype_name(s->dtype)));
            continue;
        }
        uint64_t hw = hash_dropping(g->data, g->n_bytes);
        uint64_t hs = gs ? hash_dropping(gs->data, gs->n_bytes) : 0;
        if ((s->xxh3 && s->xxh3 != hw) || (gs && s->scale_xxh3 && s->scale_xxh3 != hs)) {
            rep->sources_changed++;
            NOTE(dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: source %s changed since the conversion (checksum differs)", f,
                             s->name));
        }
        dsq_encoding nat = natural_encoding((int)s->dtype, s->scale_dtype);
        uint64_t off[DSQ_FILE_MAX_PARTS] = {0}, len[DSQ_FILE_MAX_PARTS] = {0};
        for (int p = 0; p < t->n_parts; p++) dsq_ctr_source_slice(t, s, p, &off[p], &len[p]);
        if (nat == t->encoding) {
            bool same = len[0] == g->n_bytes && hash_dropping((const uint8_t *)t->parts[0].data + off[0], len[0]) == hw;
            if (gs) same = same && t->n_parts > 1 && len[1] == gs->n_bytes &&
                           hash_dropping((const uint8_t *)t->parts[1].data + off[1], len[1]) == hs;
            if (nat == DSQ_ENC_NVFP4)
                same = same && t->n_parts > 2 && len[2] == 4 &&
                       same_modelopt_scale(st, s, (const uint8_t *)t->parts[2].data + off[2]);
            if (same) {
                fam->identical++;
                rep->sources_identical++;
            } else {
                NOTE(dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: tensor %s: the bytes of source %s differ from the checkpoint",
                                 f, t->name, s->name));
            }
            continue;
        }
        /* re-encoded: numeric comparison, slab by slab */
        uint64_t shape[DSQ_FILE_MAX_RANK];
        int rank = source_shape(t, s, shape);
        uint64_t cols = rank ? shape[rank - 1] : 1, rows = 1;
        for (int d = 0; d + 1 < rank; d++) rows *= shape[d];
        dsq_qtensor ref = {nat, rows, cols, 0, g->data, gs ? gs->data : NULL, NULL, 0};
        dsq_qtensor test = {t->encoding, rows, cols, 0, (const uint8_t *)t->parts[0].data + off[0], NULL, NULL, 0};
        if (t->encoding == DSQ_ENC_INT8_G || t->encoding == DSQ_ENC_INT4_G || t->encoding == DSQ_ENC_INT4_G_ASYM ||
            t->encoding == DSQ_ENC_INT2_G_ASYM)
            test.group = (int)t->block_cols;
        for (int p = 1; p < t->n_parts; p++) {
            const uint8_t *ptr = (const uint8_t *)t->parts[p].data + off[p];
            if (t->parts[p].kind == DSQ_FILE_PART_SCALES) test.scales = ptr;
            else if (t->parts[p].kind == DSQ_FILE_PART_MINS) test.mins = ptr;
            else if (t->parts[p].kind == DSQ_FILE_PART_TENSOR_SCALE) memcpy(&test.tensor_scale, ptr, 4);
        }
        dsq_codec_errstats es;
        memset(&es, 0, sizeof es);
        dsq_codec_options co = {.allow_nonfinite = true, .name = s->name};
        dsq_status cs = nat ? compare_chunked(&ref, &test, &co, &es, err)
                            : dsq_err_set(err, DSQ_ERR_DTYPE, "%s: source %s: unknown stored form", f, s->name);
        if (cs != DSQ_OK) {
            NOTE(cs);
            continue;
        }
        double rel = dsq_codec_errstats_rel_rms(&es), cosv = dsq_codec_errstats_cosine(&es);
        if (fam->reencoded == 0 || rel > fam->max_rel_rms) fam->max_rel_rms = rel;
        if (fam->reencoded == 0 || cosv < fam->min_cosine) fam->min_cosine = cosv;
        if (es.max_abs > fam->max_abs) fam->max_abs = es.max_abs;
        fam->reencoded++;
        rep->sources_reencoded++;
        if (rel > rep->worst_rel_rms || rep->worst_name[0] == 0) {
            rep->worst_rel_rms = rel;
            snprintf(rep->worst_name, sizeof rep->worst_name, "%s", s->name);
        }
    } while (0);
    return first;
}

static dsq_status check_source(dsq_ctr_reader *r, const char *src, dsq_verify_report *rep, dsq_err *err) {
    dsq_st *st = NULL;
    DSQ_TRY(dsq_st_open(src, NULL, &st, err));
    rep->source_checked = true;
    dsq_status first = DSQ_OK;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        NOTE(compare_tensor(r, st, t, rep, err));
    }
    /* every checkpoint tensor is held by the container (as a weight or as its scale) */
    for (size_t i = 0; i < dsq_st_count(st); i++) {
        const dsq_st_tensor *g = dsq_st_at(st, i);
        const dsq_ctr_source *s;
        if (dsq_ctr_find_source(r, g->name, NULL, NULL)) continue;
        size_t n = strlen(g->name);
        bool held = false;
        if (n > 6 && n < 600 && !strcmp(g->name + n - 6, ".scale")) {
            char w[640];
            snprintf(w, sizeof w, "%.*s.weight", (int)(n - 6), g->name);
            held = dsq_ctr_find_source(r, w, NULL, &s) && s->scale_name && !strcmp(s->scale_name, g->name);
        }
        /* ModelOpt NVFP4: weight_scale is the recorded scale; weight_scale_2 the tensor scale part (compared
         * above); input_scale is not stored (docs/modelopt-nvfp4.md) */
        static const char *const mo[] = {".weight_scale", ".weight_scale_2", ".input_scale"};
        for (int q = 0; !held && q < 3; q++) {
            size_t k = strlen(mo[q]);
            if (n <= k || n >= 600 || strcmp(g->name + n - k, mo[q]) != 0) continue;
            char w[640];
            snprintf(w, sizeof w, "%.*s.weight", (int)(n - k), g->name);
            held = dsq_ctr_find_source(r, w, NULL, &s) && s->dtype == DSQ_DTYPE_U8 &&
                   s->scale_dtype == DSQ_DTYPE_F8_E4M3 && (q > 0 || (s->scale_name && !strcmp(s->scale_name, g->name)));
        }
        if (!held) {
            rep->checkpoint_missing++;
            NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: checkpoint tensor %s is not in the container", dsq_ctr_path(r),
                             g->name));
        }
    }
    dsq_st_close(st);
    return first;
}

dsq_status dsq_convert_verify(const dsq_verify_options *opt, dsq_verify_report *rep, dsq_err *err) {
    memset(rep, 0, sizeof *rep);
    dsq_ctr_reader *r = NULL;
    dsq_ctr_reader_options ro = {.no_mmap = opt->no_mmap && !opt->source};
    DSQ_TRY(dsq_ctr_reader_open(opt->path, &ro, &r, err));
    dsq_status first = DSQ_OK;
    const dsq_file_header *h = dsq_ctr_header(r);
    rep->tensors = dsq_ctr_count(r);
    rep->file_bytes = h->file_bytes;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        rep->parts += (uint64_t)t->n_parts;
        dsq_tensor_role role;
        dsq_inv_classify(t->n_sources ? t->sources[0].name : t->name, &role);
        dsq_verify_family *fam = &rep->family[role.family < DSQ_VERIFY_FAMILIES ? role.family : DSQ_FAMILY_OTHER];
        fam->tensors++;
        char en[32];
        bool grouped = t->encoding == DSQ_ENC_INT8_G || t->encoding == DSQ_ENC_INT4_G ||
                       t->encoding == DSQ_ENC_INT4_G_ASYM || t->encoding == DSQ_ENC_INT2_G_ASYM;
        add_encoding(fam, dsq_codec_name(t->encoding, grouped ? (int)t->block_cols : 0, en, sizeof en));
        for (int p = 0; p < t->n_parts; p++) rep->bytes += t->parts[p].bytes;
    }
    dsq_progress prog;
    dsq_progress_begin(&prog, "verify", rep->bytes);
    if (!opt->progress) prog.enabled = false;
    dsq_nonfinite_scan sc = {opt->path, 0};
    dsq_err local = DSQ_ERR_INIT, *e = err ? err : &local;
    size_t before = e->n;
    dsq_status s = dsq_ctr_verify_with(r, &prog, opt->allow_nonfinite ? NULL : dsq_convert_scan_piece, &sc, e);
    dsq_progress_end(&prog);
    rep->values_ok = sc.found == 0;
    rep->checksums_ok = e->n - before == sc.found; /* every other problem is a checksum or padding one */
    dsq_err_clear(&local);
    NOTE(s);
    s = check_names(r, err);
    rep->names_ok = s == DSQ_OK;
    NOTE(s);
    dsq_v4_config cfg;
    bool have_cfg = false;
    s = check_metadata(r, &cfg, &have_cfg, err);
    if (s == DSQ_OK && have_cfg) s = check_inventory(r, &cfg, err);
    rep->metadata_ok = s == DSQ_OK;
    NOTE(s);
    if (opt->source) NOTE(check_source(r, opt->source, rep, err));
    dsq_ctr_reader_close(r);
    return first;
}
