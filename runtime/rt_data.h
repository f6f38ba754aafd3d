/*
 * rt_data.h: the runtime's training-data API: gzip decompression, IDX
 * (MNIST-format) files, datasets with seeded shuffling and batching, and a
 * progress display for training loops.
 *
 * It sits beside rt.h (which it includes) because programs that train
 * need it and programs that only run inference do not.  The conventions
 * are rt.h's: libc and libm only (the gzip decoder is kiln's own, not
 * zlib), the rt_ prefix on every symbol, and functions that can fail for
 * reasons outside the program's control return an RtStatus with one
 * sentence in `err` that starts with the file (or directory) name.
 */
#ifndef KILN_RT_DATA_H
#define KILN_RT_DATA_H

#include "rt.h"

#include <stdbool.h>
#include <stdio.h>

/* ---- inflate.c: DEFLATE (RFC 1951) inside gzip (RFC 1952) ----
 * Reads every member of a gzip file (members are concatenated, as `cat
 * a.gz b.gz` makes them; zero bytes after the last member are ignored),
 * checks each member's CRC-32 and ISIZE, and returns the concatenated data
 * in a malloc'ed buffer (never NULL on success, even for empty output).
 * Corrupt input fails with RT_ERR_FORMAT and a message giving the byte
 * offset; output beyond the limit fails with RT_ERR_SHAPE.  On failure
 * *out is NULL and *out_len 0. */
#define RT_GUNZIP_MAX ((size_t)1 << 31) /* rt_gunzip's output limit: 2 GiB */

/* Whether the buffer starts with the gzip magic bytes 0x1f 0x8b. */
bool rt_is_gzip(const void *in, size_t len);
RtStatus rt_gunzip(const void *in, size_t len, const char *name, void **out, size_t *out_len, char *err,
                   size_t errlen);
/* rt_gunzip with another output limit in bytes (tests, fuzzing). */
RtStatus rt_gunzip_limit(const void *in, size_t len, const char *name, size_t limit, void **out,
                         size_t *out_len, char *err, size_t errlen);

/* ---- data.c: IDX files, datasets, batching ----
 * IDX: two zero bytes, an element-type byte (0x08 u8, 0x09 i8, 0x0B i16,
 * 0x0C i32, 0x0D f32, 0x0E f64), a rank byte, the dims as big-endian u32,
 * then the big-endian data.  Integer types load as RT_I32 (u8 values stay
 * 0..255), float types as RT_F32 (f64 range-checked).  A gzip-compressed
 * file is recognized by its magic bytes, whatever its name. */
RtStatus rt_idx_parse(const void *buf, size_t len, const char *name, RtTensor *out, char *err, size_t errlen);
RtStatus rt_idx_read(const char *path, RtTensor *out, char *err, size_t errlen);

/* Examples x (f32, or i32 token ids; shape [n, ...]) and labels y (i32
 * classes, or f32 targets: a segmentation's masks; shape [n] or [n, ...],
 * a row of labels per example, e.g. a language model's next tokens). */
typedef struct RtDataset {
  RtTensor x, y;
  int64_t n;
} RtDataset;

/* Loads split "train" or "test" from dir.  It tries, in order:
 *   {train,t10k}-images-idx3-ubyte[.gz] + {train,t10k}-labels-idx1-ubyte[.gz]
 *     (the MNIST / Fashion-MNIST names; "test" uses t10k; u8 images are
 *     scaled to [0, 1] by dividing by 255), then
 *   {split}_x.npy + {split}_y.npy (x float, y integer, [n] or [n, ...]).
 * Fails with RT_ERR_NOTFOUND naming every file tried when neither pair is
 * there, and with a clear message when the counts of x and y differ or the
 * labels are not integers.  *out is zeroed on failure. */
RtStatus rt_dataset_load(const char *dir, const char *split, RtDataset *out, char *err, size_t errlen);
/* What rt_dataset_read reads: labels (without, the examples alone: a model
 * trained without labels, an autoencoder; y stays empty), or f32 targets as
 * the labels (a regression or segmentation model), and examples as integer
 * ids (a token model: integer files load as i32, IDX images unscaled)
 * instead of floats. */
enum { RT_DATA_LABELS = 1, RT_DATA_IDS = 2, RT_DATA_TARGETS = 4 };
/* rt_dataset_load with RT_DATA_* flags: rt_dataset_load is RT_DATA_LABELS. */
RtStatus rt_dataset_read(const char *dir, const char *split, unsigned want, RtDataset *out, char *err,
                         size_t errlen);
void rt_dataset_free(RtDataset *d);
/* Every i32 value of d's examples (ids true: token ids) or labels in
 * 0 .. limit - 1, else RT_ERR_SHAPE naming the first outside, the example
 * it belongs to, and dir. */
RtStatus rt_dataset_check_range(const RtDataset *d, bool ids, int64_t limit, const char *dir, char *err,
                                size_t errlen);
/* Values per example: the product of x's dims after the first. */
int64_t rt_dataset_example_size(const RtDataset *d);
/* Labels per example: the product of y's dims after the first (0 without). */
int64_t rt_dataset_label_size(const RtDataset *d);
/* Copies examples first .. first+count-1 in order (for evaluation); x gets
 * count * example size values, y count * label size labels (4 bytes each,
 * f32 or i32; either may be NULL).  A range outside 0..n-1 copies
 * nothing. */
void rt_dataset_gather(const RtDataset *d, int64_t first, int64_t count, void *x, void *y);

/* Mini-batches over the first n examples (or the first `limit` when
 * 0 < limit < n).  With shuffle, each epoch visits the examples in an order
 * that is a function of (seed, epoch) alone: a Fisher-Yates shuffle of the
 * identity whose random numbers are SplitMix64 finalizer hashes of a
 * counter, so every machine computes the same order. */
typedef struct RtBatcher {
  int64_t n;     /* examples in use */
  int64_t batch; /* examples per step */
  uint64_t seed;
  bool shuffle;
  int64_t *order; /* the epoch's permutation of 0..n-1; NULL when not shuffling */
} RtBatcher;

/* Sets up the batcher with epoch 0's order.  Fails only for lack of
 * memory (RT_ERR_ALLOC; *b is then an empty batcher with no steps). */
RtStatus rt_batcher_init(RtBatcher *b, int64_t n, int64_t batch, uint64_t seed, bool shuffle, int64_t limit);
void rt_batcher_free(RtBatcher *b);
/* Full batches only: floor(n / batch); a final partial batch is dropped. */
int64_t rt_batcher_steps(const RtBatcher *b);
/* Makes the order of the given epoch (any number; 0 is init's). */
void rt_batcher_epoch(RtBatcher *b, int epoch);
/* The dataset index of the i-th example of the current epoch. */
int64_t rt_batcher_index(const RtBatcher *b, int64_t i);
/* Copies step `step`'s examples contiguously: x gets batch * example size
 * values, y batch * label size labels (either may be NULL).  A step outside
 * 0..steps-1, or a batcher over more examples than d has, copies nothing. */
void rt_batcher_gather(const RtBatcher *b, const RtDataset *d, int64_t step, void *x, void *y);
/* The SplitMix64 finalizer the shuffle is built on (exposed for tests). */
uint64_t rt_mix64(uint64_t z);

/* ---- progress.c: a training progress display ----
 * On a terminal, one line redrawn with '\r' at most every 0.1 s:
 *   epoch 1/2 [=========>          ] 312/937 loss 0.4321 | 5123 ex/s | ETA 0:42
 * otherwise about ten plain lines per epoch plus the last step:
 *   epoch 1/2 step 300/937 loss 0.4321 5123 ex/s eta 42s
 * The loss shown is the mean of the losses reported so far this epoch.
 * rt_progress_end prints the epoch's summary line:
 *   epoch 1/2 loss 0.4321 | 5123 ex/s | 11.7s | test accuracy 84.12% */
typedef enum RtProgressMode { RT_PROGRESS_AUTO, RT_PROGRESS_TERMINAL, RT_PROGRESS_PLAIN } RtProgressMode;

typedef struct RtProgress {
  FILE *f;
  int epoch, epochs; /* shown as "epoch 1/2" */
  int64_t steps, batch;
  bool terminal;
  double (*clock)(void *ctx);
  void *clock_ctx;
  double start, last_draw; /* clock values */
  double finished;         /* clock value at the epoch's last step, or -1 */
  double loss_sum;
  int64_t done;   /* steps completed */
  int64_t losses; /* losses summed */
  int width;      /* length of the last terminal line drawn */
} RtProgress;

/* epoch is shown as given (1-based: "epoch 1/2" is epoch 1 of epochs 2);
 * steps per epoch and examples per step give the bar and examples/s.  AUTO picks TERMINAL when
 * isatty(fileno(f)). */
void rt_progress_init(RtProgress *p, FILE *f, int epoch, int epochs, int64_t steps, int64_t batch);
void rt_progress_init_mode(RtProgress *p, FILE *f, int epoch, int epochs, int64_t steps, int64_t batch,
                           RtProgressMode mode);
/* Replaces the clock (seconds, any origin) and restarts the epoch's timer;
 * for tests.  NULL restores rt_now. */
void rt_progress_set_clock(RtProgress *p, double (*clock)(void *ctx), void *ctx);
/* Reports that step `step` (0-based) finished with this loss. */
void rt_progress_step(RtProgress *p, int64_t step, double loss);
/* Prints the summary line; extra (e.g. "test accuracy 84.12%") may be NULL.
 * Its time and examples/s are the training steps' (up to the last step,
 * when the steps per epoch are known): work done between the last step and
 * this call, such as measuring test accuracy, is not counted. */
void rt_progress_end(RtProgress *p, const char *extra);
/* Seconds on the monotonic clock (CLOCK_MONOTONIC). */
double rt_now(void);

/* ---- schedule.c: learning-rate schedules ---- */
typedef enum RtSched { RT_SCHED_CONSTANT, RT_SCHED_STEP, RT_SCHED_COSINE, RT_SCHED_LINEAR } RtSched;

typedef struct RtSchedule {
  RtSched kind;
  double lr;      /* the base rate */
  double gamma;   /* step: factor */
  int every;      /* step: epochs between decays */
  double end;     /* cosine, linear: the final rate */
  int epochs;     /* cosine, linear: length in epochs (0: the whole run) */
  int64_t warmup; /* steps of linear warm-up from 0 */
} RtSchedule;

/* The learning rate at global step t (from 0) of a run of `total` steps
 * with `per_epoch` steps per epoch. */
double rt_schedule_lr(const RtSchedule *s, int64_t t, int64_t per_epoch, int64_t total);

#endif
