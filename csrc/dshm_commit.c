/**
 * @file dshm_commit.c
 * @brief The commit protocol against power loss, and the restore after one.
 *
 * A power cut or kernel crash leaves on disk the file as of its last flush
 * plus any subset of the pages written since (in any order, torn at 512 B
 * sectors). What a commit acknowledged survives that because nothing it
 * references is written again before the next commit is on disk:
 *
 * - every record, bucket page and directory carries the commit period it
 *   was written in (rc_gen, bk_gen, hd_dir_gen); the writer changes in
 *   place only what was written in the current period (hd_gen). A bucket
 *   chain or directory of an older period is copied first (dshm_index.c),
 *   and a block of an older period that is freed waits on the pending
 *   list (dshm_space.c) instead of going to the free lists;
 * - a commit, under the writer lock: snapshot the live state into a meta,
 *   start a new period (hd_gen + 1), flush the file (fdatasync: the data,
 *   and its size), write the meta into the slot not holding the newest
 *   valid one, flush again, then release the pending list;
 * - the free lists and the pool are not part of a commit: a restore
 *   rebuilds them from what the meta references;
 * - a rebuild of the free space (a repair, a compaction) keeps what the
 *   newest meta references, and while hd_committing is set (a commit that
 *   died between its snapshot and its meta being on disk) the older one's
 *   too.
 *
 * A power loss is told from a process crash by the kernel's boot id noted
 * in the header (hd_boot): a file last opened under another boot may hold
 * any mix of pages, and opens at its newest valid meta (dshm_restore). A
 * process crash keeps the page cache, so the live state stays valid and
 * the repair of dshm_recover.c applies.
 *
 * Layer 3: calls the meta, the walker, the allocator and the lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_walk.h"
#include "dshm_meta.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_commit.h"

#define TMPFS_MAGIC_ 0x01021994
#define RAMFS_MAGIC_ 0x858458f6

bool dshm_fs_volatile(int fd) {
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0)
        return false;
    return (unsigned long)sf.f_type == TMPFS_MAGIC_ || (unsigned long)sf.f_type == RAMFS_MAGIC_;
}

void dshm_meta_take(const dshm_header *hd, dshm_meta *m, uint64_t seq) {
    memset(m, 0, sizeof *m);
    m->mt_magic = DSHM_MT_MAGIC;
    m->mt_seq = seq;
    m->mt_gen = hd->hd_gen;
    m->mt_dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    m->mt_count = atomic_load_explicit(&hd->hd_count, memory_order_relaxed);
    m->mt_commit = atomic_load_explicit(&hd->hd_commit, memory_order_relaxed);
    m->mt_top = hd->hd_top;
    m->mt_live_bytes = hd->hd_live_bytes;
    m->mt_buckets = hd->hd_buckets;
    m->mt_overflow = hd->hd_overflow;
    m->mt_file_size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    m->mt_sum = dshm_meta_sum(m);
}

void dshm_meta_apply(dshm_header *hd, const dshm_meta *m) {
    atomic_store_explicit(&hd->hd_file_size, m->mt_file_size, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_dir, m->mt_dir, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_count, m->mt_count, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_commit, m->mt_commit, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_moved, 0, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_pid, 0, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_lock_since, 0, memory_order_relaxed);
    uint64_t ss = atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed);
    atomic_store_explicit(&hd->hd_struct_seq, (ss + 2) & ~(uint64_t)1, memory_order_relaxed);
    hd->hd_top = m->mt_top;
    hd->hd_live_bytes = m->mt_live_bytes;
    hd->hd_buckets = m->mt_buckets;
    hd->hd_overflow = m->mt_overflow;
    hd->hd_repair = 0;
    hd->hd_intent_op = DSHM_INTENT_NONE;
    hd->hd_batch = 0;
    hd->hd_gen = m->mt_gen + 1;
    hd->hd_dir_gen = m->mt_gen;
    hd->hd_pending = 0;
    hd->hd_committing = 0;
}

bool dshm_live_is(const dshm_header *hd, const dshm_meta *m) {
    return m->mt_commit == atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) &&
           m->mt_dir == atomic_load_explicit(&hd->hd_dir, memory_order_relaxed) &&
           m->mt_count == atomic_load_explicit(&hd->hd_count, memory_order_relaxed) &&
           m->mt_top == hd->hd_top &&
           m->mt_file_size == atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
}

bool dshm_commit_due(const dshm_env *env) {
    const dshm_header *hd = DSHM_HDR(env);
    dshm_meta m;
    if (env->ev_volatile)
        return !hd->hd_volatile;   /* tmpfs: only to mark the store volatile */
    return hd->hd_volatile || !dshm_meta_newest(hd, &m, NULL) || !dshm_live_is(hd, &m);
}

static int flush(int fd) { return dshm_flush(fd, true); }

/* The commit's crash points are the store's: a copy's commit passes none. */
#define COMMIT_POINT(env, p) do { if (!(env)->ev_copy) DSHM_CRASH_POINT(p); } while (0)

int dshm_commit_held(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    if (!env->ev_writable)
        return env->ev_volatile ? 0 : flush(env->ev_fd);   /* what others committed */
    if (env->ev_volatile) {
        /* tmpfs: nothing there outlives the kernel, so there is nothing to
         * commit, and commit periods would only cost copies (copy on
         * write) and space held for the next commit. The store keeps none
         * from now on: what waited is free, every structure is current. */
        if (!hd->hd_volatile) {
            hd->hd_volatile = 1;
            hd->hd_committing = 0;
            dshm_pending_release(env);
        }
        return 0;
    }
    dshm_meta newest, m;
    unsigned slot = 1;
    bool have = dshm_meta_newest(hd, &newest, &slot);
    dshm_meta_take(hd, &m, (have ? newest.mt_seq : 0) + 1);
    /* From here on everything the snapshot references is copied before
     * it changes and waits on the pending list when freed. */
    hd->hd_committing = 1;
    hd->hd_gen++;
    COMMIT_POINT(env, "commit-begin");
    int rc = flush(env->ev_fd);
    if (rc)
        return rc;   /* hd_committing stays set: a rebuild keeps both images */
    COMMIT_POINT(env, "commit-flushed");
    memcpy(dshm_meta_slot(hd, have ? 1u - slot : 0u), &m, sizeof m);
    COMMIT_POINT(env, "commit-meta");
    if ((rc = flush(env->ev_fd)))
        return rc;
    COMMIT_POINT(env, "commit-synced");
    if (hd->hd_volatile) {
        /* The first commit of a store brought from tmpfs: its metas hold
         * from now on, under this boot. */
        dshm_boot_id(hd->hd_boot);
        hd->hd_volatile = 0;
    }
    hd->hd_committing = 0;
    dshm_pending_release(env);
    return 0;
}

int dshm_restore(dshm_env *env, uint64_t fsize) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_meta m;
    if (!dshm_meta_newest(hd, &m, NULL))
        return DSHM_CORRUPT;
    if (m.mt_file_size > fsize)
        return DSHM_TRUNCATED;
    dshm_meta_apply(hd, &m);
    int rc = dshm_mutex_init(hd);
    if (rc)
        return rc;
    if (m.mt_dir == 0) {
        /* The empty store a new file's first meta describes. */
        dshm_space_reset(env, DSHM_HEADER_SIZE);
        if ((rc = dshm_index_init(env)))
            return rc;
        if ((rc = dshm_space_rebuild(env, false)))
            return rc;
        hd->hd_alloc_sum = dshm_alloc_checksum(hd);
        dshm_boot_id(hd->hd_boot);
        return 0;
    }
    /* Pages the meta references that a later period retired have an odd
     * counter on disk: even again, or readers would wait on them. */
    dshm_dirwalk w;
    dshm_chain ch;
    uint64_t page;
    int more;
    if ((rc = dshm_dir_start(&w, env, m.mt_dir, m.mt_top)))
        return rc;
    while ((more = dshm_dir_next_bucket(&w)) == 1) {
        dshm_chain_start(&ch, env, w.dw_bucket, m.mt_top);
        while ((more = dshm_chain_next(&ch, &page)) == 1) {
            dshm_bucket *pg = DSHM_AT(env, page);
            uint64_t seq = atomic_load_explicit(&pg->bk_seq, memory_order_relaxed);
            if (seq & 1)
                atomic_store_explicit(&pg->bk_seq, seq + 1, memory_order_relaxed);
        }
        if (more)
            return more;
    }
    if (more)
        return more;
    DSHM_CRASH_POINT("restore-pages");
    if ((rc = dshm_space_rebuild(env, false)))
        return rc;
    hd->hd_alloc_sum = dshm_alloc_checksum(hd);
    DSHM_CRASH_POINT("restore-space");
    dshm_boot_id(hd->hd_boot);
    return 0;
}
