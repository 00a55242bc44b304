/* Helpers shared by the CMocka suites: paths to ../shared and the CLI, temp dirs, running the CLI. */
#ifndef DSQ_TEST_H
#define DSQ_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dsq_core.h"

/* $DSQ_SHARED or "../shared" */
const char *dsq_test_shared(void);
/* Absolute path of a file under shared/, e.g. "golden/v4-tiny/model" (static buffer per call site is
 * NOT used: returns a heap string the caller frees with free()). */
char *dsq_test_shared_path(const char *rel);
/* $DSQ_BIN or "build/dsq" */
const char *dsq_test_bin(void);
/* True under the ASan build (DSQ_ASAN set): suites may shrink their heaviest cases. */
int dsq_test_asan(void);

/* ---- temp directories: the one fixture (tests/support/dsq_tmp.c underneath) ----
 * dsq_test_tmpdir() makes a fresh directory /tmp/dsq-test-XXXXXX (heap path, free()); dsq_test_rmdir()
 * removes it, or a directory inside it, and everything in it (no shell; symlinks not followed; paths
 * outside the directories dsq_tmp_create makes are refused).  With DSQ_TEST_KEEP_TMP set in the
 * environment the directories dsq_test_tmpdir made are kept and named on stderr, to look at what a
 * failing test left.
 * A suite whose tests share one directory uses the group fixture:
 *     cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
 * and names files with dsq_test_join(dsq_test_tmp, "x.dsq"); a suite with more to set up calls
 * dsq_test_tmp_setup/teardown from its own group setup/teardown. */
char *dsq_test_tmpdir(void);
void dsq_test_rmdir(const char *dir);
extern char *dsq_test_tmp;
int dsq_test_tmp_setup(void **state);
int dsq_test_tmp_teardown(void **state);
/* Heap string "dir/name". */
char *dsq_test_join(const char *dir, const char *name);

/* Write bytes to a file (plain, not atomic). */
void dsq_test_write(const char *path, const void *data, size_t n);
/* Write a raw safetensors file: header JSON text (length-prefixed as given) followed by data. */
void dsq_test_write_raw_st(const char *path, const char *header_json, const void *data, size_t data_len);

/* Run the dsq CLI with a printf-formatted argument string through /bin/sh; captures stdout and
 * stderr into heap strings (may be NULL if not wanted) and returns the exit status (or 128+signal). */
int dsq_test_run(char **out, char **errout, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Read a whole file into a heap buffer (NUL-terminated); fails the test if it cannot. */
char *dsq_test_read(const char *path, size_t *len);

/* The worse of two errors for running maxima: NaN once either is NaN (fmax would drop it), so a
 * NaN anywhere fails a later `worst <= tol`. */
static inline double dsq_test_worse(double worst, double v) {
    if (worst != worst) return worst;
    return v <= worst ? worst : v; /* a NaN v is returned */
}

#endif
