/*
 * file_helpers.h: the file scaffolding shared by test_npy.c and
 * test_safetensors.c, the runtime's file-format tests.
 *
 * A test that writes files runs with a fresh temporary directory as its
 * state: each file gives cmocka a one-line setup that calls make_tmp_dir()
 * with its own name template, and remove_tmp_dir() as the teardown.
 * count_entries() counts what a test left in that directory;
 * each_prefix() feeds a checker every truncation of a file.
 *
 * Everything is static inline, so including this header gives the test
 * file private helpers and nothing to link.
 */
#ifndef KILN_TESTS_FILE_HELPERS_H
#define KILN_TESTS_FILE_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt.h"

/* The NumPy- and Python-made fixtures (tests/data/make_fixtures.py). */
#define DATA KILN_SOURCE_DIR "/tests/data/"

/* Setup: a fresh directory made from pattern ("/tmp/NAME.XXXXXX") becomes
 * the test's state. */
static inline int make_tmp_dir(void **state, const char *pattern) {
  char *dir = malloc(64);
  if (!dir) return -1;
  snprintf(dir, 64, "%s", pattern);
  if (!mkdtemp(dir)) return -1;
  *state = dir;
  return 0;
}

/* Teardown: removes the directory and what the test left in it (files, or
 * an empty directory in the way of a write). */
static inline int remove_tmp_dir(void **state) {
  char *dir = *state, path[512];
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (remove(path) != 0) rmdir(path);
  }
  if (d) closedir(d);
  rmdir(dir);
  free(dir);
  return 0;
}

/* The entries of dir (not "." or "..") whose names contain sub; "" counts
 * them all, ".tmp." the temporary files an atomic write left behind. */
static inline int count_entries(const char *dir, const char *sub) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, sub)) n++;
  closedir(d);
  return n;
}

/* Calls check on every proper prefix of file's bytes (lengths 0 to the
 * file's size - 1), each in a buffer of exactly that size, so ASan sees
 * over-reads.  Returns the whole file, which the caller frees. */
static inline void *each_prefix(const char *file, size_t *len,
                                void (*check)(const void *buf, size_t len)) {
  void *buf;
  char err[512];
  assert_int_equal(rt_read_file(file, &buf, len, err, sizeof err), RT_OK);
  for (size_t n = 0; n < *len; n++) {
    unsigned char *copy = malloc(n + 1);
    memcpy(copy, buf, n);
    check(copy, n);
    free(copy);
  }
  return buf;
}

#endif
