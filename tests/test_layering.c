/* The layering check (docs/architecture.md "Layering"): tests/check-layering.sh passes on this tree and
 * on its archives, and fails — naming the file and the rule — on an upward include, an include with a
 * path, an upward symbol reference between the per-folder archives, and JSON parsing in cmd/; and the
 * Makefile's per-folder -I paths make an upward include fail to compile at all.  The injected cases
 * are built in temp trees, never in the checkout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_test.h"

/* Run a shell command; stdout+stderr into *out (heap, may be NULL); returns the exit status. */
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[4200];
    snprintf(full, sizeof full, "( %s ) </dev/null 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void put(const char *dir, const char *rel, const char *text) {
    char *path = dsq_test_join(dir, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    assert_int_equal(sh(NULL, "mkdir -p '%s'", path), 0);
    *slash = '/';
    dsq_test_write(path, text, strlen(text));
    free(path);
}

/* A minimal tree: one header per layer, each including only what it may. */
static char *mini_tree(void) {
    char *d = dsq_test_tmpdir();
    put(d, "lib/core/dsq_core.h", "#define CORE 1\n");
    put(d, "lib/format/dsq_container.h", "#include \"dsq_core.h\"\n");
    put(d, "lib/quant/dsq_codec.h", "#include \"dsq_container.h\"\n");
    put(d, "lib/eval/dsq_v4.h", "#include \"dsq_codec.h\"\n#include \"dsq_cuda.h\"\n");
    put(d, "kernels/dsq_cuda.h", "#define CUDA_API 1\n");
    put(d, "lib/format/container.c", "#include \"dsq_container.h\"\nint f(void) { return CORE; }\n");
    put(d, "cmd/inspect.c", "#include \"dsq_v4.h\"\nint main(void) { return 0; }\n");
    return d;
}

/* Absolute path of the script (the suites run from the checkout's root). */
static const char *script(void) {
    static char path[4200];
    if (!path[0]) {
        char cwd[4096];
        assert_non_null(getcwd(cwd, sizeof cwd));
        snprintf(path, sizeof path, "%s/tests/check-layering.sh", cwd);
    }
    return path;
}

static void test_tree_passes(void **state) {
    (void)state;
    const char *build = getenv("DSQ_BUILD");
    char *out = NULL;
    int rc = sh(&out, "%s . %s", script(), build ? build : "build");
    if (rc != 0) fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    free(out);
    char *d = mini_tree();
    rc = sh(&out, "%s %s", script(), d);
    if (rc != 0) fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    free(out);
    dsq_test_rmdir(d);
    free(d);
}

static void expect_violation(const char *d, const char *needle) {
    char *out = NULL;
    int rc = sh(&out, "%s %s", script(), d);
    if (rc != 1 || !strstr(out, needle)) fprintf(stderr, "want \"%s\", got rc %d:\n%s", needle, rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, needle));
    free(out);
}

static void test_upward_include_fails(void **state) {
    (void)state;
    char *d = mini_tree();
    /* lib/format including lib/quant's header: the defect this check exists for (dsq_encoding.h was one) */
    put(d, "lib/format/container.c", "#include \"dsq_container.h\"\n#include \"dsq_codec.h\"\nint f(void) { return 0; }\n");
    expect_violation(d, "lib/format/container.c:2: #include \"dsq_codec.h\" is lib/quant's");
    expect_violation(d, "(upward include)");
    put(d, "lib/format/container.c", "#include \"dsq_container.h\"\nint f(void) { return 0; }\n");
    /* lib/quant reaching into lib/eval, and core into format */
    put(d, "lib/quant/codec.c", "#include \"dsq_v4.h\"\n");
    expect_violation(d, "lib/quant/codec.c:1: #include \"dsq_v4.h\" is lib/eval's");
    put(d, "lib/quant/codec.c", "#include \"dsq_codec.h\"\n");
    put(d, "lib/core/dsq_core.h", "#include \"dsq_container.h\"\n");
    expect_violation(d, "lib/core/dsq_core.h:1: #include \"dsq_container.h\" is lib/format's");
    put(d, "lib/core/dsq_core.h", "#define CORE 1\n");
    /* kernels/ is eval's only */
    put(d, "lib/quant/codec.c", "  #  include \"dsq_cuda.h\"\n");
    expect_violation(d, "lib/quant/codec.c:1: #include \"dsq_cuda.h\" is kernels's");
    put(d, "lib/quant/codec.c", "#include \"dsq_codec.h\"\n");
    /* a path that would slip past the per-folder -I paths */
    put(d, "lib/format/container.c", "#include \"../quant/dsq_codec.h\"\n");
    expect_violation(d, "has a path");
    put(d, "lib/format/container.c", "#include \"dsq_container.h\"\n");
    /* back to clean: the check passes again */
    char *out = NULL;
    assert_int_equal(sh(&out, "%s %s", script(), d), 0);
    free(out);
    dsq_test_rmdir(d);
    free(d);
}

static void test_json_in_cmd_fails(void **state) {
    (void)state;
    char *d = mini_tree();
    put(d, "cmd/inspect_dsq.c", "#include <cjson/cJSON.h>\nint g(void) { return 0; }\n");
    expect_violation(d, "cmd/inspect_dsq.c:1: JSON parsing in cmd/");
    put(d, "cmd/inspect_dsq.c", "int g(const char *t) { return dsq_json_parse(t, 0, 0, 0, 0); }\n");
    expect_violation(d, "cmd/inspect_dsq.c:1: JSON parsing in cmd/");
    dsq_test_rmdir(d);
    free(d);
}

/* lib/format's archive calling a function only lib/quant's defines (a prototype written by hand gets
 * past the include rule; the archives' symbols do not lie). */
static void test_upward_symbol_fails(void **state) {
    (void)state;
    char *d = mini_tree();
    put(d, "src/core.c", "int dsq_core_fn(void) { return 1; }\n");
    put(d, "src/format.c", "int dsq_codec_fn(void);\nint dsq_ctr_fn(void) { return dsq_codec_fn(); }\n");
    put(d, "src/quant.c", "int dsq_ctr_fn(void);\nint dsq_codec_fn(void) { return 2; }\n");
    put(d, "src/eval.c", "int dsq_codec_fn(void);\nint dsq_v4_fn(void) { return dsq_codec_fn(); }\n");
    char *out = NULL;
    int rc = sh(&out, "cd %s && mkdir -p b && for l in core format quant eval; do cc -c src/$l.c -o b/$l.o && "
                      "ar rcs b/libdsq_$l.a b/$l.o || exit 1; done", d);
    if (rc) fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    free(out);
    char *b = dsq_test_join(d, "b");
    rc = sh(&out, "%s %s %s", script(), d, b);
    if (rc != 1) fprintf(stderr, "rc %d:\n%s", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "libdsq_format.a: uses dsq_codec_fn, defined in lib/quant (upward reference)"));
    /* the downward references (eval -> quant) are not reported */
    assert_null(strstr(out, "libdsq_eval.a"));
    free(out);
    /* without the upward call the same archives pass */
    put(d, "src/format.c", "int dsq_ctr_fn(void) { return 0; }\n");
    rc = sh(&out, "cd %s && cc -c src/format.c -o b/format.o && rm -f b/libdsq_format.a && ar rcs b/libdsq_format.a "
                  "b/format.o && %s %s %s", d, script(), d, b);
    if (rc) fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    free(out);
    free(b);
    dsq_test_rmdir(d);
    free(d);
}

/* The Makefile compiles lib/format with -Ilib/core -Ilib/format only: an upward include is a compile
 * error, while the same file compiles in lib/quant (so the failure is the layering, not the setup). */
static void test_makefile_include_paths(void **state) {
    (void)state;
    char *d = mini_tree();
    put(d, "lib/format/probe.c", "#include \"dsq_codec.h\"\nint probe(void) { return CORE; }\n");
    put(d, "lib/quant/probe.c", "#include \"dsq_codec.h\"\nint probe(void) { return CORE; }\n");
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char *out = NULL;
    int rc = sh(&out, "make -s -C %s -f %s/Makefile BUILD=b NO_CUDA=1 b/lib/quant/probe.o", d, cwd);
    if (rc) fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    free(out);
    rc = sh(&out, "make -s -C %s -f %s/Makefile BUILD=b NO_CUDA=1 b/lib/format/probe.o", d, cwd);
    if (rc == 0 || !strstr(out, "dsq_codec.h")) fprintf(stderr, "rc %d:\n%s", rc, out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "dsq_codec.h"));
    free(out);
    dsq_test_rmdir(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_passes),
        cmocka_unit_test(test_upward_include_fails),
        cmocka_unit_test(test_json_in_cmd_fails),
        cmocka_unit_test(test_upward_symbol_fails),
        cmocka_unit_test(test_makefile_include_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
