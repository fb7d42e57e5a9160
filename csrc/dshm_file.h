/**
 * @file dshm_file.h
 * @brief Files and mappings (dshm_file.c): mapping, creating, validating,
 *        opening and replacing files.
 *
 * Layer 5.
 */
#ifndef DSHM_FILE_H
#define DSHM_FILE_H

#include "dshm_base.h"

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
/** Under the writer lock of env's file: rename the file at `from` over
 *  `path` (only if path names env's file, else -ESTALE and nothing done;
 *  a path that names nothing gets it), sync the directory, then mark env's
 *  file moved and bump its commit counter, so every handle follows. The
 *  file at `from` must be synced already. `point`: the crash point between
 *  the rename and the mark (a death there leaves no mark: handles follow
 *  the path by looking at it, dshm_path_replaced). The one protocol of
 *  reorganize and of a transaction's replace. */
int dshm_rename_over(dshm_env *env, const char *from, const char *path, const char *point);

#endif /* DSHM_FILE_H */
