/**
 * @file dbm_shm.h
 * @brief Public C API of the dbm_shm store: a key-value store in a
 *        memory-mapped file, one writer at a time, lock-free readers.
 *
 * This is the only header the Python binding sees (its cffi cdef is the
 * copy in cdef.h, kept in step by tests/api/test_cffi_smoke.py).
 *
 * @section caveats Caveats
 * - A handle may be shared by any number of threads of one process: every
 *   entry point is thread-safe. Closing a handle waits for the calls other
 *   threads are making on it.
 * - A handle survives fork(): the child may keep using it. It must not be
 *   used by the child while it was inside a call in another thread of the
 *   parent at the moment of the fork (the usual fork rule).
 * - Many processes may open one file. Writers serialise on a robust,
 *   process-shared mutex in the file; readers take no lock. A writer that
 *   dies (even by SIGKILL) is detected by the next writer, which repairs
 *   the store before it goes on.
 * - Do not put the file on a network file system: the lock and the
 *   lock-free read protocol need coherent shared memory.
 * - Values returned by readers are copies; no pointer into the mapping ever
 *   leaves the library.
 *
 * @section errors Return values
 * Functions return 0 (or a length, as a non-negative int64_t) on success,
 * and a negative code on failure: a DSHM_* code for a library condition,
 * or -errno for a system error. Never a positive errno.
 */
#ifndef DBM_SHM_H
#define DBM_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup errors Error codes
 * Library codes live in -31000..-31099, clear of BerkeleyDB's
 * (-30800..-30999) and LMDB's (-30779..-30799).
 * @{ */
#define DSHM_SUCCESS           0
#define DSHM_NOTFOUND          (-31000) /**< key not found (an ordinary result) */
#define DSHM_BAD_MAGIC         (-31001) /**< not a dbm_shm file */
#define DSHM_VERSION_MISMATCH  (-31002) /**< dbm_shm file of another format version */
#define DSHM_CORRUPT           (-31003) /**< the file's structures are damaged */
#define DSHM_READONLY          (-31004) /**< write to a handle opened read-only */
#define DSHM_NEED_RECOVERY     (-31005) /**< a writer died; a writable handle must repair */
#define DSHM_FULL              (-31006) /**< file or address-space limit reached */
#define DSHM_TOOBIG            (-31007) /**< key or value over the supported maximum */
#define DSHM_CLOSED            (-31008) /**< handle already closed */
#define DSHM_KEYEXIST          (-31009) /**< key exists (DSHM_NOOVERWRITE) */
#define DSHM_BUSY              (-31010) /**< file is being created by another process */
#define DSHM_INVALID           (-31011) /**< invalid argument */
#define DSHM_TRUNCATED         (-31012) /**< file shorter than its header says */
#define DSHM_LAST_ERRCODE      DSHM_TRUNCATED
/** @} */

/** @defgroup openflags Flags for dshm_open()
 * @{ */
#define DSHM_RDONLY   0x01  /**< read-only handle ('r') */
#define DSHM_CREATE   0x02  /**< create the file if missing ('c') */
#define DSHM_TRUNC    0x04  /**< start a new, empty store ('n') */
#define DSHM_SYNC     0x08  /**< msync+fsync after every write ('s') */
/** @} */

/** Flag for dshm_put(): fail with DSHM_KEYEXIST if the key is present. */
#define DSHM_NOOVERWRITE 0x01
/** Flag for dshm_put(): never wait. Answer DSHM_BUSY, having changed
 *  nothing, where the put would wait or take long: the writer lock held by
 *  another thread or process, a repair owed, a handle opened with
 *  DSHM_SYNC. For callers that must not block where they are (the C fast
 *  path holds the GIL for it) and can make the full call elsewhere. */
#define DSHM_TRY 0x02

/** Flag for dshm_scan(): also copy the values. */
#define DSHM_SCAN_VALUES 0x01

/** Largest key, in bytes. */
#define DSHM_MAX_KEY   ((uint64_t)0x7fffffff)
/** Largest value, in bytes (also bounded by the file-size limit). */
#define DSHM_MAX_VALUE ((uint64_t)1 << 40)

/** Opaque handle. */
typedef struct dshm_db dshm_db;

/** Counters reported by dshm_stat(). A snapshot: other processes may be
 *  writing while it is taken. */
typedef struct dshm_stat_t {
    uint64_t st_count;        /**< number of keys */
    uint64_t st_file_size;    /**< bytes in the file */
    uint64_t st_top;          /**< end of allocated space */
    uint64_t st_live_bytes;   /**< bytes held by records (keys, values, headers) */
    uint64_t st_free_bytes;   /**< bytes on the free lists, ready for reuse */
    uint64_t st_depth;        /**< global depth of the directory */
    uint64_t st_buckets;      /**< primary bucket pages */
    uint64_t st_overflow;     /**< overflow bucket pages */
    uint64_t st_slots;        /**< slots per bucket page */
    uint64_t st_commit;       /**< commit counter */
    uint64_t st_format;       /**< file format version */
    uint64_t st_page_size;    /**< bucket page size */
    uint64_t st_lock_pid;     /**< pid of the writer-lock holder, 0 if none */
    uint64_t st_recoveries;   /**< recoveries run on this file since creation */
    uint64_t st_read_retries; /**< this handle: reads retried (seqlock moved) */
    uint64_t st_read_fallbacks; /**< this handle: reads done under the writer lock */
    uint64_t st_reopens;      /**< this handle: reopens after reorganize */
    uint64_t st_map_size;     /**< this handle: bytes of address space reserved */
    uint64_t st_lock_held_ns; /**< how long the current holder has held the writer lock */
    uint64_t st_waiters;      /**< 1 if a process may be asleep in dshm_wait() */
    uint64_t st_writes;       /**< this handle: committed writes (a batch counts once) */
    uint64_t st_batches;      /**< this handle: committed batches */
    uint64_t st_batch_ops;    /**< this handle: sets and deletes in those batches */
    uint64_t st_lock_waits;   /**< this handle: writer-lock takes that had to wait */
    uint64_t st_lock_wait_ns; /**< this handle: total time waited for the writer lock */
    uint64_t st_waits;        /**< this handle: dshm_wait() calls */
    uint64_t st_wakeups;      /**< this handle: times a waiter was woken */
    uint64_t st_multi_retries; /**< this handle: consistent multi-key reads retried */
    uint64_t st_max_bytes;    /**< the cap on st_live_bytes (dshm_set_max_bytes), 0 = none */
    uint64_t st_evictions;    /**< records evicted to stay under the cap, by every process */
    uint64_t st_expired;      /**< expired records dropped by writers, by every process */
} dshm_stat_t;

/** Open or create a store.
 * @param[in] path   file name
 * @param[in] flags  DSHM_RDONLY / DSHM_CREATE / DSHM_TRUNC / DSHM_SYNC
 * @param[in] mode   permission bits for a created file (umask applies)
 * @param[out] out   the handle
 * @return 0, DSHM_BAD_MAGIC, DSHM_VERSION_MISMATCH, DSHM_CORRUPT,
 *         DSHM_TRUNCATED, DSHM_BUSY, DSHM_FULL or -errno (-ENOENT, -EACCES...). */
int dshm_open(const char *path, int flags, int mode, dshm_db **out);

/** Close a handle: unmap and close the file, after the calls other threads
 *  have in flight on it. Later calls return DSHM_CLOSED. The handle's
 *  memory stays valid until dshm_free(), so a call racing with close
 *  fails cleanly instead of touching freed memory. NULL is ok. */
void dshm_close(dshm_db *db);

/** Close (if needed) and free a handle. No call may be running or made on
 *  it afterwards. NULL is ok. */
void dshm_free(dshm_db *db);

/** Look up @p key. Copies the value into @p buf if it fits in @p cap bytes.
 * @return the value length (the value was copied only if it is <= cap),
 *         or DSHM_NOTFOUND, or another negative error. */
int64_t dshm_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);

/** One lock-free try of dshm_get(): never waits, never takes a lock, never
 *  retries. For callers that must not block where they are (the C fast
 *  path holds the GIL for it) and can make the full call elsewhere.
 * @return as dshm_get(), or DSHM_BUSY where the try was not conclusive (a
 *         writer in the way, the file grew past the mapping, damage to look
 *         at under the lock): call dshm_get() then. */
int64_t dshm_get_try(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);

/** Store @p key -> @p val.
 * @return 0, DSHM_KEYEXIST (with DSHM_NOOVERWRITE), DSHM_BUSY (with
 *         DSHM_TRY), DSHM_READONLY, DSHM_TOOBIG, DSHM_FULL, or -errno
 *         (-ENOSPC, -EFBIG...). */
int dshm_put(dshm_db *db, const char *key, size_t klen,
             const char *val, size_t vlen, int flags);

/** dshm_put() with a deadline: from @p deadline on (ns since the epoch,
 *  CLOCK_REALTIME; 0 = never) every process reads the key as absent. A
 *  write to a store with a cap (dshm_set_max_bytes) evicts first.
 * @return as dshm_put(); DSHM_TOOBIG also for a record larger than the cap. */
int dshm_put_ttl(dshm_db *db, const char *key, size_t klen,
                 const char *val, size_t vlen, int flags, uint64_t deadline);

/** Give the live @p key a new deadline (0 = never), storing it anew.
 * @return 0, DSHM_NOTFOUND (absent or expired), or an error. */
int dshm_touch(dshm_db *db, const char *key, size_t klen, uint64_t deadline);

/** Drop every expired record now (writers otherwise drop them as they
 *  meet them: an overwrite, an eviction, reorganize).
 * @return how many were dropped, or a negative error. */
int64_t dshm_expire(dshm_db *db);

/** Set the store's cap on the bytes of its records (keys, values and a
 *  40-byte header each, rounded up to 16; st_live_bytes), 0 = none. Kept
 *  in the file, for every process. Evicts down to the cap at once.
 * @return 0, DSHM_READONLY or an error. */
int dshm_set_max_bytes(dshm_db *db, uint64_t max_bytes);

/** Delete @p key. @return 0, DSHM_NOTFOUND (also for an expired key,
 *  which is dropped), DSHM_READONLY or an error. */
int dshm_del(dshm_db *db, const char *key, size_t klen);

/** Number of keys. @return the count, or a negative error. */
int64_t dshm_count(dshm_db *db);

/** Copy the first key (in the store's order) into @p buf if it fits.
 * @return its length, DSHM_NOTFOUND for an empty store, or an error. */
int64_t dshm_firstkey(dshm_db *db, char *buf, size_t cap);

/** Copy the key that follows @p key into @p buf if it fits.
 * @return its length, DSHM_NOTFOUND at the end (or if @p key is absent). */
int64_t dshm_nextkey(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);

/** Bulk scan. Copies whole buckets' worth of entries, starting at
 * @p *cursor (0 to start), into @p buf as records
 * `[u32 klen][u64 hash][key]` or, with DSHM_SCAN_VALUES,
 * `[u32 klen][u64 vlen][u64 hash][key][value]`
 * (native byte order, unaligned). Advances @p *cursor; sets @p *done to 1
 * when the whole key space was visited.
 * Each bucket's entries are a consistent snapshot; keys present for the
 * whole scan are reported exactly once.
 * @return the number of bytes written (0 is possible before the end), or
 *         a negative error; -ERANGE if the next bucket's entries do not
 *         fit in @p cap, with the size needed stored in @p *need. */
int64_t dshm_scan(dshm_db *db, uint64_t *cursor, int *done, char *buf,
                  size_t cap, int flags, uint64_t *need);

/** Commit: make every write completed so far, in any process, durable on
 *  disk so that a power loss keeps it (two flushes, under the writer lock;
 *  docs/durability.md). On tmpfs nothing to do. A handle whose file is
 *  open read-only only flushes what others committed. */
int dshm_sync(dshm_db *db);

/** dshm_sync for a handle opened for writing that wrote since its last
 *  commit, if the store changed since the newest commit; else (or 'r', or
 *  closed) 0 at once. @p wait 0: DSHM_BUSY rather than wait for a writer
 *  lock held elsewhere. Called by the binding as it closes a handle. */
int dshm_commit_due_sync(dshm_db *db, int wait);

/** Delete every key (space is kept for reuse). */
int dshm_clear(dshm_db *db);

/** Rewrite the store compactly into a new file, rename it over the path,
 *  and tell every open handle to follow it. Gives space back to the
 *  file system. ESTALE (nothing changed) if the path names another file
 *  than this handle's (it was replaced since the handle opened it). */
int dshm_reorganize(dshm_db *db);

/** Fill @p st. */
int dshm_stat(dshm_db *db, dshm_stat_t *st);

/** Walk the whole file and verify its structure. Writes nothing itself.
 *  On a handle opened for writing it takes the writer lock for a stable
 *  view, which first runs a repair a dead writer left owed; on a handle
 *  opened read-only it repairs nothing and reports an owed repair as a
 *  problem (it walks under the lock where it can take it without writing,
 *  else lock-free, again while writers commit).
 * Writes a human-readable report (one problem per line) into @p report.
 * @return the number of problems found (0 = sound), or a negative error. */
int64_t dshm_check(dshm_db *db, char *report, size_t cap);

/** The commit counter: bumped by every committed write.
 * @param[out] out  the counter
 * @return 0, DSHM_CLOSED, DSHM_INVALID (@p out NULL) or another error. */
int dshm_commit_id(dshm_db *db, uint64_t *out);

/** @defgroup wait Waiting for changes
 * @{ */
/** Sleep until a write commits after commit number @p since (see
 *  dshm_commit_id()), without polling: the waiter sleeps on a futex in the
 *  mapping and every committing writer, in any process, wakes it.
 * @param[in] timeout_ns  how long to wait at most; negative: no limit
 * @param[out] commit     the commit number seen (may be NULL)
 * @return 0 (a commit after @p since, or the file was replaced), -ETIMEDOUT,
 *         -EINTR (a signal arrived, or dshm_interrupt() was called: call
 *         again to go on waiting), DSHM_CLOSED (closed meanwhile) or another
 *         error. */
int dshm_wait(dshm_db *db, uint64_t since, int64_t timeout_ns, uint64_t *commit);
/** Make every dshm_wait() call in flight on this handle return -EINTR. */
void dshm_interrupt(dshm_db *db);
/** Set the process's interrupt hook (NULL: none). A call that waits for
 *  the writer lock waits in slices (DSHM_LOCK_SLICE_MS each) and, between
 *  two, calls @p fn from the waiting thread: a nonzero return ends the wait
 *  and the call returns -EINTR having changed nothing (the binding's hook
 *  runs the interpreter's pending signal handlers: Ctrl-C reaches a writer
 *  that waits for the lock). Between slices the wait also looks at the
 *  file: one cut below its header (the lock word gone with it, so the
 *  holder's death can wake nobody) ends it with DSHM_TRUNCATED. */
void dshm_set_interrupt_hook(int (*fn)(void));
/** How long one slice of a wait for the writer lock lasts. */
#define DSHM_LOCK_SLICE_MS 50
/** @} */

/** @defgroup batch Atomic batches and consistent reads
 * @{ */
/** Apply @p n sets and deletes atomically: readers in every process see
 *  all of them or none, and a writer that dies part-way leaves none (before
 *  its commit point) or all (after it: the next writer finishes the batch).
 *  Operation i has key `keys[koff..koff+klens[i])` (the keys concatenated)
 *  and, if vlens[i] >= 0, value `vals[voff..voff+vlens[i])` (the values of
 *  the sets concatenated); vlens[i] < 0 deletes the key (absent: no-op).
 *  A key given twice: the last operation wins.
 * @param[out] commit  the commit number of the batch (may be NULL)
 * @return 0, DSHM_READONLY, DSHM_TOOBIG, DSHM_INVALID, DSHM_FULL or an
 *         -errno; on error nothing of the batch was applied. */
int dshm_write_batch(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                     const char *vals, const int64_t *vlens, uint64_t *commit);
/** Read @p n keys (given as for dshm_write_batch) as of one instant: no
 *  write committed between the reads of the first and the last (checked
 *  against the commit counter; retried, then read under the writer lock).
 *  Values are copied one after the other into @p buf; vlens[i] gets the
 *  length of key i's value, or -1 if absent.
 * @param[out] commit  the commit number the values belong to (may be NULL)
 * @return the bytes written, or -ERANGE if they do not fit in @p cap (the
 *         size needed in @p *need), or a negative error. */
int64_t dshm_get_many(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                      char *buf, size_t cap, int64_t *vlens, uint64_t *commit, uint64_t *need);
/** Copy every entry of the store as of one instant into a buffer the
 *  library allocates (@p *out, released with dshm_release()), as records
 *  `[u32 klen][u64 vlen][u64 hash][key][value]` (native byte order,
 *  unaligned), in the store's order.
 * @return the bytes in @p *out, or a negative error. */
int64_t dshm_snapshot(dshm_db *db, char **out, uint64_t *commit);
/** Free a buffer from dshm_snapshot(). NULL is ok. */
void dshm_release(void *p);
/** @} */

/** @name Dump encoding (dshm_dump.c)
 * @{ */
/** Flag for dshm_dump_encode(): one empty line after an empty datum. */
#define DSHM_DUMP_COMPAT 0x01
/** Encode the records of @p recs (@p n bytes of dshm_scan records with
 *  values, or a dshm_snapshot buffer) from offset @p *pos as the body of
 *  a GNU gdbm ASCII dump: per record its key and its value, each a
 *  `#:len=N` line and base64 lines of 76 characters. Writes as many whole
 *  records as fit in @p cap bytes of @p out, advances @p *pos past them and
 *  adds their number to @p *count. Touches no database.
 * @return the bytes written; -ERANGE (with the size needed in @p *need)
 *         if not even one record fits; DSHM_INVALID for a length in
 *         @p recs that runs past its end, or a bad argument. */
int64_t dshm_dump_encode(const char *recs, size_t n, size_t *pos, char *out, size_t cap,
                         int flags, uint64_t *count, uint64_t *need);
/** @} */

/** Message for a return code: "DSHM_NOTFOUND: key not found", or the
 *  strerror text of -rc (or rc) for an errno. */
const char *dshm_strerror(int rc);
/** The user-facing text of a DSHM_* code (the part of its dshm_strerror
 *  message after the name), or NULL for a code that has none (an
 *  ordinary result: DSHM_NOTFOUND, DSHM_KEYEXIST, DSHM_CLOSED) or an
 *  errno. The one source of these texts; Python's errors read it. */
const char *dshm_errhint(int rc);

/** @name Taking: look up and delete in one hold of the writer lock
 *  (dshm_take.c). The return value is the size of what would be taken;
 *  if it is <= @p cap it was copied into @p buf and the key deleted, and
 *  if it is > @p cap NOTHING changed: call again with a buffer of at
 *  least that size (the store may have changed in between, so loop).
 *  Crash-safe as dshm_del(). With DSHM_SYNC, a failed sync is returned
 *  as the error although the key was removed.
 * @{ */
/** Remove @p key and hand back its value.
 * @return the value length, or DSHM_NOTFOUND, DSHM_READONLY, DSHM_CLOSED,
 *         DSHM_INVALID, DSHM_CORRUPT, or another negative error (-errno). */
int64_t dshm_pop(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
/** Remove some key (walking the store from where this thread's previous
 *  popitem took one) and hand back the key then its value, one after the
 *  other in @p buf, the key's length in @p *klen.
 * @return the key's plus the value's length, or DSHM_NOTFOUND (the store
 *         is empty), DSHM_READONLY, DSHM_CLOSED, DSHM_INVALID,
 *         DSHM_CORRUPT, or another negative error (-errno). */
int64_t dshm_popitem(dshm_db *db, char *buf, size_t cap, uint64_t *klen);
/** @} */

/** @name Read-modify-write in one hold of the writer lock (dshm_rmw.c)
 * @{ */
/** Add @p delta to the integer stored at @p key as ASCII decimal bytes
 *  (optional sign, digits, nothing else), @p dflt standing for an absent
 *  key, store the sum the same way and put it in @p *out. Atomic across
 *  processes and crash-safe as dshm_put().
 * @return 0, DSHM_INVALID (the stored value is not such an integer:
 *         nothing changed), -ERANGE (the sum, or the stored value, is
 *         outside int64_t: nothing changed), DSHM_READONLY, DSHM_CLOSED,
 *         DSHM_TOOBIG, DSHM_FULL, -EDEADLK (this thread holds the lock for
 *         the handle's transaction), or another negative error. */
int dshm_incr(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, int64_t *out);
/** dshm_incr() whose new key gets @p deadline (0 = never); a live key
 *  keeps its own. An expired key counts as absent. */
int dshm_incr_ttl(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, uint64_t deadline,
                  int64_t *out);
/** Compare and set: if the value of @p key is @p exp (@p explen bytes;
 *  @p explen < 0: the key is absent), store @p val (@p vlen bytes; @p vlen
 *  < 0: delete the key). Atomic across processes.
 * @return 1 (it matched, and was set or deleted), 0 (it did not: nothing
 *         changed), or a negative error as dshm_put(). */
int dshm_cas(dshm_db *db, const char *key, size_t klen, const char *exp, int64_t explen,
             const char *val, int64_t vlen);
/** @} */

/** @name Transactions: the writer lock held across calls (dshm_txn.c)
 *  A thread takes the lock for a handle with dshm_txn_begin, reads with
 *  dshm_txn_get (its own pending writes are the caller's to keep), and
 *  ends with dshm_txn_commit (publish them as one batch, atomically, and
 *  let the lock go) or dshm_txn_abort (publish nothing). Readers never
 *  wait meanwhile; other writers do. Every call after the begin must come
 *  from the thread that began (the mutex is that thread's); one
 *  transaction per handle at a time. A process that dies holding the lock
 *  has published nothing: the next writer repairs, as after any writer.
 * @{ */
/** Take the writer lock for this thread, waiting at most @p timeout_ns
 *  (negative: no limit), and keep it after the call returns.
 * @return 0 (held), DSHM_BUSY (another writer kept it past the timeout),
 *         DSHM_READONLY, DSHM_CLOSED, DSHM_INVALID (another thread's
 *         transaction is open on this handle), -EDEADLK (this thread's
 *         is), or another negative error. */
int dshm_txn_begin(dshm_db *db, int64_t timeout_ns);
/** dshm_get() under the held lock (no retry, no fallback).
 * @return as dshm_get(), or DSHM_INVALID (no transaction of this thread). */
int64_t dshm_txn_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
/** Publish the transaction's writes, given as for dshm_write_batch(), as
 *  one atomic batch under the held lock, then let the lock go (also on
 *  error, with nothing published).
 * @return as dshm_write_batch(), or DSHM_INVALID (no transaction). */
int dshm_txn_commit(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit);
/** Let the lock go, publishing nothing. @return 0 or DSHM_INVALID. */
int dshm_txn_abort(dshm_db *db);
/** End the transaction by putting the store at @p newpath (a dbm_shm file
 *  the caller built and closed, e.g. the store's records merged with
 *  others) in the store's place: under the held lock, its commit counter
 *  is set past the store's, it is synced and renamed over the store's
 *  path, and the old file is marked moved (as reorganize does), so every
 *  handle follows and no writer can commit to the old file after the
 *  rename. Then the lock goes and this handle follows. The lock goes also
 *  on error, with nothing renamed. A death between the rename and the mark
 *  is repaired by the next writer (the path names another file).
 * @return 0, DSHM_INVALID (no transaction, or @p newpath NULL), -ESTALE
 *         (the path names another file than this handle's: nothing
 *         renamed), or another negative error (-errno). */
int dshm_txn_replace(dshm_db *db, const char *newpath);
/** @} */

/** @name Salvage
 *  @{ */
/** The cursor and the counts of a salvage (dshm_salvage()). Zero it all
 *  before the first call; pass it back unchanged to go on. */
typedef struct dshm_salvage_t {
    uint64_t sv_pass;         /**< cursor: 0 reachable records, 1 strays */
    uint64_t sv_entry;        /**< cursor: directory entry */
    uint64_t sv_page;         /**< cursor: page along the bucket's chain */
    uint64_t sv_slot;         /**< cursor: slot in that page */
    uint64_t sv_done;         /**< 1: every record was handed over */
    uint64_t sv_records;      /**< records handed over (both passes) */
    uint64_t sv_bad_records;  /**< slots whose record could not be read:
                                   misaligned or outside the file, a length
                                   over the maximum, a wrong hash tag */
    uint64_t sv_bad_pages;    /**< buckets (or the rest of one) skipped: a
                                   directory entry or an overflow link naming
                                   no bucket page of the right kind in the file */
    uint64_t sv_cycles;       /**< overflow chains that loop back (cut where
                                   they first come back; nothing lost) */
    uint64_t sv_entries;      /**< directory entries */
    uint64_t sv_expected;     /**< the key count the header states (damaged
                                   or not) */
} dshm_salvage_t;

/** Salvage, as gdbm's recover: hand over every record of the file at
 * @p path that can still be read, into @p buf as records
 * `[u32 klen][u64 vlen][u64 hash][key][value]` (as dshm_scan() with
 * DSHM_SCAN_VALUES), skipping and counting in @p *sv what cannot be read.
 * Opens the file read-only and takes no lock: works on a file dshm_open()
 * refuses or would repair (an owed repair, odd counters, a bad allocator
 * or header checksum), never writes it. Records get() would find come
 * first (pass 0), then strays (pass 1): keep the first copy of a key.
 * Call again with the same @p *sv until sv_done is 1.
 * @return the bytes written (0 is possible before the end); -ERANGE if
 *         the next record does not fit in an empty @p buf (its size in
 *         @p *need); DSHM_BAD_MAGIC, DSHM_VERSION_MISMATCH, DSHM_TRUNCATED,
 *         DSHM_CORRUPT (the header's page sizes or the directory itself
 *         unreadable), DSHM_INVALID, or -errno. */
int64_t dshm_salvage(const char *path, dshm_salvage_t *sv, char *buf, size_t cap, uint64_t *need);
/** @} */


#ifdef __cplusplus
}
#endif
#endif /* DBM_SHM_H */
