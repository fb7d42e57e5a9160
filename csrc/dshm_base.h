/**
 * @file dshm_base.h
 * @brief Process-private structures (dshm_env, dshm_db), internal codes, and the
 *        small pure helpers every layer uses (inline, calling no csrc/ file).
 *
 * The bottom of the private headers: no function of any csrc/ file is
 * declared or called here, so every file may include it.
 *
 * Each C file of a layer has its own header (dshm_X.h for dshm_X.c) with
 * what it offers the files above it: its prototypes, the structures they
 * take, and the inline helpers that call its functions. A file includes
 * only the headers of lower layers (and its own); .ci/layers.py checks it,
 * with the call layering, and the table of layers is in CONTRIBUTING.md.
 *
 * The one edge the design needs between writing and repairing: taking the
 * lock may owe a repair. dshm_lock_rw (like dshm_lock_ro) reports *owed
 * and its caller repairs (dshm_lock_repair, layer 4); the lock never calls
 * into recovery.
 *
 * Error convention: every function returns 0 (or a length) on success and
 * a negative code on failure: a DSHM_* code, an internal code below, or
 * -errno. Never a positive errno.
 */
#ifndef DSHM_BASE_H
#define DSHM_BASE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
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
    int      ev_volatile;   /**< the file is on tmpfs or ramfs: an 's' write
                                 does not commit (nothing to make durable) */
    int      ev_copy;       /**< a copy being made (reorganize), not yet the
                                 store: its commit passes no crash points */
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
    _Atomic uint64_t db_synced_writes; /**< db_writes at this handle's last commit
                                        (dshm_sync): close commits only if it moved */
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

/** Was a structure stamped with period @p gen written in the current
 *  commit period (may change in place, freed at once)? On a store that
 *  keeps no periods (hd_volatile: tmpfs) everything is current. */
static inline bool dshm_gen_current(const dshm_header *hd, uint64_t gen) {
    return gen == hd->hd_gen || hd->hd_volatile;
}

/** Wall-clock time, ns since the epoch: what record deadlines count in
 *  (every process on the host shares the clock; it outlives a reboot). */
static inline uint64_t dshm_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/** Has the record's deadline passed? *now is read from the clock on the
 *  first record that has a deadline (0 = not yet read), so records
 *  without one cost no clock read. */
static inline bool dshm_rec_expired(const volatile dshm_rec *rec, uint64_t *now) {
    uint64_t d = rec->rc_deadline;
    if (!d)
        return false;
    if (!*now)
        *now = dshm_realtime_ns();
    return d <= *now;
}

/** Fill a new record (the writer's, before it is published): the header,
 *  the next store stamp (or @p stamp if nonzero: a copy keeps its order),
 *  the key and the value. The one record writer for puts, batches and
 *  copies. */
static inline void dshm_rec_fill(dshm_header *hd, dshm_rec *rec, uint64_t h, const char *key, size_t klen,
                                 const char *val, size_t vlen, uint64_t deadline, uint64_t stamp) {
    rec->rc_klen = (uint32_t)klen;
    rec->rc_check = (uint32_t)h;
    rec->rc_vlen = vlen;
    rec->rc_gen = hd->hd_gen;
    rec->rc_deadline = deadline;
    if (!stamp)
        stamp = ++hd->hd_stamp;
    else if (stamp > hd->hd_stamp)
        hd->hd_stamp = stamp;
    rec->rc_stamp = stamp;
    if (klen)
        memcpy((char *)rec + DSHM_REC_HDR, key, klen);
    if (vlen)
        memcpy((char *)rec + DSHM_REC_HDR + klen, val, vlen);
}

/* ---- bucket pages and records: soundness (inline, pure) ---- */

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

#endif /* DSHM_BASE_H */
