/*
 * train_gan.c: a GAN trained on Fashion-MNIST by a C program of one's own,
 * around two models that kiln compiled ahead of time from
 * models/dcgan.kiln (the generator dcgan_g, with a frozen copy of the
 * discriminator's weights, d.*, and the discriminator dcgan_d):
 *
 *   kiln build models/dcgan.kiln --model dcgan_g --train --emit obj,header --prefix gen -o gen
 *   kiln build models/dcgan.kiln --model dcgan_d --train --emit obj,header --prefix disc -o disc
 *   cc -O2 -I. -Iruntime examples/gan/train_gan.c gen.o disc.o build/runtime/libkiln_rt.a \
 *     -lm -lpthread -o train_gan
 *   ./train_gan /usr/share/datasets/fashion-mnist 1500 samples.pgm [--threads N]
 *
 * (tests/gan.sh builds and runs it so.)  --prefix keeps the two objects'
 * symbols and macros apart (gen_train_step, GEN_PARAMS, disc_...).  Each
 * step of the loop:
 *   1. the generator's training step on fresh noise z: G moves against the
 *      discriminator's current weights, and leaves the 8 images it made
 *      (training mode: batch statistics) at GEN_TRAIN_OUTPUT_images;
 *   2. the discriminator's training steps on 8 real images (label 1;
 *      28x28 padded to 32x32, scaled to [-1, 1]), then on those 8 (label
 *      0): two batches, so that its batch norm never mixes real and made
 *      images (the generator's step sees made ones alone);
 *   3. the discriminator's new weights and batch-norm statistics copied
 *      into the generator's copy, by name.
 * Both use Adam at their train sections' learning rate (0.0002,
 * GEN_TRAIN_LR): the headers give where it, the step number and each
 * update go.  Every 100
 * steps it prints both losses; at the end it writes 64 samples of the
 * generator in inference mode as one PGM image (8 x 8 tiles).
 *
 * It prints how long the steps took (bench/gan.sh times it against the
 * same loop in PyTorch).  With --dump DIR it also writes, for tests/gan.sh to check
 * against `kiln run --train`: the first step's z (z0.npy), generated
 * images (images0.npy), generator loss (gloss0.npy), the discriminator's
 * real batch (x0.npy) and its loss on it (dloss0.npy); the second step's z and
 * loss (z1.npy, gloss1.npy); and the generator's parameters before each
 * of the two (gen0.params, gen1.params: the block GEN_PARAMS describes,
 * with gen.manifest giving names and shapes), and the discriminator's
 * after its first two steps (disc1.params, disc.manifest).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disc.h"
#include "gen.h"
#include "rt_data.h"
#include "rt_pool.h"

typedef struct Param {
  int slot;
  long long offset, bytes;
  const char *name;
} Param;

static const Param gen_table[] = GEN_PARAMS, disc_table[] = DISC_PARAMS;

typedef struct Prepared {
  int slot;
  long long offset, bytes;
} Prepared;

/* A model's memory: its arena, writable parameters (and optimizer state),
 * prepared values and extern pointers. */
typedef struct Model {
  char *arena;
  unsigned char *params, *prepared;
  void **ext;
  int64_t counter; /* *ext[0]: the step number from 0 */
} Model;

static void *aligned(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) {
    fprintf(stderr, "train_gan: out of memory\n");
    exit(1);
  }
  return memset(p, 0, bytes ? bytes : 1);
}

static void model_init(Model *m, size_t arena, const unsigned char *init, size_t params_bytes,
                       int slots, const Param *table, int n_params, size_t prepared_bytes) {
  m->arena = aligned(arena);
  m->params = aligned(params_bytes);
  m->prepared = aligned(prepared_bytes);
  m->ext = aligned(sizeof(void *) * (size_t)slots);
  memcpy(m->params, init, params_bytes);
  m->ext[0] = &m->counter;
  for (int i = 0; i < n_params; i++)
    m->ext[table[i].slot] = m->params + table[i].offset;
}

static void model_free(Model *m) {
  free(m->arena);
  free(m->params);
  free(m->prepared);
  free(m->ext);
}

/* Normal samples: SplitMix64 and Box-Muller. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return ((double)((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0;
}
static void normals(float *out, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    out[i] = (float)(sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

/* A model's training step as its header describes it. */
typedef struct Update {
  long long value;
  int slot;
  long long bytes;
} Update;

typedef struct Step {
  void (*fn)(char *arena, void *const *ext);
  double lr;
  long long lr_at, step_at, loss_at; /* arena offsets (-1: not read) */
  const Update *ups;
  int n_ups;
} Step;

static const Update gen_ups[] = GEN_UPDATES, disc_ups[] = DISC_UPDATES;
static const Step gen_step = {gen_train_step,        GEN_TRAIN_LR, GEN_TRAIN_LR_OFFSET,
                              GEN_TRAIN_STEP_OFFSET, GEN_TRAIN_LOSS_OFFSET, gen_ups,
                              GEN_UPDATE_COUNT},
                  disc_step = {disc_train_step,        DISC_TRAIN_LR, DISC_TRAIN_LR_OFFSET,
                               DISC_TRAIN_STEP_OFFSET, DISC_TRAIN_LOSS_OFFSET, disc_ups,
                               DISC_UPDATE_COUNT};

/* One training step: learning rate and step number in, the step, each
 * update copied over its parameter; returns the loss. */
static float train_step(Model *m, const Step *st) {
  if (st->lr_at >= 0)
    *(float *)(m->arena + st->lr_at) = (float)st->lr;
  if (st->step_at >= 0)
    *(float *)(m->arena + st->step_at) = (float)(m->counter + 1);
  st->fn(m->arena, (void *const *)m->ext);
  for (int i = 0; i < st->n_ups; i++)
    memcpy(m->ext[st->ups[i].slot], m->arena + st->ups[i].value, (size_t)st->ups[i].bytes);
  m->counter++;
  return *(float *)(m->arena + st->loss_at);
}

/* The discriminator's parameters (weights and running statistics) into
 * the generator's copy of them: the same names. */
static void copy_d(Model *g, const Model *d) {
  for (size_t i = 0; i < sizeof gen_table / sizeof *gen_table; i++)
    for (size_t k = 0; k < sizeof disc_table / sizeof *disc_table; k++)
      if (strcmp(gen_table[i].name, disc_table[k].name) == 0 &&
          gen_table[i].bytes == disc_table[k].bytes)
        memcpy(g->ext[gen_table[i].slot], d->ext[disc_table[k].slot], (size_t)gen_table[i].bytes);
}

static void save_npy(const char *dir, const char *name, const float *data, int rank, ...) {
  char path[4096], err[512];
  RtTensor t = {.dtype = RT_F32, .rank = rank, .data = (void *)data};
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++)
    t.dim[i] = va_arg(ap, int);
  va_end(ap);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (rt_npy_write(path, &t, err, sizeof err) != RT_OK) {
    fprintf(stderr, "train_gan: %s\n", err);
    exit(1);
  }
}

static void save_raw(const char *dir, const char *name, const void *data, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
    fprintf(stderr, "train_gan: cannot write %s\n", path);
    exit(1);
  }
}

/* 64 generated images, [-1, 1], as an 8 x 8 grid of 32 x 32 tiles. */
static int write_pgm(const char *path, const float *img) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return 1;
  fprintf(f, "P5\n256 256\n255\n");
  for (int y = 0; y < 256; y++)
    for (int x = 0; x < 256; x++) {
      float v = img[((y / 32) * 8 + x / 32) * 1024 + (y % 32) * 32 + x % 32];
      v = v < -1 ? -1 : v > 1 ? 1 : v;
      fputc((int)lrintf((v + 1) * 127.5f), f);
    }
  return fclose(f) != 0;
}

int main(int argc, char **argv) {
  char err[1024], *end;
  const char *dir = NULL;
  long threads = 1;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--dump") == 0) {
      dir = argv[i + 1];
    } else if (strcmp(argv[i], "--threads") == 0) {
      threads = strtol(argv[i + 1], &end, 10);
      if (*end || threads < 1)
        threads = -1;
    } else {
      threads = -2;
    }
  }
  long steps = argc >= 4 ? strtol(argv[2], &end, 10) : 0;
  if (argc < 4 || argc % 2 || threads == -2) {
    fprintf(stderr, "usage: train_gan DATA_DIR STEPS OUT.pgm [--threads N] [--dump DIR]\n");
    return 2;
  }
  if (*end || steps < 1 || threads < 1) {
    fprintf(stderr, "train_gan: STEPS and --threads must be positive numbers\n");
    return 2;
  }
  rt_set_threads((int)threads);
  RtDataset ds;
  if (rt_dataset_read(argv[1], "train", 0, &ds, err, sizeof err) != RT_OK) {
    fprintf(stderr, "train_gan: %s\n", err);
    return 1;
  }
  if (rt_dataset_example_size(&ds) != 28 * 28) {
    fprintf(stderr, "train_gan: %s: examples of %lld values, not 28 x 28 images\n", argv[1],
            (long long)rt_dataset_example_size(&ds));
    return 1;
  }
  enum { B = 8, LATENT = GEN_TRAIN_INPUT_z_BYTES / 4 / B };
  _Static_assert(DISC_TRAIN_INPUT_x_BYTES == B * 32 * 32 * 4, "disc: 8 images of 32 x 32");
  _Static_assert(GEN_TRAIN_OUTPUT_images_BYTES == B * 32 * 32 * 4, "gen: 8 images of 32 x 32");
  static const Prepared gen_prep[] = GEN_PREPARED;
  Model g, d;
  model_init(&g, GEN_ARENA_BYTES, gen_params, GEN_PARAMS_BYTES, GEN_EXT_SLOTS, gen_table,
             GEN_PARAM_COUNT, GEN_PREPARED_BYTES);
  model_init(&d, DISC_ARENA_BYTES, disc_params, DISC_PARAMS_BYTES, DISC_EXT_SLOTS, disc_table,
             DISC_PARAM_COUNT, DISC_PREPARED_BYTES);
  copy_d(&g, &d); /* one discriminator to start from */
  RtBatcher batches;
  if (rt_batcher_init(&batches, ds.n, B, 1, true, 0) != RT_OK) {
    fprintf(stderr, "train_gan: out of memory\n");
    return 1;
  }
  float real[B * 28 * 28];
  float *z = (float *)(g.arena + GEN_TRAIN_INPUT_z_OFFSET);
  float *x = (float *)(d.arena + DISC_TRAIN_INPUT_x_OFFSET);
  float *y = (float *)(d.arena + DISC_TRAIN_INPUT_y_OFFSET);
  const float *fake = (const float *)(g.arena + GEN_TRAIN_OUTPUT_images_OFFSET);
  int64_t per_epoch = rt_batcher_steps(&batches);
  double gsum = 0, dsum = 0, t0 = rt_now();
  for (long s = 0; s < steps; s++) {
    if (s % per_epoch == 0)
      rt_batcher_epoch(&batches, (int)(s / per_epoch));
    normals(z, B * LATENT);
    if (dir && s < 2)
      save_npy(dir, s ? "z1.npy" : "z0.npy", z, 2, B, LATENT);
    if (dir && s < 2) /* the parameters this step starts from */
      save_raw(dir, s ? "gen1.params" : "gen0.params", g.params, GEN_PARAMS_BYTES);
    if (dir && s == 0) {
      save_raw(dir, "gen.manifest", gen_manifest, strlen(gen_manifest));
      save_raw(dir, "disc.manifest", disc_manifest, strlen(disc_manifest));
    }
    if (dir && s == 1) /* the discriminator's, after its first two steps */
      save_raw(dir, "disc1.params", d.params, DISC_PARAMS_BYTES);
    float gl = train_step(&g, &gen_step);
    /* 8 real images (padded with the background, -1), then the 8 made */
    rt_batcher_gather(&batches, &ds, s % per_epoch, real, NULL);
    for (int i = 0; i < B * 32 * 32; i++) {
      int b = i / 1024, r = i % 1024 / 32 - 2, c = i % 32 - 2;
      x[i] = r >= 0 && r < 28 && c >= 0 && c < 28 ? real[b * 784 + r * 28 + c] * 2 - 1 : -1;
    }
    for (int i = 0; i < B; i++)
      y[i] = 1.0f;
    if (dir && s == 0) {
      save_npy(dir, "images0.npy", fake, 4, B, 1, 32, 32);
      save_npy(dir, "gloss0.npy", &gl, 0);
      save_npy(dir, "x0.npy", x, 4, B, 1, 32, 32);
    }
    if (dir && s == 1)
      save_npy(dir, "gloss1.npy", &gl, 0);
    float dl = train_step(&d, &disc_step);
    if (dir && s == 0)
      save_npy(dir, "dloss0.npy", &dl, 0);
    memcpy(x, fake, GEN_TRAIN_OUTPUT_images_BYTES);
    for (int i = 0; i < B; i++)
      y[i] = 0.0f;
    dl = (dl + train_step(&d, &disc_step)) / 2;
    copy_d(&g, &d);
    if (!isfinite(gl) || !isfinite(dl)) {
      fprintf(stderr, "train_gan: step %ld: a loss is not finite (G %g, D %g)\n", s + 1, gl, dl);
      return 1;
    }
    gsum += gl, dsum += dl;
    if ((s + 1) % 100 == 0 || s + 1 == steps) {
      int n = (s + 1) % 100 ? (int)((s + 1) % 100) : 100;
      printf("step %ld: G loss %.4f, D loss %.4f (means over the last %d)\n", s + 1, gsum / n,
             dsum / n, n);
      fflush(stdout);
      gsum = dsum = 0;
    }
  }
  double took = rt_now() - t0;
  printf("%ld steps in %.2f s: %.2f ms a step on %d thread%s\n", steps, took,
         1e3 * took / (double)steps,
         rt_threads(), rt_threads() == 1 ? "" : "s");
  /* 64 samples in inference mode (running statistics) */
  static float grid[64 * 1024];
  for (int i = 0; i < GEN_PREPARED_COUNT; i++)
    g.ext[gen_prep[i].slot] = g.prepared + gen_prep[i].offset;
  gen_prepare(g.arena, (void *const *)g.ext);
  g.counter = 0;
  for (int k = 0; k < 64 / GEN_BATCH; k++) {
    normals((float *)(g.arena + GEN_INPUT_z_OFFSET), GEN_BATCH * LATENT);
    gen_infer(g.arena, (void *const *)g.ext);
    memcpy(grid + k * GEN_BATCH * 1024, g.arena + GEN_OUTPUT_images_OFFSET,
           GEN_OUTPUT_images_BYTES);
  }
  if (write_pgm(argv[3], grid) != 0) {
    fprintf(stderr, "train_gan: cannot write %s\n", argv[3]);
    return 1;
  }
  printf("wrote 64 samples to %s\n", argv[3]);
  rt_batcher_free(&batches);
  rt_dataset_free(&ds);
  model_free(&g);
  model_free(&d);
  return 0;
}
