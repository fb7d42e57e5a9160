/**
 * @file dshm_err.c
 * @brief dshm_strerror(): one message per return code, each starting with
 *        the code's name (LMDB style), errno values passed to strerror.
 */
#define _GNU_SOURCE
#include <string.h>

#include "dbm_shm.h"

static const char *const dshm_errstr[] = {
    "DSHM_NOTFOUND: key not found",
    "DSHM_BAD_MAGIC: not a dbm_shm database file",
    "DSHM_VERSION_MISMATCH: database file of another format version or build",
    "DSHM_CORRUPT: database file is corrupt",
    "DSHM_READONLY: database opened read-only",
    "DSHM_NEED_RECOVERY: a writer died; open the file for writing to repair it",
    "DSHM_FULL: file size or address space limit reached",
    "DSHM_TOOBIG: key or value too large",
    "DSHM_CLOSED: database has already been closed",
    "DSHM_KEYEXIST: key already present",
    "DSHM_BUSY: database file is being created by another process",
    "DSHM_INVALID: invalid argument",
    "DSHM_TRUNCATED: database file is truncated",
};

const char *dshm_strerror(int rc) {
    if (rc == 0)
        return "DSHM_SUCCESS: success";
    if (rc <= DSHM_NOTFOUND && rc >= DSHM_LAST_ERRCODE)
        return dshm_errstr[DSHM_NOTFOUND - rc];
    if (rc < 0 && rc > -4096)
        rc = -rc;   /* -errno from a length-returning call */
    if (rc > 0)
        return strerror(rc);
    return "DSHM: unknown error";
}
