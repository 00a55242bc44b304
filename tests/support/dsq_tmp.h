/* Temp directories of the tests and fuzz harnesses: the one implementation (no CMocka here, so the
 * libFuzzer harnesses link it too).  Test suites use the wrappers in dsq_test.h. */
#ifndef DSQ_TMP_H
#define DSQ_TMP_H

/* A fresh directory ROOT/dsq-TAG-XXXXXX (mkdtemp, mode 0700); ROOT NULL means /tmp.  Returns a heap
 * path (free()), or NULL with errno set. */
char *dsq_tmp_create(const char *root, const char *tag);

/* Remove `dir` and everything under it, depth first; symbolic links are removed, never followed,
 * and the walk stays on dir's file system.  Refuses (returns -1, errno EINVAL) a path that is not
 * absolute, holds a ".." component, or has no component starting with "dsq-" (what dsq_tmp_create makes), so a
 * bad argument cannot remove anything else.  Returns 0 when everything was removed, -1 otherwise. */
int dsq_tmp_remove(const char *dir);

#endif
