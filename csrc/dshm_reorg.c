/**
 * @file dshm_reorg.c
 * @brief reorganize(): copy the live records into a compact new file,
 *        rename it over the path, mark the old file moved, follow it.
 *
 * Layer 8: calls writes (put_locked into the copy, sync), files (create,
 * map, sync the directory), handles and the walker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_walk.h"
#include "dshm_space.h"
#include "dshm_file.h"
#include "dshm_handle.h"
#include "dshm_commit.h"
#include "dshm_write.h"

/* Copy every record of env (locked) into the new file's mapping nenv.
 * Everything is checked before it is followed: a damaged file makes
 * reorganize fail with DSHM_CORRUPT (run check()), never copy garbage. */
static int copy_all(dshm_env *env, dshm_env *nenv) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t top = hd->hd_top, page, now = 0;
    dshm_dirwalk w;
    dshm_chain ch;
    int rc = dshm_dir_start(&w, env, atomic_load_explicit(&hd->hd_dir, memory_order_relaxed), top), more;
    if (rc)
        return rc;
    while ((more = dshm_dir_next_bucket(&w)) == 1) {
        dshm_chain_start(&ch, env, w.dw_bucket, top);
        while ((more = dshm_chain_next(&ch, &page)) == 1) {
            dshm_bucket *pg = DSHM_AT(env, page);
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, top))
                    return DSHM_CORRUPT;
                dshm_rec *rec = DSHM_AT(env, r);   /* formed only once r is inside the file */
                if (rec->rc_vlen > DSHM_MAX_VALUE || !dshm_in(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), top))
                    return DSHM_CORRUPT;
                if (dshm_rec_expired(rec, &now))
                    continue;   /* absent already: the copy leaves it behind */
                const char *k = (const char *)rec + DSHM_REC_HDR;
                uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                dshm_putx x = {rec->rc_deadline, rec->rc_stamp, false, true};
                if ((rc = dshm_put_locked(nenv, h, k, rec->rc_klen, k + rec->rc_klen, rec->rc_vlen, 0, &x)))
                    return rc;
            }
        }
        if (more)
            return more;
    }
    return more;
}

static int reorganize_unguarded(dshm_db *db) {
    dshm_env *env;
    int rc = dshm_write_enter(db, &env, 0, 0, 0, true);
    if (rc)
        return rc;
    dshm_header *hd = DSHM_HDR(env);
    struct stat st;
    char *tmp = malloc(strlen(db->db_path) + 32);
    dshm_env *nenv = NULL;
    int nfd = -1;
    if (!tmp || fstat(env->ev_fd, &st) != 0) {
        rc = tmp ? -errno : -ENOMEM;
        goto out;
    }
    sprintf(tmp, "%s.dshm-reorg-%d", db->db_path, (int)getpid());
    nfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777);
    if (nfd < 0) {
        rc = -errno;
        goto out;
    }
    if (fchmod(nfd, st.st_mode & 07777) != 0) { /* umask may have narrowed it; best effort */ }
    /* Same seed: the hash order, and so scan cursors, survive. */
    if ((rc = dshm_init_file(nfd, hd->hd_seed)))
        goto out;
    nenv = calloc(1, sizeof *nenv);
    if (!nenv) {
        rc = -ENOMEM;
        goto out;
    }
    nenv->ev_fd = nfd;
    nenv->ev_writable = 1;
    nenv->ev_volatile = dshm_fs_volatile(nfd);
    nenv->ev_copy = 1;
    nfd = -1;
    uint64_t need = hd->hd_live_bytes + 2 * hd->hd_buckets * DSHM_BUCKET_SIZE +
                    dshm_dir_bytes(DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_relaxed)));
    if ((rc = dshm_env_map(nenv, DSHM_INITIAL_SIZE, need * 2 + ((uint64_t)1 << 30))))
        goto out;
    dshm_guard_cover(nenv->ev_base, nenv->ev_resv);   /* the copy is the store's too: a truncation there is DSHM_TRUNCATED */
    if ((rc = copy_all(env, nenv)))
        goto out;
    /* Give back what the growth steps reserved beyond the data. */
    dshm_header *nhd = DSHM_HDR(nenv);
    nhd->hd_max_bytes = hd->hd_max_bytes;   /* the cache's cap and figures go with the data */
    nhd->hd_evictions = hd->hd_evictions;
    nhd->hd_expired = hd->hd_expired;
    uint64_t fit = (nhd->hd_top + 65535) & ~(uint64_t)65535;
    if (fit < atomic_load_explicit(&nhd->hd_file_size, memory_order_relaxed) &&
        ftruncate(nenv->ev_fd, (off_t)fit) == 0)
        atomic_store_explicit(&nhd->hd_file_size, fit, memory_order_release);
    /* Commit numbers go on from the old file's (wait(since=...) spans it). */
    atomic_store_explicit(&nhd->hd_commit, atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    nhd->hd_alloc_sum = dshm_alloc_checksum(nhd);   /* copy_all filled it without the lock */
    /* The copy's commit, then its flush even on tmpfs: on disk before the
     * rename makes it the store. */
    if ((rc = dshm_commit_held(nenv)) || (rc = dshm_flush(nenv->ev_fd, false)))
        goto out;
    DSHM_CRASH_POINT("reorganize");
    if ((rc = dshm_rename_over(env, tmp, db->db_path, "reorganize-renamed")))
        goto out;
    free(tmp);
    tmp = NULL;
out:
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (nfd >= 0)
        close(nfd);
    dshm_env_free(nenv);
    return dshm_end_replace(db, env, rc);
}

int dshm_reorganize(dshm_db *db) { GUARDED(int, reorganize_unguarded(db)); }
