/*
 * test_cuda_rt.c: the CUDA runtime (runtime/rt_cuda.c) without a GPU.
 *
 *  1. no driver: a library that is not there, a library without the
 *     driver's functions, and (when the toolkit has one) the toolkit's stub
 *     libcuda.so, whose cuInit fails: "no CUDA device found (REASON)";
 *  2. the grid every launch gets (rt_cuda_grid);
 *  3. a fake driver (tests/fake_cuda.c: host memory, the host emulator's
 *     kernels as the "module"): a training step of mlp runs through
 *     rt_cuda_open, rt_cuda_load, rt_cuda_alloc/upload, rt_cuda_run and
 *     rt_cuda_download, and its arena must be kir_eval's bit for bit; then
 *     the errors: a kernel the module lacks, a launch that fails (named).
 * What a real driver and GPU do beyond the driver API's contract is not
 * tested here.
 */
#include <math.h>

#include "cuda_helpers.h"
#include "program.h"

static RtStatus open_with(const char *lib, RtCuda **d, char *err, size_t n) {
  setenv("KILN_LIBCUDA", lib, 1);
  RtStatus s = rt_cuda_open(0, d, err, n);
  unsetenv("KILN_LIBCUDA");
  return s;
}

static void no_driver(void **state) {
  RtCuda *d = (RtCuda *)1;
  char err[512];
  assert_int_equal(open_with("/nonexistent/libcuda.so.1", &d, err, sizeof err), RT_ERR_NOTFOUND);
  assert_null(d);
  assert_non_null(strstr(err, "no CUDA device found (/nonexistent/libcuda.so.1: cannot open"));
  assert_int_equal(open_with("libm.so.6", &d, err, sizeof err), RT_ERR_NOTFOUND);
  assert_string_equal(err, "no CUDA device found (the CUDA driver has no cuInit)");
#ifdef KILN_CUDA_STUB
  if (access(KILN_CUDA_STUB, R_OK) == 0) {
    assert_int_equal(open_with(KILN_CUDA_STUB, &d, err, sizeof err), RT_ERR_NOTFOUND);
    assert_non_null(strstr(err, "no CUDA device found (cuInit: CUDA_ERROR_STUB_LIBRARY"));
  }
#endif
  rt_cuda_close(NULL);
}

static void grid(void **state) {
  unsigned g, b;
  rt_cuda_grid(1, 256, 64, &g, &b); /* a one-thread part */
  assert_true(g == 1 && b == 1);
  rt_cuda_grid(1000, 256, 64, &g, &b);
  assert_true(g == 4 && b == 256);
  rt_cuda_grid(1000000, 256, 64, &g, &b); /* the grid-stride loop does the rest */
  assert_true(g == 64 && b == 256);
  rt_cuda_grid(-1, 256, 64, &g, &b); /* a count only known on the device */
  assert_true(g == 64 && b == 256);
  rt_cuda_grid(2, 256, 64, &g, &b);
  assert_true(g == 1 && b == 256);
}

static float frand(uint64_t *s, float lo, float hi) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * (float)((*s >> 40) * 0x1.0p-24);
}

/* mlp's training step (batch 4) through the runtime on the fake driver. */
static void fake_device(void **state) {
  char err[1024];
  RtCuda *d;
  if (open_with(FAKE_CUDA_LIB, &d, err, sizeof err) != RT_OK)
    fail_msg("%s", err);
  assert_string_equal(rt_cuda_name(d), "kiln fake device");
  assert_int_equal(rt_cuda_arch(d), 80);
  char *text = read_model("mlp.kiln");
  const char *defs[] = {"N=4"};
  Compiled c = compile_opts(text, true, defs, 1);
  free(text);
  MUST_COMPILE(c);
  Graph *g = c.g;
  int n;
  Node **roots = kt_step_roots(&c, true, &n);
  Plan p;
  plan_build(g, roots, n, &(PlanOpts){0}, &p);
  /* extern slots: the step counter, then the parameters; host and device copies */
  int *slot = arena_alloc(c.a, sizeof(int) * (size_t)(g->n_nodes + 1)), np = 0;
  void **host = arena_alloc(c.a, sizeof(void *) * (size_t)(g->n_nodes + 2));
  RtCuPtr *dev = arena_alloc(c.a, sizeof(RtCuPtr) * (size_t)(g->n_nodes + 2));
  int64_t counter = 3;
  host[0] = &counter;
  assert_int_equal(rt_cuda_alloc(d, 8, &dev[0], err, sizeof err), RT_OK);
  assert_int_equal(rt_cuda_upload(d, dev[0], &counter, 8, err, sizeof err), RT_OK);
  uint64_t seed = 5;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op != OP_PARAM || p.time[i] < 0)
      continue;
    slot[i] = ++np;
    size_t bytes = (size_t)node_bytes(v);
    host[np] = arena_alloc(c.a, bytes + 4);
    if (strstr(v->name, ".exp_avg_sq"))
      for (int64_t j = 0; j < shape_numel(&v->shape); j++)
        ((float *)host[np])[j] = frand(&seed, 0.01f, 0.5f);
    else if (strcmp(v->name, "train.step") == 0)
      *(float *)host[np] = 3;
    else if (strcmp(v->name, "train.lr") == 0)
      *(float *)host[np] = 0.01f;
    else
      param_init_fill(v, 7, host[np]);
    assert_int_equal(rt_cuda_alloc(d, bytes, &dev[np], err, sizeof err), RT_OK);
    assert_int_equal(rt_cuda_upload(d, dev[np], host[np], bytes, err, sizeof err), RT_OK);
  }
  CgCall *calls = arena_alloc(c.a, sizeof(CgCall) * (size_t)(p.n_order + 1));
  int nc, nl;
  RtCuLaunch *ls;
  CuSrc *s = cu_new("mlp");
  if (!program_calls(g, &p, slot, calls, &nc, err, sizeof err) ||
      !cu_step(s, calls, nc, c.a, &ls, &nl, err, sizeof err))
    fail_msg("%s", err);
  Emu e;
  emu_build(&e, s);
  /* the arena: NaN but for the inputs; the same start for kir_eval */
  size_t bytes = (size_t)p.arena;
  char *want = malloc(bytes), *got = malloc(bytes);
  memset(want, 0xff, bytes);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op != OP_INPUT || p.time[i] < 0 || p.offset[i] < 0)
      continue;
    for (int64_t j = 0; j < shape_numel(&v->shape); j++)
      if (v->dtype == DT_F32)
        ((float *)(want + p.offset[i]))[j] = frand(&seed, -2, 2);
      else
        ((int32_t *)(want + p.offset[i]))[j] = (int32_t)(frand(&seed, 0, 9.99f));
  }
  RtCuPtr arena;
  RtCuModule *m;
  assert_int_equal(rt_cuda_alloc(d, bytes, &arena, err, sizeof err), RT_OK);
  assert_int_equal(rt_cuda_upload(d, arena, want, bytes, err, sizeof err), RT_OK);
  if (rt_cuda_load(d, e.lib_path, ls, nl, &m, err, sizeof err) != RT_OK)
    fail_msg("%s", err);
  for (int sync = 0; sync < 2; sync++) /* twice, on the step's own leftovers */
    if (rt_cuda_run(m, arena, dev, sync, err, sizeof err) != RT_OK)
      fail_msg("%s", err);
  kir_step(calls, nc, want, host);
  kir_step(calls, nc, want, host);
  assert_int_equal(rt_cuda_download(d, got, arena, bytes, err, sizeof err), RT_OK);
  assert_memory_equal(got, want, bytes);
  /* a failing launch is named, with and without a wait after each */
  setenv("FAKE_CUDA_FAIL", ls[nl / 2].fn, 1);
  assert_int_equal(rt_cuda_run(m, arena, dev, false, err, sizeof err), RT_ERR_IO);
  unsetenv("FAKE_CUDA_FAIL");
  char want_err[512];
  snprintf(want_err, sizeof want_err, "kernel %s: CUDA_ERROR_LAUNCH_FAILED: unspecified launch "
           "failure", ls[nl / 2].fn);
  assert_string_equal(err, want_err);
  rt_cuda_unload(m);
  /* a module without one of the step's functions */
  RtCuLaunch bad = ls[0];
  bad.fn = "no_such_kernel";
  assert_int_equal(rt_cuda_load(d, e.lib_path, &bad, 1, &m, err, sizeof err), RT_ERR_IO);
  assert_string_equal(err, "kernel no_such_kernel: CUDA_ERROR_NOT_FOUND: fake error");
  assert_int_equal(rt_cuda_load(d, "/nonexistent.so", ls, nl, &m, err, sizeof err), RT_ERR_IO);
  assert_non_null(strstr(err, "loading the CUDA module"));
  for (int i = 0; i <= np; i++)
    rt_cuda_free(d, dev[i]);
  rt_cuda_free(d, arena);
  rt_cuda_close(d);
  free(want), free(got);
  emu_free(&e);
  cu_free(s);
  compiled_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(no_driver),
      cmocka_unit_test(grid),
      cmocka_unit_test(fake_device),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
