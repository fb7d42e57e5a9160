/**
 * @file dshm_internal.h
 * @brief Process-private structures and the prototypes shared by the
 *        csrc/ files: layout (dshm_layout.h), lock (dshm_lock.c),
 *        space (dshm_space.c), index (dshm_index.c), store (dshm_store.c).
 */
#ifndef DSHM_INTERNAL_H
#define DSHM_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <setjmp.h>

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
    _Atomic int db_waiting;        /**< threads inside dshm_wait() on this handle:
                                        close wakes them only if there are any
                                        (it does not touch the mapping otherwise) */
};

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

/** CPU hint inside spin loops. */
static inline void dshm_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/** Test hook: DSHM_CRASH_AT="point:n" kills the process with SIGKILL the
 *  n-th time the writer passes the named point (tests/crash). Costs one
 *  predictable branch when unset. */
extern int dshm_crash_armed;
void dshm_crash_point0(const char *point);
#define DSHM_CRASH_POINT(p) do { if (dshm_crash_armed) dshm_crash_point0(p); } while (0)

/* ---- index (dshm_index.c) ---- */
uint64_t dshm_hash(const uint64_t seed[2], const void *data, size_t len);
/** The hash of a key in this file (SipHash-1-3 under the file's seed).
 *  Test hook DSHM_TEST_COLLIDE=n clears the top n bits of every key hash
 *  (64: all keys collide), to exercise hostile-key handling. */
uint64_t dshm_key_hash(const dshm_header *hd, const void *key, size_t klen);
extern int dshm_test_collide;
uint64_t dshm_header_checksum(const dshm_header *hd);
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
/** Switch the slot at pos to record rec (an overwrite): one atomic store
 *  inside the bucket's odd window. */
void dshm_index_replace(dshm_env *env, const dshm_pos *pos, uint64_t rec);
int dshm_index_init(dshm_env *env);
uint64_t dshm_bucket_for(dshm_env *env, uint64_t dir, uint64_t h, uint64_t limit);
/** Is bk a primary bucket whose hash range holds h? */
bool dshm_bucket_covers(dshm_bucket *bk, uint64_t h);
int dshm_index_finish_split(dshm_env *env);
int dshm_index_rebuild_page(dshm_env *env, uint64_t bucket);
/** Repair one bucket page in place (restartable): drop slots whose record
 *  is out of [.., limit) or has impossible lengths (with rehash: whose key
 *  does not match its hash tag; slot hashes re-derived from the keys),
 *  move every entry cut off from its home slot into the hole on its probe
 *  sequence (copy first, then clear), recount bk_count. Returns the count. */
int dshm_index_page_repair(dshm_env *env, dshm_bucket *pg, uint64_t limit, bool rehash);
/** Is the entry in slot j of pg found by a probe from its home slot (no
 *  empty slot in between)? */
bool dshm_slot_reachable(dshm_bucket *pg, unsigned j);

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

/** Per-thread state of the SIGBUS guard (dshm_store.c): a call that
 *  touches the mapping runs with `active` set, so a SIGBUS (the file was
 *  truncated under the mapping) jumps back to it instead of ending the
 *  process. */
typedef struct dshm_guard {
    int active;               /**< a guarded call is running */
    sigjmp_buf jb;            /**< where the handler jumps back to */
    struct dshm_db *entered;  /**< the handle whose call is in flight */
    dshm_env *locked;         /**< the mapping whose writer lock is held */
    int locked_ro;            /**< held by a read-only taker: give it back, mark nothing */
    pthread_mutex_t *db_locked; /**< a handle's db_lock held by this call (refresh) */
} dshm_guard;
extern __attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;
/** Back from a SIGBUS inside a guarded call: unblock the signal, give back
 *  the writer lock if this thread held it (marking the store for repair)
 *  and the handle's db_lock if it held that, and end the call. */
void dshm_guard_fault(dshm_guard *g);

/** Run `call` under the guard; DSHM_TRUNCATED (as `type`) after a SIGBUS. */
#define GUARDED(type, call) do {                                   \
        dshm_guard *g_ = &dshm_guard_tls;                          \
        if (g_->active)                                            \
            return call;                                           \
        if (sigsetjmp(g_->jb, 0)) {                                \
            dshm_guard_fault(g_);                                       \
            return (type)DSHM_TRUNCATED;                           \
        }                                                          \
        g_->active = 1;                                            \
        type r_ = call;                                            \
        g_->active = 0;                                            \
        return r_;                                                 \
    } while (0)

/** GUARDED for a call returning nothing. */
#define GUARDED_VOID(call) do {                                    \
        dshm_guard *g_ = &dshm_guard_tls;                          \
        if (g_->active) {                                          \
            call;                                                  \
            return;                                                \
        }                                                          \
        if (sigsetjmp(g_->jb, 0)) {                                \
            dshm_guard_fault(g_);                                  \
            return;                                                \
        }                                                          \
        g_->active = 1;                                            \
        call;                                                      \
        g_->active = 0;                                            \
    } while (0)


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
int dshm_lock0(dshm_env *env, bool *recovered);
void dshm_unlock0(dshm_env *env);
int dshm_mutex_probe(dshm_header *hd, bool *repair, bool *reinit);

/* ---- store (dshm_store.c) ---- */
int dshm_recover(dshm_env *env);
/** CLOCK_MONOTONIC in ns (one clock for every process of the machine). */
uint64_t dshm_now_ns(void);
/** Services of dshm_store.c for the other entry points (dshm_batch.c,
 *  dshm_wait.c): enter/leave a call on a handle, take the writer lock with
 *  room in the mapping, end a write (unlock, sync if asked, wake waiters,
 *  leave), and run a lock-free read with retries and the locked fallback. */
int dshm_enter(dshm_db *db, dshm_env **envp);
void dshm_leave(dshm_db *db);
int dshm_wlock(dshm_db *db, dshm_env **envp, uint64_t room);
int dshm_finish_write(dshm_db *db, dshm_env *env, int rc);
int dshm_sync_env(dshm_env *env);
typedef int64_t (*dshm_read_fn)(dshm_env *env, bool locked, void *ctx);
/** Lock-free tries of a read before its fallback (read_retry). */
#define DSHM_READ_TRIES 64
/** read_retry with `tries` lock-free attempts (DSHM_READ_TRIES for a
 *  single read) before the locked one. */
int64_t dshm_read_retry(dshm_db *db, dshm_env **envp, dshm_read_fn fn, void *ctx, int tries);
/** Copy the entries of the bucket covering cursor (see snap_read). */
typedef struct dshm_snap {
    char    *buf;      /**< records: [u32 klen][(u64 vlen)][u64 hash][key][(value)] */
    size_t   cap, used;
    uint64_t next;     /**< cursor after this bucket */
    int      last;     /**< this bucket ends the hash space */
} dshm_snap;
int dshm_snap_read(dshm_env *env, uint64_t cursor, uint64_t from, bool values, bool locked, dshm_snap *sn);
/** Grow sn's buffer to hold `need` bytes (0 or ENOMEM). */
int dshm_snap_reserve(dshm_snap *sn, size_t need);
/** Open / close an odd window of hd_struct_seq (nesting: a window already
 *  open is left alone; struct_begin returns whether it opened one). */
bool dshm_struct_begin(dshm_header *hd);
void dshm_struct_end(dshm_header *hd, bool opened);

/* ---- batches (dshm_batch.c) ---- */
/** Recovery: finish (COMMITTED) or drop (STAGING) the journal at hd_batch.
 *  Runs after the free lists were rebuilt. */
int dshm_batch_recover(dshm_env *env);
/** Recovery, before the rebuild: forget a journal that never reached its
 *  commit point (or is damaged), so its records become free space. */
void dshm_batch_drop_staged(dshm_env *env);
/** For a rebuild of the free lists: add the journal at hd_batch and every
 *  record it lists to the live extents through add(). Returns 0, an
 *  error of add(), or DSHM_CORRUPT (the caller then drops the journal). */
int dshm_batch_extents(dshm_env *env, int (*add)(void *ctx, uint64_t off, uint64_t size), void *ctx);

/* ---- waiting (dshm_wait.c) ---- */
/** After a commit, outside the lock: wake the processes asleep in dshm_wait(). */
void dshm_wake_waiters(dshm_env *env);
/** dshm_interrupt() without the guard: also used by dshm_close(). */
void dshm_interrupt0(dshm_db *db);
/** For dshm_close() (after setting db_closed): wake this handle's waiters. */
void dshm_close_wake(dshm_db *db);

#endif /* DSHM_INTERNAL_H */
