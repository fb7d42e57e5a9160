/**
 * @file dshm_internal.h
 * @brief Process-private structures, the prototypes the csrc/ files share,
 *        and the small protocol helpers they all use (inline).
 *
 * The C files, in layers: a file calls only files of lower layers, never
 * up and never sideways; .ci/layers.py reads the compiled objects, prints
 * these layers and fails on any call cycle (tests/build runs it).
 *
 *  10  dshm_txn.c      transactions: the writer lock held across calls
 *                      (begin with a timeout, reads under it, publish as a
 *                      batch, abort, or replace the file by one built
 *                      beside it)
 *   9  dshm_batch.c    atomic batches, get_many, snapshot; a batch
 *                      published under a lock already held (dshm_batch_held)
 *   8  dshm_rmw.c      read-modify-write in one hold of the lock: incr, cas
 *   8  dshm_iter.c     bucket snapshots: firstkey, nextkey, scan
 *      dshm_check.c    stat and check
 *      dshm_reorg.c    reorganize: compact copy, rename, follow
 *   7  dshm_read.c     the read-retry protocol; get, count, commit_id
 *      dshm_write.c    put, del, sync, clear; put_locked, finish_write
 *      dshm_wait.c     dshm_wait, dshm_interrupt
 *      dshm_salvage.c  salvage: every readable record of a damaged file,
 *                      read through a private read-only mapping
 *      dshm_dump.c     a gdbm ASCII dump's body encoded from scan records
 *   6  dshm_handle.c   open/close, enter/leave/refresh, the writer lock for
 *                      a handle (wlock, rlock, write entry), SIGBUS undo
 *   5  dshm_file.c     mappings; creating, validating, opening, replacing
 *   4  dshm_recover.c  repair after a dead writer; lock-and-repair
 *   3  dshm_journal.c  a batch's journal: apply, finish, drop
 *   2  dshm_index.c    keyed hash, extendible hashing, the reader lookup
 *      dshm_lock.c     the robust writer lock (reports an owed repair,
 *                      never runs it)
 *   1  dshm_space.c    allocator, growth, free-space rebuild
 *   0  dshm_walk.c     the directory walker (each bucket once)
 *      dshm_wake.c     waking the processes asleep on the futex word
 *      dshm_guard.c    test hooks, crash points, the SIGBUS handler
 *      dshm_err.c      dshm_strerror
 *
 * The one edge the design needs between writing and repairing: taking the
 * lock may owe a repair. dshm_lock_rw (like dshm_lock_ro) reports *owed
 * and its caller repairs (dshm_lock_repair, layer 4); the lock never calls
 * into recovery. The helpers below marked inline (the chain walk, the
 * reader-validation frame, the seqlock windows, the journal views) are
 * written once here and belong to no layer.
 *
 * Error convention: every function returns 0 (or a length) on success and
 * a negative code on failure: a DSHM_* code, an internal code below, or
 * -errno. Never a positive errno.
 */
#ifndef DSHM_INTERNAL_H
#define DSHM_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <setjmp.h>
#include <time.h>
#include <unistd.h>

#include "dbm_shm.h"
#include "dshm_layout.h"

/* Internal codes, never returned to callers (LMDB style). */
#define DSHM_RETRY   (DSHM_LAST_ERRCODE - 10)  /* seqlock moved: read again */
#define DSHM_MOVED   (DSHM_LAST_ERRCODE - 11)  /* file reorganized: reopen */
#define DSHM_SPLIT   (DSHM_LAST_ERRCODE - 12)  /* bucket full: split, retry */

/** One mapping of one file. Private to a process. A superseded mapping
 *  (after a remap for growth or a reopen after reorganize) stays mapped
 *  until no call that may have loaded it is still running. */
typedef struct dshm_env {
    int      ev_fd;         /**< the file, O_RDWR or O_RDONLY */
    int      ev_writable;   /**< fd and mapping allow writes */
    char    *ev_base;       /**< start of the reserved range; file mapped at it */
    uint64_t ev_resv;       /**< bytes reserved (>= file size when mapped) */
    struct dshm_env *ev_older; /**< next on the handle's list of superseded mappings */
    void    *ev_hdr_rw;     /**< read-only handles: the header page mapped writable
                                 for dshm_wait()'s futex flag (NULL: not yet) */
    int      ev_hdr_rw_failed; /**< that mapping was refused: waiters poll */
    uint32_t ev_ghost_lock; /**< a handle that may not repair ('r'), opened with the
                                 file to itself: the writer-lock word it found naming
                                 a holder (no process could hold it then), else 0.
                                 While the word is unchanged the lock is never taken */
    uint64_t ev_ino, ev_dev;  /**< the file mapped (fstat at the mapping): a path
                                 that names another is followed (dshm_path_replaced) */
    _Atomic uint64_t ev_stale_moved; /**< 'r' handles: hd_commit + 1 when hd_moved was
                                 found stale (the path still names this file); the
                                 path is looked at again only once hd_commit moves.
                                 0 = not known stale. Written by any thread, relaxed */
} dshm_env;

/** An open handle. Shared by the threads of one process. */
struct dshm_db {
    _Atomic(dshm_env *) db_env;  /**< current mapping; swapped under db_lock */
    pthread_mutex_t db_lock;     /**< guards remap/reopen (rare paths only) */
    char    *db_path;            /**< for reopen after reorganize */
    int      db_flags;           /**< DSHM_RDONLY, DSHM_SYNC */
    _Atomic int db_inflight;     /**< calls running; close waits for 0 */
    _Atomic int db_closed;       /**< set by dshm_close */
    dshm_env *db_retired;        /**< superseded mappings (after a remap or a
                                      reopen), unmapped once no call is in
                                      flight; guarded by db_lock */
    _Atomic int db_has_retired;  /**< db_retired is non-empty */
    int      db_pid;             /**< process that opened the handle: after
                                      fork() a child's close must not wait
                                      for its parent's calls in flight */
    _Atomic uint64_t db_retries;   /**< statistics, relaxed */
    _Atomic uint64_t db_fallbacks;
    _Atomic uint64_t db_reopens;
    _Atomic uint64_t db_writes;    /**< committed writes (a batch counts once) */
    _Atomic uint64_t db_batches;   /**< committed batches */
    _Atomic uint64_t db_batch_ops; /**< sets and deletes in them */
    _Atomic uint64_t db_lock_waits;   /**< writer-lock takes that found it held */
    _Atomic uint64_t db_lock_wait_ns; /**< time spent waiting for it */
    _Atomic uint64_t db_waits;     /**< dshm_wait() calls */
    _Atomic uint64_t db_wakeups;   /**< times a waiter was woken (futex) */
    _Atomic uint64_t db_multi_retries; /**< consistent multi-key reads retried */
    _Atomic uint64_t db_interrupt; /**< bumped by dshm_interrupt(): the waiters
                                        of this handle return EINTR */
    _Atomic uint64_t db_path_due;  /**< coarse-clock ns at which a call next looks
                                        at the path (dshm_enter); relaxed: two
                                        threads that both look only stat twice */
    _Atomic int db_waiting;        /**< threads inside dshm_wait() on this handle:
                                        close wakes them only if there are any
                                        (it does not touch the mapping otherwise) */
    _Atomic int db_txn_tid;        /**< thread id (gettid) of the thread holding
                                        the writer lock across calls for this
                                        handle's transaction (dshm_txn.c), else 0.
                                        Written by that thread, relaxed */
};

/** This thread holds the writer lock for db's transaction: a write must not
 *  take it again (the mutex is not recursive). One relaxed load when no
 *  transaction is open. */
static inline bool dshm_txn_mine(const struct dshm_db *db) {
    int t = atomic_load_explicit(&((struct dshm_db *)db)->db_txn_tid, memory_order_relaxed);
    return t != 0 && t == (int)gettid();
}

#define DSHM_HDR(env)      ((dshm_header *)(void *)(env)->ev_base)
#define DSHM_AT(env, off)  ((void *)((env)->ev_base + (off)))

/** True if [off, off+len) lies inside [DSHM_HEADER_SIZE, limit). */
static inline bool dshm_in(uint64_t off, uint64_t len, uint64_t limit) {
    return off >= DSHM_HEADER_SIZE && off <= limit && len <= limit - off;
}

/** Bytes the directory of this depth occupies. */
static inline uint64_t dshm_dir_bytes(unsigned depth) {
    return depth ? (uint64_t)8 << depth : DSHM_ALIGN;
}

/** Bytes a record of these lengths occupies. */
static inline uint64_t dshm_rec_size(uint64_t klen, uint64_t vlen) {
    return (DSHM_REC_HDR + klen + vlen + (DSHM_ALIGN - 1)) & ~(uint64_t)(DSHM_ALIGN - 1);
}

/** A bucket page offset is usable below limit: 64-byte aligned, inside. */
static inline bool dshm_page_ok(uint64_t off, uint64_t limit) {
    return off % 64 == 0 && dshm_in(off, DSHM_BUCKET_SIZE, limit);
}

/** CPU hint inside spin loops. */
static inline void dshm_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/** CLOCK_MONOTONIC_COARSE in ns: a few ns through the vDSO, no system
 *  call, a resolution of a few ms. For intervals of 100 ms and more. */
static inline uint64_t dshm_coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/** How often a call looks at its handle's path (dshm_enter), and a waiter
 *  asleep in dshm_wait() wakes to look: an 'n' or a reorganize killed
 *  between its rename and marking the old file moved leaves no mark, and
 *  nobody writes to the old file again. */
#define DSHM_PATH_CHECK_NS ((uint64_t)100000000)   /* 100 ms */

/** CLOCK_MONOTONIC in ns (one clock for every process of the machine). */
static inline uint64_t dshm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ====================================================================== */
/* Layers 0-1: guard, waker, walkers, allocator (and inline helpers)      */

/* ---- guard (dshm_guard.c): test hooks and the SIGBUS guard ---- */

/** Test hook: DSHM_CRASH_AT="point:n" kills the process with SIGKILL the
 *  n-th time the writer passes the named point (tests/crash). Costs one
 *  predictable branch when unset. */
extern int dshm_crash_armed;
void dshm_crash_hit(const char *point);
#define DSHM_CRASH_POINT(p) do { if (dshm_crash_armed) dshm_crash_hit(p); } while (0)
/** Test hook DSHM_TEST_COLLIDE=n: dshm_key_hash clears the top n bits of
 *  every key hash (64: all keys collide), to exercise hostile keys. */
extern int dshm_test_collide;
/** Read the test hooks and install the SIGBUS handler (once a process). */
void dshm_hooks_init(void);
/** The binding's interrupt hook (dshm_set_interrupt_hook). */
typedef int (*dshm_interrupt_fn)(void);
/** Between two slices of a wait for the writer lock: does the binding's
 *  hook ask the wait to end (a signal arrived)? False without a hook. */
bool dshm_interrupt_requested(void);

/** Address ranges a guarded call may touch (dshm_guard_cover). */
#define DSHM_GUARD_RANGES 6
typedef struct dshm_guard_range {
    uintptr_t gr_lo;          /**< first byte */
    uint64_t gr_len;          /**< bytes */
} dshm_guard_range;

/** Per-thread state of the SIGBUS guard: a call that touches the mapping
 *  runs with `active` set, so a SIGBUS (the file was truncated under the
 *  mapping) jumps back to it instead of ending the process. Process-
 *  private, thread-local: written by its thread, read by that thread's
 *  SIGBUS handler (signal fences order the two). */
typedef struct dshm_guard {
    int active;               /**< a guarded call is running */
    int scoped;               /**< the call recorded the ranges it touches: a fault
                                   outside them (and the mapping whose writer lock
                                   it holds) is not ours. 0: a call that maps a file
                                   of its own (open, salvage) takes every fault */
    unsigned nrng;            /**< ranges recorded in rng */
    dshm_guard_range rng[DSHM_GUARD_RANGES]; /**< the handle's mappings the call
                                   entered or refreshed to, the header page mapped
                                   writable for a wait */
    sigjmp_buf jb;            /**< where the handler jumps back to */
    struct dshm_db *entered;  /**< the handle whose call is in flight */
    dshm_env *locked;         /**< the mapping whose writer lock is held */
    int locked_ro;            /**< held by a read-only taker: give it back, mark nothing */
    pthread_mutex_t *db_locked; /**< a handle's db_lock held by this call (refresh) */
} dshm_guard;
extern __attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;
/** Back from a SIGBUS inside a guarded call: unblock the signal, give back
 *  the writer lock if this thread held it (marking the store for repair)
 *  and the handle's db_lock if it held that, and end the call (dshm_handle.c: it knows the lock and the handle). */
void dshm_guard_fault(dshm_guard *g);

/** Record [base, base+len) as a range the running guarded call may touch
 *  (a mapping of the store): a kernel SIGBUS there is a truncation, turned
 *  into DSHM_TRUNCATED; one elsewhere goes to the previous handler. When
 *  the ranges are full the last is replaced (the first, the mapping the
 *  call entered with, stays). */
static inline void dshm_guard_cover(const void *base, uint64_t len) {
    dshm_guard *g = &dshm_guard_tls;
    unsigned i = g->nrng;
    if (i && g->rng[i - 1].gr_lo == (uintptr_t)base && g->rng[i - 1].gr_len == len)
        return;
    if (i == DSHM_GUARD_RANGES)
        i--;
    g->rng[i].gr_lo = (uintptr_t)base;
    g->rng[i].gr_len = len;
    atomic_signal_fence(memory_order_release);   /* the range before the count */
    g->nrng = i + 1;
    g->scoped = 1;
}

/** The body of every public entry point: run `call` under the guard;
 *  DSHM_TRUNCATED (as `type`) after a SIGBUS. A function returning
 *  nothing wraps a helper returning int. The call starts with no range
 *  recorded (unscoped) until it enters a handle (dshm_enter). */
#define GUARDED(type, call) do {                                   \
        dshm_guard *g_ = &dshm_guard_tls;                          \
        if (g_->active)                                            \
            return call;                                           \
        if (sigsetjmp(g_->jb, 0)) {                                \
            dshm_guard_fault(g_);                                  \
            return (type)DSHM_TRUNCATED;                           \
        }                                                          \
        g_->scoped = 0;                                            \
        g_->nrng = 0;                                              \
        atomic_signal_fence(memory_order_release);                 \
        g_->active = 1;                                            \
        type r_ = call;                                            \
        g_->active = 0;                                            \
        return r_;                                                 \
    } while (0)

/* ---- wake (dshm_wake.c): the waker's side of the futex word ---- */

/** Wake every sleeper on futex word w if its bit 0 says there may be one. */
void dshm_wake_word(_Atomic uint32_t *w);
/** After a commit, outside the lock: wake the processes asleep in dshm_wait(). */
void dshm_wake_waiters(dshm_env *env);
/** The writable futex word of env for db, or NULL (its waiters poll). */
_Atomic uint32_t *dshm_waiters_word(dshm_db *db, dshm_env *env);
/** dshm_waiters_word, with the header page mapped writable for it (a
 *  read-only handle's) recorded as a range the call touches (SIGBUS guard). */
static inline _Atomic uint32_t *dshm_guard_cover_waiters(dshm_db *db, dshm_env *env) {
    _Atomic uint32_t *w = dshm_waiters_word(db, env);
    if (w && w != &DSHM_HDR(env)->hd_waiters)
        dshm_guard_cover((const char *)w - offsetof(dshm_header, hd_waiters), DSHM_HEADER_SIZE);
    return w;
}
/** Make the waiters of db return EINTR: bump db_interrupt and wake the
 *  file's sleepers. Enters no call (dshm_close uses it too). */
void dshm_wake_handle(dshm_db *db);

/* ---- the walkers (chain: inline here; directory: dshm_walk.c) ---- */

/** A walk down one bucket's chain of pages (primary, then overflow),
 *  each link bounds-checked, and the walk bounded by the number of pages
 *  the file can hold (a cycle in damaged links ends it). */
typedef struct dshm_chain {
    dshm_env *ch_env;
    uint64_t ch_limit;   /**< every page must lie below it */
    uint64_t ch_next;    /**< next page to visit, 0 = end */
    uint64_t ch_hops;    /**< pages visited */
} dshm_chain;

static inline void dshm_chain_start(dshm_chain *c, dshm_env *env, uint64_t first, uint64_t limit) {
    c->ch_env = env;
    c->ch_limit = limit;
    c->ch_next = first;
    c->ch_hops = 0;
}

/** The next page: 1 with *page set (aligned and inside the limit), 0 at
 *  the end, DSHM_CORRUPT for a bad link or an endless chain (*page = it). */
static inline int dshm_chain_next(dshm_chain *c, uint64_t *page) {
    uint64_t p = c->ch_next;
    if (!p)
        return 0;
    *page = p;
    if (!dshm_page_ok(p, c->ch_limit) || c->ch_hops++ > c->ch_limit / DSHM_BUCKET_SIZE)
        return DSHM_CORRUPT;
    c->ch_next = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(c->ch_env, p))->bk_next,
                                      memory_order_relaxed);
    return 1;
}

/** A walk over the directory's entries, for a holder of the writer lock
 *  (or a racy view that bounds everything): each entry's bucket offset
 *  and local depth are checked, and `first` says whether the entry is
 *  the first of those that point to its bucket, so a walk that wants
 *  each bucket once takes only those (dshm_dir_next_bucket). */
typedef struct dshm_dirwalk {
    dshm_env *dw_env;
    uint64_t dw_limit;            /**< bound for the buckets */
    const _Atomic uint64_t *dw_dir;
    unsigned dw_gd;               /**< global depth */
    uint64_t dw_n;                /**< entries: 2^dw_gd */
    uint64_t dw_i;                /**< the entry last visited */
    uint64_t dw_bucket;           /**< its bucket offset */
    unsigned dw_ld;               /**< its bucket's local depth */
    bool dw_first;                /**< dw_i is its bucket's first entry */
    int dw_bad;                   /**< after DSHM_CORRUPT: DSHM_DW_OFFSET or _DEPTH */
} dshm_dirwalk;
#define DSHM_DW_OFFSET 1   /**< the entry's bucket offset is out of bounds */
#define DSHM_DW_DEPTH  2   /**< the bucket's local depth is above the global */
/** Start a walk of the directory `dir` (an hd_dir value): DSHM_CORRUPT if
 *  the directory itself is too deep or out of bounds. */
int dshm_dir_start(dshm_dirwalk *w, dshm_env *env, uint64_t dir, uint64_t limit);
/** The next entry: 1, 0 at the end, or DSHM_CORRUPT (dw_bad says what;
 *  the walk may go on with the entry after). */
int dshm_dir_next(dshm_dirwalk *w);
/** The next bucket, each once (at its first entry): as dshm_dir_next. */
int dshm_dir_next_bucket(dshm_dirwalk *w);

/* ---- space (dshm_space.c) ---- */
int dshm_alloc(dshm_env *env, uint64_t size, uint64_t *off);
/** dshm_alloc for a new record, the first allocation of a put: the one
 *  point where the free lists may be compacted. */
int dshm_alloc_record(dshm_env *env, uint64_t size, uint64_t *off);
/** A block of size bytes aligned to align (a power of two >= 16). */
int dshm_alloc_aligned(dshm_env *env, uint64_t size, uint64_t align, uint64_t *off);
void dshm_free_block(dshm_env *env, uint64_t off, uint64_t size);
int dshm_page_alloc(dshm_env *env, uint32_t kind, uint64_t *off);
void dshm_page_free(dshm_env *env, uint64_t off);
int dshm_grow(dshm_env *env, uint64_t need);
void dshm_space_reset(dshm_env *env, uint64_t top);
/** Rebuild the free lists from the live structures. compact: a writer's
 *  defragmentation (keeps the bucket pool, changes nothing readers see);
 *  otherwise a repair (drops damaged slots and the pool, and fails reads
 *  in flight through hd_struct_seq). */
int dshm_space_rebuild(dshm_env *env, bool compact);
/** The value hd_alloc_sum must have for the allocator fields as they are
 *  (never 0). */
uint64_t dshm_alloc_checksum(const dshm_header *hd);

/* ---- bucket pages: soundness and in-place mending (inline) ---- */

/** The record at r if its header and its whole extent lie inside
 *  [.., limit) with possible lengths (the pointer is formed only once r is
 *  known to be inside), else NULL. */
static inline const dshm_rec *dshm_rec_sane(dshm_env *env, uint64_t r, uint64_t limit) {
    if (!r || r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, limit))
        return NULL;
    const dshm_rec *rec = DSHM_AT(env, r);
    if (rec->rc_klen > DSHM_MAX_KEY || rec->rc_vlen > DSHM_MAX_VALUE ||
        !dshm_in(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), limit))
        return NULL;
    return rec;
}

/** Is slot j reachable along the probe sequence from `home` (no empty
 *  slot in [home, j))? Otherwise the first empty slot on the way in *hole. */
static inline bool dshm_slot_reachable_from(const dshm_bucket *pg, unsigned j, unsigned home, unsigned *hole) {
    for (unsigned s = home % DSHM_SLOTS; s != j; s = s + 1 == DSHM_SLOTS ? 0 : s + 1) {
        if (!atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed)) {
            *hole = s;
            return false;
        }
    }
    return true;
}

/** Is the entry in slot j found by a probe from its home slot? */
static inline bool dshm_slot_reachable(const dshm_bucket *pg, unsigned j) {
    unsigned hole;
    uint64_t h = atomic_load_explicit(&pg->bk_slots[j].sl_hash, memory_order_relaxed);
    return dshm_slot_reachable_from(pg, j, (unsigned)(h % DSHM_SLOTS), &hole);
}

/** Mend one bucket page in place, under the lock in a repair (restartable,
 *  nothing held only in process memory): drop the slots whose record
 *  cannot be one (dshm_rec_sane), move every entry cut off from its home
 *  slot by a hole into that hole (the copy is published before the old
 *  slot is cleared: a kill in between leaves a duplicate the next repair
 *  drops, never a lost entry), recount bk_count. Each move brings an entry
 *  strictly nearer its home, so it ends. Returns the count. */
static inline uint32_t dshm_page_mend(dshm_env *env, dshm_bucket *pg, uint64_t limit) {
    for (unsigned s = 0; s < DSHM_SLOTS; s++) {
        uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
        if (r && !dshm_rec_sane(env, r, limit))
            atomic_store_explicit(&pg->bk_slots[s].sl_rec, 0, memory_order_release);
    }
    for (bool moved = true; moved;) {
        moved = false;
        for (unsigned j = 0; j < DSHM_SLOTS; j++) {
            uint64_t r = atomic_load_explicit(&pg->bk_slots[j].sl_rec, memory_order_relaxed);
            if (!r)
                continue;
            uint64_t h = atomic_load_explicit(&pg->bk_slots[j].sl_hash, memory_order_relaxed);
            unsigned hole;
            if (dshm_slot_reachable_from(pg, j, (unsigned)(h % DSHM_SLOTS), &hole))
                continue;
            atomic_store_explicit(&pg->bk_slots[hole].sl_hash, h, memory_order_relaxed);
            atomic_store_explicit(&pg->bk_slots[hole].sl_rec, r, memory_order_release);
            DSHM_CRASH_POINT("repair-rebuild-move");
            atomic_store_explicit(&pg->bk_slots[j].sl_rec, 0, memory_order_release);
            moved = true;
        }
    }
    uint32_t used = 0;
    for (unsigned s = 0; s < DSHM_SLOTS; s++)
        used += atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed) != 0;
    atomic_store_explicit(&pg->bk_count, used, memory_order_relaxed);
    return used;
}

/* ---- the batch journal, read-only views (inline; used by space and journal) ---- */

/** The journal at hd_batch if it is well formed inside [.., limit), else NULL. */
static inline dshm_journal *dshm_journal_at(dshm_env *env, uint64_t limit) {
    uint64_t off = DSHM_HDR(env)->hd_batch;
    if (off % DSHM_ALIGN || !dshm_in(off, DSHM_JR_HDR, limit))
        return NULL;
    dshm_journal *jr = DSHM_AT(env, off);
    if (jr->jr_magic != DSHM_JR_MAGIC || jr->jr_n > jr->jr_cap ||
        jr->jr_cap > (limit - off - DSHM_JR_HDR) / 8)
        return NULL;
    return jr;
}

/** Bytes a journal with room for cap entries occupies. */
static inline uint64_t dshm_journal_size(uint64_t cap) {
    return (DSHM_JR_HDR + 8 * cap + DSHM_ALIGN - 1) & ~(uint64_t)(DSHM_ALIGN - 1);
}

/** The record a journal entry names, checked against limit (its size in
 *  *size); 0 if damaged. */
static inline uint64_t dshm_journal_rec(dshm_env *env, uint64_t ent, uint64_t limit, uint64_t *size) {
    uint64_t r = ent & ~DSHM_JR_DEL;
    const dshm_rec *rec = dshm_rec_sane(env, r, limit);
    if (!rec || ((ent & DSHM_JR_DEL) && rec->rc_vlen))
        return 0;
    *size = dshm_rec_size(rec->rc_klen, rec->rc_vlen);
    return r;
}

/* ---- seqlocks: the writer's windows (inline) ---- */

/** Open / close an odd window of hd_struct_seq (nesting: a window already
 *  open is left alone; struct_begin returns whether it opened one, and
 *  struct_end(hd, true) closes the window whoever opened it). */
static inline bool dshm_struct_begin(dshm_header *hd) {
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    if (ss & 1)
        return false;
    atomic_store_explicit(&hd->hd_struct_seq, ss + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return true;
}

static inline void dshm_struct_end(dshm_header *hd, bool opened) {
    if (opened)
        atomic_store_explicit(&hd->hd_struct_seq,
                              atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) + 1,
                              memory_order_release);
}

/** Open the seqlock window of a primary bucket (and its chain). */
static inline void dshm_bucket_begin(dshm_bucket *bk) {
    uint64_t s = atomic_load_explicit(&bk->bk_seq, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

/** Close it (or make a fresh page's counter even). */
static inline void dshm_bucket_end(dshm_bucket *bk) {
    uint64_t s = atomic_load_explicit(&bk->bk_seq, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_seq, s + 1, memory_order_release);
}

/* ====================================================================== */
/* Layers 2-3: index, lock, journal (and the reader-validation frame)      */

/* ---- index (dshm_index.c) ---- */
uint64_t dshm_hash(const uint64_t seed[2], const void *data, size_t len);
/** The hash of a key in this file (SipHash-1-3 under the file's seed). */
uint64_t dshm_key_hash(const dshm_header *hd, const void *key, size_t klen);
uint64_t dshm_header_checksum(const dshm_header *hd);
/** Prefetch hint for a later dshm_index_read of h: stage 0 the directory
 *  entry, 1 the bucket page, 2 the record (dshm_get_many's pipeline). */
void dshm_index_prefetch(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit, int stage);
/** Reader lookup in the current directory. Returns the value length,
 *  DSHM_NOTFOUND, DSHM_RETRY or DSHM_CORRUPT. Without the lock: DSHM_RETRY
 *  when a counter was odd or moved (or the view may be stale), and
 *  DSHM_CORRUPT only when the damage was met with nothing moving: the
 *  counters, the file size, the directory and its entry for h all the same
 *  before and after (a real race always moves one of them). */
int64_t dshm_index_read(dshm_env *env, uint64_t h, const char *key, size_t klen,
                        char *buf, size_t cap, bool locked);
/** The odd counter (address and value) at which this thread's last
 *  lock-free read gave up, or at == NULL: read_retry uses it to tell a
 *  window a live writer holds from one nobody will close. */
typedef struct dshm_odd { const _Atomic uint64_t *at; uint64_t val; } dshm_odd;
extern _Thread_local dshm_odd dshm_read_odd;
/** Writer lookup: finds the slot of key, or not. */
typedef struct dshm_pos {
    uint64_t ps_bucket;   /**< primary bucket */
    uint64_t ps_page;     /**< page holding the slot (primary or overflow) */
    uint32_t ps_slot;     /**< slot index, valid if found */
    uint32_t ps_dir_idx;  /**< directory index used */
} dshm_pos;
int dshm_index_find(dshm_env *env, uint64_t h, const char *key, size_t klen,
                    dshm_pos *pos);
int dshm_index_insert(dshm_env *env, uint64_t h, uint64_t rec);
int dshm_index_remove(dshm_env *env, const dshm_pos *pos);
/** The record the slot at pos (found under the lock) holds, checked to
 *  lie inside [.., limit): its offset and size, or DSHM_CORRUPT. */
int dshm_index_slot_rec(dshm_env *env, const dshm_pos *pos, uint64_t limit, uint64_t *off, uint64_t *size);
/** Switch the slot at pos to record rec (an overwrite): one atomic store
 *  inside the bucket's odd window. */
void dshm_index_replace(dshm_env *env, const dshm_pos *pos, uint64_t rec);
int dshm_index_init(dshm_env *env);
uint64_t dshm_bucket_for(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit);
/** Is bk a primary bucket whose hash range holds h? */
bool dshm_bucket_covers(dshm_bucket *bk, uint64_t h);
int dshm_index_finish_split(dshm_env *env);
/** Repair, in place, a chain left inside its odd window (restartable):
 *  slots naming a record twice cleared, then each page mended with the
 *  hashes re-derived from the keys (dshm_page_mend). */
int dshm_index_rebuild_page(dshm_env *env, uint64_t bucket);
/** Room a write may need beyond the top for the index to take `keys` new
 *  keys: split pages, overflow pages and directory doublings (generous; a
 *  bound for reserving space before a batch's commit point). keys ==
 *  DSHM_ROOM_PUT: one put's split with overflow and one doubling. */
uint64_t dshm_index_room(dshm_env *env, uint64_t keys);
#define DSHM_ROOM_PUT UINT64_MAX

/* ---- reader validation (inline): one frame for every lock-free read ---- */

/** What a lock-free read of one bucket sampled before it read (the
 *  sample, bound, read, fence, re-check frame). */
typedef struct dshm_rview {
    uint64_t rv_size;     /**< hd_file_size sampled */
    uint64_t rv_limit;    /**< the bound for every offset followed */
    uint64_t rv_ss;       /**< hd_struct_seq sampled */
    uint64_t rv_dir;      /**< hd_dir sampled */
    uint64_t rv_b;        /**< the primary bucket for h (0: an offset on the
                               way was out of bounds) */
    dshm_bucket *rv_bk;   /**< it, once its counter was sampled */
    uint64_t rv_s;        /**< its bk_seq sampled */
} dshm_rview;

/** Sample and bound the view of the bucket for h: DSHM_RETRY (the file
 *  outgrew this mapping, or a counter was odd: dshm_read_odd notes it),
 *  or 0 with rv_bk set (NULL when rv_b is 0: then validate at once). */
static inline int dshm_rview_begin(dshm_rview *v, dshm_env *env, uint64_t h, bool locked) {
    dshm_header *hd = DSHM_HDR(env);
    v->rv_size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    v->rv_limit = v->rv_size;
    if (v->rv_limit > env->ev_resv) {
        if (!locked)
            return DSHM_RETRY;   /* the file outgrew this mapping: read_retry maps it again */
        v->rv_limit = env->ev_resv;
    }
    v->rv_ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
    if ((v->rv_ss & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &hd->hd_struct_seq, v->rv_ss };
        return DSHM_RETRY;
    }
    v->rv_dir = atomic_load_explicit(&hd->hd_dir, memory_order_acquire);
    v->rv_b = dshm_bucket_for(env, v->rv_dir, h, v->rv_limit);
    v->rv_bk = NULL;
    v->rv_s = 0;
    if (!v->rv_b)
        return 0;
    dshm_bucket *bk = DSHM_AT(env, v->rv_b);
    /* The slot's cache line does not depend on the counter: fetch both at once. */
    __builtin_prefetch(&bk->bk_slots[h % DSHM_SLOTS]);
    v->rv_s = atomic_load_explicit(&bk->bk_seq, memory_order_acquire);
    if ((v->rv_s & 1) && !locked) {
        dshm_read_odd = (dshm_odd){ &bk->bk_seq, v->rv_s };
        return DSHM_RETRY;
    }
    v->rv_bk = bk;
    return 0;
}

/** After the read: `result` if it stands, else DSHM_RETRY. A counter that
 *  moved is a race. A miss or damage is trusted only if nothing else
 *  moved either: the file size (a record or a split's pages published
 *  past the limit used), and for damage the directory and its entry for
 *  h (a split switches entries outside every counter's window). Under
 *  the lock the result always stands. */
static inline int64_t dshm_rview_end(const dshm_rview *v, dshm_env *env, uint64_t h, int64_t result, bool locked) {
    if (locked)
        return result;
    dshm_header *hd = DSHM_HDR(env);
    atomic_thread_fence(memory_order_acquire);
    if ((v->rv_bk && atomic_load_explicit(&v->rv_bk->bk_seq, memory_order_relaxed) != v->rv_s) ||
        atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) != v->rv_ss)
        return DSHM_RETRY;
    if (result >= 0)
        return result;
    if (atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) != v->rv_size)
        return DSHM_RETRY;
    if (result == DSHM_CORRUPT &&
        (atomic_load_explicit(&hd->hd_dir, memory_order_relaxed) != v->rv_dir ||
         dshm_bucket_for(env, v->rv_dir, h, v->rv_limit) != v->rv_b))
        return DSHM_RETRY;
    return result;
}

/** The same frame over the whole store, for a read of many buckets:
 *  hd_commit and hd_struct_seq sampled before and compared after. */
typedef struct dshm_frame { uint64_t fr_commit, fr_ss; } dshm_frame;

/** Sample the counters; false (retry) while a structural change is under
 *  way (a caller that reads anyway ignores it). */
static inline bool dshm_frame_begin(const dshm_header *hd, bool locked, dshm_frame *f) {
    f->fr_commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    f->fr_ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_acquire);
    return locked || !(f->fr_ss & 1);
}

/** After the reads: true if no write committed since dshm_frame_begin (a
 *  read under the lock is always valid). */
static inline bool dshm_frame_valid(const dshm_header *hd, bool locked, const dshm_frame *f) {
    if (locked)
        return true;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) == f->fr_commit &&
           atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) == f->fr_ss;
}

/* ---- lock (dshm_lock.c) ---- */
int dshm_mutex_init(dshm_header *hd);
/** The writer lock's futex word as glibc keeps it, read into *w without
 *  taking the lock: 0 when free; while held, the holder's thread id (with
 *  DSHM_LOCK_WAITERS if others sleep on it); DSHM_LOCK_OWNER_DIED once the
 *  kernel saw the holder die. False where the C library is not glibc. */
bool dshm_lock_word(const dshm_header *hd, uint32_t *w);
#define DSHM_LOCK_OWNER_DIED 0x40000000u   /* FUTEX_OWNER_DIED */
#define DSHM_LOCK_WAITERS    0x80000000u   /* FUTEX_WAITERS */
#define DSHM_LOCK_TID_MASK   0x3fffffffu   /* FUTEX_TID_MASK */
/** The mutex is of the kind dshm_mutex_init makes (glibc; true elsewhere).
 *  One of another kind (damage) is never locked: it is reset, by an opener
 *  that may write the file and has it to itself. */
bool dshm_mutex_kind_ours(const dshm_header *hd);
/** The lock's holder died and nobody took the lock since: a repair is owed. */
bool dshm_lock_owner_died(const dshm_header *hd);
/** The mutex's bytes are not as any locker leaves them (glibc only; false
 *  elsewhere): a read-only handle does not take it. */
bool dshm_lock_damaged(const dshm_header *hd);
/** Take the writer lock for a handle that must write nothing (opened 'r'):
 *  no hd_lock_pid, no repair. Returns 0 with the lock held (*owed set if
 *  hd_repair asks for a repair), DSHM_NEED_RECOVERY without it when a
 *  repair is owed that the lock cannot be taken past (its holder died,
 *  a holder that no longer exists, an unusable mutex), or an error. */
int dshm_lock_ro(dshm_env *env, bool *owed);
void dshm_unlock_ro(dshm_env *env);
/** Take the writer lock to write. Returns 0 with the lock held and *owed
 *  set if a repair is owed (its holder died, or hd_repair, or allocator
 *  fields that do not match their checksum): the caller runs it
 *  (dshm_lock_repair) before it writes. Never runs the repair itself.
 *  Without `wait`, DSHM_BUSY (not held) where another holds it. */
int dshm_lock_rw(dshm_env *env, bool *owed, bool wait);
void dshm_unlock_rw(dshm_env *env);
int dshm_mutex_probe(dshm_header *hd, bool *repair, bool *reinit);
/** Take a header's mutex, waiting at most wait_ns (monotonic): 0 (held;
 *  a dead holder's repair marked in hd_repair first), DSHM_BUSY on
 *  timeout, DSHM_NEED_RECOVERY or -errno. */
int dshm_mutex_lock_timed(dshm_header *hd, uint64_t wait_ns);
/** When non-zero, the monotonic time (dshm_now_ns) past which this
 *  thread's waiting dshm_lock_rw gives up with DSHM_BUSY (the lock held by
 *  another). Set around one take by a transaction's begin (dshm_txn.c). */
extern _Thread_local uint64_t dshm_lock_deadline;

/* ---- journal (dshm_journal.c) ---- */
/** Apply one journal entry (under the lock, inside the batch's window);
 *  idempotent. known_hash: the key's hash if the caller has it. */
int dshm_journal_apply(dshm_env *env, uint64_t ent, const uint64_t *known_hash);
/** Forget the journal and free it with the delete records (after the last
 *  entry was applied), or with every record (undoing a staging). */
void dshm_journal_free(dshm_env *env, bool every_record);
/** Recovery: finish (COMMITTED) the journal at hd_batch. Runs after the
 *  free lists were rebuilt. */
int dshm_journal_recover(dshm_env *env);
/** Recovery, before the rebuild: forget a journal that never reached its
 *  commit point (or is damaged), so its records become free space. */
void dshm_journal_drop_staged(dshm_env *env);

/* ====================================================================== */
/* Layer 4: recovery (dshm_recover.c)                                      */

/** Repair the store after a dead writer (under the writer lock). */
int dshm_recover(dshm_env *env);
/** Run the repair owed: mark it (hd_repair) and recover; clears the mark
 *  on success. Returns 0, DSHM_CORRUPT or DSHM_NEED_RECOVERY. */
int dshm_repair(dshm_env *env);
/** dshm_lock_rw, then the repair it reports owed (*recovered set when one
 *  ran; may be NULL). The lock is not held on error. Without `wait`,
 *  DSHM_BUSY where the lock is taken, or a repair owed (left to a caller
 *  that may wait: the mark stays in the file). */
int dshm_lock_repair(dshm_env *env, bool *recovered, bool wait);

/* ====================================================================== */
/* Layer 5: files and mappings (dshm_file.c)                               */

#define DSHM_INITIAL_SIZE ((uint64_t)64 << 10)  /* a new file */
void dshm_env_free(dshm_env *env);
/** Map fd (of `size` bytes) into a reservation of at least `want` bytes. */
int dshm_env_map(dshm_env *env, uint64_t size, uint64_t want);
/** Initialise an empty file held exclusively (seed NULL: a random one). */
int dshm_init_file(int fd, const uint64_t *seed);
/** Open path into a new mapping (see the comment at its definition). */
int dshm_env_open(const char *path, int flags, int mode, uint64_t want, dshm_env **out, bool *repaired);
/** 'n' on a file others have open: a fresh store renamed over path, and
 *  the old one (open at fd) marked moved. */
int dshm_replace_file(const char *path, int fd);
/** fsync the directory holding path, so a rename in it is durable. */
void dshm_sync_parent(const char *path);

/* ====================================================================== */
/* Layer 6: handles (dshm_handle.c)                                        */

/** Replace the handle's mapping (reorganize, or growth past it). */
int dshm_refresh(dshm_db *db, dshm_env **envp, uint64_t want);
/** Unmap superseded mappings once no call is in flight: a call that
 *  entered later loads the current mapping, never a retired one. */
void dshm_reclaim(dshm_db *db);
/** Does the handle's path name another file than env's now (a reorganize
 *  or an 'n' that replaced it, maybe killed before it marked this one
 *  moved)? One stat. A path that names nothing is no replacement. */
bool dshm_path_replaced(dshm_db *db, dshm_env *env);
/** The path names another file: mark env's moved where this handle may
 *  write (every handle of it then follows, its waiters wake) and follow
 *  the path (dshm_refresh). */
int dshm_follow_path(dshm_db *db, dshm_env **envp);

/** A read-only handle found hd_moved stale (the path still names this
 *  file) at this commit, and nothing was committed since. */
static inline bool dshm_moved_stale(dshm_env *env, uint64_t commit) {
    uint64_t m = atomic_load_explicit(&env->ev_stale_moved, memory_order_relaxed);
    return m != 0 && m == commit + 1;
}

/** Leave a call: the last call out unmaps superseded mappings. */
static inline void dshm_leave(dshm_db *db) {
    dshm_guard_tls.entered = NULL;
    if (atomic_fetch_sub_explicit(&db->db_inflight, 1, memory_order_seq_cst) == 1 &&
        __builtin_expect(atomic_load_explicit(&db->db_has_retired, memory_order_relaxed), 0))
        dshm_reclaim(db);
}

/* Enter a call: count it in flight, refuse a closed handle, follow a
 * reorganize or a growth past this mapping. Two loads of the header on the
 * fast path, no system call (inline: every call runs it). */
static inline int dshm_enter(dshm_db *db, dshm_env **envp) {
    if (!db)
        return DSHM_INVALID;
    atomic_fetch_add_explicit(&db->db_inflight, 1, memory_order_seq_cst);
    dshm_guard_tls.entered = db;   /* from here a SIGBUS ends the call with leave() */
    if (atomic_load_explicit(&db->db_closed, memory_order_seq_cst)) {
        dshm_leave(db);
        return DSHM_CLOSED;
    }
    /* seq_cst, paired with the swap in refresh() and the check in
     * reclaim(): a call that loaded a mapping is counted in flight. */
    dshm_env *env = atomic_load_explicit(&db->db_env, memory_order_seq_cst);
    dshm_guard_cover(env->ev_base, env->ev_resv);   /* refresh() covers a new one */
    dshm_header *hd = DSHM_HDR(env);
    uint64_t fs = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&hd->hd_moved, memory_order_relaxed) ||
                         fs > env->ev_resv || fs < DSHM_HEADER_SIZE, 0) &&
        !(fs <= env->ev_resv && fs >= DSHM_HEADER_SIZE &&
          dshm_moved_stale(env, atomic_load_explicit(&hd->hd_commit, memory_order_acquire)))) {
        /* A header that says the file is shorter than itself: the file was
         * cut under the mapping (its first page reads as zeros past the end). */
        int rc = fs < DSHM_HEADER_SIZE ? DSHM_TRUNCATED : dshm_refresh(db, &env, 0);
        if (rc) {
            dshm_leave(db);
            return rc;
        }
    }
    /* Now and then, a look at the path (no system call in between). */
    uint64_t now = dshm_coarse_ns();
    if (__builtin_expect(now >= atomic_load_explicit(&db->db_path_due, memory_order_relaxed), 0)) {
        atomic_store_explicit(&db->db_path_due, now + DSHM_PATH_CHECK_NS, memory_order_relaxed);
        if (dshm_path_replaced(db, env)) {
            int rc = dshm_follow_path(db, &env);
            if (rc) {
                dshm_leave(db);
                return rc;
            }
        }
    }
    *envp = env;
    return 0;
}

/** dshm_enter, then report argrc (the caller's argument check, 0 if none)
 *  after the handle was found open; on error the call has left. */
static inline int dshm_enter_checked(dshm_db *db, dshm_env **envp, int argrc) {
    int rc = dshm_enter(db, envp);
    if (rc == 0 && argrc) {
        dshm_leave(db);
        rc = argrc;
    }
    return rc;
}

/** Take the writer lock with room in the mapping for `room` more bytes
 *  (running a repair that is owed); follows a reorganize. Without `wait`,
 *  DSHM_BUSY where that would wait (dshm_lock_repair). */
int dshm_wlock(dshm_db *db, dshm_env **envp, uint64_t room, bool wait);
/** The read-only take of the writer lock (dshm_lock_ro) for a handle,
 *  following a reorganize or a growth as dshm_wlock does. */
int dshm_rlock(dshm_db *db, dshm_env **envp, bool *owed);
/** The start of every write: enter, report argrc (the caller's argument
 *  check: DSHM_INVALID before a read-only handle's DSHM_READONLY, any other
 *  code after it), take the writer lock with room for `bytes` of records
 *  and the index's growth for `keys` new keys (dshm_index_room); without
 *  `wait`, DSHM_BUSY where taking it would wait. On error the call has
 *  left. */
int dshm_write_enter(dshm_db *db, dshm_env **envp, int argrc, uint64_t bytes, uint64_t keys, bool wait);

/* ====================================================================== */
/* Layer 7: reads (dshm_read.c), and writes (dshm_write.c) below          */

/** Wait a little after losing to the writer: spin first, then yield. */
void dshm_backoff(int attempt);
/** A read attempt: without the lock it returns DSHM_RETRY when a seqlock
 *  counter was odd or moved, DSHM_CORRUPT only for damage met while nothing
 *  moved (see dshm_index_read); with the lock, a definitive answer. */
typedef int64_t (*dshm_read_fn)(dshm_env *env, bool locked, void *ctx);
/** Lock-free tries of a read before its fallback (read_retry). */
#define DSHM_READ_TRIES 64
/** Run a read with `tries` lock-free attempts (DSHM_READ_TRIES for a
 *  single read) before the locked one. */
int64_t dshm_read_retry(dshm_db *db, dshm_env **envp, dshm_read_fn fn, void *ctx, int tries);

/* ====================================================================== */
/* Layer 8: iteration (dshm_iter.c)                                        */

/* ---- iteration (dshm_iter.c) ---- */
/** Copy the entries of the bucket covering cursor (see snap_read). */
typedef struct dshm_snap {
    char    *buf;      /**< records: [u32 klen][(u64 vlen)][u64 hash][key][(value)] */
    size_t   cap, used;
    uint64_t next;     /**< cursor after this bucket */
    int      last;     /**< this bucket ends the hash space */
} dshm_snap;
int dshm_snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, dshm_snap *sn);
/** Grow sn's buffer to hold `need` bytes (0 or -ENOMEM). */
int dshm_snap_reserve(dshm_snap *sn, size_t need);

/* ---- writes (dshm_write.c) ---- */
/** Store under the lock: write the record into free space, then publish. */
int dshm_put_locked(dshm_env *env, uint64_t h, const char *key, size_t klen,
                    const char *val, size_t vlen, int flags);
/** Delete the key at pos under the lock: remove its slot (the bucket's odd
 *  window), crash point `point`, free its record, move the count and the
 *  commit counter. The one delete protocol of dshm_del, dshm_pop and
 *  dshm_popitem. */
int dshm_del_locked(dshm_env *env, const dshm_pos *pos, const char *point);
/** End a write: unlock, wake waiters, count it, sync if asked, leave. */
int dshm_finish_write(dshm_db *db, dshm_env *env, int rc);
/** msync + fsync of a mapping's file. */
int dshm_sync_env(dshm_env *env);

/* ====================================================================== */
/* Layer 9: batches (dshm_batch.c)                                         */

/** dshm_write_batch for a call that has entered db and holds the writer
 *  lock already (a transaction's publish): makes room in the mapping
 *  without letting the lock go, publishes as a batch does, then ends the
 *  write (dshm_finish_write: unlock, wake, sync, leave) whatever happens. */
int dshm_batch_held(dshm_db *db, dshm_env *env, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit);

#endif /* DSHM_INTERNAL_H */
