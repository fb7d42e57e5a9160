/**
 * @file dshm_layout.h
 * @brief The file format: every structure that lives in the shared mapping.
 *
 * One file, mapped MAP_SHARED by every process that opens it:
 *
 *   [0, 4096)        header page (struct dshm_header)
 *   [4096, top)      allocated space: the directory, bucket pages, records,
 *                    and free blocks on the free lists
 *   [top, file_size) not yet allocated (already reserved with fallocate)
 *
 * All offsets are from the start of the file. Offset 0 means "none" (the
 * header page is never pointed to). Every offset read from the file is
 * bounds-checked against the size the reader may touch before it is used.
 *
 * Protocol in one paragraph (docs/design.md has the long version):
 * one writer at a time holds hd_mutex. Readers take no lock. The writer
 * publishes last: a new record is written into free space, then one slot's
 * sl_rec is switched to it with one atomic store inside the bucket's
 * seqlock window (bk_seq odd while the bucket changes); the old record is
 * freed only after. A reader samples hd_struct_seq and bk_seq, reads,
 * then checks both again and retries if either moved.
 */
#ifndef DSHM_LAYOUT_H
#define DSHM_LAYOUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
# error "dbm_shm needs a C11 compiler"
#endif
#if ATOMIC_LLONG_LOCK_FREE != 2
# error "dbm_shm needs lock-free 64-bit atomics"
#endif

/** File magic: the first 8 bytes. Binary first byte and CR/LF catch
 *  text-mode mangling, like PNG's. dbm_shm.whichdb() checks these. */
#define DSHM_MAGIC        "\x93" "DSHM\r\n\x1a"
#define DSHM_MAGIC_LEN    8
/** File format version; bump on any incompatible layout change. */
#define DSHM_FORMAT       2u
#define DSHM_HEADER_SIZE  4096u
/** The two commit metas (struct dshm_meta) sit in the header page's last
 *  two 512-byte sectors, from here. */
#define DSHM_META_AT      3072u
/** Bytes per bucket page (primary or overflow). */
#define DSHM_BUCKET_SIZE  4096u
/** Header of a bucket page, then the slots. */
#define DSHM_BUCKET_HDR   64u
#define DSHM_SLOTS        ((DSHM_BUCKET_SIZE - DSHM_BUCKET_HDR) / 16u)   /* 252 */
/** A bucket splits (or overflows) when an insert would pass this count. */
#define DSHM_MAX_FILL     ((DSHM_SLOTS * 7u) / 8u)                      /* 220 */
/** Hard cap on the global depth: the directory never exceeds 2^28 entries. */
#define DSHM_MAX_DEPTH    28u
/** The directory may only double while 2^depth <= this factor * buckets:
 *  keys crafted to collide make overflow pages, not a huge directory. */
#define DSHM_DIR_SLACK    16u
/** Allocation granule for records and free blocks. */
#define DSHM_ALIGN        16u
/** Small size classes: exact multiples of 16 up to 2048 bytes. */
#define DSHM_NSMALL       128u
#define DSHM_SMALL_MAX    (DSHM_NSMALL * DSHM_ALIGN)
/** Large size classes: power-of-two bins above 2048 bytes, up to 2^62. */
#define DSHM_NLARGE       52u

/** Bucket page kinds (bk_kind). */
#define DSHM_BK_PRIMARY   0x504bu   /* "KP" */
#define DSHM_BK_OVERFLOW  0x4f4bu   /* "KO" */
#define DSHM_BK_FREE      0x464bu   /* "KF" */

/** Intent record operations (hd_intent_op). */
#define DSHM_INTENT_NONE  0u
#define DSHM_INTENT_SPLIT 1u

/** A record: the unit of allocation for one key and its value.
 *  Written once by the writer before it is published; never changed after
 *  (an overwrite writes a new record). Readers copy from it under a bucket
 *  seqlock, so a record freed and reused under them is caught. */
typedef struct dshm_rec {
    uint32_t rc_klen;      /**< key length (<= DSHM_MAX_KEY) */
    uint32_t rc_check;     /**< low 32 bits of the key's hash: a cheap sanity tag */
    uint64_t rc_vlen;      /**< value length */
    uint64_t rc_gen;       /**< commit period (hd_gen) the record was written in:
                                one older than the current period may be part of
                                the last committed image, and is only freed after
                                the next commit (dshm_retire_block) */
    uint64_t rc_deadline;  /**< expiry, ns since the epoch (CLOCK_REALTIME), 0 = none:
                                from then on every reader takes the record for
                                absent (dshm_rec_expired); writers drop it */
    uint64_t rc_stamp;     /**< store stamp (hd_stamp at the write): the order in
                                which records were stored, for eviction */
    /* key bytes, then value bytes, then padding to DSHM_ALIGN */
} dshm_rec;
_Static_assert(sizeof(dshm_rec) == 40, "record header size (file format)");
#define DSHM_REC_HDR  ((uint64_t)sizeof(dshm_rec))

/** A free block on a free list. Written and read only by the lock holder. */
typedef struct dshm_freeblk {
    uint64_t fr_size;      /**< bytes in this block, a multiple of DSHM_ALIGN */
    uint64_t fr_next;      /**< next block in the same class, 0 = end */
} dshm_freeblk;

/** One slot of a bucket's open-addressing table (linear probing from
 *  sl_hash % DSHM_SLOTS, backward-shift deletion).
 *  Written by the writer inside the bucket's odd seqlock window; read by
 *  readers with relaxed atomic loads and validated by bk_seq.
 *  sl_rec == 0 means empty. */
typedef struct dshm_slot {
    _Atomic uint64_t sl_hash;  /**< full 64-bit keyed hash of the key */
    _Atomic uint64_t sl_rec;   /**< offset of the record, 0 = empty */
} dshm_slot;

/** A bucket page: one node of the extendible hash.
 *  A primary bucket covers the hash prefix bk_prefix of bk_depth bits
 *  (the top bits of the hash); the directory entries for that prefix all
 *  point to it. Overflow pages hang off a primary (bk_next) when keys
 *  cannot be split apart; they are covered by the primary's bk_seq.
 *  Written only by the lock holder. Readers read bk_seq with acquire
 *  loads and everything else relaxed, then re-check bk_seq. */
typedef struct dshm_bucket {
    _Atomic uint64_t bk_seq;    /**< seqlock: odd while the writer changes this
                                     bucket or its overflow chain. Only ever
                                     grows, also across free and reuse */
    _Atomic uint64_t bk_next;   /**< next overflow page, 0 = none (a free page:
                                     next page on the bucket free list) */
    _Atomic uint64_t bk_prefix; /**< hash prefix covered, left-aligned */
    _Atomic uint32_t bk_depth;  /**< local depth: bits of bk_prefix that count */
    _Atomic uint32_t bk_count;  /**< occupied slots in this page */
    _Atomic uint32_t bk_kind;   /**< DSHM_BK_PRIMARY / _OVERFLOW / _FREE */
    uint32_t bk_pad0;
    uint64_t bk_gen;            /**< commit period (hd_gen) the page was written in:
                                     a page of an older period may be part of the last
                                     committed image and is copied before it changes
                                     (copy on write). Lock holder only */
    uint64_t bk_pad[2];
    dshm_slot bk_slots[DSHM_SLOTS];
} dshm_bucket;
_Static_assert(sizeof(dshm_bucket) == DSHM_BUCKET_SIZE, "bucket page size");
_Static_assert(DSHM_BUCKET_HDR == 64, "bucket header size");

/** The header page, at offset 0.
 *  Fields before hd_checksum are written once at creation and never again
 *  (covered by hd_checksum, validated on every open). The rest is written
 *  only by the holder of hd_mutex; fields readers use are atomics, read
 *  with acquire loads and written with release stores. */
typedef struct dshm_header {
    /* ---- immutable, checksummed ---- */
    char     hd_magic[DSHM_MAGIC_LEN]; /**< DSHM_MAGIC */
    uint32_t hd_format;        /**< DSHM_FORMAT */
    uint32_t hd_header_size;   /**< DSHM_HEADER_SIZE */
    uint32_t hd_bucket_size;   /**< DSHM_BUCKET_SIZE */
    uint32_t hd_abi;           /**< DSHM_ABI: sizes of the lock types, so a
                                    build with another pthread ABI refuses the file */
    uint64_t hd_seed[2];       /**< SipHash key, random per file */
    uint64_t hd_created;       /**< creation time, ns since the epoch */
    uint64_t hd_checksum;      /**< SipHash (fixed key) of the fields above */
    uint64_t hd_pad0[2];

    /* ---- writer lock: a cache line of its own, written on every lock
     *      and unlock, kept away from the fields readers load ---- */
    _Alignas(64) union {
        pthread_mutex_t m;     /**< robust, process-shared; held by the writer */
        char pad[48];
    } hd_mutex;
    _Atomic uint64_t hd_lock_pid;   /**< pid of the holder (0 = none); informative */
    uint64_t hd_repair;             /**< 1: a recovery failed; every lock holder
                                         retries it before writing */

    /* ---- published state: written by the writer, read by readers ---- */
    _Alignas(64) _Atomic uint64_t hd_file_size;  /**< file length; grows only, after fallocate.
                                         Readers never touch bytes past it */
    _Atomic uint64_t hd_dir;        /**< directory offset | global depth (low 6 bits) */
    _Atomic uint64_t hd_struct_seq; /**< seqlock over the directory as a whole:
                                         odd during doubling, clear and recovery */
    _Atomic uint64_t hd_commit;     /**< bumped once per committed write */
    _Atomic uint64_t hd_count;      /**< number of keys */
    _Atomic uint32_t hd_moved;      /**< 1: reorganized; reopen the path */
    _Atomic uint32_t hd_waiters;    /**< futex word of dshm_wait(): bit 0 = a process
                                         may be asleep on it (raised by a waiter, CAS,
                                         seq_cst); the bits above count wake-ups (a
                                         waker that finds bit 0 adds 1, clearing it,
                                         then FUTEX_WAKEs every sleeper). dshm_wait.c */

    /* ---- allocator state: read and written only by the lock holder ---- */
    uint64_t hd_top;                /**< end of allocated space */
    uint64_t hd_live_bytes;         /**< bytes in live records */
    uint64_t hd_free_bytes;         /**< bytes on the free lists */
    uint64_t hd_buckets;            /**< primary bucket pages in use */
    uint64_t hd_overflow;           /**< overflow pages in use */
    uint64_t hd_bucket_free;        /**< free bucket pages (linked by bk_next) */
    uint64_t hd_recoveries;         /**< recoveries run on this file */
    uint64_t hd_freed;              /**< bytes put on the free lists since the
                                         last compaction of the lists */
    uint64_t hd_small_map[2];       /**< bit c set: hd_small[c] non-empty */
    uint64_t hd_small[DSHM_NSMALL]; /**< free lists, class c holds (c+1)*16 bytes */
    uint64_t hd_large[DSHM_NLARGE]; /**< free lists, bin b holds [2^(b+11), 2^(b+12)) */

    /* ---- intent record for multi-step changes (split) ---- */
    uint64_t hd_intent_op;          /**< DSHM_INTENT_*; non-zero while in progress */
    uint64_t hd_intent_old;         /**< bucket being split */
    uint64_t hd_intent_lo;          /**< new bucket for the lower half */
    uint64_t hd_intent_hi;          /**< new bucket for the upper half */
    uint64_t hd_intent_first;       /**< first directory index of the old bucket */
    uint64_t hd_intent_n;           /**< number of directory entries it had */

    /* ---- added after format 1 shipped: zero in older files, which is
     *      their meaning of "none" ---- */
    uint64_t hd_batch;              /**< offset of the batch journal (struct
                                         dshm_journal) of the batch being written,
                                         0 = none. Written and read only by the lock
                                         holder (and by a recovery) */
    _Atomic uint64_t hd_lock_since; /**< CLOCK_MONOTONIC ns at which the current
                                         holder took hd_mutex (0 = free). Written by
                                         the holder (relaxed), read by dshm_stat() */
    uint64_t hd_alloc_sum;          /**< checksum of the allocator's scalar fields
                                         (hd_top .. hd_freed), 0 = not yet computed.
                                         Written by the lock holder as it unlocks,
                                         checked by the next one as it locks: a
                                         mismatch (damage) has the free space rebuilt
                                         from the structures before anything is
                                         allocated. Lock holders only */

    /* ---- the commit protocol against power loss (dshm_commit.c); lock
     *      holders only ---- */
    uint64_t hd_gen;                /**< the current commit period: a structure stamped
                                         with it (rc_gen, bk_gen, hd_dir_gen) was written
                                         after the last commit's snapshot and may change
                                         in place; an older one is copied first or, when
                                         freed, waits on the pending list */
    uint64_t hd_dir_gen;            /**< the period the directory was written in */
    uint64_t hd_pending;            /**< first chunk (struct dshm_pending) of the blocks
                                         freed this period that the last committed image
                                         may reference: freed for reuse once the next
                                         commit is on disk. 0 = none */
    uint64_t hd_committing;         /**< 1 from a commit's snapshot until its meta is on
                                         disk: a rebuild of the free space then keeps
                                         what either meta references */
    uint64_t hd_boot[2];            /**< the boot (kernel boot_id) under which this page
                                         was last known to be whole: another boot means a
                                         power loss or a kernel crash may have torn the
                                         file, which then opens at its newest valid meta */

    /* ---- the cache: a byte cap and eviction (dshm_evict.c, dshm_write.c).
     *      Written by lock holders; dshm_stat reads them relaxed ---- */
    uint64_t hd_max_bytes;          /**< cap on hd_live_bytes, 0 = none: a write that
                                         would pass it evicts records first */
    uint64_t hd_stamp;              /**< the last store stamp given (rc_stamp) */
    uint64_t hd_evictions;          /**< records evicted to stay under the cap */
    uint64_t hd_expired;            /**< expired records dropped by writers */

    /* ---- set by lock holders (and dshm_init_file); read by openers ---- */
    uint64_t hd_volatile;           /**< 1: the store was last written on tmpfs, where
                                         nothing outlives the kernel: it keeps no commit
                                         period (every structure counts as current, no
                                         copy on write, no pending list) and its metas
                                         are stale. Opened on a disk, it is committed
                                         at once (dshm_commit_held clears it) and never
                                         restored from a stale meta */
} dshm_header;
_Static_assert(sizeof(dshm_header) <= DSHM_META_AT, "header fits before the metas");
_Static_assert(sizeof(pthread_mutex_t) <= 48, "the mutex shares its line with hd_lock_pid and hd_repair");
_Static_assert(offsetof(dshm_header, hd_mutex) % 64 == 0, "lock on its own cache line");
_Static_assert(offsetof(dshm_header, hd_file_size) % 64 == 0, "reader fields on their own cache line");

/** A commit's meta: what a commit (dshm_commit.c) made durable, in one
 *  512-byte sector of the header page. There are two, at DSHM_META_AT and
 *  DSHM_META_AT + 512; a commit writes the one that does not hold the
 *  newest valid meta, after the data it references is on disk, and flushes
 *  it. Open after a power loss takes the valid one with the larger
 *  mt_seq. Written by the committer (under the writer lock) and read by
 *  openers and the free-space rebuild: everything the newest meta
 *  references is left unchanged until the next meta is on disk. */
typedef struct dshm_meta {
    uint64_t mt_magic;         /**< DSHM_MT_MAGIC */
    uint64_t mt_seq;           /**< commit number: 1 at creation, +1 per commit */
    uint64_t mt_gen;           /**< the period this commit closed (hd_gen then) */
    uint64_t mt_dir;           /**< hd_dir */
    uint64_t mt_count;         /**< hd_count */
    uint64_t mt_commit;        /**< hd_commit */
    uint64_t mt_top;           /**< hd_top: nothing referenced lies above */
    uint64_t mt_live_bytes;    /**< hd_live_bytes */
    uint64_t mt_buckets;       /**< hd_buckets */
    uint64_t mt_overflow;      /**< hd_overflow */
    uint64_t mt_file_size;     /**< hd_file_size: on disk before the meta */
    uint64_t mt_sum;           /**< SipHash (fixed key) of the fields above */
} dshm_meta;
#define DSHM_MT_MAGIC    UINT64_C(0x4154454d4d485344)   /* "DSHMMETA" */
_Static_assert(sizeof(dshm_meta) <= 512, "a meta fits one sector");

/** A chunk of the pending list (hd_pending): blocks freed in this period
 *  that the last commit's image may reference. Allocated in the current
 *  period; written and read only by the lock holder. */
typedef struct dshm_pending {
    uint64_t pd_next;          /**< older chunk, 0 = none */
    uint64_t pd_n;             /**< entries used */
    uint64_t pd_ent[];         /**< (offset, size) pairs; size 0 = a bucket page */
} dshm_pending;
#define DSHM_PD_SIZE     4096u
#define DSHM_PD_CAP      ((DSHM_PD_SIZE - 16u) / 16u)

/** The journal of an atomic batch (dshm_write_batch): the list of records
 *  the batch publishes, written into free space while the batch is staged.
 *  hd_batch points to it from the first staged record on, so a rebuild of
 *  the free lists keeps every record it lists. jr_state going from STAGING
 *  to COMMITTED (one release store) is the batch's commit point: a writer
 *  that dies before it leaves nothing of the batch (recovery drops the
 *  journal and its records become free space); one that dies after it
 *  leaves a batch the recovery finishes (every entry is applied again,
 *  idempotently: the keys of one journal are distinct).
 *  Written and read only by the lock holder; readers never look at it. */
typedef struct dshm_journal {
    uint64_t jr_magic;             /**< DSHM_JR_MAGIC */
    uint64_t jr_cap;               /**< entries the block has room for */
    _Atomic uint64_t jr_state;     /**< DSHM_JR_STAGING, then DSHM_JR_COMMITTED */
    uint64_t jr_n;                 /**< entries written so far */
    uint64_t jr_ent[];             /**< record offset | DSHM_JR_DEL: a put of the
                                        record's key and value, or (DSHM_JR_DEL) a
                                        delete of its key (a key-only record) */
} dshm_journal;
#define DSHM_JR_MAGIC      UINT64_C(0x4c4e524a4d485344)   /* "DSHMJRNL" */
#define DSHM_JR_STAGING    1u
#define DSHM_JR_COMMITTED  2u
#define DSHM_JR_DEL        UINT64_C(1)
#define DSHM_JR_HDR        ((uint64_t)sizeof(dshm_journal))

#define DSHM_ABI ((uint32_t)((sizeof(pthread_mutex_t) << 8) | sizeof(long)))

/** hd_dir packing: the directory is 64-byte aligned, so the low 6 bits
 *  carry the global depth and one atomic store publishes both. */
#define DSHM_DIR_OFF(d)    ((d) & ~(uint64_t)63)
#define DSHM_DIR_DEPTH(d)  ((unsigned)((d) & 63))

#endif /* DSHM_LAYOUT_H */
