/* dsq convert under stress (issue #12, part A): a plan that grows its output array while splitting
 * compressor pairs, failed resumes that must keep the resumable work, a second job on the same output,
 * a SIGINT after the last tensor, and a checkpoint with more problems than are worth printing. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dsq_convert.h"
#include "dsq_json.h"
#include "dsq_synth.h"
#include "dsq_test.h"

static char *golden_model(void) { return dsq_test_shared_path("golden/v4-tiny/model"); }

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* The golden config with `layers` main layers: the first two sliding-window, the others and the MTP
 * block CSA (two compressor pairs each). */
static void write_csa_config(const char *path, int layers) {
    char *g = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    size_t n;
    char *text = dsq_test_read(g, &n);
    cJSON *c = NULL;
    assert_int_equal(dsq_json_parse(text, n, g, &c, NULL), DSQ_OK);
    cJSON_ReplaceItemInObjectCaseSensitive(c, "num_hidden_layers", cJSON_CreateNumber(layers));
    cJSON *r = cJSON_CreateArray();
    for (int i = 0; i <= layers; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(i < 2 ? 0 : 4)); /* + MTP */
    cJSON_ReplaceItemInObjectCaseSensitive(c, "compress_ratios", r);
    char *out = cJSON_PrintUnformatted(c);
    dsq_test_write(path, out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(c);
    free(text);
    free(g);
}

/* Seven layers (two sliding, five CSA) + a CSA MTP block plan 254 outputs (the array holds 256); a
 * recipe that stores every compressor wgate differently from its wkv splits the 12 fused pairs into 24
 * tensors, so the array is
 * reallocated in the middle of the splitting.  The split used to read the moved element's name
 * through the old pointer (a use-after-free that ASan reports); every pair must come out as two
 * tensors with the right names. */
static void test_plan_split_realloc(void **state) {
    char *dir = dsq_test_tmpdir(), *cfg = dsq_test_join(dir, "config.json"), *model = dsq_test_join(dir, "model");
    write_csa_config(cfg, 7);
    dsq_err err = DSQ_ERR_INIT;
    dsq_synth_options so = {.threads = 1};
    assert_int_equal(dsq_synth_write(cfg, model, &so, NULL, &err), DSQ_OK);
    dsq_recipe *r = NULL;
    assert_int_equal(dsq_recipe_load("release", &r, &err), DSQ_OK);
    char *out = dsq_test_join(dir, "m.dsq");
    dsq_convert_options o = {.src = model, .out = out, .recipe = r};
    dsq_convert_plan *p = NULL;
    assert_int_equal(dsq_convert_plan_make(&o, &p, &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_count(p), 254); /* fused: fits the first array */
    dsq_convert_plan_free(p);
    assert_int_equal(dsq_recipe_override(r, "*compressor.wgate.weight=f32", &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_make(&o, &p, &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_count(p), 254 + 12);
    size_t wkv = 0, wgate = 0, fused = 0;
    for (size_t i = 0; i < dsq_convert_plan_count(p); i++) {
        const char *nm = dsq_convert_plan_item(p, i)->name;
        if (strstr(nm, "compressor.wkv.weight")) wkv++;
        if (strstr(nm, "compressor.wgate.weight")) {
            wgate++;
            assert_int_equal(dsq_convert_plan_item(p, i)->dst_enc, DSQ_ENC_F32);
        }
        if (strstr(nm, "wkv_wgate")) fused++;
    }
    assert_int_equal(wkv, 12);
    assert_int_equal(wgate, 12);
    assert_int_equal(fused, 0);
    dsq_convert_plan_free(p);
    dsq_recipe_free(r);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(out);
    free(cfg);
    free(model);
    free(dir);
}

/* ---- resumable work is never destroyed ---- */

typedef struct job_files {
    char *dir, *src, *ref, *out, *partial, *journal, *lock;
} job_files;

static job_files job_make(void) {
    job_files j;
    j.dir = dsq_test_tmpdir();
    j.src = golden_model();
    j.ref = dsq_test_join(j.dir, "ref.dsq");
    j.out = dsq_test_join(j.dir, "m.dsq");
    j.partial = dsq_test_join(j.dir, ".m.dsq.partial");
    j.journal = dsq_test_join(j.dir, ".m.dsq.journal");
    j.lock = dsq_test_join(j.dir, ".m.dsq.lock");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", j.src, j.ref), 0);
    return j;
}

static void job_free(job_files *j) {
    dsq_test_rmdir(j->dir);
    free(j->dir), free(j->src), free(j->ref), free(j->out), free(j->partial), free(j->journal), free(j->lock);
}

/* `convert SRC OUT --recipe release` stopped by signal `sig` after `after` tensors (test hook). */
static int convert_signalled(const job_files *j, int after, int sig) {
    return dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=%d:%d '%s' convert '%s' '%s' --recipe release",
                        after, sig, dsq_test_bin(), j->src, j->out);
}

static void assert_bytes(const char *path, const char *want, size_t n) {
    size_t got_n;
    char *got = dsq_test_read(path, &got_n);
    if (got_n != n || memcmp(got, want, n) != 0) fail_msg("%s changed (%zu bytes, %zu before)", path, got_n, n);
    free(got);
}

/* A --resume that fails (different arguments, damaged journal, missing journal) says why, says the
 * files are kept, and leaves .partial and journal byte for byte as they were; the original job then
 * resumes from them to the same bytes as an uninterrupted run.  Before the fix each failed resume
 * deleted both files. */
static void test_failed_resume_keeps_work(void **state) {
    job_files j = job_make();
    assert_int_equal(convert_signalled(&j, 40, SIGINT), 130);
    size_t np, nj;
    char *partial = dsq_test_read(j.partial, &np), *journal = dsq_test_read(j.journal, &nj);
    char *err = NULL;
    /* 1: different arguments */
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --override 'embed.weight=f32' --resume",
                                  j.src, j.out),
                     1);
    assert_non_null(strstr(err, "different job"));
    assert_non_null(strstr(err, "kept"));
    free(err);
    assert_bytes(j.partial, partial, np);
    assert_bytes(j.journal, journal, nj);
    /* 2: a damaged journal header */
    journal[3] ^= 0x20;
    dsq_test_write(j.journal, journal, nj);
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --resume", j.src, j.out), 1);
    assert_non_null(strstr(err, "journal header is damaged"));
    assert_non_null(strstr(err, "kept"));
    free(err);
    assert_bytes(j.partial, partial, np);
    assert_bytes(j.journal, journal, nj);
    journal[3] ^= 0x20;
    /* 3: the journal is missing */
    unlink(j.journal);
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --resume", j.src, j.out), 1);
    assert_non_null(strstr(err, "cannot be read"));
    assert_non_null(strstr(err, "kept"));
    free(err);
    assert_bytes(j.partial, partial, np);
    assert_false(dsq_path_exists(j.journal));
    /* the kept work still resumes to the uninterrupted bytes */
    dsq_test_write(j.journal, journal, nj);
    char *o = NULL;
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' '%s' --recipe release --resume --json", j.src, j.out), 0);
    assert_non_null(strstr(o, "\"resumed\": 40"));
    free(o);
    assert_true(same_file(j.ref, j.out));
    assert_false(dsq_path_exists(j.partial));
    assert_false(dsq_path_exists(j.journal));
    assert_false(dsq_path_exists(j.lock));
    free(partial);
    free(journal);
    job_free(&j);
}

/* Fork `dsq convert SRC OUT --recipe release` with the test hook stopping it (SIGSTOP) after `after`
 * tensors; returns once it is stopped, holding the output's lock. */
static pid_t convert_stopped(const job_files *j, int after) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char hook[32];
        snprintf(hook, sizeof hook, "%d:%d", after, SIGSTOP);
        setenv("DSQ_CONVERT_TEST_SIGNAL", hook, 1);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execl(dsq_test_bin(), "dsq", "convert", j->src, j->out, "--recipe", "release", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
    if (!WIFSTOPPED(st)) fail_msg("the first convert did not stop (status %d)", st);
    return pid;
}

/* One line, ending in a newline. */
static void assert_one_line(const char *t) {
    const char *nl = strchr(t, '\n');
    if (!nl || nl[1] != 0) fail_msg("expected one line, got: %s", t);
}

/* While a conversion runs (stopped after 20 tensors, so its files are still), a second conversion to
 * the same output — fresh, --overwrite, or --resume — is refused with one line naming the output and
 * the first job's pid, and touches neither its partial file nor its journal; the first job then
 * finishes with the same bytes as an uninterrupted run and removes its lock file.  Before the fix the
 * second job unlinked the first one's partial file and journal and wrote its own. */
static void test_second_job_refused(void **state) {
    job_files j = job_make();
    pid_t pid = convert_stopped(&j, 20);
    size_t np, nj;
    char *partial = dsq_test_read(j.partial, &np), *journal = dsq_test_read(j.journal, &nj);
    char want[64];
    snprintf(want, sizeof want, "(pid %ld)", (long)pid);
    const char *extra[] = {"", "--overwrite", "--resume", "--resume --threads 2"};
    for (size_t k = 0; k < sizeof extra / sizeof extra[0]; k++) {
        char *err = NULL;
        assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release %s", j.src, j.out, extra[k]), 1);
        assert_one_line(err);
        assert_non_null(strstr(err, j.out));
        assert_non_null(strstr(err, "another dsq job"));
        assert_non_null(strstr(err, want));
        free(err);
        assert_bytes(j.partial, partial, np);
        assert_bytes(j.journal, journal, nj);
        assert_false(dsq_path_exists(j.out));
    }
    assert_int_equal(kill(pid, SIGCONT), 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(same_file(j.ref, j.out));
    assert_false(dsq_path_exists(j.partial));
    assert_false(dsq_path_exists(j.journal));
    assert_false(dsq_path_exists(j.lock));
    /* a lock file left by a killed job does not block the next one */
    unlink(j.out);
    assert_int_equal(convert_signalled(&j, 30, SIGKILL), 128 + SIGKILL);
    assert_true(dsq_path_exists(j.lock));
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --resume", j.src, j.out), 0);
    assert_true(same_file(j.ref, j.out));
    assert_false(dsq_path_exists(j.lock));
    free(partial);
    free(journal);
    job_free(&j);
}

/* A SIGINT that arrives after the last tensor was written still stops publication: exit 130, no file
 * at the final name, .partial and journal kept; --resume then publishes the same bytes as an
 * uninterrupted run.  Before the fix the file was published with exit 0. */
static void test_late_sigint(void **state) {
    job_files j = job_make();
    char *o = NULL;
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' x.dsq --recipe release --dry-run --json", j.src), 0);
    cJSON *plan = NULL;
    assert_int_equal(dsq_json_parse(o, strlen(o), "dry-run", &plan, NULL), DSQ_OK);
    int n = (int)cJSON_GetObjectItemCaseSensitive(plan, "tensors")->valuedouble;
    cJSON_Delete(plan);
    free(o);
    assert_true(n > 100);
    assert_int_equal(convert_signalled(&j, n, SIGINT), 130);
    assert_false(dsq_path_exists(j.out));
    assert_true(dsq_path_exists(j.partial));
    assert_true(dsq_path_exists(j.journal));
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' '%s' --recipe release --resume --json", j.src, j.out), 0);
    char want[64];
    snprintf(want, sizeof want, "\"resumed\": %d", n);
    assert_non_null(strstr(o, want));
    free(o);
    assert_true(same_file(j.ref, j.out));
    assert_false(dsq_path_exists(j.partial));
    job_free(&j);
}

/* Every atomic writer (pack, unpack, export, safetensors and KL-base outputs, not only convert) holds
 * the output's lock from open to commit/abort: a second writer of the same output is refused and the
 * first one's partial file survives, so its rename publishes its own complete bytes.  Before, the
 * second open unlinked the first partial file and created its own, which the first job's rename then
 * published half-written. */
static void test_afile_lock(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "o.bin"), *partial = dsq_test_join(dir, ".o.bin.partial");
    char *lock = dsq_test_join(dir, ".o.bin.lock");
    dsq_err e = DSQ_ERR_INIT;
    dsq_afile a, b;
    assert_int_equal(dsq_afile_open(out, NULL, &a, &e), DSQ_OK);
    assert_int_equal(dsq_afile_write(&a, "first job", 9, &e), DSQ_OK);
    assert_true(dsq_path_exists(lock));
    assert_int_equal(dsq_afile_open(out, NULL, &b, &e), DSQ_ERR_EXISTS);
    assert_non_null(strstr(e.msg, "another dsq job"));
    dsq_err_clear(&e);
    assert_int_equal(dsq_write_file_atomic(out, "second", 6, true, &e), DSQ_ERR_EXISTS);
    dsq_err_clear(&e);
    assert_bytes(partial, "first job", 9);
    assert_int_equal(dsq_afile_commit(&a, &e), DSQ_OK);
    assert_bytes(out, "first job", 9);
    assert_false(dsq_path_exists(lock));
    /* released: the next writer goes ahead; abort releases too */
    assert_int_equal(dsq_afile_open(out, &(dsq_afile_options){.overwrite = true}, &b, &e), DSQ_OK);
    dsq_afile_abort(&b);
    assert_false(dsq_path_exists(lock));
    assert_int_equal(dsq_write_file_atomic(out, "second", 6, true, &e), DSQ_OK);
    assert_bytes(out, "second", 6);
    /* the container writer's lock covers its partial file too */
    char *ctr = dsq_test_join(dir, "c.dsq");
    dsq_ctr_writer *w = NULL;
    assert_int_equal(dsq_ctr_writer_create(ctr, NULL, &w, &e), DSQ_OK);
    dsq_ctr_tensor_desc d = {"x", DSQ_ENC_F32, 1, {4}, 0, 0, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &d, NULL, &e), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_set_metadata(w, "{}", 2, &e), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_begin(w, &e), DSQ_OK);
    assert_int_equal(dsq_write_file_atomic(ctr, "x", 1, true, &e), DSQ_ERR_EXISTS);
    dsq_err_clear(&e);
    dsq_ctr_writer_free(w);
    assert_int_equal(dsq_write_file_atomic(ctr, "x", 1, true, &e), DSQ_OK);
    dsq_err_clear(&e);
    dsq_test_rmdir(dir);
    free(dir), free(out), free(partial), free(lock), free(ctr);
}

/* One F32 [4] tensor "x" through the container writer up to finish; `resume` continues a partial. */
static dsq_status small_container(const char *path, bool resume, bool interrupt_before_finish) {
    dsq_err e = DSQ_ERR_INIT;
    dsq_ctr_writer *w = NULL;
    dsq_ctr_writer_options o = {.resume = resume, .fingerprint = "guard test"};
    dsq_status s = dsq_ctr_writer_create(path, &o, &w, &e);
    dsq_ctr_tensor_desc d = {"x", DSQ_ENC_F32, 1, {4}, 0, 0, 0, NULL};
    const float x[4] = {1, 2, 3, 4};
    if (s == DSQ_OK) s = dsq_ctr_writer_add(w, &d, NULL, &e);
    if (s == DSQ_OK) s = dsq_ctr_writer_set_metadata(w, "{}", 2, &e);
    if (s == DSQ_OK) s = dsq_ctr_writer_begin(w, &e);
    if (s == DSQ_OK && !dsq_ctr_writer_is_done(w, 0)) {
        s = dsq_ctr_writer_write(w, 0, 0, 0, x, sizeof x, &e);
        if (s == DSQ_OK) s = dsq_ctr_writer_end_tensor(w, 0, &e);
    }
    if (s == DSQ_OK && interrupt_before_finish) raise(SIGINT); /* the handler only sets the flag */
    if (s == DSQ_OK) return dsq_ctr_writer_finish(w, &e) == DSQ_OK ? DSQ_OK : e.status;
    dsq_ctr_writer_free(w);
    return s;
}

/* A SIGINT that lands while the container writer finishes (tail written, file verified) still keeps
 * the final name empty: finish suspends instead of renaming (DSQ_ERR_INTERRUPTED, partial + journal
 * kept) and a resume publishes the file.  Run in a child: the interrupt flag cannot be cleared. */
static void test_writer_late_interrupt(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "c.dsq"), *partial = dsq_test_join(dir, ".c.dsq.partial");
    char *journal = dsq_test_join(dir, ".c.dsq.journal");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dsq_signals_install();
        _exit(small_container(out, false, true) == DSQ_ERR_INTERRUPTED ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_false(dsq_path_exists(out));
    assert_true(dsq_path_exists(partial));
    assert_true(dsq_path_exists(journal));
    assert_int_equal(small_container(out, true, false), DSQ_OK);
    assert_true(dsq_path_exists(out));
    assert_false(dsq_path_exists(partial));
    assert_false(dsq_path_exists(journal));
    char *ref = dsq_test_join(dir, "ref.dsq");
    assert_int_equal(small_container(ref, false, false), DSQ_OK);
    assert_true(same_file(ref, out));
    dsq_test_rmdir(dir);
    free(dir), free(out), free(partial), free(journal), free(ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_split_realloc),
        cmocka_unit_test(test_failed_resume_keeps_work),
        cmocka_unit_test(test_second_job_refused),
        cmocka_unit_test(test_late_sigint),
        cmocka_unit_test(test_afile_lock),
        cmocka_unit_test(test_writer_late_interrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
