/* dsq eval under stress (issue #12, part A): a SIGINT in the middle of a long batch, --ctx beyond
 * the model's positions, and token files read only as far as the chunks need. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_safetensors.h"
#include "dsq_test.h"

/* Seconds a SIGINT may take to stop `eval ppl` (measured: ~0.1 s; a batch below takes ~30 s on the
 * 2-core CI machine, which is how long the signal waited before the fix). */
#define STOP_BOUND_S 3.0

/* One SIGINT stops `dsq eval ppl` in the middle of a batch: the trained tiny model over 8 chunks of
 * 1024 tokens in one layer-major batch (tens of seconds of work), interrupted after one second, exits
 * 130 within STOP_BOUND_S.  Before the fix the flag was polled only between batches. */
static void test_sigint_stops_eval(void **state) {
    char *model = dsq_test_shared_path("models/v4-tiny-trained"), *text = dsq_test_join(model, "test.txt");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execl(dsq_test_bin(), "dsq", "eval", "ppl", model, text, "--ctx", "1024", "--batch", "8", "--chunks", "8",
              "--threads", "2", (char *)NULL);
        _exit(127);
    }
    usleep(1000 * 1000);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, WNOHANG), 0); /* still running: the signal lands mid-batch */
    double t0 = dsq_now();
    assert_int_equal(kill(pid, SIGINT), 0);
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && dsq_now() - t0 < STOP_BOUND_S) usleep(10 * 1000);
    double took = dsq_now() - t0;
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        fail_msg("eval ppl still running %.1f s after SIGINT", took);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 130);
    print_message("eval ppl stopped %.3f s after SIGINT\n", took);
    free(model);
    free(text);
}

/* `n` ids (i*7 % 500 + 2, inside the golden vocabulary of 512) as text, followed by `tail`. */
static void write_ids(const char *path, int n, const char *tail) {
    size_t cap = (size_t)n * 5 + strlen(tail) + 1, len = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    for (int i = 0; i < n; i++) len += (size_t)snprintf(t + len, cap - len, "%d ", i * 7 % 500 + 2);
    len += (size_t)snprintf(t + len, cap - len, "%s", tail);
    dsq_test_write(path, t, len);
    free(t);
}

/* (--threads 1: the golden model is tiny, and idle OpenMP workers spinning on a busy 2-core machine
 * cost seconds per run.) */

/* --ctx is bounded by the model's max_position_embeddings (256 for the golden model), and the message
 * names the limit and the model's value; the CLI ceiling names its own bound.  Before the fix --ctx
 * 257 ran and --ctx 2147483648 was refused as "at least 3 tokens". */
static void test_ctx_bound(void **state) {
    char *dir = dsq_test_tmpdir(), *model = dsq_test_shared_path("golden/v4-tiny/model");
    char *ids = dsq_test_join(dir, "ids.txt");
    write_ids(ids, 2000, "\n");
    char *out = NULL, *err = NULL;
    assert_int_equal(dsq_test_run(&out, NULL, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 256 --chunks 1 --json", model, ids), 0);
    assert_non_null(strstr(out, "\"ctx\": 256"));
    free(out);
    assert_int_equal(dsq_test_run(NULL, &err, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 257 --chunks 1", model, ids), 1);
    assert_non_null(strstr(err, "257 tokens (--ctx) exceeds the model's max_position_embeddings of 256"));
    free(err);
    assert_int_equal(dsq_test_run(NULL, &err, "eval kld '%s' --tokens '%s' --threads 1 --ctx 300 --save-base '%s/b.kld'", model, ids,
                                  dir),
                     1);
    assert_non_null(strstr(err, "max_position_embeddings of 256"));
    free(err);
    assert_int_equal(dsq_test_run(NULL, &err, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 2147483648", model, ids), 2);
    assert_non_null(strstr(err, "3..16777216"));
    assert_null(strstr(err, "at least 3 tokens"));
    free(err);
    dsq_test_rmdir(dir);
    free(dir), free(model), free(ids);
}

/* With --chunks K only the ids the K chunks use are read: a text id file whose tail (after 3 chunks'
 * worth) is not ids, and a safetensors I64 `tokens` whose tail is out of the I32 range, both evaluate
 * with --chunks 2 and give the same result as a clean file; all chunks still read (and reject) the
 * tail.  Before the fix the whole file was read and the tail rejected even with --chunks 2. */
static void test_tokens_lazy(void **state) {
    char *dir = dsq_test_tmpdir(), *model = dsq_test_shared_path("golden/v4-tiny/model");
    char *clean = dsq_test_join(dir, "clean.txt"), *dirty = dsq_test_join(dir, "dirty.txt");
    char *st = dsq_test_join(dir, "dirty.safetensors");
    write_ids(clean, 3 * 64, "\n");
    write_ids(dirty, 3 * 64, "this is not an id list\n");
    int64_t v[3 * 64 + 8];
    for (int i = 0; i < 3 * 64; i++) v[i] = i * 7 % 500 + 2;
    for (int i = 3 * 64; i < 3 * 64 + 8; i++) v[i] = (int64_t)1 << 40;
    dsq_st_item it = {"tokens", DSQ_DTYPE_I64, 1, {3 * 64 + 8}, v};
    assert_int_equal(dsq_st_write_file(st, &it, 1, false, NULL), DSQ_OK);
    char *ref = NULL, *o = NULL, *err = NULL;
    assert_int_equal(dsq_test_run(&ref, NULL, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 64 --chunks 2 --json", model, clean), 0);
    const char *files[] = {dirty, st};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(dsq_test_run(&o, &err, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 64 --chunks 2 --json", model, files[k]),
                         0);
        assert_string_equal(o, ref);
        free(o);
        free(err);
        assert_int_equal(dsq_test_run(NULL, &err, "eval ppl '%s' --tokens '%s' --threads 1 --ctx 64", model, files[k]), 1);
        assert_non_null(strstr(err, k == 0 ? "not a token id" : "out of range"));
        free(err);
    }
    free(ref);
    dsq_test_rmdir(dir);
    free(dir), free(model), free(clean), free(dirty), free(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigint_stops_eval),
        cmocka_unit_test(test_ctx_bound),
        cmocka_unit_test(test_tokens_lazy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
