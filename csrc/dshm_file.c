/**
 * @file dshm_file.c
 * @brief Files and mappings: mapping a file into a reservation, creating
 *        and validating a store file, opening one (with the repair an
 *        opener alone with the file owes), and replacing one ('n').
 *
 * Layer 5: calls recovery (dshm_lock_repair, at open), the lock, the
 * index and the allocator (to initialise a file), and the waker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_wake.h"
#include "dshm_hash.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_recover.h"
#include "dshm_meta.h"
#include "dshm_commit.h"
#include "dshm_file.h"

#define DSHM_RESV_MIN     ((uint64_t)1 << 34)   /* 16 GiB of address space per mapping */
#define DSHM_RESV_FLOOR   ((uint64_t)1 << 26)   /* least slack tried under a tight ulimit -v */
#define DSHM_OPEN_WAIT_NS ((uint64_t)5000000000) /* wait for a creator this long */

/* ---------------------------------------------------------------------- */
/* Mappings                                                                */

void dshm_env_free(dshm_env *env) {
    while (env) {
        dshm_env *older = env->ev_older;
        if (env->ev_base)
            munmap(env->ev_base, env->ev_resv);
        if (env->ev_hdr_rw)
            munmap(env->ev_hdr_rw, DSHM_HEADER_SIZE);
        if (env->ev_fd >= 0)
            close(env->ev_fd);
        free(env);
        env = older;
    }
}

static uint64_t pow2_at_least(uint64_t x) {
    uint64_t p = 1;
    while (p < x && p < ((uint64_t)1 << 62))
        p <<= 1;
    return p;
}

/* Map fd (of `size` bytes) into a reservation of at least `want` bytes.
 * The whole reservation maps the file: bytes past the end of the file are
 * never touched (readers bound every access by hd_file_size), and growth
 * is fallocate with no remap. Under a tight address-space limit the
 * reservation shrinks, down to the file size plus a little. */
int dshm_env_map(dshm_env *env, uint64_t size, uint64_t want) {
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t floor = size + DSHM_RESV_FLOOR;
    uint64_t resv = pow2_at_least(want > DSHM_RESV_MIN ? want : DSHM_RESV_MIN);
    int prot = PROT_READ | (env->ev_writable ? PROT_WRITE : 0);
    for (;;) {
        resv = (resv + (uint64_t)pg - 1) & ~((uint64_t)pg - 1);
        void *p = mmap(NULL, resv, prot, MAP_SHARED | MAP_NORESERVE, env->ev_fd, 0);
        if (p != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
            /* Huge pages where the file system gives them (a tmpfs mounted
             * huge=within_size or huge=advise; docs/durability.md): fewer
             * TLB misses per get. Elsewhere EINVAL, or no effect: ignored. */
            (void)madvise(p, resv, MADV_HUGEPAGE);
#endif
            env->ev_base = p;
            env->ev_resv = resv;
            struct stat st;
            if (fstat(env->ev_fd, &st) == 0) {   /* which file: dshm_path_replaced */
                env->ev_ino = (uint64_t)st.st_ino;
                env->ev_dev = (uint64_t)st.st_dev;
            }
            return 0;
        }
        if (errno != ENOMEM || resv <= size)
            return errno == ENOMEM ? DSHM_FULL : -errno;
        resv = resv / 2 > floor ? resv / 2 : resv > floor ? floor : size;
    }
}

/* ---------------------------------------------------------------------- */
/* Creating and validating files                                           */

static int fill_seed(uint64_t seed[2]) {
    const char *t = getenv("DSHM_TEST_SEED");   /* tests: a known seed */
    if (t && *t) {
        seed[0] = strtoull(t, NULL, 16);
        seed[1] = seed[0] ^ 0x5bd1e9955bd1e995ULL;
        return 0;
    }
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom((char *)seed + got, 16 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Initialise an empty file held exclusively. seed may be NULL (random).
 * The magic is written last: a creator that dies leaves a file without
 * magic, which the next exclusive opener initialises again. */
int dshm_init_file(int fd, const uint64_t *seed) {
    int rc = posix_fallocate(fd, 0, (off_t)DSHM_INITIAL_SIZE);
    if (rc == EOPNOTSUPP || rc == ENOSYS)
        rc = ftruncate(fd, (off_t)DSHM_INITIAL_SIZE) ? errno : 0;
    if (rc)
        return -rc;
    dshm_env env = { .ev_fd = fd, .ev_writable = 1, .ev_resv = DSHM_INITIAL_SIZE };
    env.ev_base = mmap(NULL, DSHM_INITIAL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (env.ev_base == MAP_FAILED)
        return -errno;
    dshm_header *hd = DSHM_HDR(&env);
    memset(hd, 0, DSHM_HEADER_SIZE);
    hd->hd_format = DSHM_FORMAT;
    hd->hd_header_size = DSHM_HEADER_SIZE;
    hd->hd_bucket_size = DSHM_BUCKET_SIZE;
    hd->hd_abi = DSHM_ABI;
    if (seed) {
        hd->hd_seed[0] = seed[0];
        hd->hd_seed[1] = seed[1];
    } else if ((rc = fill_seed(hd->hd_seed))) {
        goto out;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hd->hd_created = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if ((rc = dshm_mutex_init(hd)))
        goto out;
    atomic_store_explicit(&hd->hd_file_size, DSHM_INITIAL_SIZE, memory_order_relaxed);
    /* The first commit (meta 0) is the empty store, which references
     * nothing (mt_dir 0: a restore makes a new directory): the directory
     * and bucket made here belong to period 1, the first writes change
     * them in place. */
    dshm_space_reset(&env, DSHM_HEADER_SIZE);
    dshm_meta m;
    dshm_meta_take(hd, &m, 1);
    m.mt_dir = 0;
    m.mt_sum = dshm_meta_sum(&m);
    memcpy(dshm_meta_slot(hd, 0), &m, sizeof m);
    hd->hd_gen = 1;
    hd->hd_volatile = dshm_fs_volatile(fd);   /* tmpfs: no commit periods (dshm_commit_held) */
    if ((rc = dshm_index_init(&env)))
        goto out;
    dshm_boot_id(hd->hd_boot);
    memcpy(hd->hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN);
    hd->hd_checksum = dshm_header_checksum(hd);
    hd->hd_alloc_sum = dshm_alloc_checksum(hd);
    /* On disk before anyone uses it: a power loss leaves no file with a
     * magic but without its first meta. */
    rc = dshm_flush(fd, true);
out:
    munmap(env.ev_base, DSHM_INITIAL_SIZE);
    return rc;
}

/* Check the header page read with pread, before anything is mapped. */
static int validate_header(const dshm_header *hd, uint64_t fsize, bool no_dir) {
    if (memcmp(hd->hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN) != 0)
        return DSHM_BAD_MAGIC;
    if (hd->hd_format != DSHM_FORMAT)
        return DSHM_VERSION_MISMATCH;
    if (hd->hd_header_size != DSHM_HEADER_SIZE || hd->hd_bucket_size != DSHM_BUCKET_SIZE)
        return DSHM_CORRUPT;
    if (hd->hd_abi != DSHM_ABI)
        return DSHM_VERSION_MISMATCH;
    if (hd->hd_checksum != dshm_header_checksum(hd))
        return DSHM_CORRUPT;
    uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    if (size < DSHM_HEADER_SIZE + DSHM_BUCKET_SIZE || size % 4096)
        return DSHM_CORRUPT;
    if (size > fsize)
        return DSHM_TRUNCATED;
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    if (no_dir && dir == 0)
        return 0;   /* a restore to the empty store makes the directory */
    if (DSHM_DIR_DEPTH(dir) > DSHM_MAX_DEPTH ||
        !dshm_in(DSHM_DIR_OFF(dir), dshm_dir_bytes(DSHM_DIR_DEPTH(dir)), size))
        return DSHM_CORRUPT;
    if (hd->hd_top > size || hd->hd_top < DSHM_HEADER_SIZE)
        return DSHM_CORRUPT;
    return 0;
}

/* A file a creator died in the middle of initialising: the initial size,
 * no magic yet, and a header that is all zero or carries our constants
 * (init_file writes the magic last). Anything else is not ours to wipe. */
static bool half_made(const dshm_header *hd, ssize_t got, uint64_t size) {
    static const char zero[sizeof(dshm_header)];
    if (got != (ssize_t)sizeof *hd || size != DSHM_INITIAL_SIZE ||
        memcmp(hd->hd_magic, zero, DSHM_MAGIC_LEN) != 0)
        return false;
    return memcmp(hd, zero, sizeof *hd) == 0 ||
           (hd->hd_format == DSHM_FORMAT && hd->hd_header_size == DSHM_HEADER_SIZE &&
            hd->hd_bucket_size == DSHM_BUCKET_SIZE);
}

static int flock_retry(int fd, int op) {
    while (flock(fd, op) != 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

/* Open path into a new mapping. With `create`, an empty or new file is
 * initialised. The handle keeps a shared flock for its lifetime; an
 * opener that gets the file exclusively (no one else has it open) also
 * checks the writer lock for a holder the kernel could not clean up after
 * and repairs the store. */
int dshm_env_open(const char *path, int flags, int mode, uint64_t want, dshm_env **out, bool *repaired) {
    bool rdonly = flags & DSHM_RDONLY, create = flags & (DSHM_CREATE | DSHM_TRUNC);
    dshm_env *env = calloc(1, sizeof *env);
    int rc = 0;
    if (!env)
        return -ENOMEM;
    if (repaired)
        *repaired = false;
    env->ev_fd = -1;
    /* A read-only handle still opens O_RDWR where it may: that lets its
     * reads fall back to the writer lock and lets it repair after a dead
     * writer. The API refuses its writes all the same. */
    env->ev_fd = open(path, O_RDWR | O_CLOEXEC | (create && !rdonly ? O_CREAT : 0), mode);
    env->ev_writable = env->ev_fd >= 0;
    if (env->ev_fd < 0 && rdonly && (errno == EACCES || errno == EROFS || errno == EPERM))
        env->ev_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (env->ev_fd < 0) {
        rc = -errno;
        goto fail;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        bool exclusive = flock(env->ev_fd, LOCK_EX | LOCK_NB) == 0;
        if (!exclusive && (rc = flock_retry(env->ev_fd, LOCK_SH)))
            goto fail;
        /* The header first, then the size: a writer in another process
         * grows the file before it raises hd_file_size, so the size seen
         * after is at least the one the header says (in the other order a
         * growth in between read as a truncated file). */
        /* The whole header page: the metas lie past struct dshm_header. */
        union { dshm_header h; char page[DSHM_HEADER_SIZE]; } hpage;
        dshm_header hdr;
        memset(&hdr, 0, sizeof hdr);
        memset(&hpage, 0, sizeof hpage);
        struct stat st;
        if (fstat(env->ev_fd, &st) != 0) {
            rc = -errno;
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = DSHM_BAD_MAGIC;
            goto fail;
        }
        ssize_t got = pread(env->ev_fd, &hpage, sizeof hpage, 0);
        memcpy(&hdr, &hpage.h, sizeof hdr);
        if (got > (ssize_t)sizeof hdr)
            got = (ssize_t)sizeof hdr;
        if (got < 0 || fstat(env->ev_fd, &st) != 0) {
            rc = -errno;
            goto fail;
        }
        bool blank = st.st_size == 0 || half_made(&hdr, got, (uint64_t)st.st_size);
        if (blank && st.st_size < (off_t)DSHM_HEADER_SIZE && !exclusive) {
            /* Someone else is creating it: wait for the magic. */
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((uint64_t)(now.tv_sec - start.tv_sec) * 1000000000u + (uint64_t)now.tv_nsec -
                    (uint64_t)start.tv_nsec > DSHM_OPEN_WAIT_NS) {
                rc = DSHM_BUSY;
                goto fail;
            }
            flock(env->ev_fd, LOCK_UN);
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            continue;
        }
        if (blank && exclusive && create && env->ev_writable) {
            if (st.st_size && ftruncate(env->ev_fd, 0) != 0) {
                rc = -errno;
                goto fail;
            }
            if ((rc = dshm_init_file(env->ev_fd, NULL)))
                goto fail;
            continue;   /* validate what was written, like any opener */
        }
        if (got != (ssize_t)sizeof hdr) {
            /* Shorter than a header: ours but cut short, or not ours. */
            rc = got >= DSHM_MAGIC_LEN && memcmp(hdr.hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN) == 0
               ? DSHM_TRUNCATED : DSHM_BAD_MAGIC;
            goto fail;
        }
        /* Last opened under another boot: a power loss or a kernel crash
         * may have torn the file, whose live header is then not to be
         * trusted; the newest valid meta is (dshm_restore). */
        bool torn = memcmp(hdr.hd_magic, DSHM_MAGIC, DSHM_MAGIC_LEN) == 0 &&
                    hdr.hd_format == DSHM_FORMAT && dshm_boot_other(&hdr) &&
                    !hdr.hd_volatile;   /* brought from tmpfs: its metas are stale, it is as copied */
        dshm_meta meta;
        bool live_is_meta = false;
        if (torn) {
            if (!dshm_meta_newest(&hpage.h, &meta, NULL)) {
                rc = DSHM_CORRUPT;
                goto fail;
            }
            dshm_header as_meta = hdr;
            dshm_meta_apply(&as_meta, &meta);
            live_is_meta = dshm_live_is(&hdr, &meta);
            hdr = as_meta;
        }
        if ((rc = validate_header(&hdr, (uint64_t)st.st_size, torn)))
            goto fail;
        if ((rc = dshm_env_map(env, (uint64_t)st.st_size, want)))
            goto fail;
        env->ev_volatile = dshm_fs_volatile(env->ev_fd);
        /* Only a handle opened for writing, with the file to itself,
         * restores it (a read-only one writes nothing). A read-only one
         * reads it only if its live state is the meta's; a writer that
         * shares it with one waits for the restore (its free lists are
         * not to be trusted before it). */
        bool restorer = exclusive && env->ev_writable && !rdonly;
        if (torn && !restorer && (!live_is_meta || !rdonly)) {
            rc = DSHM_NEED_RECOVERY;
            goto fail;
        }
        if (torn && restorer && (rc = dshm_restore(env, (uint64_t)st.st_size)))
            goto fail;
        if (exclusive) {
            /* Alone with the file: no process can hold the writer lock now.
             * A handle that may write the file checks the lock and repairs
             * (dshm_mutex_probe). A read-only one ('r') writes nothing: it
             * only looks at the lock word. One that names a holder is left
             * by a process the kernel could not clean up after; the handle
             * remembers it (it never waits for that lock) and gives up its
             * flock, so that the next writable opener has the file to
             * itself and resets the lock and repairs. (A holder that died
             * and was seen dying is no obstacle: the next writer's lock
             * returns EOWNERDEAD and repairs.) */
            int shared = LOCK_SH;
            if (rdonly) {
                uint32_t w;
                if (dshm_lock_word(DSHM_HDR(env), &w) && w != 0 && !(w & DSHM_LOCK_OWNER_DIED)) {
                    env->ev_ghost_lock = w;
                    shared = LOCK_UN;
                }
            } else if (env->ev_writable) {
                bool repair, reinit;
                dshm_header *hd = DSHM_HDR(env);
                if ((rc = dshm_mutex_probe(hd, &repair, &reinit)))
                    goto fail;
                if (repair)
                    hd->hd_repair = 1;   /* before a reset mutex forgets its dead holder */
                if (reinit && (rc = dshm_mutex_init(hd)))
                    goto fail;
                if (repair) {
                    /* Repair now, before anyone writes. */
                    if ((rc = dshm_lock_repair(env, repaired, true)))
                        goto fail;
                    dshm_unlock_rw(env);
                }
                if (hd->hd_volatile && !env->ev_volatile) {
                    /* A store brought from tmpfs to a disk: commit it
                     * before anyone writes, so that the protocol against
                     * power loss holds from the first write on. */
                    if ((rc = dshm_lock_repair(env, repaired, true)))
                        goto fail;
                    rc = dshm_commit_held(env);
                    dshm_unlock_rw(env);
                    if (rc)
                        goto fail;
                }
            }
            if ((rc = flock_retry(env->ev_fd, shared)))
                goto fail;
        }
        break;
    }
    *out = env;
    return 0;
fail:
    dshm_env_free(env);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Replacing a file ('n' while others have it open)                        */

/* fsync the directory holding path, so a rename in it is durable. */
void dshm_sync_parent(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash) {
        *slash = 0;
        dir = slash == copy ? "/" : copy;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (dshm_flush(fd, false) != 0) { /* best effort: some file systems refuse */ }
        close(fd);
    }
    free(copy);
}

int dshm_rename_over(dshm_env *env, const char *from, const char *path, const char *point) {
    /* Only over env's own file: a path replaced since the handle opened it
     * (os.replace, another store's 'n') is not ours to clobber. Looked at
     * under the writer lock, right before the rename; a path that names
     * nothing (unlinked) gets the file, so the store reappears there. */
    struct stat named;
    if (stat(path, &named) == 0 &&
        ((uint64_t)named.st_ino != env->ev_ino || (uint64_t)named.st_dev != env->ev_dev))
        return -ESTALE;
    if (rename(from, path) != 0)
        return -errno;
    DSHM_CRASH_POINT(point);   /* the path names the new file; this one not yet marked */
    dshm_sync_parent(path);
    dshm_header *hd = DSHM_HDR(env);
    atomic_store_explicit(&hd->hd_moved, 1, memory_order_release);
    atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
    return 0;
}

/* Create an initialised store with permissions `mode` (and, where allowed,
 * the owner of `like`) in a private name beside path and rename it over
 * path. */
static int create_renamed(const char *path, int mode, uint64_t commit, const struct stat *like) {
    size_t n = strlen(path) + 48;
    char *tmp = malloc(n);
    if (!tmp)
        return -ENOMEM;
    snprintf(tmp, n, "%s.dshm-new-%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0 && like && (like->st_uid != getuid() || like->st_gid != getgid()) &&
        fchown(fd, like->st_uid, like->st_gid) != 0) { /* best effort: only root may give a file away */ }
    int rc = fd < 0 ? -errno : fchmod(fd, (mode_t)mode) ? -errno : dshm_init_file(fd, NULL);
    /* The commit numbers go on from the store it replaces: a waiter's
     * next wait(since=...) on the new file is not behind it. */
    if (!rc && commit &&
        pwrite(fd, &commit, sizeof commit, (off_t)offsetof(dshm_header, hd_commit)) != (ssize_t)sizeof commit)
        rc = errno ? -errno : -EIO;
    /* On the disk before its name is (a power cut after the rename must
     * not leave the path naming an empty or half-written file). */
    if (!rc)
        rc = dshm_flush(fd, false);
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc && fd >= 0)
        unlink(tmp);
    if (!rc)
        dshm_sync_parent(path);   /* and the rename itself */
    free(tmp);
    return rc;
}

/* 'n' on a file others have open: a fresh store is renamed over the path
 * while the old file's writer lock is held, and the old file is marked
 * moved before that lock is given back, so no writer can commit to the
 * old file between the rename and the mark. Waits for the lock at most
 * DSHM_OPEN_WAIT_NS (a live writer makes 'n' fail with DSHM_BUSY, nothing
 * renamed, rather than wait for ever). A death between the rename and the
 * mark leaves the lock's holder dead: the next lock holder repairs, finds
 * the path naming another file (check_replaced) and marks it moved. */
int dshm_replace_file(const char *path, int fd) {
    struct stat st;
    dshm_header hdr;
    if (fstat(fd, &st) != 0)
        return -errno;
    dshm_header *hd = MAP_FAILED;
    int lrc = -EINVAL;
    if (pread(fd, &hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr && validate_header(&hdr, UINT64_MAX, false) == 0)
        hd = mmap(NULL, DSHM_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (hd != MAP_FAILED) {
        lrc = dshm_mutex_lock_timed(hd, DSHM_OPEN_WAIT_NS);
        if (lrc == DSHM_BUSY) {
            munmap(hd, DSHM_HEADER_SIZE);
            return DSHM_BUSY;
        }
    }
    /* The commit numbers go on from the old store's (bumped below). */
    uint64_t commit = hd == MAP_FAILED ? 0
                    : atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) + 1;
    int rc = create_renamed(path, (int)(st.st_mode & 07777), commit, &st);
    if (!rc)
        DSHM_CRASH_POINT("n-rename");
    if (hd != MAP_FAILED) {
        if (!rc) {
            atomic_store_explicit(&hd->hd_moved, 1, memory_order_release);
            atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        }
        if (lrc == 0)
            pthread_mutex_unlock(&hd->hd_mutex.m);
        if (!rc) {
            dshm_env tmp = { .ev_fd = fd, .ev_writable = 1, .ev_base = (char *)hd, .ev_resv = DSHM_HEADER_SIZE };
            dshm_wake_waiters(&tmp);
        }
        munmap(hd, DSHM_HEADER_SIZE);
    }
    return rc;
}
