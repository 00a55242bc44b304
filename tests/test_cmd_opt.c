/* cmd/opt.c, the option parser every subcommand uses: each kind of value with its bounds, overflow,
 * signs, size suffixes, missing values, unknown options, duplicates, positional arguments; then the
 * CLI itself: every subcommand answers a bad option with one "dsq SUB: ..." line and exit status 2. */
#include <stdlib.h>
#include <string.h>

#include "dsq_test.h"
#include "opt.h"

enum { E_RED, E_GREEN, E_BLUE };
static const char *const colours[] = {"red", "green", "blue", NULL};

/* Every destination of the test table. */
typedef struct dests {
    bool flag, flag2;
    int i, neg, colour;
    uint32_t u32;
    uint64_t u64, size;
    double d, dpos;
    const char *str, *once;
    dsq_opt_list list;
    int fn_calls;
    const char *pos[3];
    int n_pos;
} dests;

/* A callback kind: "ok" is accepted, "fail" is a well-formed value that cannot be used, else bad. */
static dsq_opt_fn_result probe_fn(const char *v, void *dest, char *msg, size_t cap) {
    dests *d = dest;
    d->fn_calls++;
    if (!strcmp(v, "ok")) return DSQ_OPT_FN_OK;
    if (!strcmp(v, "fail")) {
        snprintf(msg, cap, "probe '%s' is not available here", v);
        return DSQ_OPT_FN_FAIL;
    }
    snprintf(msg, cap, "--probe must be ok, not '%s'", v);
    return DSQ_OPT_FN_BAD;
}

static dsq_opt_result run(dests *d, bool dash_is_option, char *msg, size_t cap, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "test";
    va_list ap;
    va_start(ap, cap);
    for (char *a; (a = va_arg(ap, char *)) && argc < 32;) argv[argc++] = a;
    va_end(ap);
    memset(d, 0, sizeof *d);
    dsq_opt shared[] = {
        DSQ_OPT_FLAG("--shared-flag", &d->flag2),
        DSQ_OPT_END,
    };
    dsq_opt more[] = {DSQ_OPT_MORE(shared), DSQ_OPT_END}; /* a table included twice over */
    dsq_opt opts[] = {
        DSQ_OPT_FLAG("--flag", &d->flag),
        DSQ_OPT_INT("--int", &d->i, 1, 1024),
        DSQ_OPT_INT("--neg", &d->neg, -10, 10),
        DSQ_OPT_U32("--u32", &d->u32, 0, UINT32_MAX),
        DSQ_OPT_U64("--u64", &d->u64, 0, UINT64_MAX),
        DSQ_OPT_SIZE("--size", &d->size, 1, UINT64_MAX),
        DSQ_OPT_DOUBLE("--double", &d->d, 0, 100, 0),
        DSQ_OPT_DOUBLE("--positive", &d->dpos, 0, UINT64_MAX, DSQ_OPT_GT_MIN),
        DSQ_OPT_STR("--str", &d->str),
        {"--once", DSQ_OPT_KIND_STR, &d->once, 0, 0, DSQ_OPT_ONCE, NULL, NULL, NULL, NULL},
        DSQ_OPT_LIST("--list", &d->list),
        DSQ_OPT_ENUM("--colour", &d->colour, colours),
        DSQ_OPT_FN("--probe", d, probe_fn),
        {"--ctx", DSQ_OPT_KIND_U32, &d->u32, 3, 4096, 0, NULL, NULL, NULL, "tokens per chunk"},
        DSQ_OPT_MORE(more),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "test",
                         .opts = opts,
                         .pos = d->pos,
                         .max_pos = 3,
                         .min_pos = 1,
                         .missing = "need INPUT",
                         .dash_is_option = dash_is_option};
    return dsq_opt_parse(&spec, argc, argv, &d->n_pos, msg, cap);
}

#define OK(...)                                                                                                        \
    do {                                                                                                               \
        dsq_opt_result r_ = run(&d, false, msg, sizeof msg, "in", __VA_ARGS__, (char *)NULL);                          \
        if (r_ != DSQ_OPT_OK) fail_msg("unexpected error: %s", msg);                                                   \
    } while (0)
/* The parse fails with result R and a message containing WANT. */
#define BAD(R, WANT, ...)                                                                                              \
    do {                                                                                                               \
        dsq_opt_result r_ = run(&d, false, msg, sizeof msg, "in", __VA_ARGS__, (char *)NULL);                          \
        assert_int_equal(r_, (R));                                                                                     \
        if (!strstr(msg, (WANT))) fail_msg("message '%s' lacks '%s'", msg, (WANT));                                    \
        dsq_opt_list_free(&d.list);                                                                                    \
    } while (0)

static void test_numbers(void **state) {
    (void)state;
    dests d;
    char msg[256];
    OK("--int", "1");
    assert_int_equal(d.i, 1);
    OK("--int", "1024");
    assert_int_equal(d.i, 1024);
    BAD(DSQ_OPT_USAGE, "--int needs an integer 1..1024, not '0'", "--int", "0");
    BAD(DSQ_OPT_USAGE, "not '1025'", "--int", "1025");
    BAD(DSQ_OPT_USAGE, "not '-1'", "--int", "-1");
    BAD(DSQ_OPT_USAGE, "not '99999999999999999999'", "--int", "99999999999999999999");
    BAD(DSQ_OPT_USAGE, "not '4294967297'", "--int", "4294967297"); /* would wrap to 1 as an int */
    BAD(DSQ_OPT_USAGE, "not '12abc'", "--int", "12abc");
    BAD(DSQ_OPT_USAGE, "not ''", "--int", "");
    BAD(DSQ_OPT_USAGE, "not ' 5'", "--int", " 5");
    BAD(DSQ_OPT_USAGE, "not '+5'", "--int", "+5");
    BAD(DSQ_OPT_USAGE, "not '0x10'", "--int", "0x10");
    OK("--neg", "-10");
    assert_int_equal(d.neg, -10);
    OK("--neg", "10");
    assert_int_equal(d.neg, 10);
    BAD(DSQ_OPT_USAGE, "--neg needs an integer -10..10, not '-11'", "--neg", "-11");
    BAD(DSQ_OPT_USAGE, "not '--5'", "--neg", "--5");

    OK("--u64", "18446744073709551615");
    assert_true(d.u64 == UINT64_MAX);
    OK("--u64", "0");
    assert_true(d.u64 == 0);
    BAD(DSQ_OPT_USAGE, "--u64 needs an unsigned integer, not '18446744073709551616'", "--u64", "18446744073709551616");
    BAD(DSQ_OPT_USAGE, "not '99999999999999999999'", "--u64", "99999999999999999999");
    BAD(DSQ_OPT_USAGE, "not '-1'", "--u64", "-1"); /* strtoull would take it as 2^64 - 1 */
    BAD(DSQ_OPT_USAGE, "not '-0'", "--u64", "-0");
    OK("--u32", "4294967295");
    assert_true(d.u32 == UINT32_MAX);
    BAD(DSQ_OPT_USAGE, "--u32 needs an unsigned integer, not '4294967296'", "--u32", "4294967296");
    BAD(DSQ_OPT_USAGE, "not '-1'", "--u32", "-1");
    /* a note says what the number is */
    BAD(DSQ_OPT_USAGE, "--ctx needs an integer 3..4096, not '2' (tokens per chunk)", "--ctx", "2");
    OK("--ctx", "4096");
    assert_int_equal(d.u32, 4096);
}

static void test_sizes(void **state) {
    (void)state;
    dests d;
    char msg[256];
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"1", 1},
        {"32M", 32ull << 20},
        {"2G", 2ull << 30},
        {"2g", 2ull << 30},
        {"1KiB", 1024},
        {"512kb", 512ull << 10},
        {"3MB", 3ull << 20},
        {"1T", 1ull << 40},
        {"16777215T", 16777215ull << 40},
        {"18446744073709551615", UINT64_MAX},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        OK("--size", good[k].s);
        if (d.size != good[k].v) fail_msg("--size %s gave %llu", good[k].s, (unsigned long long)d.size);
    }
    static const char *const bad[] = {
        "0",    "-1", "1Q", "1KK", "1 K", "M", "", "16777216T" /* 2^64 */, "17179869184G", "99999999999999999999",
        "1.5G", "1iB"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        dsq_opt_result r = run(&d, false, msg, sizeof msg, "in", "--size", bad[k], (char *)NULL);
        if (r != DSQ_OPT_USAGE) fail_msg("--size '%s' was accepted (%llu)", bad[k], (unsigned long long)d.size);
        assert_non_null(strstr(msg, "--size needs a size (bytes, K/M/G/T suffixes) ≥ 1"));
    }
}

static void test_doubles(void **state) {
    (void)state;
    dests d;
    char msg[256];
    OK("--double", "0.6");
    assert_true(d.d == 0.6);
    OK("--double", "0");
    assert_true(d.d == 0);
    OK("--double", "1e2");
    assert_true(d.d == 100);
    BAD(DSQ_OPT_USAGE, "--double needs a number ≥ 0 and ≤ 100, not '100.5'", "--double", "100.5");
    BAD(DSQ_OPT_USAGE, "not '-0.1'", "--double", "-0.1");
    static const char *const bad[] = {"nan", "inf", "-inf", "1e999", "0x10", "", "1,5", "0.5x", " 1"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        dsq_opt_result r = run(&d, false, msg, sizeof msg, "in", "--double", bad[k], (char *)NULL);
        if (r != DSQ_OPT_USAGE) fail_msg("--double '%s' was accepted (%g)", bad[k], d.d);
    }
    OK("--positive", "1e-9");
    assert_true(d.dpos == 1e-9);
    BAD(DSQ_OPT_USAGE, "--positive needs a number > 0, not '0'", "--positive", "0");
}

static void test_strings_lists_enums(void **state) {
    (void)state;
    dests d;
    char msg[256];
    /* a value is the next argument, whatever it looks like */
    OK("--str", "--flag");
    assert_string_equal(d.str, "--flag");
    assert_false(d.flag);
    OK("--str", "-");
    assert_string_equal(d.str, "-");
    /* the last value wins */
    OK("--str", "a", "--str", "b", "--int", "3", "--int", "4");
    assert_string_equal(d.str, "b");
    assert_int_equal(d.i, 4);
    /* a list keeps every value in order */
    OK("--list", "x", "--flag", "--list", "y", "--list", "x");
    assert_int_equal(d.list.n, 3);
    assert_string_equal(d.list.v[0], "x");
    assert_string_equal(d.list.v[1], "y");
    assert_string_equal(d.list.v[2], "x");
    assert_true(d.flag);
    dsq_opt_list_free(&d.list);
    assert_null(d.list.v);
    OK("--flag");
    assert_null(d.list.v);
    assert_int_equal(d.list.n, 0);

    OK("--colour", "blue");
    assert_int_equal(d.colour, E_BLUE);
    OK("--colour", "red");
    assert_int_equal(d.colour, E_RED);
    BAD(DSQ_OPT_USAGE, "--colour must be red, green or blue, not 'Red'", "--colour", "Red");

    OK("--probe", "ok");
    assert_int_equal(d.fn_calls, 1);
    BAD(DSQ_OPT_USAGE, "--probe must be ok, not 'x'", "--probe", "x");
    BAD(DSQ_OPT_FAIL, "probe 'fail' is not available here", "--probe", "fail");
}

static void test_errors(void **state) {
    (void)state;
    dests d;
    char msg[256];
    BAD(DSQ_OPT_USAGE, "unknown option '--bogus'", "--bogus");
    BAD(DSQ_OPT_USAGE, "unknown option '-x'", "-x");
    BAD(DSQ_OPT_USAGE, "unknown option '--int=3'", "--int=3");
    /* a missing value, for every kind that takes one */
    static const char *const valued[] = {"--int", "--u32",  "--u64",    "--size", "--double",
                                         "--str", "--list", "--colour", "--probe"};
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
        char want[64];
        snprintf(want, sizeof want, "%s needs a value", valued[k]);
        BAD(DSQ_OPT_USAGE, want, "--flag", valued[k]);
    }
    /* a duplicate: refused only where the entry says so */
    OK("--flag", "--flag");
    BAD(DSQ_OPT_USAGE, "--once given more than once", "--once", "a", "--once", "a");
    OK("--once", "a");
    assert_string_equal(d.once, "a");
    /* an option of an included table */
    OK("--shared-flag");
    assert_true(d.flag2);
    /* the first error stops the parse: no later option is applied */
    BAD(DSQ_OPT_USAGE, "unknown option '--nope'", "--nope", "--flag");
    assert_false(d.flag);
}

static void test_positionals(void **state) {
    (void)state;
    dests d;
    char msg[256];
    OK("--flag", "b", "--int", "2", "c");
    assert_int_equal(d.n_pos, 3);
    assert_string_equal(d.pos[0], "in");
    assert_string_equal(d.pos[1], "b");
    assert_string_equal(d.pos[2], "c");
    BAD(DSQ_OPT_USAGE, "unexpected argument 'd'", "b", "c", "d");
    /* fewer than min_pos */
    assert_int_equal(run(&d, false, msg, sizeof msg, "--flag", (char *)NULL), DSQ_OPT_USAGE);
    assert_string_equal(msg, "need INPUT");
    /* "-" is a positional argument (standard input), or an unknown option where the command says so */
    OK("-");
    assert_string_equal(d.pos[1], "-");
    assert_int_equal(run(&d, true, msg, sizeof msg, "in", "-", (char *)NULL), DSQ_OPT_USAGE);
    assert_string_equal(msg, "unknown option '-'");
}

/* The old single-option entry point keeps working for loops written before the tables. */
static void test_parse_one(void **state) {
    (void)state;
    int n = 0;
    bool f = false;
    dsq_opt opts[] = {DSQ_OPT_INT("--n", &n, 1, 9), DSQ_OPT_FLAG("--f", &f), DSQ_OPT_END};
    char *argv[] = {"x", "--n", "5", "--f", "--other", "--n"};
    int i = 1;
    assert_int_equal(dsq_opt_parse_one("x", opts, 6, argv, &i), 1);
    assert_int_equal(i, 2);
    assert_int_equal(n, 5);
    i = 3;
    assert_int_equal(dsq_opt_parse_one("x", opts, 6, argv, &i), 1);
    assert_true(f);
    i = 4;
    assert_int_equal(dsq_opt_parse_one("x", opts, 6, argv, &i), 0); /* not ours */
    i = 5;
    assert_int_equal(dsq_opt_parse_one("x", opts, 6, argv, &i), 0); /* value missing: not consumed */
    char *bad[] = {"x", "--n", "10"};
    i = 1;
    assert_int_equal(dsq_opt_parse_one("x", opts, 3, bad, &i), -1);
}

/* Through the CLI: every subcommand parses with its table; a bad option is one line naming the
 * command and the problem, exit status 2; good options still run. */
static void test_cli(void **state) {
    (void)state;
    static const struct {
        const char *args, *want;
    } cases[] = {
        {"pack a.dsq b.dsqz --level 20", "dsq pack: --level needs an integer 1..19, not '20' (see dsq pack --help)"},
        {"pack a.dsq b.dsqz --threads -1", "dsq pack: --threads needs an integer 0..64, not '-1'"},
        {"pack a.dsq", "dsq pack: need FILE.dsq and OUT.dsqz"},
        {"unpack a.dsqz b.dsq --tensor", "dsq unpack: --tensor needs a value"},
        {"unpack a b c", "dsq unpack: unexpected argument 'c'"},
        {"convert a b.dsq --recipe release --threads 99999999999999999999",
         "dsq convert: --threads needs an integer 1..1024"},
        {"convert a b.dsq --recipe release --chunk-bytes 1Q", "dsq convert: --chunk-bytes needs a size"},
        {"convert a b.dsq", "dsq convert: --recipe is required"},
        {"convert a b.dsq --recipe", "dsq convert: --recipe needs a value"},
        {"convert a b.gguf --split-max-size 0", "dsq convert: --split-max-size needs a size"},
        {"convert a b.gguf --format st", "dsq convert: --format must be gguf, not 'st'"},
        {"export a.dsq out --format onnx", "dsq export: --format must be safetensors or modelopt-nvfp4, not 'onnx'"},
        {"export a.dsq out --shard-size 0", "dsq export: --shard-size needs a size"},
        {"verify", "dsq verify: need FILE.dsq"},
        {"verify a --bogus", "dsq verify: unknown option '--bogus'"},
        {"inspect a b", "dsq inspect: unexpected argument 'b'"},
        {
            "synth --config c --out o --layers 0",
            "dsq synth: --layers needs an integer 1..",
        },
        {"synth --config c --out o --seed -1", "dsq synth: --seed needs an unsigned integer, not '-1'"},
        {"synth stray", "dsq synth: unexpected argument 'stray'"},
        {"tokenize m", "dsq tokenize: need MODEL|tokenizer.json and TEXT|-"},
        {"tokenize m t --system", "dsq tokenize: --system needs a value"},
        {"recipes -", "dsq recipes: unknown option '-'"},
        {"version extra", "dsq version: unexpected argument 'extra'"},
        {"eval logits m --tokens t --out o --decode-from 0",
         "dsq eval logits: --decode-from needs an integer 1..2147483647"},
        {"eval logits m --tokens t --out o --numerics fast",
         "dsq eval logits: --numerics must be exact or release, not 'fast'"},
        {"eval logits m --tokens t --out o --memory-budget 0", "dsq eval logits: --memory-budget needs a size"},
        {"eval ppl m t --ctx 2147483648",
         "dsq eval ppl: --ctx needs an integer 3..16777216, not '2147483648' (tokens per chunk"},
        {"eval ppl m t --chunks 4294967296", "dsq eval ppl: --chunks needs an integer ≥ 1, not '4294967296'"},
        {"eval ppl m t --batch 0", "dsq eval ppl: --batch needs an integer 1..4096"},
        {"eval ppl m t --threads 0", "dsq eval ppl: --threads needs an integer 1..4096"},
        {"eval ppl m t --kv-cache fp8", "dsq eval ppl: --kv-cache must be one of f32, bf16, compact, fp4, int4, compact-idx8, not 'fp8'"},
        {"eval ppl m t u", "dsq eval ppl: unexpected argument 'u'"},
        {"eval ppl", "dsq eval ppl: missing MODEL"},
        {"eval kld m t --save-base b --temperature 0", "dsq eval kld: --temperature needs a number > 0, not '0'"},
        {"eval kld m t --save-base b --top-k 0", "dsq eval kld: --top-k needs an integer 1..16777216"},
        {"eval mc m t --first -3", "dsq eval mc: --first needs an unsigned integer, not '-3'"},
        {"eval diff a b t --own", "dsq eval diff: unknown option '--own'"},
        {"generate m --prompt hi -n 0", "dsq generate: -n needs an integer 1..1048576, not '0'"},
        {"generate m --prompt hi --temperature -1", "dsq generate: --temperature needs a number ≥ 0, not '-1'"},
        {"generate m --prompt hi --temperature nan", "dsq generate: --temperature needs a number ≥ 0, not 'nan'"},
        /* strtod took an empty value as 0 before the table: a temperature must be a number */
        {"generate m --prompt hi --temperature ''", "dsq generate: --temperature needs a number ≥ 0, not ''"},
        {"generate", "dsq generate: missing MODEL"},
        {"compare r a --text t --out o --top-k 99999999999999999999",
         "dsq compare: --top-k needs an integer 1..16777216"},
        {"compare r", "dsq compare: need REF and at least one build"},
        {"calibrate m t --out o.imatrix --format bin", "dsq calibrate: --format must be st or gguf, not 'bin'"},
        {"calibrate", "dsq calibrate: missing MODEL"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *se = NULL;
        int rc = dsq_test_run(NULL, &se, "%s", cases[k].args);
        if (rc != 2 || !strstr(se, cases[k].want))
            fail_msg("dsq %s: exit %d, stderr '%s'; wanted exit 2 and '%s'", cases[k].args, rc, se, cases[k].want);
        /* one line */
        assert_non_null(strchr(se, '\n'));
        assert_null(strchr(strchr(se, '\n') + 1, '\n'));
        free(se);
    }
    /* options in any order still run, and a lone "-" reads standard input */
    char *out = NULL, *tok = dsq_test_join("samples/tokenizer", "tokenizer.json");
    assert_int_equal(dsq_test_run(&out, NULL, "tokenize --json '%s' - </dev/null", tok), 0);
    assert_non_null(strstr(out, "\"n_tokens\":0"));
    free(out);
    assert_int_equal(dsq_test_run(&out, NULL, "recipes --json"), 0);
    assert_non_null(strstr(out, "\"release\""));
    free(out);
    free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),   cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_doubles),   cmocka_unit_test(test_strings_lists_enums),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_positionals),
        cmocka_unit_test(test_parse_one), cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
