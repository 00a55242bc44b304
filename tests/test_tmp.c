/* The tests' temp-dir fixture (tests/support/dsq_tmp.c, dsq_test.c): unique directories, recursive
 * removal that never follows a symlink out of the tree nor touches a path it did not make, the
 * DSQ_TEST_KEEP_TMP switch and the group fixture every suite shares. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_test.h"
#include "dsq_tmp.h"

static bool exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The group fixture made dsq_test_tmp before the first test. */
static void test_group_fixture(void **state) {
    (void)state;
    assert_non_null(dsq_test_tmp);
    assert_non_null(strstr(dsq_test_tmp, "/tmp/dsq-test-"));
    struct stat st;
    assert_int_equal(stat(dsq_test_tmp, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void test_unique_and_removed(void **state) {
    (void)state;
    char *a = dsq_test_tmpdir(), *b = dsq_test_tmpdir();
    assert_string_not_equal(a, b);
    /* a tree: files, nested directories, an empty directory, a symlink to a file outside the tree
     * and one to a directory outside it */
    char *outside = dsq_test_join(b, "keep.txt"), *sub = dsq_test_join(a, "d1"), *subsub = dsq_test_join(sub, "d2");
    char *empty = dsq_test_join(a, "empty"), *f1 = dsq_test_join(a, "f"), *f2 = dsq_test_join(subsub, "g");
    char *l1 = dsq_test_join(sub, "to-file"), *l2 = dsq_test_join(a, "to-dir");
    dsq_test_write(outside, "x", 1);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(mkdir(subsub, 0755), 0);
    assert_int_equal(mkdir(empty, 0755), 0);
    dsq_test_write(f1, "y", 1);
    dsq_test_write(f2, "z", 1);
    assert_int_equal(symlink(outside, l1), 0);
    assert_int_equal(symlink(b, l2), 0);
    dsq_test_rmdir(a);
    assert_false(exists(a));
    assert_true(exists(outside)); /* the links went, not what they point to */
    assert_true(exists(b));
    /* a directory inside a temp directory can be removed alone */
    char *inner = dsq_test_join(b, "inner");
    assert_int_equal(mkdir(inner, 0755), 0);
    dsq_test_rmdir(inner);
    assert_false(exists(inner));
    assert_true(exists(outside));
    /* removing what is already gone is fine */
    assert_int_equal(dsq_tmp_remove(a), 0);
    dsq_test_rmdir(b);
    assert_false(exists(b));
    free(a), free(b), free(outside), free(sub), free(subsub), free(empty), free(f1), free(f2), free(l1), free(l2);
    free(inner);
}

static void test_refuses_foreign_paths(void **state) {
    (void)state;
    char *mine = dsq_test_tmpdir();
    char dotdot[4200], tail[4200];
    snprintf(dotdot, sizeof dotdot, "%s/../..", mine);
    snprintf(tail, sizeof tail, "%s/..", mine);
    const char *bad[] = {NULL, "", "/", "relative/dsq-test-x", "/tmp", "/tmp/elsewhere", dotdot, tail};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        assert_int_equal(dsq_tmp_remove(bad[i]), -1);
        assert_int_equal(errno, EINVAL);
    }
    assert_true(exists(mine));
    dsq_test_rmdir(mine);
    assert_false(exists(mine));
    free(mine);
}

static void test_keep_switch(void **state) {
    (void)state;
    char *d = dsq_test_tmpdir(), *inner = dsq_test_join(d, "inner");
    assert_int_equal(mkdir(inner, 0755), 0);
    assert_int_equal(setenv("DSQ_TEST_KEEP_TMP", "1", 1), 0);
    dsq_test_rmdir(inner); /* inside a test's directory: removed even when keeping */
    assert_false(exists(inner));
    dsq_test_rmdir(d); /* the test's directory itself: kept */
    assert_true(exists(d));
    assert_int_equal(unsetenv("DSQ_TEST_KEEP_TMP"), 0);
    dsq_test_rmdir(d);
    assert_false(exists(d));
    free(d), free(inner);
}

int main(void) {
    unsetenv("DSQ_TEST_KEEP_TMP"); /* this suite checks the switch itself */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_fixture),
        cmocka_unit_test(test_unique_and_removed),
        cmocka_unit_test(test_refuses_foreign_paths),
        cmocka_unit_test(test_keep_switch),
    };
    return cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
