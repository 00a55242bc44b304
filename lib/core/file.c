/* Read-only file mappings, whole-file reads, atomic publication, progress, signals. */
#include "dsq_core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double dsq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Live mappings, for the SIGBUS handler (a test-visible process table like alloc.c's fault
 * counters; the mappings' owners stay in their contexts).  A slot is claimed by CAS on `base`;
 * path and size are written before base is published and read only after base matches. */
static struct {
    _Atomic(uintptr_t) base;
    _Atomic(uint64_t) size;
    _Atomic(const char *) path;
} g_maps[DSQ_MAP_TRACKED];

static void map_track(const dsq_map *m) {
    for (size_t i = 0; i < DSQ_MAP_TRACKED; i++) {
        uintptr_t zero = 0;
        if (atomic_load(&g_maps[i].base) != 0) continue;
        atomic_store(&g_maps[i].size, 0);
        if (!atomic_compare_exchange_strong(&g_maps[i].base, &zero, (uintptr_t)1)) continue; /* claimed */
        atomic_store(&g_maps[i].path, m->path);
        atomic_store(&g_maps[i].size, m->size);
        atomic_store(&g_maps[i].base, (uintptr_t)m->data);
        return;
    }
}

static void map_untrack(const dsq_map *m) {
    for (size_t i = 0; i < DSQ_MAP_TRACKED; i++)
        if (atomic_load(&g_maps[i].base) == (uintptr_t)m->data) {
            atomic_store(&g_maps[i].size, 0);
            atomic_store(&g_maps[i].path, NULL);
            atomic_store(&g_maps[i].base, 0);
            return;
        }
}

bool dsq_map_lookup(const void *addr, const char **path, uint64_t *offset) {
    uintptr_t a = (uintptr_t)addr;
    for (size_t i = 0; i < DSQ_MAP_TRACKED; i++) {
        uintptr_t b = atomic_load(&g_maps[i].base);
        if (b <= 1 || a < b) continue;
        uint64_t n = atomic_load(&g_maps[i].size);
        const char *p = atomic_load(&g_maps[i].path);
        if (a - b < n && p && atomic_load(&g_maps[i].base) == b) {
            *path = p;
            *offset = a - b;
            return true;
        }
    }
    return false;
}

static dsq_sigbus_fn g_on_sigbus;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    const char *path;
    uint64_t off;
    if (g_on_sigbus && si && dsq_map_lookup(si->si_addr, &path, &off)) g_on_sigbus(path, off);
    signal(sig, SIG_DFL); /* not ours (or on_fault returned): the default action on return */
}

void dsq_sigbus_install(dsq_sigbus_fn on_fault) {
    g_on_sigbus = on_fault;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* Open an input read-only without blocking: a FIFO (or a device) would block open() itself until a
 * writer appears, so the open is O_NONBLOCK, the type is checked on the descriptor, and O_NONBLOCK is
 * cleared again for the reads.  `extra` adds flags (O_DIRECT).  Fills *st. */
static dsq_status open_regular(const char *path, int extra, int *fd_out, struct stat *st, dsq_err *err) {
    *fd_out = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra);
    if (fd < 0) return dsq_err_set(err, errno == ENOENT ? DSQ_ERR_MISSING : DSQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return dsq_err_set(err, DSQ_ERR_IO, "%s: not a regular file (%s)", path,
                           S_ISFIFO(st->st_mode)  ? "a FIFO"
                           : S_ISDIR(st->st_mode) ? "a directory"
                           : S_ISSOCK(st->st_mode) ? "a socket"
                                                   : "a device");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot set blocking reads: %s", path, strerror(e));
    }
    *fd_out = fd;
    return DSQ_OK;
}

dsq_status dsq_open_regular(const char *path, int *fd, dsq_err *err) {
    struct stat st;
    return open_regular(path, 0, fd, &st, err);
}

dsq_status dsq_map_open(const char *path, bool use_mmap, dsq_map *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    out->fd = -1;
    int fd;
    struct stat st;
    DSQ_TRY(open_regular(path, 0, &fd, &st, err));
    out->path = dsq_strdup(path);
    if (!out->path) {
        close(fd);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    out->fd = fd;
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    if (use_mmap && out->size > 0) {
        if (out->size > (uint64_t)SIZE_MAX) {
            dsq_map_close(out);
            return dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: file too large to map", path);
        }
        void *p = mmap(NULL, (size_t)out->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            dsq_map_close(out);
            return dsq_err_set(err, DSQ_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        out->data = p;
        map_track(out);
    }
    return DSQ_OK;
}

void dsq_map_close(dsq_map *m) {
    if (!m) return;
    if (m->data) {
        map_untrack(m);
        munmap((void *)m->data, (size_t)m->size);
    }
    if (m->fd >= 0) close(m->fd);
    dsq_free(m->path);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

dsq_status dsq_map_read(const dsq_map *m, uint64_t offset, void *buf, size_t n, dsq_err *err) {
    if (offset > m->size || n > m->size - offset)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: read of %zu bytes at offset %llu past end (%llu bytes)", m->path, n,
                           (unsigned long long)offset, (unsigned long long)m->size);
    if (m->data) {
        memcpy(buf, m->data + offset, n);
        return DSQ_OK;
    }
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(m->fd, p, n, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return dsq_err_set(err, DSQ_ERR_IO, "%s: read at offset %llu failed: %s", m->path, (unsigned long long)offset,
                               r < 0 ? strerror(errno) : "unexpected end of file");
        p += r;
        n -= (size_t)r;
        offset += (uint64_t)r;
    }
    return DSQ_OK;
}

static void map_advise(const dsq_map *m, uint64_t offset, uint64_t n, int advice) {
    if (!m->data || offset >= m->size) return;
    if (n > m->size - offset) n = m->size - offset;
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t start = offset & ~(uint64_t)(pg - 1);
    madvise((void *)(m->data + start), (size_t)(offset + n - start), advice);
}
void dsq_map_willneed(const dsq_map *m, uint64_t offset, uint64_t n) { map_advise(m, offset, n, MADV_WILLNEED); }
void dsq_map_dontneed(const dsq_map *m, uint64_t offset, uint64_t n) { map_advise(m, offset, n, MADV_DONTNEED); }

dsq_status dsq_read_file(const char *path, size_t max, char **out, size_t *out_len, dsq_err *err) {
    *out = NULL;
    dsq_map m;
    DSQ_TRY(dsq_map_open(path, false, &m, err));
    if (m.size > max) {
        dsq_map_close(&m);
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: file is %llu bytes, more than the %zu allowed", path,
                           (unsigned long long)m.size, max);
    }
    char *buf = dsq_malloc((size_t)m.size + 1);
    if (!buf) {
        dsq_map_close(&m);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    dsq_status s = dsq_map_read(&m, 0, buf, (size_t)m.size, err);
    if (s != DSQ_OK) {
        dsq_free(buf);
        dsq_map_close(&m);
        return s;
    }
    buf[m.size] = 0;
    if (out_len) *out_len = (size_t)m.size;
    *out = buf;
    dsq_map_close(&m);
    return DSQ_OK;
}

bool dsq_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
bool dsq_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
char *dsq_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = dsq_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* ---- atomic files ---- */

/* DIR/.BASE<suffix> beside final_path. */
static char *side_name(const char *final_path, const char *suffix) {
    const char *slash = strrchr(final_path, '/');
    size_t dlen = slash ? (size_t)(slash - final_path + 1) : 0;
    const char *base = slash ? slash + 1 : final_path;
    size_t n = dlen + 1 + strlen(base) + strlen(suffix) + 1;
    char *p = dsq_malloc(n);
    if (p) snprintf(p, n, "%.*s.%s%s", (int)dlen, final_path, base, suffix);
    return p;
}

dsq_status dsq_lock_output(const char *final_path, dsq_lock *out, dsq_err *err) {
    out->fd = -1;
    out->path = side_name(final_path, ".lock");
    if (!out->path) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", final_path);
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(out->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            int e = errno;
            dsq_lock_release(out);
            return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot create the lock file: %s", final_path, strerror(e));
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char pid[32] = {0};
            ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
            if (r > 0) pid[strcspn(pid, "\n")] = 0;
            close(fd);
            char *lp = out->path;
            out->path = NULL;
            dsq_status s =
                e == EWOULDBLOCK
                    ? dsq_err_set(err, DSQ_ERR_EXISTS,
                                  "%s: another dsq job (pid %s) is writing this output and holds %s; wait for it or stop it",
                                  final_path, r > 0 && pid[0] ? pid : "unknown", lp)
                    : dsq_err_set(err, DSQ_ERR_IO, "%s: cannot lock %s: %s", final_path, lp, strerror(e));
            dsq_free(lp);
            return s;
        }
        /* the holder we waited for may have removed the file: then lock the new one */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(out->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            char pid[32];
            int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
            if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, pid, (size_t)n, 0); /* the pid is a courtesy */
            out->fd = fd;
            return DSQ_OK;
        }
        close(fd);
    }
    dsq_lock_release(out);
    return dsq_err_set(err, DSQ_ERR_IO, "%s: the lock file keeps changing under us", final_path);
}

void dsq_lock_release(dsq_lock *l) {
    if (!l) return;
    if (l->fd >= 0 && l->path) { /* (a zeroed struct holds nothing) */
        unlink(l->path);
        close(l->fd);
    }
    dsq_free(l->path);
    l->path = NULL;
    l->fd = -1;
}

static dsq_status fsync_dir_of(const char *path, dsq_err *err) {
    char *copy = dsq_strdup(path);
    if (!copy) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    dsq_status s = DSQ_OK;
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno != EINVAL)
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: fsync of directory failed: %s", dir, strerror(errno));
        close(fd);
    }
    dsq_free(copy);
    return s;
}

/* 4096-aligned memory for O_DIRECT buffers (freed with free()). */
static void *page_alloc(size_t n) {
    if (dsq__fault_hit(DSQ_FAULT_MALLOC)) return NULL;
    void *p = NULL;
    return posix_memalign(&p, 4096, n ? n : 1) == 0 ? p : NULL;
}

/* ---- sequential reads with O_DIRECT ---- */

enum { SEQ_WINDOW = 8u << 20 };

dsq_status dsq_seqread_open(const char *path, dsq_seqread *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    out->direct = open_regular(path, O_DIRECT, &out->fd, &sb, NULL) == DSQ_OK;
    if (!out->direct) DSQ_TRY(open_regular(path, 0, &out->fd, &sb, err));
    out->path = dsq_strdup(path);
    out->buf = page_alloc(SEQ_WINDOW);
    if (!out->path || !out->buf) {
        dsq_seqread_close(out);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: cannot set up reading", path);
    }
    out->size = (uint64_t)sb.st_size;
    return DSQ_OK;
}

void dsq_seqread_forget(dsq_seqread *s) { s->wstart = s->wlen = 0; }

void dsq_seqread_close(dsq_seqread *s) {
    if (s->fd >= 0) close(s->fd);
    free(s->buf);
    dsq_free(s->path);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

dsq_status dsq_seqread_get(dsq_seqread *s, uint64_t offset, uint64_t n, const uint8_t **p, size_t *got, dsq_err *err) {
    if (offset > s->size || n > s->size - offset)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: read of %llu bytes at offset %llu past end (%llu bytes)", s->path,
                           (unsigned long long)n, (unsigned long long)offset, (unsigned long long)s->size);
    if (n == 0) {
        *p = s->buf, *got = 0;
        return DSQ_OK;
    }
    if (offset < s->wstart || offset >= s->wstart + s->wlen) {
        /* what is asked for, in whole blocks, at most the window */
        uint64_t start = offset / 4096 * 4096, end = offset + n;
        end = (end + 4095) / 4096 * 4096;
        if (end > s->size) end = s->size;
        uint64_t want = end - start < SEQ_WINDOW ? end - start : SEQ_WINDOW;
        uint64_t len = 0;
        while (len < want) {
            size_t ask = s->direct ? (size_t)((want - len + 4095) / 4096 * 4096) : (size_t)(want - len); /* whole blocks */
            ssize_t r = pread(s->fd, s->buf + len, ask, (off_t)(start + len));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno == EINVAL && s->direct) { /* refused after all: read buffered */
                int fd = open(s->path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot open: %s", s->path, strerror(errno));
                close(s->fd);
                s->fd = fd, s->direct = false;
                continue;
            }
            if (r <= 0)
                return dsq_err_set(err, DSQ_ERR_IO, "%s: read at offset %llu failed: %s", s->path,
                                   (unsigned long long)(start + len), r < 0 ? strerror(errno) : "unexpected end of file");
            len += (uint64_t)r;
            if (s->direct && len % 4096) break; /* end of file */
        }
        if (len < want && len <= offset - start)
            return dsq_err_set(err, DSQ_ERR_IO, "%s: short read at offset %llu", s->path, (unsigned long long)start);
        s->wstart = start, s->wlen = len < want ? len : want;
    }
    uint64_t avail = s->wstart + s->wlen - offset;
    *p = s->buf + (offset - s->wstart);
    *got = (size_t)(avail < n ? avail : n);
    return DSQ_OK;
}

dsq_status dsq_afile_open(const char *final_path, const dsq_afile_options *opt, dsq_afile *out, dsq_err *err) {
    dsq_afile_options o = {0};
    if (opt) o = *opt;
    memset(out, 0, sizeof *out);
    out->fd = out->dfd = out->lock.fd = -1;
    if (!o.overwrite && dsq_path_exists(final_path))
        return dsq_err_set(err, DSQ_ERR_EXISTS, "%s: already exists (use --overwrite to replace it)", final_path);
    if (!o.caller_locked) DSQ_TRY(dsq_lock_output(final_path, &out->lock, err));
    out->final_path = dsq_strdup(final_path);
    out->tmp_path = side_name(final_path, ".partial");
    if (!out->final_path || !out->tmp_path) {
        dsq_afile_abort(out);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", final_path);
    }
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
    if (o.keep_partial) {
        out->fd = open(out->tmp_path, flags, 0644);
    } else {
        unlink(out->tmp_path); /* a stale partial from a crashed run without --resume */
        out->fd = open(out->tmp_path, flags | O_EXCL, 0644);
    }
    if (out->fd < 0) {
        int e = errno;
        dsq_err_set(err, DSQ_ERR_IO, "%s: cannot create: %s", out->tmp_path, strerror(e));
        dsq_free(out->tmp_path);
        out->tmp_path = NULL; /* not ours: do not unlink */
        dsq_afile_abort(out);
        return DSQ_ERR_IO;
    }
    if (o.direct) {
        out->dfd = open(out->tmp_path, O_WRONLY | O_CLOEXEC | O_DIRECT);
        if (out->dfd >= 0 && !(out->bounce = page_alloc(DSQ_AFILE_BOUNCE))) {
            close(out->dfd);
            out->dfd = -1;
        }
    }
    if (o.preallocate > 0) {
        int r = posix_fallocate(out->fd, 0, (off_t)o.preallocate);
        if (r == ENOSPC || r == EFBIG) {
            if (o.keep_partial) dsq_afile_release(out); /* a resumed job's partial file is not ours to remove */
            else dsq_afile_abort(out);
            return dsq_err_set(err, DSQ_ERR_NOSPACE, "%s: cannot reserve %llu bytes: %s", final_path,
                               (unsigned long long)o.preallocate, strerror(r));
        }
        /* EOPNOTSUPP/EINVAL etc.: the filesystem cannot preallocate; writes will report ENOSPC. */
    }
    return DSQ_OK;
}

static dsq_status write_errno(dsq_afile *f, int e, uint64_t offset, dsq_err *err) {
    dsq_status s = (e == ENOSPC || e == EFBIG || e == EDQUOT) ? DSQ_ERR_NOSPACE : DSQ_ERR_IO;
    return dsq_err_set(err, s, "%s: write at offset %llu failed: %s", f->tmp_path, (unsigned long long)offset, strerror(e));
}

static dsq_status pwrite_fd(dsq_afile *f, int fd, uint64_t offset, const void *buf, size_t n, dsq_err *err) {
    const uint8_t *p = buf;
    while (n > 0) {
        if (dsq__fault_hit(DSQ_FAULT_WRITE)) return write_errno(f, EIO, offset, err);
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pwrite(fd, p, chunk, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return write_errno(f, errno, offset, err);
        if (r == 0) return write_errno(f, ENOSPC, offset, err);
        p += r;
        n -= (size_t)r;
        offset += (uint64_t)r;
    }
    return DSQ_OK;
}

enum { DIO_ALIGN = 4096 };

/* The aligned middle [a, b) of a write through the bounce buffer with O_DIRECT.  A short direct write
 * (possible near ENOSPC) or EINVAL (a filesystem that takes O_DIRECT opens but not these writes)
 * falls back to buffered writes for the rest, which report the real error if there is one. */
static dsq_status direct_middle(dsq_afile *f, uint64_t a, const uint8_t *src, uint64_t len, dsq_err *err) {
    while (len > 0 && f->dfd >= 0) {
        size_t k = len > DSQ_AFILE_BOUNCE ? DSQ_AFILE_BOUNCE : (size_t)len;
        if (dsq__fault_hit(DSQ_FAULT_WRITE)) return write_errno(f, EIO, a, err);
        memcpy(f->bounce, src, k);
        ssize_t r;
        do r = pwrite(f->dfd, f->bounce, k, (off_t)a);
        while (r < 0 && errno == EINTR);
        if (r < 0 && errno != EINVAL) return write_errno(f, errno, a, err);
        if (r != (ssize_t)k) { /* EINVAL or short: finish this piece and the rest buffered */
            close(f->dfd);
            f->dfd = -1;
            break;
        }
        a += k, src += k, len -= k;
    }
    return len ? pwrite_fd(f, f->fd, a, src, (size_t)len, err) : DSQ_OK;
}

dsq_status dsq_afile_pwrite(dsq_afile *f, uint64_t offset, const void *buf, size_t n, dsq_err *err) {
    if (f->dfd < 0 || n < DSQ_AFILE_DIRECT_MIN) return pwrite_fd(f, f->fd, offset, buf, n, err);
    const uint8_t *p = buf;
    uint64_t a = (offset + DIO_ALIGN - 1) / DIO_ALIGN * DIO_ALIGN, b = (offset + n) / DIO_ALIGN * DIO_ALIGN;
    if (b <= a) return pwrite_fd(f, f->fd, offset, buf, n, err);
    /* the edges' partial blocks are written buffered; the direct range never shares a block with them */
    DSQ_TRY(pwrite_fd(f, f->fd, offset, p, (size_t)(a - offset), err));
    DSQ_TRY(direct_middle(f, a, p + (a - offset), b - a, err));
    return pwrite_fd(f, f->fd, b, p + (b - offset), (size_t)(offset + n - b), err);
}

dsq_status dsq_afile_write(dsq_afile *f, const void *buf, size_t n, dsq_err *err) {
    DSQ_TRY(dsq_afile_pwrite(f, f->written, buf, n, err));
    f->written += n;
    return DSQ_OK;
}

static void close_direct(dsq_afile *f) {
    if (f->dfd >= 0) close(f->dfd);
    f->dfd = -1;
    free(f->bounce);
    f->bounce = NULL;
}

void dsq_afile_release(dsq_afile *f) {
    close_direct(f);
    if (f->fd >= 0) close(f->fd);
    dsq_lock_release(&f->lock);
    dsq_free(f->tmp_path);
    dsq_free(f->final_path);
    memset(f, 0, sizeof *f);
    f->fd = f->dfd = f->lock.fd = -1;
}

dsq_status dsq_afile_commit(dsq_afile *f, dsq_err *err) {
    close_direct(f);
    if (dsq__fault_hit(DSQ_FAULT_FSYNC) || fdatasync(f->fd) != 0) {
        int e = errno ? errno : EIO;
        dsq_err_set(err, DSQ_ERR_IO, "%s: fdatasync failed: %s", f->tmp_path, strerror(e));
        dsq_afile_abort(f);
        return DSQ_ERR_IO;
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        dsq_err_set(err, DSQ_ERR_IO, "%s: close failed: %s", f->tmp_path, strerror(errno));
        dsq_afile_abort(f);
        return DSQ_ERR_IO;
    }
    if (rename(f->tmp_path, f->final_path) != 0) {
        dsq_err_set(err, DSQ_ERR_IO, "%s: rename to %s failed: %s", f->tmp_path, f->final_path, strerror(errno));
        dsq_afile_abort(f);
        return DSQ_ERR_IO;
    }
    dsq_status s = fsync_dir_of(f->final_path, err);
    dsq_lock_release(&f->lock);
    dsq_free(f->tmp_path);
    dsq_free(f->final_path);
    memset(f, 0, sizeof *f);
    f->fd = f->dfd = f->lock.fd = -1;
    return s;
}

void dsq_afile_abort(dsq_afile *f) {
    if (!f) return;
    close_direct(f);
    if (f->fd >= 0) close(f->fd);
    if (f->tmp_path) unlink(f->tmp_path);
    dsq_lock_release(&f->lock);
    dsq_free(f->tmp_path);
    dsq_free(f->final_path);
    memset(f, 0, sizeof *f);
    f->fd = f->dfd = f->lock.fd = -1;
}

dsq_status dsq_write_file_atomic(const char *path, const void *buf, size_t n, bool overwrite, dsq_err *err) {
    dsq_afile f;
    dsq_afile_options o = {.overwrite = overwrite};
    DSQ_TRY(dsq_afile_open(path, &o, &f, err));
    dsq_status s = dsq_afile_write(&f, buf, n, err);
    if (s != DSQ_OK) {
        dsq_afile_abort(&f);
        return s;
    }
    return dsq_afile_commit(&f, err);
}

/* ---- progress ---- */

static void human_bytes(double b, char *out, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, "%.1f %s", b, u[i]);
}

void dsq_progress_begin(dsq_progress *p, const char *label, uint64_t total_bytes) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total_bytes;
    p->t_start = p->t_last = dsq_now();
    p->enabled = isatty(2) && !getenv("DSQ_NO_PROGRESS");
}

static void progress_draw(dsq_progress *p, double now) {
    char a[32], b[32], r[32];
    double el = now - p->t_start;
    double rate = el > 0 ? (double)p->done / el : 0;
    human_bytes((double)p->done, a, sizeof a);
    human_bytes((double)p->total, b, sizeof b);
    human_bytes(rate, r, sizeof r);
    double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
    fprintf(stderr, "\r%s: %s / %s  %s/s  ETA %02d:%02d  ", p->label, a, b, r, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

void dsq_progress_add(dsq_progress *p, uint64_t bytes) {
    p->done += bytes;
    if (!p->enabled) return;
    double now = dsq_now();
    if (now - p->t_last < 0.1) return;
    p->t_last = now;
    progress_draw(p, now);
}

void dsq_progress_end(dsq_progress *p) {
    if (!p->enabled) return;
    progress_draw(p, dsq_now());
    fputc('\n', stderr);
}

/* ---- signals ---- */

static volatile sig_atomic_t g_interrupts;

static void on_signal(int sig) {
    if (g_interrupts++ > 0) {
        signal(sig, SIG_DFL);
        raise(sig); /* second signal: exit at once */
    }
}

void dsq_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool dsq_interrupted(void) { return g_interrupts > 0; }
