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

#endif /* DSHM_FILE_H */
