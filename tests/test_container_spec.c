/* formats/spec/dsq.md and lib/format/dsq.h agree: every table of the spec (header fields, limits,
 * section kinds, dtypes, encodings and their parts, record and source fields) is parsed here and
 * checked against the header's constants and dsq_file_encoding_layout (STYLE.md §7). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "dsq.h"
#include "dsq_test.h"

#define SPEC "formats/spec/dsq.md"
#define MAX_ROWS 64
#define MAX_CELLS 12

typedef struct table {
    int rows;
    char cell[MAX_ROWS][MAX_CELLS][128];
} table;

static void trim_cell(char *s) {
    char *a = s;
    while (*a == ' ' || *a == '`') a++;
    size_t n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '`')) n--;
    memmove(s, a, n);
    s[n] = 0;
}

/* The table whose header row begins with `header` (e.g. "| offset | size | field |"), after the
 * first line containing `after` (to tell apart tables with the same header). */
static void find_table(const char *spec, const char *after, const char *header, table *t) {
    memset(t, 0, sizeof *t);
    const char *p = strstr(spec, after);
    assert_non_null(p);
    p = strstr(p, header);
    if (!p) fail_msg("spec table '%s' after '%s' not found", header, after);
    p = strchr(p, '\n') + 1;  /* skip header */
    p = strchr(p, '\n') + 1;  /* skip |---| */
    while (*p == '|' && t->rows < MAX_ROWS) {
        const char *end = strchr(p, '\n');
        int c = 0;
        const char *q = p + 1;
        while (q < end && c < MAX_CELLS) {
            const char *bar = memchr(q, '|', (size_t)(end - q));
            if (!bar) break;
            size_t n = (size_t)(bar - q);
            if (n > 127) n = 127;
            memcpy(t->cell[t->rows][c], q, n);
            t->cell[t->rows][c][n] = 0;
            trim_cell(t->cell[t->rows][c]);
            c++;
            q = bar + 1;
        }
        t->rows++;
        p = end + 1;
    }
    assert_true(t->rows > 0);
}

static char *spec_text(void) {
    size_t n;
    return dsq_test_read(SPEC, &n);
}

typedef struct named {
    const char *name;
    long long value;
} named;

static long long lookup(const named *tab, const char *name) {
    for (; tab->name; tab++)
        if (!strcmp(tab->name, name)) return tab->value;
    fail_msg("spec names '%s', which dsq.h does not define", name);
    return -1;
}

static void test_header_fields(void **state) {
    char *spec = spec_text();
    table t;
    find_table(spec, "## 2. Fixed header", "| offset | size | field |", &t);
    static const named fields[] = {
        {"magic", DSQ_FILE_HDR_MAGIC},
        {"version_major", DSQ_FILE_HDR_VERSION_MAJOR},
        {"version_minor", DSQ_FILE_HDR_VERSION_MINOR},
        {"header_bytes", DSQ_FILE_HDR_HEADER_BYTES},
        {"required_flags", DSQ_FILE_HDR_REQUIRED_FLAGS},
        {"file_bytes", DSQ_FILE_HDR_FILE_BYTES},
        {"data_offset", DSQ_FILE_HDR_DATA_OFFSET},
        {"data_bytes", DSQ_FILE_HDR_DATA_BYTES},
        {"directory_offset", DSQ_FILE_HDR_DIRECTORY_OFFSET},
        {"section_count", DSQ_FILE_HDR_SECTION_COUNT},
        {"section_entry_bytes", DSQ_FILE_HDR_SECTION_ENTRY_BYTES},
        {"directory_xxh3", DSQ_FILE_HDR_DIRECTORY_XXH3},
        {"align_small", DSQ_FILE_HDR_ALIGN_SMALL},
        {"align_large", DSQ_FILE_HDR_ALIGN_LARGE},
        {"large_threshold", DSQ_FILE_HDR_LARGE_THRESHOLD},
        {"reserved", DSQ_FILE_HDR_RESERVED},
        {"header_xxh3", DSQ_FILE_HDR_HEADER_XXH3},
        {NULL, 0},
    };
    long long next = 0;
    for (int r = 0; r < t.rows; r++) {
        long long off = atoll(t.cell[r][0]), size = atoll(t.cell[r][1]);
        assert_int_equal(off, next); /* fields tile the header */
        assert_int_equal(lookup(fields, t.cell[r][2]), off);
        next = off + size;
    }
    assert_int_equal(next, DSQ_FILE_HEADER_BYTES);
    /* the magic bytes quoted in the table */
    assert_non_null(strstr(t.cell[0][3], "89 44 53 51 0D 0A 1A 0A"));
    assert_memory_equal(DSQ_FILE_MAGIC, "\x89\x44\x53\x51\x0d\x0a\x1a\x0a", 8);
    free(spec);
}

static void test_limits(void **state) {
    char *spec = spec_text();
    table t;
    find_table(spec, "## 4. Limits", "| constant | value |", &t);
    static const named limits[] = {
        {"DSQ_FILE_MAX_SECTION", DSQ_FILE_MAX_SECTION}, {"DSQ_FILE_MAX_SECTIONS", DSQ_FILE_MAX_SECTIONS},
        {"DSQ_FILE_MAX_RANK", DSQ_FILE_MAX_RANK},       {"DSQ_FILE_MAX_NAME", DSQ_FILE_MAX_NAME},
        {"DSQ_FILE_MIN_ALIGN", DSQ_FILE_MIN_ALIGN},     {"DSQ_FILE_MAX_ALIGN", DSQ_FILE_MAX_ALIGN},
        {"DSQ_FILE_MAX_PARTS", DSQ_FILE_MAX_PARTS},     {"DSQ_FILE_MIN_RECORD", DSQ_FILE_MIN_RECORD},
        {NULL, 0},
    };
    assert_int_equal(t.rows, 8);
    for (int r = 0; r < t.rows; r++) assert_int_equal(lookup(limits, t.cell[r][0]), atoll(t.cell[r][1]));
    /* the task's named limits: metadata ≤ 100 MB, rank ≤ 8, names ≤ 512, alignment ≤ 1 MiB */
    assert_int_equal(DSQ_FILE_MAX_SECTION, 100000000);
    assert_int_equal(DSQ_FILE_MAX_RANK, 8);
    assert_int_equal(DSQ_FILE_MAX_NAME, 512);
    assert_int_equal(DSQ_FILE_MAX_ALIGN, 1 << 20);
    free(spec);
}

static void test_sections_and_dtypes(void **state) {
    char *spec = spec_text();
    table t;
    find_table(spec, "## 3. Section directory", "| offset | size | field | rule |", &t);
    static const int entry_offsets[] = {0, 4, 8, 16, 24, 32, 40};
    assert_int_equal(t.rows, 7);
    for (int r = 0; r < t.rows; r++) assert_int_equal(atoi(t.cell[r][0]), entry_offsets[r]);
    assert_int_equal(atoi(t.cell[6][0]) + atoi(t.cell[6][1]), DSQ_FILE_SECTION_ENTRY_BYTES);
    find_table(spec, "Section kinds:", "| kind | name |", &t);
    static const named kinds[] = {{"METADATA", DSQ_FILE_SECTION_METADATA}, {"TENSOR_TABLE", DSQ_FILE_SECTION_TENSOR_TABLE},
                                  {NULL, 0}};
    assert_int_equal(t.rows, 2);
    for (int r = 0; r < t.rows; r++) assert_int_equal(lookup(kinds, t.cell[r][1]), atoll(t.cell[r][0]));
    find_table(spec, "Element types", "| dtype | value | bytes |", &t);
    static const named dtypes[] = {{"F32", DSQ_FILE_DTYPE_F32},         {"F16", DSQ_FILE_DTYPE_F16},
                                   {"BF16", DSQ_FILE_DTYPE_BF16},       {"F8_E4M3", DSQ_FILE_DTYPE_F8_E4M3},
                                   {"F8_E8M0", DSQ_FILE_DTYPE_F8_E8M0}, {"I8", DSQ_FILE_DTYPE_I8},
                                   {"U8", DSQ_FILE_DTYPE_U8},           {"I32", DSQ_FILE_DTYPE_I32},
                                   {"I64", DSQ_FILE_DTYPE_I64},         {NULL, 0}};
    assert_int_equal(t.rows, 9);
    for (int r = 0; r < t.rows; r++) assert_int_equal(lookup(dtypes, t.cell[r][0]), atoll(t.cell[r][1]));
    free(spec);
}

static const char *dtype_name(int d) {
    switch (d) {
    case DSQ_FILE_DTYPE_F32: return "F32";
    case DSQ_FILE_DTYPE_F16: return "F16";
    case DSQ_FILE_DTYPE_BF16: return "BF16";
    case DSQ_FILE_DTYPE_F8_E4M3: return "F8_E4M3";
    case DSQ_FILE_DTYPE_F8_E8M0: return "F8_E8M0";
    case DSQ_FILE_DTYPE_I8: return "I8";
    case DSQ_FILE_DTYPE_U8: return "U8";
    case DSQ_FILE_DTYPE_I32: return "I32";
    case DSQ_FILE_DTYPE_I64: return "I64";
    }
    return "?";
}

/* First word of a "DTYPE, size" cell, or "" for "—". */
static void cell_dtype(const char *cell, char *out) {
    size_t n = 0;
    while (cell[n] && cell[n] != ',' && cell[n] != ' ' && n < 31) n++;
    memcpy(out, cell, n);
    out[n] = 0;
    if (!strcmp(out, "—")) out[0] = 0;
}

static void test_encodings(void **state) {
    char *spec = spec_text();
    table t;
    find_table(spec, "### 5.3 Encodings", "| value | name | rank |", &t);
    static const named encs[] = {
        {"F32", DSQ_FILE_ENC_F32},           {"F16", DSQ_FILE_ENC_F16},
        {"BF16", DSQ_FILE_ENC_BF16},         {"FP8_B128", DSQ_FILE_ENC_FP8_B128},
        {"FP8_B128_F32", DSQ_FILE_ENC_FP8_B128_F32}, {"FP8_R128", DSQ_FILE_ENC_FP8_R128},
        {"FP8_ROW", DSQ_FILE_ENC_FP8_ROW},   {"MXFP4", DSQ_FILE_ENC_MXFP4},
        {"NVFP4", DSQ_FILE_ENC_NVFP4},       {"INT8_ROW", DSQ_FILE_ENC_INT8_ROW},
        {"INT8_G", DSQ_FILE_ENC_INT8_G},     {"INT4_G", DSQ_FILE_ENC_INT4_G},
        {"INT4_G_ASYM", DSQ_FILE_ENC_INT4_G_ASYM}, {"I64", DSQ_FILE_ENC_I64},
        {"I32", DSQ_FILE_ENC_I32},           {"INT2_G_ASYM", DSQ_FILE_ENC_INT2_G_ASYM},
        {"FP8_R128_F32", DSQ_FILE_ENC_FP8_R128_F32}, {"FP8_ROW_E8M0", DSQ_FILE_ENC_FP8_ROW_E8M0},
        {"Q2_K", DSQ_FILE_ENC_Q2_K},         {"Q3_K", DSQ_FILE_ENC_Q3_K},
        {"Q4_K", DSQ_FILE_ENC_Q4_K},         {"Q5_K", DSQ_FILE_ENC_Q5_K},
        {"Q6_K", DSQ_FILE_ENC_Q6_K},         {"IQ4_XS", DSQ_FILE_ENC_IQ4_XS},
        {NULL, 0},
    };
    assert_int_equal(t.rows, DSQ_FILE_ENC_MAX);
    for (int r = 0; r < t.rows; r++) {
        long long v = atoll(t.cell[r][0]);
        assert_int_equal(lookup(encs, t.cell[r][1]), v);
        /* a block the row allows: "0 × 0", "1 × 32", "1 × 16", "1 × 0", else 1 × 32 or 128 × 128 */
        uint32_t br = 1, bc = 32;
        const char *blk = t.cell[r][3];
        if (!strncmp(blk, "0 × 0", strlen("0 × 0"))) br = bc = 0;
        else if (!strncmp(blk, "1 × 0", strlen("1 × 0"))) bc = 0;
        else if (!strncmp(blk, "1 × 16", strlen("1 × 16"))) bc = 16;
        else if (!strncmp(blk, "br × bc", strlen("br × bc"))) br = bc = 128;
        else if (!strncmp(blk, "1 × 256", strlen("1 × 256"))) bc = 256;
        uint64_t shape[3] = {2, 200, bc == 256 ? 512 : 96}; /* k-quants: whole 256-column super-blocks */
        dsq_file_part_layout parts[DSQ_FILE_MAX_PARTS];
        int n = dsq_file_encoding_layout((uint32_t)v, 3, shape, br, bc, parts);
        assert_true(n >= 1);
        int col = 4, want = 0;
        for (int k = 0; k < 4; k++, col++) {
            char d[32];
            cell_dtype(t.cell[r][col], d);
            if (!d[0]) continue;
            static const int kinds[] = {DSQ_FILE_PART_DATA, DSQ_FILE_PART_SCALES, DSQ_FILE_PART_MINS,
                                        DSQ_FILE_PART_TENSOR_SCALE};
            assert_true(want < n);
            assert_int_equal(parts[want].kind, kinds[k]);
            assert_string_equal(dtype_name(parts[want].dtype), d);
            want++;
        }
        assert_int_equal(want, n);
        /* rank 1 is allowed only where the table says 0–8 */
        uint64_t v1 = 96;
        int n1 = dsq_file_encoding_layout((uint32_t)v, 1, &v1, br, bc, parts);
        assert_int_equal(n1 > 0, !strcmp(t.cell[r][2], "0–8"));
    }
    /* sizes for [2, 200, 96]: N = 38400, FP8 128x128 → 2·2·1 scales, MXFP4 → 19200 + 2·200·3 */
    uint64_t shape[3] = {2, 200, 96};
    dsq_file_part_layout p[DSQ_FILE_MAX_PARTS];
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_FP8_B128, 3, shape, 128, 128, p), 2);
    assert_int_equal(p[0].bytes, 38400);
    assert_int_equal(p[1].bytes, 4);
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_MXFP4, 3, shape, 1, 32, p), 2);
    assert_int_equal(p[0].bytes, 19200);
    assert_int_equal(p[1].bytes, 1200);
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_INT2_G_ASYM, 3, shape, 1, 64, p), 3);
    assert_int_equal(p[0].bytes, 2 * 200 * 24);
    assert_int_equal(p[1].bytes, 2 * 200 * 2 * 2);
    assert_int_equal(dsq_file_encoding_layout(99, 3, shape, 1, 64, p), -1);
    /* k-quants: one U8 DATA part of 256-value super-blocks; columns must be whole super-blocks */
    uint64_t kshape[3] = {2, 200, 512};
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_Q4_K, 3, kshape, 1, 256, p), 1);
    assert_int_equal(p[0].bytes, 2 * 200 * 2 * 144);
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_Q2_K, 3, kshape, 1, 256, p), 1);
    assert_int_equal(p[0].bytes, 2 * 200 * 2 * 84);
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_Q6_K, 3, shape, 1, 256, p), -3); /* 96 columns */
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_Q6_K, 3, kshape, 1, 32, p), -3);
    uint64_t huge[2] = {UINT64_MAX / 2, 3};
    assert_int_equal(dsq_file_encoding_layout(DSQ_FILE_ENC_F32, 2, huge, 0, 0, p), -5);
    free(spec);
}

static void test_records(void **state) {
    char *spec = spec_text();
    table t;
    find_table(spec, "### 5.1 Tensor record", "| offset | size | field | rule |", &t);
    static const named rec[] = {
        {"record_bytes", DSQ_FILE_REC_RECORD_BYTES}, {"name_bytes", DSQ_FILE_REC_NAME_BYTES},
        {"encoding", DSQ_FILE_REC_ENCODING},         {"rank", DSQ_FILE_REC_RANK},
        {"part_count", DSQ_FILE_REC_PART_COUNT},     {"flags", DSQ_FILE_REC_FLAGS},
        {"source_count", DSQ_FILE_REC_SOURCE_COUNT}, {"block_rows", DSQ_FILE_REC_BLOCK_ROWS},
        {"block_cols", DSQ_FILE_REC_BLOCK_COLS},     {"reserved", DSQ_FILE_REC_RESERVED},
        {"shape", DSQ_FILE_REC_SHAPE},               {NULL, 0},
    };
    int checked = 0;
    for (int r = 0; r < t.rows; r++) {
        if (!isdigit((unsigned char)t.cell[r][0][0])) continue; /* "…" rows: variable part */
        assert_int_equal(lookup(rec, t.cell[r][2]), atoll(t.cell[r][0]));
        checked++;
    }
    assert_int_equal(checked, 11);
    find_table(spec, "### 5.2 Part", "| offset | size | field | rule |", &t);
    assert_int_equal(atoi(t.cell[t.rows - 1][0]) + atoi(t.cell[t.rows - 1][1]), DSQ_FILE_PART_BYTES);
    find_table(spec, "### 5.4 Source record", "| offset | size | field | rule |", &t);
    static const named src[] = {
        {"start", DSQ_FILE_SRC_START},           {"count", DSQ_FILE_SRC_COUNT},
        {"squeeze", DSQ_FILE_SRC_SQUEEZE},       {"dtype", DSQ_FILE_SRC_DTYPE},
        {"scale_dtype", DSQ_FILE_SRC_SCALE_DTYPE}, {"reserved", -1},
        {"name_bytes", DSQ_FILE_SRC_NAME_BYTES}, {"scale_name_bytes", DSQ_FILE_SRC_SCALE_NAME_BYTES},
        {"shard", DSQ_FILE_SRC_SHARD},           {"xxh3", DSQ_FILE_SRC_XXH3},
        {"scale_xxh3", DSQ_FILE_SRC_SCALE_XXH3}, {"name, scale_name", DSQ_FILE_SRC_NAMES},
        {NULL, 0},
    };
    for (int r = 0; r < t.rows; r++) {
        long long v = lookup(src, t.cell[r][2]);
        if (v >= 0) assert_int_equal(v, atoll(t.cell[r][0]));
    }
    assert_int_equal(DSQ_FILE_SRC_NAMES, DSQ_FILE_SOURCE_FIXED_BYTES);
    find_table(spec, "## 5. Tensor table", "| offset | size | field | rule |", &t);
    assert_int_equal(atoi(t.cell[t.rows - 1][0]) + atoi(t.cell[t.rows - 1][1]), DSQ_FILE_TABLE_HEADER_BYTES);
    free(spec);
}

/* dsq.h stands alone: a C99 program including nothing else compiles pedantically and runs. */
static void test_header_standalone(void **state) {
    char *dir = dsq_test_tmpdir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "printf '#include \"dsq.h\"\\nint main(void){dsq_file_header h; uint8_t b[128]={0}; dsq_file_part_layout p[4]; "
             "uint64_t s[2]={4,64}; memcpy(b, DSQ_FILE_MAGIC, 8); return dsq_file_header_decode(b,&h) + "
             "(dsq_file_encoding_layout(DSQ_FILE_ENC_MXFP4,2,s,1,32,p) == 2 && p[0].bytes == 128 && p[1].bytes == 8 ? 0 : 1);}\\n' "
             "| %s -std=c99 -pedantic-errors -Wall -Wextra -Werror -Ilib/format -x c - -o '%s/h' && '%s/h'",
             getenv("CC") ? getenv("CC") : "cc", dir, dir);
    assert_int_equal(system(cmd), 0);
    dsq_test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_fields), cmocka_unit_test(test_limits), cmocka_unit_test(test_sections_and_dtypes),
        cmocka_unit_test(test_encodings),     cmocka_unit_test(test_records),
        cmocka_unit_test(test_header_standalone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
