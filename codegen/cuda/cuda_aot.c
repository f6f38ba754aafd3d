/*
 * cuda_aot.c: the device part of a program built by `kiln build --target
 * cuda` (cuda_aot.h): aot.c's kernel calls as one CUDA module with its
 * launch lists, NVRTC's images, and the assembly file that puts them, the
 * manifest and the parameters into the program.
 *
 * The launch lists come from cu_step on aot.c's own calls, so the device
 * runs exactly the plan (arena offsets) and the extern slots that the
 * manifest describes: the runtime (runtime/rt_cuda_main.c) needs nothing
 * else to allocate device memory and launch.
 *
 * tests/gpu.sh runs such a program on an H100 (its sm_90 CUBIN; the PTX
 * has not been loaded by a real driver); tests/cuda_build.sh runs the
 * programs on tests/fake_cuda.c with the embedded source as the image.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_aot.h"
#include "cuda_program.h"
#include "rt_data.h"

enum { BLOB_ALIGN = 64 };

bool cu_aot_compile(CuAot *ca, Aot *a, const CuTargets *t, char *err, size_t errlen,
                    char **report) {
  memset(ca, 0, sizeof *ca);
  if (report)
    *report = NULL;
  ca->src = cu_new(a->model);
  if (!ca->src) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  if (a->n_prep_calls &&
      !cu_step(ca->src, a->prep_calls, a->n_prep_calls, a->arena, &ca->prep, &ca->n_prep, err,
               errlen))
    return false;
  if (!cu_step(ca->src, a->infer.calls, a->infer.n_calls, a->arena, &ca->infer, &ca->n_infer,
               err, errlen))
    return false;
  if (a->has_train && !cu_step(ca->src, a->train.calls, a->train.n_calls, a->arena, &ca->train,
                               &ca->n_train, err, errlen))
    return false;
  if (!t->n_archs && !t->ptx_arch) {
    snprintf(err, errlen, "--arch names no architecture to compile for");
    return false;
  }
  if (!cu_nvrtc_compile(cu_text(ca->src), a->model, t, &ca->im, err, errlen, report))
    return false;
  ca->nvrtc_seconds = ca->im.seconds;
  return true;
}

/* --- the files ------------------------------------------------------------------------ */

static bool write_pieces(const char *path, const void *const *pieces, size_t *lens, int n,
                         char *err, size_t errlen) {
  return rt_write_file_atomic(path, pieces, lens, n, err, errlen) == RT_OK;
}

/* path written, remembered for removal. */
static char *track(CuAot *ca, const char *base, const char *ext) {
  size_t n = strlen(base) + strlen(ext) + 1;
  char *p = malloc(n);
  if (!p)
    return NULL;
  snprintf(p, n, "%s%s", base, ext);
  ca->files[ca->n_files++] = p;
  return p;
}

/* One launch list as `step NAME N` and its `launch` lines. */
static void print_step(FILE *f, const char *name, const RtCuLaunch *ls, int n) {
  fprintf(f, "step %s %d\n", name, n);
  for (int i = 0; i < n; i++) {
    fprintf(f, "launch %s %lld %d %d", ls[i].fn, (long long)ls[i].threads, ls[i].block,
            ls[i].n_args);
    for (int k = 0; k < ls[i].n_args; k++)
      fprintf(f, " %c%lld", ls[i].args[k].base == RT_CU_ARENA ? 'a' : 'e',
              (long long)ls[i].args[k].at);
    fputc('\n', f);
  }
}

static size_t aligned(size_t v) { return (v + BLOB_ALIGN - 1) / BLOB_ALIGN * BLOB_ALIGN; }

/* The images (NVRTC's, then the source) laid out in the blob; the table's
 * `image` lines in f.  Returns the blob (malloc'ed) and its size. */
static char *layout_blob(CuAot *ca, FILE *f, size_t *len) {
  const char *src = cu_text(ca->src);
  size_t src_len = strlen(src) + 1, total = 0;
  for (int i = 0; i < ca->im.n; i++)
    total += aligned(ca->im.images[i].size);
  total += aligned(src_len);
  char *blob = calloc(1, total ? total : 1);
  if (!blob)
    return NULL;
  size_t at = 0;
  for (int i = 0; i < ca->im.n; i++) {
    const CuImage *g = &ca->im.images[i];
    memcpy(blob + at, g->data, g->size);
    fprintf(f, "image %s %d %zu %zu\n", g->ptx ? "ptx" : "cubin", g->arch, at, g->size);
    at += aligned(g->size);
  }
  memcpy(blob + at, src, src_len);
  fprintf(f, "image source 0 %zu %zu\n", at, src_len);
  *len = total;
  return blob;
}

/* kiln_cuda's text and kiln_cuda_blob, into their files. */
static bool write_device(CuAot *ca, const char *table_path, const char *blob_path, char *err,
                         size_t errlen) {
  char *text = NULL, *blob;
  size_t text_len = 0, blob_len = 0;
  FILE *f = open_memstream(&text, &text_len);
  if (!f) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  fprintf(f, "kiln-cuda 1\n");
  blob = layout_blob(ca, f, &blob_len);
  print_step(f, "prepare", ca->prep, ca->n_prep);
  print_step(f, "infer", ca->infer, ca->n_infer);
  if (ca->train)
    print_step(f, "train", ca->train, ca->n_train);
  fprintf(f, "end\n");
  fclose(f);
  bool ok = text && blob;
  if (!ok)
    snprintf(err, errlen, "out of memory");
  size_t tl = text_len + 1; /* with its NUL */
  const void *tp[] = {text}, *bp[] = {blob};
  ok = ok && write_pieces(table_path, tp, &tl, 1, err, errlen) &&
       write_pieces(blob_path, bp, &blob_len, 1, err, errlen);
  free(text);
  free(blob);
  return ok;
}

/* A symbol whose bytes are a file's (then `nul` more zero bytes). */
static void asm_symbol(FILE *f, const char *name, const char *path, int nul) {
  fprintf(f, "\t.globl %s\n\t.type %s,@object\n\t.p2align 6\n%s:\n\t.incbin \"", name, name,
          name);
  aot_asm_string(f, path);
  fputs("\"\n", f);
  if (nul)
    fputs("\t.byte 0\n", f);
  fprintf(f, "\t.size %s, .-%s\n", name, name);
}

bool cu_aot_write_asm(CuAot *ca, const Aot *a, const char *base, char *err, size_t errlen) {
  char *man = track(ca, base, ".manifest"), *table = track(ca, base, ".cuda"),
       *blob = track(ca, base, ".blob");
  const char *params = a->params_file;
  if (!man || !table || !blob || (!params && !(params = track(ca, base, ".params")))) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  size_t man_len = strlen(a->manifest);
  const void *mp[] = {a->manifest}, *pp[] = {a->blob};
  if (!write_pieces(man, mp, &man_len, 1, err, errlen))
    return false;
  if (!a->params_file) { /* the values, or one byte when the program draws them */
    size_t params_len = a->params_stored && a->params_bytes ? (size_t)a->params_bytes : 1;
    if (!write_pieces(params, pp, &params_len, 1, err, errlen))
      return false;
  }
  if (!write_device(ca, table, blob, err, errlen))
    return false;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f || !(ca->asm_path = malloc(strlen(base) + 3))) {
    if (f)
      fclose(f);
    free(text);
    snprintf(err, errlen, "out of memory");
    return false;
  }
  fputs("\t.section .rodata.kiln,\"a\",@progbits\n", f);
  asm_symbol(f, "kiln_manifest", man, 1);
  asm_symbol(f, "kiln_params", params, 0);
  asm_symbol(f, "kiln_cuda", table, 0);
  asm_symbol(f, "kiln_cuda_blob", blob, 0);
  fputs("\t.section .note.GNU-stack,\"\",@progbits\n", f);
  fclose(f);
  sprintf(ca->asm_path, "%s.s", base);
  const void *sp[] = {text};
  bool ok = write_pieces(ca->asm_path, sp, &len, 1, err, errlen);
  free(text);
  return ok;
}

void cu_aot_describe(const CuAot *ca, char *buf, size_t n) {
  size_t at = 0;
  int cubins = 0;
  buf[0] = '\0';
  for (int i = 0; i < ca->im.n && at < n; i++)
    if (!ca->im.images[i].ptx) {
      at += (size_t)snprintf(buf + at, n - at, "%ssm_%d", at ? ", " : "", ca->im.images[i].arch);
      cubins++;
    }
  if (cubins && at < n)
    at += (size_t)snprintf(buf + at, n - at, " CUBIN%s", cubins > 1 ? "s" : "");
  for (int i = 0; i < ca->im.n && at < n; i++)
    if (ca->im.images[i].ptx)
      at += (size_t)snprintf(buf + at, n - at, "%scompute_%d PTX", at ? " and " : "",
                             ca->im.images[i].arch);
}

void cu_aot_free(CuAot *ca) {
  for (int i = 0; i < ca->n_files; i++) {
    remove(ca->files[i]);
    free(ca->files[i]);
  }
  if (ca->asm_path)
    remove(ca->asm_path);
  free(ca->asm_path);
  cu_images_free(&ca->im);
  cu_free(ca->src);
  memset(ca, 0, sizeof *ca);
}
