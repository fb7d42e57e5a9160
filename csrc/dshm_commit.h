/**
 * @file dshm_commit.h
 * @brief Commits against power loss (dshm_commit.c): sync() as a commit,
 *        and the restore of a file torn by a power loss to its newest
 *        commit.
 *
 * Layer 3.
 */
#ifndef DSHM_COMMIT_H
#define DSHM_COMMIT_H

#include "dshm_base.h"

/** Is fd on a file system whose contents do not outlive the kernel
 *  (tmpfs, ramfs)? There a commit has nothing to make durable. */
bool dshm_fs_volatile(int fd);
/** Fill a meta from the live header (the state a commit makes durable). */
void dshm_meta_take(const dshm_header *hd, dshm_meta *m, uint64_t seq);
/** Set the live fields of a header (a mapping, or a copy read with pread
 *  for validation) from a meta: the state a power-cut restore goes back to. */
void dshm_meta_apply(dshm_header *hd, const dshm_meta *m);
/** Commit, by the holder of the writer lock (or the only user of a new
 *  file): flush the file, write the next meta into the slot that does not
 *  hold the newest one, flush again, then free what waited for it. Two
 *  flushes (which cost nothing on tmpfs; the meta is written there too,
 *  for a copy of the file taken to a disk). */
int dshm_commit_held(dshm_env *env);
/** Is the live state of hd the one m describes? */
bool dshm_live_is(const dshm_header *hd, const dshm_meta *m);
/** Does the live state differ from the newest meta (writes since the last
 *  commit)? */
bool dshm_commit_due(const dshm_env *env);
/** Under the writer lock, with the file to itself (an exclusive flock):
 *  a file last opened under another boot is set back to its newest valid
 *  meta: the live header from the meta, every page the meta references
 *  with an even counter, the free space rebuilt, the lock reset, this
 *  boot noted last. Restartable: a death or another power loss in the
 *  middle leaves the meta and the other boot id for the next opener. */
int dshm_restore(dshm_env *env, uint64_t fsize);

#endif /* DSHM_COMMIT_H */
