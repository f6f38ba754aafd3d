/*
 * test_cuda_nvrtc.c: the CUDA backend's source compiled by NVRTC, without
 * a GPU (codegen/cuda/cuda_nvrtc.h):
 *
 *  1. a small module compiles for the default targets: ELF CUBINs for sm_80
 *     and sm_90, PTX for compute_80 that names every kernel function;
 *  2. a source NVRTC rejects gives a one-sentence error and a report with
 *     NVRTC's log and the source with line numbers;
 *  3. --arch lists parse, bad ones are errors;
 *  4. every model of models/ at kt_small_consts' sizes, inference and
 *     training step, compiles: one module per step (its kernels with
 *     identical code merged, as kiln builds it), every target; the times
 *     are printed.  KILN_NVRTC_MODELS=name,name limits it to those model
 *     files (for a quick local run); a sanitizer build compiles a few
 *     (KILN_NVRTC_SUBSET: NVRTC's own code is not instrumented, so all of
 *     them would only double the run's time).
 *
 * Built only when CMake found the CUDA toolkit.  Runtime correctness of
 * the kernels is test_cuda's (the host emulator); running them on a GPU is
 * not tested here (no GPU).
 */
#include "cuda_nvrtc.h"
#include "cuda_program.h"
#include "kiln_test.h"
#include "program.h"

/* tanh(fma(x, 2, 1)) over a flat loop, x * x + 1 (which --fmad=false must
 * keep two roundings), and a one-thread kernel. */
static CuSrc *small_module(Arena *a) {
  CuSrc *s = cu_new("small");
  char err[512];
  Kernel *k = kir_new(a, "twice_plus_one", NULL);
  int x = kir_buf(k, "x", KT_F32, 100, KB_IN, 0), y = kir_buf(k, "y", KT_F32, 100, KB_OUT, 1);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, ke_idx(k, 100), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *v = ke_fma(k, ke_load(k, x, ke_var(k, i)), ke_f32(k, 2), ke_f32(k, 1));
  ks_add(k, l, ks_store(k, y, ke_var(k, i), ke_unary(k, KO_TANH, v)));
  assert_true(cu_kernel(s, k, err, sizeof err));
  k = kir_new(a, "mul_add", NULL);
  x = kir_buf(k, "x", KT_F32, 100, KB_IN, 0), y = kir_buf(k, "y", KT_F32, 100, KB_OUT, 1);
  i = kir_var(k, "i", KT_IDX);
  l = ks_loop(k, i, ke_idx(k, 100), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *xi = ke_load(k, x, ke_var(k, i));
  ks_add(k, l, ks_store(k, y, ke_var(k, i), ke_binary(k, KO_ADD, ke_binary(k, KO_MUL, xi, xi),
                                                      ke_f32(k, 1))));
  assert_true(cu_kernel(s, k, err, sizeof err));
  k = kir_new(a, "first", NULL);
  x = kir_buf(k, "x", KT_F32, 100, KB_IN, 0), y = kir_buf(k, "y", KT_F32, 1, KB_OUT, 1);
  ks_add(k, k->body, ks_store(k, y, ke_idx(k, 0), ke_load(k, x, ke_idx(k, 0))));
  assert_true(cu_kernel(s, k, err, sizeof err));
  return s;
}

static void small(void **state) {
  assert_true(cu_nvrtc_available());
  Arena *a = arena_new();
  CuSrc *s = small_module(a);
  CuImages im;
  char err[1024], *report;
  if (!cu_nvrtc_compile(cu_text(s), "small", &CU_NVRTC_DEFAULT, &im, err, sizeof err, &report))
    fail_msg("%s\n%s", err, report ? report : "");
  assert_int_equal(im.n, 3);
  int seen = 0;
  for (int i = 0; i < im.n; i++) {
    CuImage *g = &im.images[i];
    if (g->ptx) {
      assert_int_equal(g->arch, 80);
      assert_non_null(strstr(g->data, ".target sm_80"));
      assert_non_null(strstr(g->data, ".entry twice_plus_one("));
      assert_non_null(strstr(g->data, ".entry first("));
      const char *ma = strstr(g->data, ".entry mul_add(");
      assert_non_null(ma);
      char *end = strstr(ma + 1, ".entry");
      if (end)
        *end = '\0';
      assert_non_null(strstr(ma, "mul.rn.f32")); /* not contracted into an fma */
      assert_null(strstr(ma, "fma.rn.f32"));
      seen |= 4;
    } else {
      assert_memory_equal(g->data, "\x7f" "ELF", 4);
      seen |= g->arch == 80 ? 1 : g->arch == 90 ? 2 : 0;
    }
  }
  assert_int_equal(seen, 7);
  print_message("  small module: %.2f s\n", im.seconds);
  cu_images_free(&im);
  cu_free(s);
  arena_free(a);
}

static void rejected(void **state) {
  const char *bad = "extern \"C\" __global__ void k(float *y) {\n  y[0] = undefined_name;\n}\n";
  CuImages im;
  char err[1024], *report;
  assert_false(cu_nvrtc_compile(bad, "bad.cu", &CU_NVRTC_DEFAULT, &im, err, sizeof err, &report));
  assert_non_null(strstr(err, "NVRTC could not compile bad.cu for sm_80"));
  assert_non_null(report);
  assert_non_null(strstr(report, "undefined_name"));
  assert_non_null(strstr(report, "    2    y[0] = undefined_name;")); /* numbered source */
  assert_int_equal(im.n, 0);
  free(report);
}

static void targets(void **state) {
  CuTargets t;
  char err[256];
  assert_true(cu_targets_parse("sm_75,90,compute_70", &t, err, sizeof err));
  assert_int_equal(t.n_archs, 2);
  assert_int_equal(t.archs[0], 75);
  assert_int_equal(t.archs[1], 90);
  assert_int_equal(t.ptx_arch, 70);
  assert_false(cu_targets_parse("sm_80,gfx90a", &t, err, sizeof err));
  assert_non_null(strstr(err, "'gfx90a' is not an architecture"));
  assert_false(cu_targets_parse("", &t, err, sizeof err));
}

static double total_s;
static int n_modules;

/* The model files to compile: KILN_NVRTC_MODELS if set, else in a
 * sanitizer build (KILN_NVRTC_SUBSET: NVRTC is not instrumented, and the
 * normal build compiles them all) a few, else all. */
static const char *subset(void) {
  const char *only = getenv("KILN_NVRTC_MODELS");
#ifdef KILN_NVRTC_SUBSET
  if (!only)
    only = KILN_NVRTC_SUBSET;
#endif
  return only && *only ? only : NULL;
}

static bool wanted(const char *file) {
  const char *only = subset();
  if (!only)
    return true;
  size_t n = strlen(file) - 5; /* without .kiln */
  for (const char *p = only; *p;) {
    size_t w = strcspn(p, ",");
    if (w == n && strncmp(p, file, n) == 0)
      return true;
    p += w + (p[w] == ',');
  }
  return false;
}

static void model_step(Graph *g, Node **roots, int n, const char *file, bool train,
                       const char *what) {
  if (!wanted(file))
    return;
  Plan p;
  plan_build(g, roots, n, &(PlanOpts){0}, &p);
  int *slot = arena_alloc(g->arena, sizeof(int) * (size_t)(g->n_nodes + 1));
  for (int i = 0, k = 1; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM)
      slot[i] = k++;
  CgCall *calls = arena_alloc(g->arena, sizeof(CgCall) * (size_t)(p.n_order + 1));
  int nc, nl;
  RtCuLaunch *ls;
  char err[2048], *report;
  CuSrc *s = cu_new(what);
  if (!program_calls(g, &p, slot, calls, &nc, err, sizeof err) ||
      !cu_step(s, calls, nc, g->arena, &ls, &nl, err, sizeof err))
    fail_msg("%s: %s", what, err);
  const char *text = cu_text(s);
  CuImages im;
  if (!cu_nvrtc_compile(text, what, &CU_NVRTC_DEFAULT, &im, err, sizeof err, &report)) {
    fprintf(stderr, "%s", report ? report : "");
    fail_msg("%s: %s", what, err);
  }
  assert_int_equal(im.n, 3);
  int functions = 0, lines = 0;
  for (const char *q = text; (q = strstr(q, "__global__ void ")); q++)
    functions++;
  for (const char *q = text; *q; q++)
    lines += *q == '\n';
  print_message("  %-34s %4d kernels, %4d functions, %6d lines: %6.2f s\n", what, nc, functions,
                lines, im.seconds);
  total_s += im.seconds;
  n_modules++;
  cu_images_free(&im);
  cu_free(s);
}

static void every_model(void **state) {
  if (subset())
    print_message("  only the models %s (KILN_NVRTC_MODELS, or a sanitizer build's subset; "
                  "the normal build compiles every model)\n", subset());
  kt_every_model_step(model_step);
  print_message("  %d modules compiled for sm_80, sm_90 and compute_80 in %.1f s\n", n_modules,
                total_s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(small),
      cmocka_unit_test(rejected),
      cmocka_unit_test(targets),
      cmocka_unit_test(every_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
