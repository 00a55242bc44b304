/* Hostile inputs that used to hang or flood (issue #12, part A): a shard or config that is a FIFO, a
 * header naming more tensors than DSQ_ST_MAX_TENSORS, a checkpoint with thousands of problems. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_safetensors.h"
#include "dsq_test.h"

/* Every command runs under `timeout`: a regression that blocks fails with 124/137 instead of hanging
 * the suite. */
#define GUARD "timeout -s KILL 20 "

static size_t count_lines(const char *t) {
    size_t n = 0;
    for (; *t; t++) n += *t == '\n';
    return n;
}

/* One line, ending in a newline. */
static void assert_one_line(const char *t) {
    const char *nl = strchr(t, '\n');
    if (!nl || nl[1] != 0) fail_msg("expected one line, got: %s", t);
}

/* A checkpoint directory whose model.safetensors (or config.json) is a FIFO nobody writes to: inspect,
 * convert and eval fail at once with one line naming the file, instead of blocking in open() forever;
 * so does a --tokens file that is a FIFO.  Before the fix every command here hung (killed by the
 * guard: rc 137). */
static void test_fifo_inputs(void **state) {
    char *dir = dsq_test_tmpdir(), *golden = dsq_test_shared_path("golden/v4-tiny/model");
    char *model = dsq_test_join(dir, "model"), *shard = dsq_test_join(model, "model.safetensors");
    char *tokens = dsq_test_join(dir, "tokens.txt"), *fifo_tokens = dsq_test_join(dir, "tokens.fifo");
    assert_int_equal(mkdir(model, 0755), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; cp '%s/config.json' '%s/'", golden, model), 0);
    assert_int_equal(mkfifo(shard, 0644), 0);
    dsq_test_write(tokens, "0 5 9 17 33 2 8\n", 16);
    assert_int_equal(mkfifo(fifo_tokens, 0644), 0);
    const char *cmds[] = {"inspect '%s'", "convert '%s' '%s/o.dsq' --recipe release", "eval ppl '%s' --tokens '%s' --ctx 4 --threads 1"};
    for (int k = 0; k < 3; k++) {
        char args[4096], *err = NULL;
        snprintf(args, sizeof args, cmds[k], model, k == 1 ? dir : tokens);
        int rc = dsq_test_run(NULL, &err, "version >/dev/null; " GUARD "'%s' %s", dsq_test_bin(), args);
        if (rc != 1) fail_msg("dsq %s: rc %d (137: it blocked), stderr: %s", args, rc, err);
        assert_non_null(strstr(err, "model.safetensors: not a regular file (a FIFO)"));
        assert_one_line(err);
        free(err);
    }
    /* a FIFO for the token ids, with a real model */
    char *err = NULL;
    int rc = dsq_test_run(NULL, &err, "version >/dev/null; " GUARD "'%s' eval ppl '%s' --tokens '%s' --ctx 4 --threads 1",
                          dsq_test_bin(), golden, fifo_tokens);
    if (rc != 1) fail_msg("eval ppl --tokens FIFO: rc %d, stderr: %s", rc, err);
    assert_non_null(strstr(err, "tokens.fifo: not a regular file (a FIFO)"));
    free(err);
    /* a FIFO for config.json, with a real shard */
    char *cfg = dsq_test_join(model, "config.json");
    unlink(shard);
    unlink(cfg);
    assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; cp '%s/model.safetensors' '%s/'", golden, model), 0);
    assert_int_equal(mkfifo(cfg, 0644), 0);
    rc = dsq_test_run(NULL, &err, "version >/dev/null; " GUARD "'%s' inspect '%s'", dsq_test_bin(), model);
    if (rc != 1) fail_msg("inspect with a FIFO config.json: rc %d, stderr: %s", rc, err);
    assert_non_null(strstr(err, "config.json: not a regular file (a FIFO)"));
    free(err);
    /* the library call itself */
    dsq_err e = DSQ_ERR_INIT;
    dsq_map m;
    assert_int_equal(dsq_map_open(cfg, false, &m, &e), DSQ_ERR_IO);
    assert_non_null(strstr(e.msg, "a FIFO"));
    dsq_err_clear(&e);
    int fd = -1;
    assert_int_equal(dsq_open_regular(dir, &fd, &e), DSQ_ERR_IO);
    assert_non_null(strstr(e.msg, "a directory"));
    assert_int_equal(fd, -1);
    dsq_err_clear(&e);
    free(cfg);
    dsq_test_rmdir(dir);
    free(dir), free(golden), free(model), free(shard), free(tokens), free(fifo_tokens);
}

/* A safetensors file with `n` U8 [1] tensors named x.I.weight (a valid file); `bad_dtype` gives every
 * tensor an unknown dtype instead. */
static void write_many(const char *path, size_t n, bool bad_dtype) {
    size_t cap = n * 80 + 16, len = 0;
    char *h = malloc(cap);
    uint8_t *data = calloc(n ? n : 1, 1);
    assert_non_null(h);
    assert_non_null(data);
    h[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(h + len, cap - len, "%s\"x.%zu.weight\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
                                i ? "," : "", i, bad_dtype ? "Q9" : "U8", i, i + 1);
    h[len++] = '}';
    h[len] = 0;
    dsq_test_write_raw_st(path, h, data, n);
    free(h);
    free(data);
}

/* A header naming DSQ_ST_MAX_TENSORS + 1 tensors (17 MB of JSON) is refused before it is parsed, with
 * the named limit in the error, in well under a second (parsing it took ~4 s and ~300 MB before the
 * limit existed, and succeeded); a file of 1000 tensors still opens. */
static void test_tensor_limit(void **state) {
    char *dir = dsq_test_tmpdir(), *big = dsq_test_join(dir, "big.safetensors"), *ok = dsq_test_join(dir, "ok.safetensors");
    write_many(big, (size_t)DSQ_ST_MAX_TENSORS + 1, false);
    write_many(ok, 1000, false);
    dsq_err e = DSQ_ERR_INIT;
    dsq_st *st = NULL;
    double t0 = dsq_now();
    assert_int_equal(dsq_st_open(big, NULL, &st, &e), DSQ_ERR_RANGE);
    double secs = dsq_now() - t0;
    assert_null(st);
    assert_non_null(strstr(e.msg, "more than DSQ_ST_MAX_TENSORS = 262144 tensors"));
    if (secs > 0.5) fail_msg("refusing the over-limit header took %.2f s", secs);
    dsq_err_clear(&e);
    assert_int_equal(dsq_st_open(ok, NULL, &st, &e), DSQ_OK);
    assert_int_equal(dsq_st_count(st), 1000);
    dsq_st_close(st);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "inspect '%s'", big), 1);
    assert_one_line(err);
    assert_non_null(strstr(err, "DSQ_ST_MAX_TENSORS"));
    free(err);
    dsq_test_rmdir(dir);
    free(dir), free(big), free(ok);
}

/* 3000 problems: the report keeps the first DSQ_ERR_MAX_PROBLEMS and counts the rest; commands print
 * at most DSQ_ERR_MAX_PROBLEMS + 1 lines, the last saying how many more there were.  Before the cap
 * `inspect` printed over 3000 lines and `convert` over 3400. */
static void test_problem_cap(void **state) {
    char *dir = dsq_test_tmpdir(), *golden = dsq_test_shared_path("golden/v4-tiny/model");
    char *bad = dsq_test_join(dir, "bad.safetensors"), *model = dsq_test_join(dir, "model");
    write_many(bad, 3000, true);
    dsq_err e = DSQ_ERR_INIT;
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(bad, NULL, &st, &e), DSQ_ERR_DTYPE);
    assert_true(e.n >= 3000); /* one per tensor, then what that leaves of the data section */
    char more[64];
    snprintf(more, sizeof more, "... and %zu more problems\n", e.n - DSQ_ERR_MAX_PROBLEMS);
    assert_int_equal(count_lines(e.all), DSQ_ERR_MAX_PROBLEMS);
    assert_non_null(strstr(e.msg, "tensor x.0.weight: unknown dtype"));
    dsq_err_clear(&e);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "inspect '%s'", bad), 1);
    assert_int_equal(count_lines(err), DSQ_ERR_MAX_PROBLEMS + 1);
    assert_non_null(strstr(err, more));
    free(err);
    /* a valid file whose 3000 tensors the V4 inventory does not know (and lacks all it needs) */
    assert_int_equal(mkdir(model, 0755), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; cp '%s/config.json' '%s/'", golden, model), 0);
    char *shard = dsq_test_join(model, "model.safetensors");
    write_many(shard, 3000, false);
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s/o.dsq' --recipe release", model, dir), 1);
    assert_int_equal(count_lines(err), DSQ_ERR_MAX_PROBLEMS + 1);
    assert_non_null(strstr(err, "more problems\n"));
    free(err);
    free(shard);
    dsq_test_rmdir(dir);
    free(dir), free(golden), free(bad), free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_inputs),
        cmocka_unit_test(test_tensor_limit),
        cmocka_unit_test(test_problem_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
