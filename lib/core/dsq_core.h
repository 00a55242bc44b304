/* dsq core: status codes, error reports, checked size arithmetic, a bounds-checked cursor,
 * fault-injectable allocation and file I/O, atomic file publication, progress reporting.
 *
 * Every other part of lib/ depends on this header and nothing here depends on them.
 * No cJSON, zstd or CUDA types appear in this header. */
#ifndef DSQ_CORE_H
#define DSQ_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DSQ_VERSION_STRING "0.1.0"

/* ---- status ---------------------------------------------------------------------------------- */

/* 0 = ok, negative = error.  Numbers are explicit and never reused. */
typedef int dsq_status;
enum {
    DSQ_OK = 0,
    DSQ_ERR_IO = -1,          /* open/read/write/mmap/fsync failed (errno in the message) */
    DSQ_ERR_NOMEM = -2,       /* allocation failed */
    DSQ_ERR_FORMAT = -3,      /* malformed file structure */
    DSQ_ERR_OVERFLOW = -4,    /* a size computed from input overflows */
    DSQ_ERR_RANGE = -5,       /* offset/index/value out of the allowed range */
    DSQ_ERR_JSON = -6,        /* JSON not well-formed, or a member of the wrong type */
    DSQ_ERR_DTYPE = -7,       /* unknown or unexpected dtype / encoding */
    DSQ_ERR_SHAPE = -8,       /* shape does not match what is required */
    DSQ_ERR_MISSING = -9,     /* a required file, tensor or field is absent */
    DSQ_ERR_DUPLICATE = -10,  /* the same name appears twice */
    DSQ_ERR_CONFIG = -11,     /* config value inconsistent */
    DSQ_ERR_CHECKSUM = -12,   /* stored checksum does not match the bytes */
    DSQ_ERR_ARG = -13,        /* bad argument from the caller / command line */
    DSQ_ERR_UNSUPPORTED = -14,/* valid but not supported by this version */
    DSQ_ERR_NONFINITE = -15,  /* NaN/Inf where finite values are required */
    DSQ_ERR_INTERRUPTED = -16,/* stopped by a signal */
    DSQ_ERR_NOSPACE = -17,    /* ENOSPC / EFBIG / not enough free space */
    DSQ_ERR_VERSION = -18,    /* unsupported format version */
    DSQ_ERR_MAGIC = -19,      /* wrong magic bytes */
    DSQ_ERR_OVERLAP = -20,    /* two byte ranges overlap */
    DSQ_ERR_TRUNCATED = -21,  /* file shorter than its header says */
    DSQ_ERR_UNEXPECTED = -22, /* an item that should not be there */
    DSQ_ERR_EXISTS = -23,     /* output exists (use --overwrite) */
    DSQ_ERR_STATE = -24,      /* API misuse (wrong call order) */
    DSQ_ERR_TOKEN = -25,      /* token id outside the vocabulary */
};
const char *dsq_status_str(dsq_status s);

/* ---- error reports ----------------------------------------------------------------------------
 * A dsq_err collects problems.  `status` and `msg` hold the FIRST problem (one line, naming file,
 * tensor, offset); `n` counts all of them and `all` holds every message, newline-separated, so a
 * validator can report everything it found instead of stopping at the first.  Functions that take
 * a `dsq_err *` accept NULL.  Initialise with DSQ_ERR_INIT or dsq_err_init(); release with
 * dsq_err_clear() (frees `all`; the struct itself is the caller's). */
#define DSQ_ERR_MSG_MAX 1024
/* `all` keeps the first DSQ_ERR_MAX_PROBLEMS messages; later problems are only counted in `n`, and
 * dsq_err_print ends with "... and K more problems" (a hostile file with a million bad tensors costs
 * one counter, not a million formatted lines). */
#define DSQ_ERR_MAX_PROBLEMS 100
typedef struct dsq_err {
    dsq_status status;
    size_t n;
    char msg[DSQ_ERR_MSG_MAX];
    char *all;     /* heap, newline-separated, NULL when n == 0 */
    size_t all_len, all_cap;
} dsq_err;
#define DSQ_ERR_INIT {0, 0, {0}, NULL, 0, 0}
void dsq_err_init(dsq_err *e);
void dsq_err_clear(dsq_err *e);
/* Record a problem; returns `status` so callers can `return dsq_err_set(...)`. */
dsq_status dsq_err_set(dsq_err *e, dsq_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
dsq_status dsq_err_setv(dsq_err *e, dsq_status status, const char *fmt, va_list ap);
/* Print the recorded problems to `f`, one per line, each prefixed with `prefix` (may be NULL): at most
 * DSQ_ERR_MAX_PROBLEMS lines, then one "... and K more problems" line when more were counted. */
void dsq_err_print(const dsq_err *e, FILE *f, const char *prefix);

#define DSQ_RETURN_IF(cond, err, code, ...)                                                        \
    do {                                                                                           \
        if (cond) return dsq_err_set((err), (code), __VA_ARGS__);                                  \
    } while (0)
#define DSQ_TRY(expr)                                                                              \
    do {                                                                                           \
        dsq_status dsq__s = (expr);                                                                \
        if (dsq__s != DSQ_OK) return dsq__s;                                                       \
    } while (0)

/* ---- checked size arithmetic (RELIABILITY.md: every size derived from a file) -------------- */
/* Each returns true on success and writes *out; false on overflow (then *out is unchanged). */
static inline bool dsq_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
static inline bool dsq_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
/* Round x up to a multiple of `align` (a power of two, 1 ≤ align ≤ 2^30). */
static inline bool dsq_pad_u64(uint64_t x, uint64_t align, uint64_t *out) {
    if (align == 0 || (align & (align - 1)) != 0 || align > (1u << 30)) return false;
    uint64_t r;
    if (__builtin_add_overflow(x, align - 1, &r)) return false;
    *out = r & ~(align - 1);
    return true;
}
/* Product of n dims; false on overflow. */
bool dsq_prod_u64(const uint64_t *dims, int n, uint64_t *out);
/* Integer ceil(a/b) for b > 0. */
static inline uint64_t dsq_ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

/* ---- bounds-checked cursor over bytes (sticky error) ----------------------------------------- */
typedef struct dsq_cursor {
    const uint8_t *p;
    size_t size, pos;
    bool bad;     /* set on the first out-of-range read; all later reads return 0 */
} dsq_cursor;
static inline dsq_cursor dsq_cursor_make(const void *p, size_t size) {
    dsq_cursor c = {(const uint8_t *)p, size, 0, false};
    return c;
}
/* Returns a pointer to the next n bytes and advances, or NULL (and sets bad) if out of range. */
const uint8_t *dsq_cursor_take(dsq_cursor *c, size_t n);
uint8_t dsq_cursor_u8(dsq_cursor *c);
uint16_t dsq_cursor_u16le(dsq_cursor *c);
uint32_t dsq_cursor_u32le(dsq_cursor *c);
uint64_t dsq_cursor_u64le(dsq_cursor *c);
bool dsq_cursor_seek(dsq_cursor *c, size_t pos);

/* Little-endian stores. */
void dsq_put_u16le(uint8_t *p, uint16_t v);
void dsq_put_u32le(uint8_t *p, uint32_t v);
void dsq_put_u64le(uint8_t *p, uint64_t v);

/* ---- allocation with fault injection ----------------------------------------------------------
 * All lib/ allocations go through these.  A test may call dsq_fault_set(DSQ_FAULT_MALLOC, n) to make
 * the n-th following call fail (n = 1: the next one), likewise for writes and fsyncs. */
void *dsq_malloc(size_t n);
void *dsq_calloc(size_t count, size_t size);
void *dsq_realloc(void *p, size_t n);
void dsq_free(void *p);
char *dsq_strdup(const char *s);
/* 64-byte aligned allocation (free with dsq_free_aligned). */
void *dsq_malloc_aligned(size_t n);
void dsq_free_aligned(void *p);

typedef enum dsq_fault { DSQ_FAULT_MALLOC = 0, DSQ_FAULT_WRITE = 1, DSQ_FAULT_FSYNC = 2, DSQ_FAULT_COUNT } dsq_fault;
void dsq_fault_set(dsq_fault kind, long nth);   /* 0 disables */
bool dsq__fault_hit(dsq_fault kind);            /* internal: true when this call must fail */

/* ---- files ------------------------------------------------------------------------------------ */
/* A read-only mapping of a whole file (or, with use_mmap = false, a pread-backed handle whose
 * `data` is NULL and which is read through dsq_map_read).  `data` is valid until dsq_map_close. */
typedef struct dsq_map {
    char *path;
    int fd;
    uint64_t size;
    const uint8_t *data; /* NULL for pread mode or empty files */
    int64_t mtime_ns;
} dsq_map;
dsq_status dsq_map_open(const char *path, bool use_mmap, dsq_map *out, dsq_err *err);
void dsq_map_close(dsq_map *m);
/* SIGBUS on a mapping: reading a page of a file that was truncated (or replaced in place) after
 * dsq_map_open raises SIGBUS.  Every live mapping is registered (a fixed table, DSQ_MAP_TRACKED
 * slots; mappings beyond it are not described); dsq_sigbus_install sets a SIGBUS handler that finds
 * the mapping holding the faulting address and calls on_fault(path, offset) with the file's path
 * and the byte offset in it.  on_fault runs in the signal handler: it must be async-signal-safe and
 * must not return (cmd/ prints one line and _exits); a fault outside every mapping, or a return,
 * gets the default action (a crash: that is a bug, not an input problem). */
enum { DSQ_MAP_TRACKED = 1024 };
typedef void (*dsq_sigbus_fn)(const char *path, uint64_t offset);
void dsq_sigbus_install(dsq_sigbus_fn on_fault);
/* The registered mapping holding addr: its path and the offset of addr in the file (false when
 * none).  Async-signal-safe. */
bool dsq_map_lookup(const void *addr, const char **path, uint64_t *offset);
/* Read n bytes at offset into buf (works in both modes); checks the range first. */
dsq_status dsq_map_read(const dsq_map *m, uint64_t offset, void *buf, size_t n, dsq_err *err);
/* Advise the kernel that [offset, offset+n) will be / is no longer needed (no-op in pread mode). */
void dsq_map_willneed(const dsq_map *m, uint64_t offset, uint64_t n);
void dsq_map_dontneed(const dsq_map *m, uint64_t offset, uint64_t n);

/* Forward reads of a big file with O_DIRECT (buffered where the filesystem refuses it) through an
 * 8 MiB window: reading a file once costs no page-cache allocation and evicts nothing. */
typedef struct dsq_seqread {
    int fd;
    bool direct;
    uint64_t size, wstart, wlen;
    uint8_t *buf;
    char *path;
} dsq_seqread;
dsq_status dsq_seqread_open(const char *path, dsq_seqread *out, dsq_err *err);
/* Up to n bytes at offset: *p points at *got ≥ 1 of them (n > 0), valid until the next call. */
dsq_status dsq_seqread_get(dsq_seqread *s, uint64_t offset, uint64_t n, const uint8_t **p, size_t *got, dsq_err *err);
/* Drop the window: the next read comes from the file (bytes around it may have changed since). */
void dsq_seqread_forget(dsq_seqread *s);
void dsq_seqread_close(dsq_seqread *s);

/* Open a regular file read-only (O_CLOEXEC) without ever blocking in open(): a FIFO, directory,
 * socket or device is refused with one line naming the path and what it is (DSQ_ERR_IO).  Every input
 * file goes through this (dsq_map_open, dsq_seqread_open, dsq_read_file). */
dsq_status dsq_open_regular(const char *path, int *fd, dsq_err *err);
/* Read a whole (small) file into a NUL-terminated heap buffer; `max` caps its size. */
dsq_status dsq_read_file(const char *path, size_t max, char **out, size_t *out_len, dsq_err *err);
bool dsq_path_is_dir(const char *path);
bool dsq_path_exists(const char *path);
/* Join dir and name into a new heap string. */
char *dsq_path_join(const char *dir, const char *name);

/* One job per output: an exclusive flock on DIR/.NAME.lock, taken before a writer touches the partial
 * file or its journal and held until they are published, kept for --resume or removed.  The kernel
 * drops the lock when the process dies (even by SIGKILL), so a lock file left behind by a crash never
 * blocks the next run.  The file holds the owner's pid for the error message.  A second job gets
 * DSQ_ERR_EXISTS with a one-line error naming the output, the lock file and the owner's pid. */
typedef struct dsq_lock {
    int fd;     /* -1 when not held */
    char *path; /* DIR/.NAME.lock */
} dsq_lock;
dsq_status dsq_lock_output(const char *final_path, dsq_lock *out, dsq_err *err);
/* Remove the lock file and drop the lock (in that order, so a waiter never holds a removed file).
 * Accepts a lock that is not held. */
void dsq_lock_release(dsq_lock *l);

/* Atomic publication (RELIABILITY.md §1): data goes to DIR/.NAME.partial (O_EXCL), then
 * dsq_afile_commit fdatasyncs, closes, renames to the final name and fsyncs the directory.
 * dsq_afile_abort removes the partial file.  Writes loop on short writes and EINTR.  The output's
 * lock (dsq_lock_output) is taken before the partial file is touched and dropped by commit, abort
 * and release: a second writer of the same output fails with DSQ_ERR_EXISTS instead of removing the
 * first one's partial file (whose rename would then publish the second one's incomplete file). */
typedef struct dsq_afile {
    char *final_path, *tmp_path;
    int fd;
    uint64_t written;  /* bytes written so far at the current position (sequential writes) */
    int dfd;           /* the same file opened O_DIRECT (options.direct), or -1 */
    uint8_t *bounce;   /* DSQ_AFILE_BOUNCE bytes, 4096-aligned, for direct writes */
    dsq_lock lock;     /* held from open to commit/abort/release (unless options.caller_locked) */
} dsq_afile;
typedef struct dsq_afile_options {
    bool overwrite;    /* replace an existing final file (default false → DSQ_ERR_EXISTS) */
    bool keep_partial; /* do not remove an existing partial (resume) */
    uint64_t preallocate; /* posix_fallocate this many bytes when > 0 */
    /* Write the 4096-aligned middle of large pwrites with O_DIRECT (through a bounce buffer), the
     * unaligned edges buffered: bulk output then costs no page-cache allocation and evicts nothing.
     * Falls back to buffered writes where the filesystem refuses O_DIRECT (tmpfs).  A file with
     * direct writes takes pwrites from one thread at a time. */
    bool direct;
    bool caller_locked; /* the caller holds dsq_lock_output on final_path for longer (the container
                           writer: partial file and journal); the afile takes no lock of its own */
} dsq_afile_options;
enum { DSQ_AFILE_BOUNCE = 8u << 20, DSQ_AFILE_DIRECT_MIN = 256u << 10 };
dsq_status dsq_afile_open(const char *final_path, const dsq_afile_options *opt, dsq_afile *out, dsq_err *err);
dsq_status dsq_afile_write(dsq_afile *f, const void *buf, size_t n, dsq_err *err);
dsq_status dsq_afile_pwrite(dsq_afile *f, uint64_t offset, const void *buf, size_t n, dsq_err *err);
dsq_status dsq_afile_commit(dsq_afile *f, dsq_err *err);
void dsq_afile_abort(dsq_afile *f);
/* Close without publishing and keep the partial file (a suspended, resumable job). */
void dsq_afile_release(dsq_afile *f);

/* Write a whole buffer atomically to path. */
dsq_status dsq_write_file_atomic(const char *path, const void *buf, size_t n, bool overwrite, dsq_err *err);

/* ---- progress on a TTY ----------------------------------------------------------------------- */
/* Shows bytes, rate and ETA on stderr when stderr is a terminal and DSQ_NO_PROGRESS is unset;
 * silent otherwise.  Updates are throttled to ~10 per second. */
typedef struct dsq_progress {
    const char *label;
    uint64_t total, done;
    double t_start, t_last;
    bool enabled;
} dsq_progress;
void dsq_progress_begin(dsq_progress *p, const char *label, uint64_t total_bytes);
void dsq_progress_add(dsq_progress *p, uint64_t bytes);
void dsq_progress_end(dsq_progress *p);

/* Monotonic seconds. */
double dsq_now(void);

/* ---- signals: SIGINT/SIGTERM set a flag that long operations poll between steps ------------- */
void dsq_signals_install(void);
bool dsq_interrupted(void);

#endif
