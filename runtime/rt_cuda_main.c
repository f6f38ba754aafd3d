/*
 * rt_cuda_main.c: the device side of a program built by `kiln build
 * --target cuda` (rt_cuda_prog.h): the embedded device table parsed, the
 * image that fits device 0 loaded through runtime/rt_cuda.c, device memory
 * laid out as the manifest says (an arena of each step's plan, a buffer
 * per extern slot), and the inference step run there, with rt_main.c's
 * host arena as the place inputs come from and outputs go to; in a --train
 * build, rt_train.c's training steps too.
 *
 * Training keeps the parameters and the optimizer state on the device: the
 * host's copies go up when the host changed them (kiln_prepare, below, is
 * called after every such change), each step copies its updates over them
 * there, and they come back down only when the host reads them (the test
 * set's scores, --save): rt_train.c downloads them after each epoch and
 * then prepares them as the CPU's loop does, which uploads them again, with
 * the prepare step, before the test set's inferences.
 *
 * A program runs one model on one device, so the state is one static
 * struct.  The launch lists refer to extern slots and arena offsets of the
 * manifest's plan (codegen/cuda/cuda_aot.c made both from the same calls).
 *
 * Tested on a GPU (tests/gpu.sh on an NVIDIA H100, sm_90: a lenet5
 * program's outputs are `kiln run`'s on the CPU, bit for bit) and without
 * one on tests/fake_cuda.c (tests/cuda_build.sh), with the CUDA source as
 * the image (KILN_CUDA_IMAGE=source).  The CUBIN/PTX choice below follows
 * the CUDA documentation's compatibility rules; the PTX branch (a device
 * newer than every CUBIN) has not run on a GPU: the H100 took its sm_90
 * CUBIN.
 */
#include <stdlib.h>
#include <string.h>

#include "rt_cuda.h"
#include "rt_cuda_prog.h"

enum { MAX_IMAGES = 16 };

typedef struct Image {
  char kind[8]; /* cubin, ptx, source */
  int arch;
  size_t at, size; /* in kiln_cuda_blob */
} Image;

typedef struct Step {
  RtCuLaunch *ls;
  int n;
} Step;

static struct {
  char *text; /* a copy of kiln_cuda, cut into words: the launches' names */
  Image img[MAX_IMAGES];
  int n_img;
  Step prep, infer, train;
  RtCuda *dev;
  RtCuModule *m_prep, *m_infer, *m_train;
  RtCuPtr arena, train_arena, *ext;
  int n_ext;
  int stale; /* the host's parameters changed since their upload */
} cu;

/* rt_prog.c calls it after the parameters were set or changed: on the
 * device, the upload and the prepare step happen before the next run. */
void kiln_prepare(char *arena, void *const *ext) {
  (void)arena, (void)ext;
  cu.stale = 1;
}

/* --- the table ------------------------------------------------------------------------- */

static int bad_table(const RtProg *p, const char *what) {
  return rt_prog_error(p, RP_USER, "internal error: the program's CUDA table is malformed (%s)",
                       what);
}

/* "launch FN THREADS BLOCK NARGS ARG..." (words after "launch"). */
static int parse_launch(const RtProg *p, RtCuLaunch *l, char **save) {
  char *fn = strtok_r(NULL, " ", save), *th = strtok_r(NULL, " ", save),
       *bl = strtok_r(NULL, " ", save), *na = strtok_r(NULL, " ", save);
  if (!fn || !th || !bl || !na) return bad_table(p, "a launch line");
  int n = atoi(na);
  RtCuArg *args = calloc((size_t)n + 1, sizeof *args);
  if (!args) return rt_prog_error(p, RP_USER, "out of memory");
  *l = (RtCuLaunch){fn, strtoll(th, NULL, 10), atoi(bl), n, args};
  for (int i = 0; i < n; i++) {
    char *w = strtok_r(NULL, " ", save);
    if (!w || (w[0] != 'a' && w[0] != 'e')) return bad_table(p, "a launch's arguments");
    args[i] = (RtCuArg){w[0] == 'a' ? RT_CU_ARENA : RT_CU_EXTERN, strtoll(w + 1, NULL, 10)};
    if (w[0] == 'e' && (args[i].at < 0 || args[i].at > p->ext_slots))
      return bad_table(p, "an extern slot out of range");
  }
  return RP_OK;
}

/* "step NAME N", then N launch lines. */
static int parse_step(const RtProg *p, char **line_save, char **save) {
  char *name = strtok_r(NULL, " ", save), *count = strtok_r(NULL, " ", save);
  Step *s = !name                       ? NULL
            : !strcmp(name, "prepare") ? &cu.prep
            : !strcmp(name, "infer")   ? &cu.infer
            : !strcmp(name, "train")   ? &cu.train
                                       : NULL;
  if (!s || !count || s->ls) return bad_table(p, "a step line");
  s->n = atoi(count);
  if (!(s->ls = calloc((size_t)s->n + 1, sizeof *s->ls))) return rt_prog_error(p, RP_USER, "out of memory");
  for (int i = 0; i < s->n; i++) {
    char *line = strtok_r(NULL, "\n", line_save), *word = line ? strtok_r(line, " ", save) : NULL;
    if (!word || strcmp(word, "launch") != 0) return bad_table(p, "a step's launches");
    int rc = parse_launch(p, &s->ls[i], save);
    if (rc) return rc;
  }
  return RP_OK;
}

static int parse_table(const RtProg *p) {
  char *line_save, *save;
  if (cu.text) return RP_OK;
  if (!(cu.text = strdup(kiln_cuda))) return rt_prog_error(p, RP_USER, "out of memory");
  char *line = strtok_r(cu.text, "\n", &line_save);
  if (!line || strcmp(line, "kiln-cuda 1") != 0) return bad_table(p, "its first line");
  while ((line = strtok_r(NULL, "\n", &line_save))) {
    char *word = strtok_r(line, " ", &save);
    int rc = RP_OK;
    if (word && !strcmp(word, "end")) return cu.infer.ls ? RP_OK : bad_table(p, "no inference step");
    if (word && !strcmp(word, "step")) {
      rc = parse_step(p, &line_save, &save);
    } else if (word && !strcmp(word, "image") && cu.n_img < MAX_IMAGES) {
      Image *im = &cu.img[cu.n_img++];
      char *kind = strtok_r(NULL, " ", &save), *arch = strtok_r(NULL, " ", &save),
           *at = strtok_r(NULL, " ", &save), *size = strtok_r(NULL, " ", &save);
      if (!kind || !size || strlen(kind) >= sizeof im->kind) return bad_table(p, "an image line");
      snprintf(im->kind, sizeof im->kind, "%s", kind);
      im->arch = atoi(arch);
      im->at = (size_t)strtoull(at, NULL, 10);
      im->size = (size_t)strtoull(size, NULL, 10);
    } else {
      return bad_table(p, "an unknown line");
    }
    if (rc) return rc;
  }
  return bad_table(p, "no end");
}

/* "sm_80, sm_90 CUBINs and compute_80 PTX" */
static void describe(char *buf, size_t n) {
  size_t at = 0;
  int cubins = 0;
  buf[0] = '\0';
  for (int i = 0; i < cu.n_img && at < n; i++)
    if (!strcmp(cu.img[i].kind, "cubin"))
      at += (size_t)snprintf(buf + at, n - at, "%ssm_%d", cubins++ ? ", " : "", cu.img[i].arch);
  if (cubins && at < n) at += (size_t)snprintf(buf + at, n - at, " CUBIN%s", cubins > 1 ? "s" : "");
  for (int i = 0; i < cu.n_img && at < n; i++)
    if (!strcmp(cu.img[i].kind, "ptx"))
      at += (size_t)snprintf(buf + at, n - at, "%scompute_%d PTX", at ? " and " : "", cu.img[i].arch);
}

/* The image for a device of compute capability `arch` (10 major + minor):
 * a CUBIN of the same major and the highest minor not above the device's
 * (CUBINs run on later minors of their major), else the PTX of the highest
 * virtual architecture not above it (the driver compiles it), else NULL.
 * The source under KILN_CUDA_IMAGE=source (only the tests' fake driver
 * loads it). */
static const Image *pick(int arch) {
  const char *mode = getenv("KILN_CUDA_IMAGE");
  const Image *best = NULL;
  int source = mode && !strcmp(mode, "source");
  for (int i = 0; i < cu.n_img; i++) {
    const Image *im = &cu.img[i];
    if (source) {
      if (!strcmp(im->kind, "source")) return im;
    } else if (!strcmp(im->kind, "cubin") && im->arch / 10 == arch / 10 && im->arch <= arch &&
               (!best || im->arch > best->arch)) {
      best = im;
    }
  }
  for (int i = 0; i < cu.n_img && !best && !source; i++) {
    const Image *im = &cu.img[i];
    if (!strcmp(im->kind, "ptx") && im->arch <= arch && (!best || im->arch > best->arch)) best = im;
  }
  return best;
}

/* --- the device ------------------------------------------------------------------------- */

static int device_error(const RtProg *p, const char *err) {
  return rt_prog_error(p, RP_USER, "running %s on %s: %s", p->model, rt_cuda_name(cu.dev), err);
}

static size_t tensor_bytes(const RtProgTensor *t) {
  size_t b = rt_prog_bytes(t);
  return b ? b : 1;
}

/* An arena of `size` bytes, zeroed (as the CPU's). */
static RtStatus zeroed_arena(int64_t size, RtCuPtr *out, char *err, size_t n) {
  size_t bytes = size > 0 ? (size_t)size : 1;
  void *zeros = calloc(1, bytes);
  if (!zeros) {
    snprintf(err, n, "out of memory");
    return RT_ERR_ALLOC;
  }
  RtStatus s = rt_cuda_alloc(cu.dev, bytes, out, err, n);
  if (s == RT_OK) s = rt_cuda_upload(cu.dev, *out, zeros, bytes, err, n);
  free(zeros);
  return s;
}

/* The arenas, ext[0] the step counter, a buffer per parameter (optimizer
 * state included) and prepared value, at the manifest's slots. */
static int alloc_device(const RtProg *p, char *err, size_t n) {
  cu.n_ext = p->ext_slots + 1;
  if (!(cu.ext = calloc((size_t)cu.n_ext, sizeof *cu.ext))) {
    snprintf(err, n, "out of memory");
    return RP_USER;
  }
  RtStatus s = zeroed_arena(p->infer_arena, &cu.arena, err, n);
  if (s == RT_OK && cu.train.ls) s = zeroed_arena(p->train_arena, &cu.train_arena, err, n);
  if (s == RT_OK) s = rt_cuda_alloc(cu.dev, sizeof(int64_t), &cu.ext[0], err, n);
  for (int i = 0; i < p->n_params && s == RT_OK; i++)
    s = rt_cuda_alloc(cu.dev, tensor_bytes(&p->params[i]), &cu.ext[p->params[i].slot], err, n);
  for (int i = 0; i < p->n_prepared && s == RT_OK; i++)
    s = rt_cuda_alloc(cu.dev, tensor_bytes(&p->prepared[i]), &cu.ext[p->prepared[i].slot], err, n);
  return s == RT_OK ? RP_OK : RP_USER;
}

int rt_cuda_prog_open(const RtProg *p) {
  char err[768], list[256];
  int rc = parse_table(p);
  if (rc) return rc;
  if (rt_cuda_open(0, &cu.dev, err, sizeof err) != RT_OK) return rt_prog_error(p, RP_USER, "%s", err);
  int arch = rt_cuda_arch(cu.dev);
  const Image *im = pick(arch);
  if (!im) {
    describe(list, sizeof list);
    return rt_prog_error(p, RP_USER,
                         "%s is sm_%d, but the program has %s only: rebuild it with kiln build "
                         "--target cuda --arch sm_%d",
                         rt_cuda_name(cu.dev), arch, list, arch);
  }
  /* the CUBIN or PTX image, loaded by the driver */
  const void *image = kiln_cuda_blob + im->at;
  RtStatus s = rt_cuda_load(cu.dev, image, cu.infer.ls, cu.infer.n, &cu.m_infer, err, sizeof err);
  if (s == RT_OK && cu.prep.n)
    s = rt_cuda_load(cu.dev, image, cu.prep.ls, cu.prep.n, &cu.m_prep, err, sizeof err);
  if (s == RT_OK && cu.train.ls)
    s = rt_cuda_load(cu.dev, image, cu.train.ls, cu.train.n, &cu.m_train, err, sizeof err);
  if (s != RT_OK) return device_error(p, err);
  if (alloc_device(p, err, sizeof err) != RP_OK) return device_error(p, err);
  cu.stale = 1;
  return RP_OK;
}

static int sync_each(void) {
  const char *v = getenv("KILN_CUDA_SYNC");
  return v && !strcmp(v, "1");
}

/* The parameters and the step counter up, then the prepare step. */
static RtStatus upload_params(const RtProg *p, void *const *ext, char *err, size_t n) {
  RtStatus s = rt_cuda_upload(cu.dev, cu.ext[0], ext[0], sizeof(int64_t), err, n);
  for (int i = 0; i < p->n_params && s == RT_OK; i++) {
    const RtProgTensor *t = &p->params[i];
    s = rt_cuda_upload(cu.dev, cu.ext[t->slot], ext[t->slot], rt_prog_bytes(t), err, n);
  }
  if (s == RT_OK && cu.m_prep) s = rt_cuda_run(cu.m_prep, cu.arena, cu.ext, sync_each(), err, n);
  if (s == RT_OK) cu.stale = 0;
  return s;
}

int rt_cuda_prog_infer(const RtProg *p, char *arena, void *const *ext) {
  char err[1024];
  RtStatus s = cu.stale ? upload_params(p, ext, err, sizeof err) : RT_OK;
  for (int i = 0; i < p->n_inputs && s == RT_OK; i++) {
    const RtProgTensor *t = &p->inputs[i];
    if (t->offset >= 0)
      s = rt_cuda_upload(cu.dev, cu.arena + (RtCuPtr)t->offset, arena + t->offset, rt_prog_bytes(t), err,
                         sizeof err);
  }
  if (s == RT_OK) s = rt_cuda_run(cu.m_infer, cu.arena, cu.ext, sync_each(), err, sizeof err);
  for (int o = 0; o < p->n_outputs && s == RT_OK; o++) {
    const RtProgTensor *t = &p->outputs[o];
    s = rt_cuda_download(cu.dev, arena + t->offset, cu.arena + (RtCuPtr)t->offset, rt_prog_bytes(t), err,
                         sizeof err);
  }
  if (s == RT_OK && p->test_loss >= 0) /* train's test loss (rt_train.c) */
    s = rt_cuda_download(cu.dev, arena + p->test_loss, cu.arena + (RtCuPtr)p->test_loss, sizeof(float),
                         err, sizeof err);
  return s == RT_OK ? RP_OK : device_error(p, err);
}

int rt_cuda_prog_can_train(void) { return cu.train.ls != NULL; }

/* bytes at `offset` of the host arena to the same place in the device's. */
static RtStatus upload_at(RtCuPtr dev_arena, const char *arena, int64_t offset, size_t bytes, char *err,
                          size_t n) {
  return offset < 0 ? RT_OK : rt_cuda_upload(cu.dev, dev_arena + (RtCuPtr)offset, arena + offset, bytes, err, n);
}

int rt_cuda_prog_train_step(const RtProg *p, char *arena, void *const *ext) {
  char err[1024];
  RtStatus s = cu.stale ? upload_params(p, ext, err, sizeof err) : RT_OK;
  if (s == RT_OK) s = rt_cuda_upload(cu.dev, cu.ext[0], ext[0], sizeof(int64_t), err, sizeof err);
  if (s == RT_OK) s = upload_at(cu.train_arena, arena, p->data.offset, rt_prog_bytes(&p->data), err, sizeof err);
  if (s == RT_OK && p->has_labels)
    s = upload_at(cu.train_arena, arena, p->labels.offset, rt_prog_bytes(&p->labels), err, sizeof err);
  if (s == RT_OK) s = upload_at(cu.train_arena, arena, p->lr, sizeof(float), err, sizeof err);
  if (s == RT_OK) s = upload_at(cu.train_arena, arena, p->step, sizeof(float), err, sizeof err);
  if (s == RT_OK) s = rt_cuda_run(cu.m_train, cu.train_arena, cu.ext, sync_each(), err, sizeof err);
  for (int i = 0; i < p->n_updates && s == RT_OK; i++) {
    const RtProgUpdate *u = &p->updates[i];
    s = rt_cuda_copy(cu.dev, cu.ext[u->slot], cu.train_arena + (RtCuPtr)u->value, (size_t)u->bytes, err,
                     sizeof err);
  }
  if (s == RT_OK && p->loss >= 0)
    s = rt_cuda_download(cu.dev, arena + p->loss, cu.train_arena + (RtCuPtr)p->loss, sizeof(float), err,
                         sizeof err);
  return s == RT_OK ? RP_OK : device_error(p, err);
}

int rt_cuda_prog_download_params(const RtProg *p, void *const *ext) {
  char err[1024];
  RtStatus s = RT_OK;
  for (int i = 0; i < p->n_params && s == RT_OK; i++) {
    const RtProgTensor *t = &p->params[i];
    s = rt_cuda_download(cu.dev, ext[t->slot], cu.ext[t->slot], rt_prog_bytes(t), err, sizeof err);
  }
  return s == RT_OK ? RP_OK : device_error(p, err);
}

void rt_cuda_prog_close(void) {
  rt_cuda_unload(cu.m_infer);
  rt_cuda_unload(cu.m_prep);
  rt_cuda_unload(cu.m_train);
  for (int i = 0; cu.ext && i < cu.n_ext; i++) rt_cuda_free(cu.dev, cu.ext[i]);
  if (cu.arena) rt_cuda_free(cu.dev, cu.arena);
  if (cu.train_arena) rt_cuda_free(cu.dev, cu.train_arena);
  rt_cuda_close(cu.dev);
  Step *steps[] = {&cu.prep, &cu.infer, &cu.train};
  for (int k = 0; k < 3; k++) {
    for (int i = 0; steps[k]->ls && i < steps[k]->n; i++) free((void *)steps[k]->ls[i].args);
    free(steps[k]->ls);
  }
  free(cu.ext);
  free(cu.text);
  memset(&cu, 0, sizeof cu);
}

void rt_cuda_prog_help(const RtProg *p) {
  char list[256] = "its kernels";
  if (parse_table(p) == RP_OK) describe(list, sizeof list);
  printf("\nRuns on CUDA device 0: it needs an NVIDIA GPU and its driver (libcuda.so.1);\n"
         "without them it stops with \"no CUDA device found\" (exit 1).\n"
         "Built in: %s (a GPU of a newer architecture\n"
         "compiles the PTX when the program starts).\n",
         list);
}
