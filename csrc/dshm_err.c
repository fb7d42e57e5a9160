/**
 * @file dshm_err.c
 * @brief Message text for the return codes, written once: dshm_strerror()
 *        (each message starts with the code's name, LMDB style; an errno,
 *        -errno from the library, goes to strerror) and dshm_errhint()
 *        (the user-facing part after the name, which Python's errors show).
 *
 * Layer 0: calls no other file.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <string.h>

#include "dbm_shm.h"

/* One entry per code from DSHM_NOTFOUND down to DSHM_LAST_ERRCODE.
 * hint: the text after "NAME: " is shown to users when the code is raised
 * as an error (0 for ordinary results, which callers turn into something
 * else: a KeyError, a False). */
static const struct { const char *msg; unsigned char hint; } dshm_errs[] = {
    { "DSHM_NOTFOUND: key not found", 0 },
    { "DSHM_BAD_MAGIC: not a dbm_shm database file", 1 },
    { "DSHM_VERSION_MISMATCH: database file written by another dbm_shm format version or build", 1 },
    { "DSHM_CORRUPT: database file is corrupt", 1 },
    { "DSHM_READONLY: database is opened read-only", 1 },
    { "DSHM_NEED_RECOVERY: a writer died and the file needs repair: open it for writing", 1 },
    { "DSHM_FULL: file size or address-space limit reached", 1 },
    { "DSHM_TOOBIG: key or value too large", 1 },
    { "DSHM_CLOSED: database has already been closed", 0 },
    { "DSHM_KEYEXIST: key already present", 0 },
    { "DSHM_BUSY: database file is being created by another process", 1 },
    { "DSHM_INVALID: invalid argument", 1 },
    { "DSHM_TRUNCATED: database file is truncated", 1 },
};
_Static_assert(sizeof dshm_errs / sizeof dshm_errs[0] == DSHM_NOTFOUND - DSHM_LAST_ERRCODE + 1,
               "one message per code");

const char *dshm_strerror(int rc) {
    if (rc == 0)
        return "DSHM_SUCCESS: success";
    if (rc <= DSHM_NOTFOUND && rc >= DSHM_LAST_ERRCODE)
        return dshm_errs[DSHM_NOTFOUND - rc].msg;
    if (rc < 0 && rc > -4096)
        rc = -rc;   /* -errno, the library's form of a system error */
    if (rc > 0)
        return strerror(rc);
    return "DSHM: unknown error";
}

const char *dshm_errhint(int rc) {
    if (rc > DSHM_NOTFOUND || rc < DSHM_LAST_ERRCODE || !dshm_errs[DSHM_NOTFOUND - rc].hint)
        return NULL;
    const char *m = dshm_errs[DSHM_NOTFOUND - rc].msg;
    return strchr(m, ':') + 2;
}
