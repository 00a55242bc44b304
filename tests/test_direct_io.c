/* Direct I/O in lib/core: dsq_afile writes with options.direct (O_DIRECT middles through a bounce
 * buffer, buffered unaligned edges) give exactly the bytes of plain writes, whatever the offsets and
 * lengths; dsq_seqread reads any forward sequence of ranges exactly; and a container written with
 * direct I/O equals one written buffered, byte for byte, and passes verification both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsq_container.h"
#include "dsq_core.h"
#include "dsq_test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *read_all(const char *path, size_t *n) {
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(dsq_read_file(path, (size_t)1 << 30, &buf, &len, NULL), DSQ_OK);
    *n = len;
    return (uint8_t *)buf;
}

/* A pattern written as many writes of awkward sizes at awkward offsets (some spanning several bounce
 * buffers), in a shuffled order, direct and buffered: both files equal the pattern. */
static void test_afile_direct_equals_buffered(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir();
    const size_t total = (size_t)DSQ_AFILE_BOUNCE * 2 + 3 * 4096 + 777;
    uint8_t *pat = malloc(total);
    for (size_t i = 0; i < total; i++) pat[i] = (uint8_t)(rnd() >> 56);
    /* cut points: tiny pieces, pieces just over the direct threshold, a piece over two bounce buffers */
    size_t cuts[64], nc = 0, pos = 0;
    const size_t sizes[] = {1, 4095, DSQ_AFILE_DIRECT_MIN + 1, 4096 * 70 + 3, (size_t)DSQ_AFILE_BOUNCE + 4096 * 3 + 5,
                            DSQ_AFILE_DIRECT_MIN * 2 - 7};
    for (size_t k = 0; pos < total && nc < 63; k++) {
        cuts[nc++] = pos;
        pos += sizes[k % (sizeof sizes / sizeof sizes[0])];
    }
    cuts[nc] = total;
    for (int direct = 0; direct < 2; direct++) {
        char *path = dsq_path_join(dir, direct ? "d.bin" : "b.bin");
        dsq_afile f;
        dsq_afile_options o = {.direct = direct != 0, .preallocate = total};
        assert_int_equal(dsq_afile_open(path, &o, &f, NULL), DSQ_OK);
        if (direct) {
            /* /tmp here is a real disk filesystem: the direct path must be taken (tmpfs would refuse it) */
            fprintf(stderr, "  O_DIRECT %s on %s\n", f.dfd >= 0 ? "in use" : "refused by the filesystem", dir);
        }
        /* odd pieces first, then even ones: writes are not in file order */
        for (int par = 1; par >= 0; par--)
            for (size_t c = (size_t)par; c < nc; c += 2)
                assert_int_equal(dsq_afile_pwrite(&f, cuts[c], pat + cuts[c], cuts[c + 1] - cuts[c], NULL), DSQ_OK);
        assert_int_equal(dsq_afile_commit(&f, NULL), DSQ_OK);
        size_t n;
        uint8_t *got = read_all(path, &n);
        assert_int_equal(n, total);
        assert_memory_equal(got, pat, total);
        free(got);
        dsq_free(path);
    }
    free(pat);
    dsq_test_rmdir(dir);
    dsq_free(dir);
}

/* Forward reads of ranges of every size class return the file's bytes. */
static void test_seqread_ranges(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir();
    char *path = dsq_path_join(dir, "f.bin");
    const size_t total = (size_t)20 * 1024 * 1024 + 1234;
    uint8_t *pat = malloc(total);
    for (size_t i = 0; i < total; i++) pat[i] = (uint8_t)(rnd() >> 40);
    assert_int_equal(dsq_write_file_atomic(path, pat, total, false, NULL), DSQ_OK);
    dsq_seqread s;
    assert_int_equal(dsq_seqread_open(path, &s, NULL), DSQ_OK);
    fprintf(stderr, "  seqread: O_DIRECT %s\n", s.direct ? "in use" : "refused");
    uint64_t off = 3;
    int ranges = 0;
    while (off < total) {
        uint64_t n = rnd() % 3 == 0 ? rnd() % 9000000 : rnd() % 5000;
        if (n > total - off) n = total - off;
        uint64_t o = off, left = n;
        while (left > 0) {
            const uint8_t *p;
            size_t got;
            assert_int_equal(dsq_seqread_get(&s, o, left, &p, &got, NULL), DSQ_OK);
            assert_true(got >= 1 && got <= left);
            assert_memory_equal(p, pat + o, got);
            o += got, left -= got;
        }
        off += n + rnd() % 70000; /* skip a gap now and then */
        ranges++;
    }
    /* the last byte, and a range past the end is refused */
    const uint8_t *p;
    size_t got;
    assert_int_equal(dsq_seqread_get(&s, total - 1, 1, &p, &got, NULL), DSQ_OK);
    assert_int_equal(*p, pat[total - 1]);
    assert_int_equal(dsq_seqread_get(&s, total - 1, 2, &p, &got, NULL), DSQ_ERR_RANGE);
    assert_true(ranges > 10);
    dsq_seqread_close(&s);
    free(pat);
    dsq_free(path);
    dsq_test_rmdir(dir);
    dsq_free(dir);
}

/* A container with tensors above and below the direct threshold, written direct and buffered. */
static void write_container(const char *path, bool direct, const uint8_t *data, const uint64_t *sizes, int nt) {
    dsq_ctr_writer *w = NULL;
    dsq_ctr_writer_options o = {.direct = direct};
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, &o, &w, &e), DSQ_OK);
    for (int i = 0; i < nt; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        dsq_ctr_source_desc sd = {name, NULL, 0, sizes[i] / 4, false, DSQ_DTYPE_I32, -1, DSQ_FILE_SHARD_UNKNOWN};
        dsq_ctr_tensor_desc d = {name, DSQ_ENC_I32, 1, {sizes[i] / 4}, 0, 0, 1, &sd};
        if (dsq_ctr_writer_add(w, &d, NULL, &e) != DSQ_OK) fail_msg("%s", e.msg);
    }
    assert_int_equal(dsq_ctr_writer_begin(w, &e), DSQ_OK);
    uint64_t at = 0;
    for (int i = 0; i < nt; i++) {
        /* in two writes (offsets within the part), the second starting at an unaligned offset */
        uint64_t half = sizes[i] / 2 + 4;
        if (half > sizes[i]) half = sizes[i];
        assert_int_equal(dsq_ctr_writer_write(w, (uint32_t)i, 0, 0, data + at, (size_t)half, &e), DSQ_OK);
        assert_int_equal(dsq_ctr_writer_write(w, (uint32_t)i, 0, half, data + at + half,
                                              (size_t)(sizes[i] - half), &e),
                         DSQ_OK);
        assert_int_equal(dsq_ctr_writer_end_tensor(w, (uint32_t)i, &e), DSQ_OK);
        at += sizes[i];
    }
    assert_int_equal(dsq_ctr_writer_finish(w, &e), DSQ_OK); /* reopens and verifies (direct reads when direct) */
}

static void test_container_direct_equals_buffered(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir();
    const uint64_t sizes[] = {4, 1u << 20, 12 * 1024 * 1024 + 4, 64, 3 * 1024 * 1024 + 12, 300 * 1024};
    int nt = (int)(sizeof sizes / sizeof sizes[0]);
    uint64_t sum = 0;
    for (int i = 0; i < nt; i++) sum += sizes[i];
    uint8_t *data = malloc(sum);
    for (uint64_t i = 0; i < sum; i++) data[i] = (uint8_t)(rnd() >> 50);
    char *pd = dsq_path_join(dir, "d.dsq"), *pb = dsq_path_join(dir, "b.dsq");
    write_container(pd, true, data, sizes, nt);
    write_container(pb, false, data, sizes, nt);
    size_t nd, nb;
    uint8_t *a = read_all(pd, &nd), *b = read_all(pb, &nb);
    assert_int_equal(nd, nb);
    assert_memory_equal(a, b, nd);
    /* and the direct file verifies through the ordinary reader too */
    dsq_ctr_reader *r = NULL;
    dsq_ctr_reader_options ro = {.verify = true};
    assert_int_equal(dsq_ctr_reader_open(pd, &ro, &r, NULL), DSQ_OK);
    dsq_ctr_reader_close(r);
    /* a flipped byte in the big tensor is caught by the direct verification */
    a[nd / 2] ^= 0x40;
    char *pc = dsq_path_join(dir, "c.dsq");
    assert_int_equal(dsq_write_file_atomic(pc, a, nd, false, NULL), DSQ_OK);
    ro.verify_direct = true;
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_reader_open(pc, &ro, &r, &e), DSQ_ERR_CHECKSUM);
    assert_non_null(strstr(e.msg, "checksum mismatch"));
    dsq_err_clear(&e);
    free(a);
    free(b);
    free(data);
    dsq_free(pd);
    dsq_free(pb);
    dsq_free(pc);
    dsq_test_rmdir(dir);
    dsq_free(dir);
}

/* The background verifier reads every finished tensor back from the disk: a byte changed on disk
 * after it was written (the writer hashed what it was given) fails finish, and no output appears. */
static void test_verifier_catches_disk_corruption(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir();
    char *path = dsq_path_join(dir, "v.dsq");
    const uint64_t size = 6u << 20;
    uint8_t *data = malloc(size);
    for (uint64_t i = 0; i < size; i++) data[i] = (uint8_t)(rnd() >> 45);
    dsq_ctr_writer *w = NULL;
    dsq_ctr_writer_options o = {.direct = true};
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, &o, &w, &e), DSQ_OK);
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "b" : "a";
        dsq_ctr_source_desc sd = {name, NULL, 0, size / 4, false, DSQ_DTYPE_I32, -1, DSQ_FILE_SHARD_UNKNOWN};
        dsq_ctr_tensor_desc d = {name, DSQ_ENC_I32, 1, {size / 4}, 0, 0, 1, &sd};
        assert_int_equal(dsq_ctr_writer_add(w, &d, NULL, &e), DSQ_OK);
    }
    assert_int_equal(dsq_ctr_writer_begin(w, &e), DSQ_OK);
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(dsq_ctr_writer_write(w, i, 0, 0, data, (size_t)size, &e), DSQ_OK);
        if (i == 1) { /* tensor b: flip one byte on disk behind the writer's back */
            const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
            char *partial = dsq_path_join(dir, ".v.dsq.partial");
            int fd = open(partial, O_WRONLY);
            assert_true(fd >= 0);
            uint8_t b = (uint8_t)(data[12345] ^ 1);
            assert_int_equal(pwrite(fd, &b, 1, (off_t)(t->parts[0].offset + 12345)), 1);
            close(fd);
            dsq_free(partial);
        }
        assert_int_equal(dsq_ctr_writer_end_tensor(w, i, &e), DSQ_OK);
    }
    assert_int_equal(dsq_ctr_writer_finish(w, &e), DSQ_ERR_CHECKSUM);
    assert_non_null(strstr(e.msg, "tensor b"));
    assert_non_null(strstr(e.msg, "reads back with checksum"));
    dsq_err_clear(&e);
    assert_false(dsq_path_exists(path));
    free(data);
    dsq_free(path);
    dsq_test_rmdir(dir);
    dsq_free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_afile_direct_equals_buffered),
        cmocka_unit_test(test_seqread_ranges),
        cmocka_unit_test(test_container_direct_equals_buffered),
        cmocka_unit_test(test_verifier_catches_disk_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
