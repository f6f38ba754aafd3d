/*
 * cuda_emit.c: a Kernel as CUDA C functions, and the module around them
 * (cuda_emit.h says what a module holds and how its kernels launch).
 *
 * A kernel's top-level statements (nested blocks flattened) are cut into
 * parts: each parallel loop is a part (preceded by the cheap local
 * definitions it needs, which every thread computes), and each run of other
 * statements is a part run by one thread.  A part is a function; a kernel of
 * one part takes the kernel's name, else NAME_part0, NAME_part1, ...
 *
 * The parallel loop of a part is a grid-stride loop.  Loops perfectly
 * nested in it (the only statement of the body of the one around) join its
 * iteration space when their iterations are independent too: KL_PARALLEL
 * and KL_VECTOR ones that assign no outer local, and KL_SERIAL ones whose
 * written buffers are each accessed at one index, affine in the loop
 * variables with a nonzero coefficient on the loop's own (cuda_stmt.c).
 * The flat index runs over the nest row-major, so consecutive threads take
 * consecutive innermost iterations: for lowering's row-major loop nests,
 * neighbouring threads touch neighbouring elements (coalesced).  Everything
 * inside (reductions, inner loops) runs in order in one thread, as
 * kir_eval runs it, so results are its bits.
 *
 * A serial loop at the top level whose nest ends in an independent loop
 * (cu_interchange: every buffer written at one affine index, the inner
 * loop's coefficient larger than all the serial loops can add) runs with
 * that loop as the grid-stride loop and the serial loops inside each
 * thread: each element gets the same operations in the same order as in
 * kir_eval, from one thread.
 *
 * Kernels with a schedule of their own, one function each, launched in
 * blocks of exactly CU_GEMM_THREADS threads (CuLaunch.block):
 *   - matmul and conv2d, and fused kernels led by one (Kernel.head): the
 *     head is a GEMM tiled through shared memory with register blocking
 *     (cuda_gemm.c).  The epilogue, when it is one parallel loop over C's
 *     elements storing nothing that may be the GEMM's operands' memory
 *     (epi_fits), runs in the same function at each element as its tile
 *     stores it (Part.epi); otherwise it is cut into parts as above,
 *     launched after the GEMM;
 *   - f32 sums and means over trailing axes with rows of 64 or more
 *     (cuda_reduce.c): warp-shuffle reductions, in kir_eval's order, or
 *     reassociated (a block per row) after cu_reassociate.
 * Both keep kir_eval's bits (the reassociated sums excepted).
 *
 * Kernels with the same code: each kernel is first printed with positional
 * names (buffers kiln_bN, variables kiln_vN, functions kiln_fN); when that
 * text equals an earlier kernel's, the kernel's launches are the earlier
 * one's functions and only a comment is printed.
 *
 * A local set by one part and read by another lives in a static __device__
 * variable named kiln_g_KERNEL_VAR between the launches (launches on one
 * stream run in order, and each sees the memory effects of the ones
 * before).  A local declared inside a parallel loop and read after it is an
 * error, as is a parallel loop assigning a local declared outside it.
 *
 * The emitted code stays within this subset of CUDA C++, which
 * tests/cuda_emu.h defines for running it on the host (so keep it so):
 *   - `extern "C" __global__ void` functions with pointer parameters
 *     (`__launch_bounds__(N)` before the name of those launched with
 *     fixed-size blocks), and `static __device__ __forceinline__` helper
 *     functions (overloaded on float, int and long long);
 *   - `static __device__` variables of scalar types;
 *   - threadIdx.x, blockIdx.x, blockDim.x, gridDim.x (one dimension);
 *   - float, int, long long, bool and unsigned arithmetic, local arrays of
 *     constant size, casts, ?:, if, for, return; __int_as_float; __trap;
 *   - the f32 functions fabsf sqrtf floorf fmaf logf sinf cosf log1pf powf;
 *   - in fixed-size-block functions only (cuda_gemm.c, cuda_reduce.c):
 *     `__shared__` arrays of float and bool declared at the function's
 *     top, __syncthreads() reached by every thread of the block (block-
 *     uniform loops), and __shfl_down_sync(0xffffffffu, float, int)
 *     reached by all 32 lanes of the warp.
 * No atomics, no other warp intrinsics, no dynamic shared memory.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

struct CuSrc {
  Arena *a;
  const char *module;
  Sb kernels; /* every kernel's text, in order */
  Sb text;    /* cu_text's: header, prelude, kernels */
  CuKernel *ks;
  int n_ks, cap_ks;
  /* per kernel: its code with positional names, that text's hash, and the
   * kernel whose functions run it (itself, or an earlier twin) */
  char **key;
  uint64_t *hash;
  int *code_of;
  bool reassociate; /* cu_reassociate */
};

CuSrc *cu_new(const char *module) {
  Arena *a = arena_new();
  CuSrc *s = arena_alloc(a, sizeof *s);
  s->a = a;
  s->module = arena_strdup(a, module);
  return s;
}

void cu_free(CuSrc *s) {
  if (!s)
    return;
  sb_free(&s->kernels);
  sb_free(&s->text);
  arena_free(s->a);
}

const CuKernel *cu_find(const CuSrc *s, const char *name) {
  for (int i = 0; i < s->n_ks; i++)
    if (strcmp(s->ks[i].k->name, name) == 0)
      return &s->ks[i];
  return NULL;
}

int cu_n_kernels(const CuSrc *s) { return s->n_ks; }

void cu_reassociate(CuSrc *s, bool on) { s->reassociate = on; }

const CuKernel *cu_kernel_at(const CuSrc *s, int i) { return &s->ks[i]; }

static bool fn_taken(const CuSrc *s, const char *fn) {
  for (int i = 0; i < s->n_ks; i++)
    for (int j = 0; j < s->ks[i].n_launches; j++)
      if (strcmp(s->ks[i].launches[j].fn, fn) == 0)
        return true;
  return false;
}

const char *cu_text(CuSrc *s) {
  s->text.len = 0;
  if (s->text.s)
    s->text.s[0] = '\0';
  sb_printf(&s->text,
            "/*\n * CUDA C for %s, generated by kiln (codegen/cuda) from its Kernel IR.\n"
            " * Compile with NVRTC and --fmad=false --ftz=false --prec-div=true\n"
            " * --prec-sqrt=true: the results are then kiln's reference bits (see\n"
            " * codegen/cuda/cuda_emit.h for the exceptions).  A kernel's functions are\n"
            " * launched in order, each with the kernel's buffers as its arguments.\n */\n",
            s->module);
  sb_puts(&s->text, cu_prelude());
  if (s->kernels.s)
    sb_puts(&s->text, s->kernels.s);
  return s->text.s;
}

/* --- names ------------------------------------------------------------------------ */

static const char *const reserved[] = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
    "case", "catch", "char", "char16_t", "char32_t", "char8_t", "class", "compl", "concept",
    "const", "consteval", "constexpr", "constinit", "const_cast", "continue", "co_await",
    "co_return", "co_yield", "decltype", "default", "delete", "do", "double", "dynamic_cast",
    "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto",
    "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
    "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register",
    "reinterpret_cast", "requires", "restrict", "return", "short", "signed", "sizeof", "static",
    "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local",
    "throw", "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using",
    "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
    /* CUDA, the math library, what a host compiler may define */
    "threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "dim3", "uint3", "std", "main",
    "fabsf", "sqrtf", "floorf", "fmaf", "logf", "sinf", "cosf", "log1pf", "powf", "expf",
    "tanhf", "erff", "isnan", "isinf", "abs", "min", "max", "assert", "printf", "NULL",
    "errno", "signbit", "nan", "nanf", "exp", "log", "sin", "cos", "sqrt", "pow", "floor",
    "fabs", "fma", "tanh", "erf", "log1p", "round", "ceil", "trunc", "unix", "linux"};

static bool is_reserved(const char *s) {
  if (strncmp(s, "kiln_", 5) == 0 || strncmp(s, "KILN_", 5) == 0 || strncmp(s, "__", 2) == 0 ||
      (s[0] == '_' && s[1] >= 'A' && s[1] <= 'Z'))
    return true;
  for (int i = 0; i < countof(reserved); i++)
    if (strcmp(s, reserved[i]) == 0)
      return true;
  return false;
}

/* name with every character that cannot be in a C identifier made '_'. */
static char *ident(Arena *a, const char *name) {
  char *s = arena_fmt(a, "%s%s", name[0] >= '0' && name[0] <= '9' ? "v" : "",
                      name[0] ? name : "v");
  for (char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
      *p = '_';
  return s;
}

/* Variables: their names (kir_var numbers them), unless reserved or equal
 * to another's: then NAME_N.  Buffers: their names, unless reserved, equal
 * to a variable's or an earlier buffer's: then kiln_bN. */
static void name_things(Arena *a, Em *m) {
  const Kernel *k = m->k;
  for (int v = 0; v < k->n_vars; v++) {
    const char *s = ident(a, k->vars[v].name);
    bool ok = !is_reserved(s);
    for (int w = 0; w < k->n_vars && ok; w++)
      ok = w == v || strcmp(k->vars[v].name, k->vars[w].name) != 0;
    m->var[v] = ok ? s : arena_fmt(a, "%s_%d", s, v);
  }
  for (int v = 0; v < k->n_vars; v++) /* a NAME_N equal to another's plain name */
    for (int w = 0; w < k->n_vars; w++)
      if (w != v && strcmp(m->var[v], m->var[w]) == 0)
        m->var[v] = arena_fmt(a, "kiln_v%d", v);
  for (int b = 0; b < k->n_bufs; b++) {
    const char *s = ident(a, k->bufs[b].name);
    bool ok = !is_reserved(s);
    for (int v = 0; v < k->n_vars && ok; v++)
      ok = strcmp(s, m->var[v]) != 0;
    for (int c = 0; c < b && ok; c++)
      ok = strcmp(s, m->buf[c]) != 0;
    m->buf[b] = ok ? s : arena_fmt(a, "kiln_b%d", b);
  }
}

/* --- the kernel's variables ------------------------------------------------------- */

static void count_expr(Em *m, const KExpr *e) {
  if (!e)
    return;
  if (e->kind == KE_VAR)
    m->n_mentions[e->var]++;
  count_expr(m, e->a);
  count_expr(m, e->b);
  count_expr(m, e->c);
}

/* Counts each variable's mentions and declarations; sets[v] its KS_SETs;
 * def[v] its last KS_DECL's value for now. */
static void count_stmt(Em *m, const KStmt *s, int *sets) {
  count_expr(m, s->extent);
  count_expr(m, s->index);
  count_expr(m, s->value);
  count_expr(m, s->cond);
  if (s->kind == KS_LOOP || s->kind == KS_DECL || s->kind == KS_SET)
    m->n_mentions[s->var]++;
  if (s->kind == KS_DECL) {
    m->n_decls[s->var]++;
    m->def[s->var] = s->value;
  }
  if (s->kind == KS_SET)
    sets[s->var]++;
  for (int i = 0; i < s->n_body; i++)
    count_stmt(m, s->body[i], sets);
}

static void em_init(Em *m, Arena *a, const Kernel *k) {
  size_t nv = (size_t)k->n_vars + 1, nb = (size_t)k->n_bufs + 1;
  memset(m, 0, sizeof *m);
  m->k = k;
  m->buf = arena_alloc(a, sizeof *m->buf * nb);
  m->var = arena_alloc(a, sizeof *m->var * nv);
  m->rng = arena_alloc(a, sizeof *m->rng * nv);
  m->global = arena_alloc(a, nv);
  m->declared = arena_alloc(a, nv);
  m->n_decls = arena_alloc(a, sizeof(int) * nv);
  m->n_mentions = arena_alloc(a, sizeof(int) * nv);
  m->def = arena_alloc(a, sizeof *m->def * nv);
  int *sets = arena_alloc(a, sizeof(int) * nv);
  count_stmt(m, k->body, sets);
  for (int v = 0; v < k->n_vars; v++)
    if (m->n_decls[v] != 1 || sets[v])
      m->def[v] = NULL;
  name_things(a, m);
}

/* A parallel loop anywhere that assigns a local declared outside it. */
static bool check_parallel(const Kernel *k, const KStmt *s, char *err, size_t n) {
  if (s->kind == KS_LOOP && s->loop == KL_PARALLEL) {
    int bad = cu_carried(k, s);
    if (bad >= 0) {
      snprintf(err, n, "codegen/cuda: kernel %s: parallel loop %s assigns %s, a local declared "
               "outside it", k->name, k->vars[s->var].name, k->vars[bad].name);
      return false;
    }
  }
  for (int i = 0; i < s->n_body; i++)
    if (!check_parallel(k, s->body[i], err, n))
      return false;
  return true;
}

/* --- parts ------------------------------------------------------------------------- */

/* items[first, end): a serial part, or (par) a parallel part whose loop is
 * items[end - 1], the items before it its prefix.  With `swap`, items[end -
 * 1] is a serial nest run per iteration of swap, the independent loop at
 * its end (cu_interchange). */
typedef struct Part {
  bool par;
  int first, end;
  const KStmt *swap;
  const CuGemm *gemm; /* or NULL: the tiled matmul replacing the kernel's head (no items) */
  const CuRed *red;   /* or NULL: the whole kernel as a warp-shuffle reduction (no items) */
  bool reassociate;   /* with red: its faster order */
  bool epi;           /* with gemm: items[first, end) are the epilogue, a parallel part
                       * applied to each element as its tile is stored */
} Part;

static bool is_par(const Kernel *k, const KStmt *s) {
  return s->kind == KS_LOOP && (s->loop == KL_PARALLEL || s->loop == KL_VECTOR) &&
         cu_carried(k, s) < 0;
}

static bool cheap(const KStmt *s) { return s->kind == KS_DECL || s->kind == KS_SET; }

/* Whether items[j, i), cheap statements, can be computed by every thread of
 * the parallel loop items[i]: they assign only locals they declare, which
 * nothing after the loop reads, and read no buffer the loop writes (nor
 * one of the same size and type, which in-place planning may make the
 * same memory). */
static bool prefix_ok(const Kernel *k, const KStmt *const *items, int j, int i, int n) {
  size_t nv = (size_t)k->n_vars + 1, nb = (size_t)k->n_bufs + 1;
  bool *mine = calloc(nv, 1), *pl = calloc(nb, 1), *ps = calloc(nb, 1);
  bool *ll = calloc(nb, 1), *ls = calloc(nb, 1), ok = true;
  ASSERT(mine && pl && ps && ll && ls);
  for (int p = j; p < i && ok; p++) {
    if (items[p]->kind == KS_DECL)
      mine[items[p]->var] = true;
    ok = mine[items[p]->var];
    for (int q = i + 1; q < n && ok; q++)
      ok = cu_mentions(items[q], items[p]->var) == 0;
    cu_stmt_bufs(items[p], pl, ps);
  }
  cu_stmt_bufs(items[i], ll, ls);
  for (int a = 0; a < k->n_bufs && ok; a++)
    for (int b = 0; b < k->n_bufs && ok && pl[a]; b++)
      ok = !ls[b] || (a != b && (k->bufs[a].numel != k->bufs[b].numel ||
                                 k->bufs[a].type != k->bufs[b].type));
  free(mine), free(pl), free(ps), free(ll), free(ls);
  return ok;
}

/* The loop a serial top-level loop can run in parallel over
 * (cu_interchange), when no other statement names its locals. */
static const KStmt *swappable(Em *m, const KStmt *const *items, int i, int n) {
  const KStmt *v = cu_interchange(m, items[i]);
  if (!v)
    return NULL;
  size_t nv = (size_t)m->k->n_vars + 1;
  bool *used = calloc(nv, 1), *defined = calloc(nv, 1);
  ASSERT(used && defined);
  cu_stmt_vars(items[i], used, defined);
  for (int v2 = 0; v2 < m->k->n_vars && v; v2++)
    for (int j = 0; j < n && v && defined[v2]; j++)
      if (j != i && cu_mentions(items[j], v2))
        v = NULL;
  free(used), free(defined);
  return v;
}

/* Cuts items[0, n) into parts; returns how many (parts has room for 2n + 1). */
static int cut(Em *m, const KStmt *const *items, int n, Part *parts) {
  const Kernel *k = m->k;
  int np = 0, run = 0;
  for (int i = 0; i < n; i++) {
    const KStmt *swap = is_par(k, items[i]) ? NULL : swappable(m, items, i, n);
    if (!is_par(k, items[i]) && !swap)
      continue;
    int j = i;
    while (j > run && cheap(items[j - 1]))
      j--;
    while (j < i && !prefix_ok(k, items, j, i, n))
      j++;
    if (j > run)
      parts[np++] = (Part){false, run, j, NULL, NULL, NULL, false, false};
    parts[np++] = (Part){true, j, i + 1, swap, NULL, NULL, false, false};
    run = i + 1;
  }
  if (run < n || np == 0)
    parts[np++] = (Part){false, run, n, NULL, NULL, NULL, false, false};
  return np;
}

/* Marks the locals more than one part mentions as __device__ variables;
 * false when one of them is declared inside a parallel loop. */
static bool find_globals(Em *m, const KStmt *const *items, const Part *parts, int np, char *err,
                         size_t n) {
  const Kernel *k = m->k;
  size_t nv = (size_t)k->n_vars + 1;
  int *first = malloc(sizeof(int) * nv);
  bool *used = calloc(nv, 1), *inner = calloc(nv, 1);
  ASSERT(first && used && inner);
  for (int v = 0; v < k->n_vars; v++)
    first[v] = -1;
  for (int p = 0; p < np; p++) {
    memset(used, 0, nv);
    for (int i = parts[p].first; i < parts[p].end; i++)
      cu_stmt_vars(items[i], used, parts[p].par && i == parts[p].end - 1 ? inner : NULL);
    for (int v = 0; v < k->n_vars; v++) {
      if (!used[v])
        continue;
      if (first[v] >= 0 && first[v] != p)
        m->global[v] = true;
      else
        first[v] = p;
    }
  }
  bool ok = true;
  for (int v = 0; v < k->n_vars && ok; v++)
    if (m->global[v] && inner[v]) {
      snprintf(err, n, "codegen/cuda: kernel %s: %s is declared inside a parallel loop and "
               "used outside it", k->name, k->vars[v].name);
      ok = false;
    }
  free(first), free(used), free(inner);
  return ok;
}

/* --- functions ------------------------------------------------------------------- */

static void begin_fn(Em *m, const char *name, int bounds) {
  const Kernel *k = m->k;
  Sb p = {0};
  for (int b = 0; b < k->n_bufs; b++)
    sb_printf(&p, "%s%s%s *%s", b ? ", " : "", k->bufs[b].role == KB_IN ? "const " : "",
              cu_ctype(k->bufs[b].type), m->buf[b]);
  m->indent = 0;
  if (bounds)
    cu_line(m, "extern \"C\" __global__ void __launch_bounds__(%d) %s(%s) {", bounds, name,
            p.s ? p.s : "");
  else
    cu_line(m, "extern \"C\" __global__ void %s(%s) {", name, p.s ? p.s : "");
  sb_free(&p);
  m->indent = 1;
  memset(m->declared, 0, (size_t)k->n_vars + 1);
}

/* Declares at the function's top the locals of items that cannot be
 * declared where they are set. */
static void hoist(Em *m, const KStmt *const *items, int n) {
  size_t nv = (size_t)m->k->n_vars + 1;
  bool *h = calloc(nv, 1);
  ASSERT(h);
  cu_plan_decls(m, items, n, h);
  for (int v = 0; v < m->k->n_vars; v++)
    if (h[v]) {
      cu_line(m, "%s %s;", cu_ctype(m->k->vars[v].type), m->var[v]);
      m->declared[v] = true;
    }
  free(h);
}

static void serial_part(Em *m, const KStmt *const *items, const Part *p, CuLaunch *l) {
  cu_line(m, "if (blockIdx.x != 0 || threadIdx.x != 0)");
  cu_line(m, "  return; /* one thread runs this part */");
  hoist(m, items + p->first, p->end - p->first);
  cu_stmts(m, items + p->first, p->end - p->first);
  l->threads = 1;
}

/* The loops of the parallel nest: loop, then each only-statement loop of
 * the body before that can join it; returns how many (at most 8). */
static int nest_of(Em *m, const KStmt *loop, const KStmt **chain, int64_t *total) {
  int n = 1;
  chain[0] = loop;
  *total = loop->extent->kind == KE_ICONST ? loop->extent->i : -1;
  while (*total >= 0 && n < 8) {
    const KStmt **body;
    int nb = cu_flatten(chain[n - 1], &body);
    const KStmt *inner = nb == 1 ? body[0] : NULL;
    free(body);
    int64_t t;
    if (!inner || !cu_collapsible(m, chain, n, inner) ||
        __builtin_mul_overflow(*total, inner->extent->i, &t))
      break;
    chain[n++] = inner;
    *total = t;
  }
  if (*total < 0)
    *total = -1;
  return n;
}

/* The variables of a flattened nest (constant extents, `total` in all)
 * from its flat index `flat`. */
static void decompose(Em *m, const KStmt *const *chain, int n, int64_t total, const char *flat,
                      const char *ind) {
  int64_t inner = total;
  for (int d = 0; d < n; d++) {
    int64_t ext = chain[d]->extent->i;
    inner /= ext; /* the product of the extents inside d */
    const char *v = m->var[chain[d]->var];
    if (n == 1)
      cu_line(m, "%sconst long long %s = %s;", ind, v, flat);
    else if (d == 0)
      cu_line(m, "%sconst long long %s = %s / %lldLL;", ind, v, flat, (long long)inner);
    else if (d == n - 1)
      cu_line(m, "%sconst long long %s = %s %% %lldLL;", ind, v, flat, (long long)ext);
    else
      cu_line(m, "%sconst long long %s = %s / %lldLL %% %lldLL;", ind, v, flat,
              (long long)inner, (long long)ext);
    m->rng[chain[d]->var] = (Rng){true, 0, ext - 1};
  }
}

static void grid_stride(Em *m, const KStmt *const *chain, int n, int64_t total) {
  const char *first = "blockIdx.x * (long long)blockDim.x + threadIdx.x";
  const char *stride = "(long long)gridDim.x * blockDim.x";
  const KStmt *l0 = chain[0];
  if (n == 1) {
    const char *v = m->var[l0->var];
    Sb e = {0};
    cu_expr(m, &e, l0->extent);
    Rng r = cu_range(m, l0->extent);
    if (total < 0)
      cu_line(m, "const long long kiln_n = %s;", sb_unparen(&e));
    cu_line(m, "/* parallel for %s (%s iterations): grid-stride, one per thread */", v,
             total < 0 ? "kiln_n" : e.s);
    cu_line(m, "for (long long %s = %s; %s < %s; %s += %s) {", v, first, v,
            total < 0 ? "kiln_n" : e.s, v, stride);
    m->rng[l0->var] = (Rng){true, 0, r.known && r.hi >= 1 ? r.hi - 1 : INT64_MAX - 1};
    sb_free(&e);
    return;
  }
  Sb what = {0};
  for (int d = 0; d < n; d++)
    sb_printf(&what, "%s%s < %lld", d ? ", " : "", m->var[chain[d]->var],
              (long long)chain[d]->extent->i);
  cu_line(m, "/* parallel for %s: %lld iterations, grid-stride, one per thread */",
          what.s ? what.s : "", (long long)total);
  sb_free(&what);
  cu_line(m, "for (long long kiln_i = %s; kiln_i < %lldLL; kiln_i += %s) {", first,
          (long long)total, stride);
  decompose(m, chain, n, total, "kiln_i", "  ");
}

/* A serial nest run per iteration of its last loop (Part.swap): the
 * threads over that loop, the serial loops inside each. */
static void swapped_part(Em *m, const KStmt *const *items, const Part *p, CuLaunch *l) {
  const KStmt *v = p->swap;
  hoist(m, items + p->first, p->end - p->first);
  cu_stmts(m, items + p->first, p->end - 1 - p->first);
  cu_line(m, "/* the serial loops below run in each thread, in order: %s is the thread's */",
          m->var[v->var]);
  grid_stride(m, &v, 1, v->extent->i);
  m->indent++;
  m->inline_loop = v;
  cu_stmt(m, items[p->end - 1]);
  m->inline_loop = NULL;
  m->indent--;
  cu_line(m, "}");
  l->threads = v->extent->i;
}

static void par_part(Em *m, const KStmt *const *items, const Part *p, CuLaunch *l) {
  if (p->swap) {
    swapped_part(m, items, p, l);
    return;
  }
  const KStmt *loop = items[p->end - 1], *chain[8];
  int64_t total;
  int n = nest_of(m, loop, chain, &total);
  hoist(m, items + p->first, p->end - p->first);
  cu_stmts(m, items + p->first, p->end - 1 - p->first);
  grid_stride(m, chain, n, total);
  m->indent++;
  const KStmt **body;
  int nb = cu_flatten(chain[n - 1], &body);
  cu_stmts(m, body, nb);
  free(body);
  m->indent--;
  cu_line(m, "}");
  l->threads = total;
}

/* --- a tiled GEMM's epilogue, per element (Part.epi) --------------------------------- */

typedef struct EpiCtx {
  const KStmt *const *items;
  const Part *p;
} EpiCtx;

static void epi_top(Em *m, const void *ctx) {
  const EpiCtx *e = ctx;
  hoist(m, e->items + e->p->first, e->p->end - e->p->first);
  cu_stmts(m, e->items + e->p->first, e->p->end - 1 - e->p->first);
}

static void epi_element(Em *m, const void *ctx) {
  const EpiCtx *e = ctx;
  const KStmt *chain[8];
  int64_t total;
  int n = nest_of(m, e->items[e->p->end - 1], chain, &total);
  decompose(m, chain, n, total, "kiln_c", "");
  const KStmt **body;
  int nb = cu_flatten(chain[n - 1], &body);
  cu_stmts(m, body, nb);
  free(body);
}

/* Whether parallel part p, the epilogue after a tiled GEMM g, can run at
 * each element as the tile stores it: its flattened loop covers C's
 * elements one per iteration (the lowering's row-major nest over the
 * anchor's shape, so iteration i is C's element i, the only one of C it
 * reads: no member is a view, which could read C elsewhere, a reversed
 * slice of the same size), and it stores into no buffer that may be A's
 * or B's memory (in-place planning gives an output an input's bytes only
 * when they have the same size and type): other blocks may still be
 * reading those. */
static bool epi_fits(Em *m, const KStmt *const *items, const Part *p, const CuGemm *g) {
  const Kernel *k = m->k;
  if (!p->par || p->swap)
    return false;
  for (int i = 0; i < k->n_members; i++)
    if (lower_view(k->members[i]->op))
      return false;
  const KStmt *chain[8];
  int64_t total;
  nest_of(m, items[p->end - 1], chain, &total);
  if (total != g->batch * g->m * g->n)
    return false;
  size_t nb = (size_t)k->n_bufs + 1;
  bool *ld = calloc(nb, 1), *st = calloc(nb, 1), ok = true;
  ASSERT(ld && st);
  for (int i = p->first; i < p->end; i++)
    cu_stmt_bufs(items[i], ld, st);
  for (int b = 0; b < k->n_bufs && ok; b++)
    for (int a = 0; a < 2 && ok && st[b] && b != 2; a++)
      ok = b != a && (k->bufs[a].numel != k->bufs[b].numel || k->bufs[a].type != k->bufs[b].type);
  free(ld), free(st);
  return ok;
}

/* --- kernels ------------------------------------------------------------------------ */

/* The static __device__ variables of the locals that cross parts. */
static void globals(Em *m, Arena *a, Sb *out, bool canonical) {
  const Kernel *k = m->k;
  for (int v = 0; v < k->n_vars; v++) {
    if (!m->global[v])
      continue;
    const char *name = canonical ? arena_fmt(a, "kiln_g%d", v)
                                 : arena_fmt(a, "kiln_g_%s_%s", k->name, m->var[v]);
    sb_printf(out, "static __device__ %s %s; /* %s: set by one part, read by a later one */\n",
              cu_ctype(k->vars[v].type), name, k->vars[v].name);
    m->var[v] = name;
  }
}

/* k's functions (named by ls[p].fn), their threads into ls. */
static void print_kernel(Em *m, Arena *a, const KStmt *const *items, const Part *parts, int np,
                         CuLaunch *ls, bool canonical, Sb *out) {
  memset(m->rng, 0, sizeof *m->rng * ((size_t)m->k->n_vars + 1));
  globals(m, a, out, canonical);
  m->out = out;
  for (int p = 0; p < np; p++) {
    begin_fn(m, canonical ? arena_fmt(a, "kiln_f%d", p) : ls[p].fn,
             parts[p].gemm || parts[p].red ? CU_GEMM_THREADS : 0);
    ls[p].block = 0;
    if (parts[p].red)
      cu_reduce_body(m, parts[p].red, parts[p].reassociate, &ls[p]);
    else if (parts[p].gemm && parts[p].epi) {
      EpiCtx e = {items, &parts[p]};
      CuEpi epi = {epi_top, epi_element, &e};
      cu_gemm_body(m, parts[p].gemm, &ls[p], &epi);
    } else if (parts[p].gemm)
      cu_gemm_body(m, parts[p].gemm, &ls[p], NULL);
    else if (parts[p].par)
      par_part(m, items, &parts[p], &ls[p]);
    else
      serial_part(m, items, &parts[p], &ls[p]);
    ASSERT(m->indent == 1); /* every block opened was closed (style rule 20) */
    m->indent = 0;
    cu_line(m, "}");
  }
}

/* The text of k with positional names (buffers kiln_bN, variables kiln_vN,
 * functions kiln_fN): kernels with the same text compute the same thing. */
static char *canonical_text(Em *m, Arena *a, const KStmt *const *items, const Part *parts,
                            int np, CuLaunch *ls) {
  for (int b = 0; b < m->k->n_bufs; b++)
    m->buf[b] = arena_fmt(a, "kiln_b%d", b);
  for (int v = 0; v < m->k->n_vars; v++)
    m->var[v] = arena_fmt(a, "kiln_v%d", v);
  Sb t = {0};
  print_kernel(m, a, items, parts, np, ls, true, &t);
  char *key = arena_strdup(a, t.s ? t.s : "");
  sb_free(&t);
  name_things(a, m);
  return key;
}

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* An earlier kernel with the same code, or NULL. */
static const CuKernel *same_code(const CuSrc *s, uint64_t h, const char *key) {
  for (int i = 0; i < s->n_ks; i++)
    if (s->hash[i] == h && strcmp(s->key[i], key) == 0)
      return &s->ks[s->code_of[i]];
  return NULL;
}

static bool names_free(const CuSrc *s, const CuLaunch *ls, int n, char *err, size_t errlen) {
  for (int i = 0; i < n; i++)
    if (fn_taken(s, ls[i].fn)) {
      snprintf(err, errlen, "codegen/cuda: the module already has a function named %s", ls[i].fn);
      return false;
    }
  return true;
}

/* Adds k: its code, or its launches of an earlier kernel's identical code. */
static bool add(CuSrc *s, Em *m, const KStmt *const *items, const Part *parts, int np,
                char *err, size_t n) {
  const Kernel *k = m->k;
  CuLaunch *ls = arena_alloc(s->a, sizeof *ls * (size_t)np);
  for (int p = 0; p < np; p++)
    ls[p].fn = np == 1 ? arena_strdup(s->a, k->name) : arena_fmt(s->a, "%s_part%d", k->name, p);
  if (!names_free(s, ls, np, err, n) || !find_globals(m, items, parts, np, err, n))
    return false;
  char *key = canonical_text(m, s->a, items, parts, np, ls);
  uint64_t h = fnv(key);
  const CuKernel *twin = same_code(s, h, key);
  int code = s->n_ks;
  if (twin) { /* launch the twin's functions */
    code = (int)(twin - s->ks);
    for (int p = 0; p < np; p++)
      ls[p].fn = twin->launches[p].fn;
    sb_printf(&s->kernels, "\n/* kernel %s: the same code as %s, launched as its function%s */\n",
              k->name, twin->k->name, np > 1 ? "s" : "");
  } else {
    Sb text = {0};
    sb_printf(&text, "\n/* kernel %s%s */\n", k->name, np > 1 ? ": launches in order" : "");
    print_kernel(m, s->a, items, parts, np, ls, false, &text);
    sb_puts(&s->kernels, text.s);
    sb_free(&text);
  }
  VEC_PUSH(s->a, s->ks, s->n_ks, s->cap_ks, ((CuKernel){k, ls, np}));
  s->hash = arena_realloc(s->a, s->hash, sizeof *s->hash * (size_t)(s->n_ks - 1),
                          sizeof *s->hash * (size_t)s->n_ks);
  s->key = arena_realloc(s->a, s->key, sizeof *s->key * (size_t)(s->n_ks - 1),
                         sizeof *s->key * (size_t)s->n_ks);
  s->code_of = arena_realloc(s->a, s->code_of, sizeof(int) * (size_t)(s->n_ks - 1),
                             sizeof(int) * (size_t)s->n_ks);
  s->hash[s->n_ks - 1] = h;
  s->key[s->n_ks - 1] = key;
  s->code_of[s->n_ks - 1] = code;
  return true;
}

bool cu_kernel(CuSrc *s, const Kernel *k, char *err, size_t n) {
  char kerr[512];
  if (cu_find(s, k->name)) {
    snprintf(err, n, "codegen/cuda: the module already has a kernel named %s", k->name);
    return false;
  }
  if (!kir_verify(k, kerr, sizeof kerr)) {
    snprintf(err, n, "codegen/cuda: invalid kernel: %s", kerr);
    return false;
  }
  if (!check_parallel(k, k->body, err, n))
    return false;
  Em m;
  em_init(&m, s->a, k);
  CuGemm *g = arena_alloc(s->a, sizeof *g);
  CuRed *red = arena_alloc(s->a, sizeof *red);
  bool gemm = cu_gemm_describe(k, g), rd = !gemm && cu_reduce_describe(k, red);
  const KStmt **items;
  /* a tiled matmul head: part 0, then the parts of the statements after it */
  KStmt rest = *k->body;
  rest.body += gemm ? g->n_head : 0;
  rest.n_body -= gemm ? g->n_head : 0;
  rest.n_body = rd ? 0 : rest.n_body;
  int ni = cu_flatten(&rest, &items);
  Part *parts = arena_alloc(s->a, sizeof *parts * (size_t)(2 * ni + 2));
  int np = 0;
  if (gemm)
    parts[np++] = (Part){true, 0, 0, NULL, g, NULL, false, false};
  if (rd)
    parts[np++] = (Part){true, 0, 0, NULL, NULL, red, s->reassociate, false};
  if ((!gemm && !rd) || ni > 0)
    np += cut(&m, items, ni, parts + np);
  if (gemm && np == 2 && epi_fits(&m, items, &parts[1], g)) { /* one launch */
    parts[0].first = parts[1].first;
    parts[0].end = parts[1].end;
    parts[0].epi = true;
    np = 1;
  }
  bool ok = add(s, &m, items, parts, np, err, n);
  free(items);
  return ok;
}
