/*
 * file.c: whole-file reads and atomic whole-file writes.
 *
 * Every tensor file kiln reads or writes goes through these two functions,
 * so the format code (npy.c, safetensors.c) only ever sees memory buffers,
 * which keeps it testable and fuzzable without touching the disk.
 *
 * Writes go to a temporary file "PATH.tmp.XXXXXX" in the destination's own
 * directory, which is fsync'ed and then renamed over PATH.  rename() is
 * atomic within one file system, so a reader sees either the old file or
 * the complete new one, never a partial write; on any failure the
 * temporary file is unlinked, so nothing is left behind.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "PATH: WHAT: strerror(e)" */
static RtStatus fail(char *err, size_t errlen, RtStatus s, const char *path, const char *what,
                     int e) {
  if (err && errlen) snprintf(err, errlen, "%s: %s: %s", path, what, strerror(e));
  return s;
}

static RtStatus fail_alloc(char *err, size_t errlen, const char *path) {
  if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
  return RT_ERR_ALLOC;
}

/* Reads fd to EOF into a buffer that starts at cap bytes and doubles. */
static RtStatus read_all(int fd, const char *path, size_t cap, void **data, size_t *len,
                         char *err, size_t errlen) {
  size_t used = 0;
  char *buf = malloc(cap);
  if (!buf) return fail_alloc(err, errlen, path);
  for (;;) {
    ssize_t r;
    if (used == cap) {
      char *nb;
      if (cap > SIZE_MAX / 2) {
        free(buf);
        return fail(err, errlen, RT_ERR_IO, path, "cannot read", EFBIG);
      }
      nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        return fail_alloc(err, errlen, path);
      }
      buf = nb;
      cap *= 2;
    }
    r = read(fd, buf + used, cap - used);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      return fail(err, errlen, RT_ERR_IO, path, "cannot read", e);
    }
    if (r == 0) break;
    used += (size_t)r;
  }
  *data = buf;
  *len = used;
  return RT_OK;
}

RtStatus rt_read_file(const char *path, void **data, size_t *len, char *err, size_t errlen) {
  struct stat st;
  size_t cap = 65536;
  RtStatus s;
  int fd;
  *data = NULL;
  *len = 0;
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(err, errlen, RT_ERR_IO, path, "cannot open", errno);
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return fail(err, errlen, RT_ERR_IO, path, "cannot stat", e);
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return fail(err, errlen, RT_ERR_IO, path, "cannot read", EISDIR);
  }
  /* One spare byte lets the EOF read happen without growing the buffer. */
  if (S_ISREG(st.st_mode) && st.st_size >= 0 && (uintmax_t)st.st_size < SIZE_MAX)
    cap = (size_t)st.st_size + 1;
  s = read_all(fd, path, cap, data, len, err, errlen);
  close(fd);
  return s;
}

/* Writes all n pieces to fd, retrying short writes and EINTR. */
static int write_pieces(int fd, const void *const *pieces, const size_t *sizes, int n) {
  for (int i = 0; i < n; i++) {
    const char *p = pieces[i];
    size_t left = sizes[i];
    while (left > 0) {
      ssize_t w = write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return -1;
      p += w;
      left -= (size_t)w;
    }
  }
  return 0;
}

/* Best effort: make the rename itself durable by fsync'ing the directory. */
static void sync_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 1;
  char *dir;
  int fd;
  if (slash && n == 0) n = 1; /* "/file" lives in "/" */
  dir = malloc(n + 1);
  if (!dir) return;
  memcpy(dir, slash ? path : ".", n);
  dir[n] = '\0';
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

RtStatus rt_write_file_atomic(const char *path, const void *const *pieces, const size_t *sizes,
                              int n, char *err, size_t errlen) {
  static const char suffix[] = ".tmp.XXXXXX";
  size_t plen = strlen(path);
  RtStatus s = RT_OK;
  char *tmp = malloc(plen + sizeof suffix);
  int fd;
  if (!tmp) return fail_alloc(err, errlen, path);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, suffix, sizeof suffix);
  fd = mkstemp(tmp);
  if (fd < 0) {
    s = fail(err, errlen, RT_ERR_IO, path, "cannot create temporary file", errno);
    free(tmp);
    return s;
  }
  /* mkstemp makes the file 0600; tensor files are ordinary data files.
   * umask() cannot be read without changing it (a race with other
   * threads), so the mode is set to 0644 as is. */
  if (write_pieces(fd, pieces, sizes, n) != 0)
    s = fail(err, errlen, RT_ERR_IO, path, "cannot write", errno);
  else if (fchmod(fd, 0644) != 0)
    s = fail(err, errlen, RT_ERR_IO, path, "cannot set file mode", errno);
  else if (fsync(fd) != 0)
    s = fail(err, errlen, RT_ERR_IO, path, "cannot sync", errno);
  if (close(fd) != 0 && s == RT_OK) s = fail(err, errlen, RT_ERR_IO, path, "cannot close", errno);
  if (s == RT_OK && rename(tmp, path) != 0)
    s = fail(err, errlen, RT_ERR_IO, path, "cannot rename the temporary file over it", errno);
  if (s != RT_OK)
    (void)unlink(tmp);
  else
    sync_dir(path);
  free(tmp);
  return s;
}
