/*
 * aot.c: a model compiled ahead of time into one LLVM module (see aot.h):
 * the step functions, the manifest that the program's main reads, and the
 * parameters' initial values.
 *
 * The kernel calls come from program_calls, exactly as the JIT makes them,
 * so a built program computes what `kiln run` and `kiln train` compute.
 * Kernels of the training step are renamed "train_<op>_<id>" and those of
 * the inference graph "infer_<op>_<id>" (node ids repeat across the two
 * graphs), and every function but the entry points becomes internal, so
 * the object exports kiln_* symbols only (a->sym's in place of kiln: kiln
 * build --prefix, for two models in one program) and identical kernels of
 * the two graphs can merge before the module is optimized.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llvm-c/Transforms/PassBuilder.h>

#include "aot.h"
#include "cg_internal.h"
#include "program.h"
#include "rt_data.h"

static int64_t round_up(int64_t v) { return (v + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN; }

/* --- layout ----------------------------------------------------------------- */

static AotIo io_of(const Plan *p, Node *n, const bool *batched) {
  return (AotIo){n->name, n, p->time[n->id] >= 0 ? p->offset[n->id] : -1,
                 batched && batched[n->id]};
}

/* Plans g for roots; slots from the parameter table (by name for the
 * inference graph of a training build). */
static void plan_step(Aot *a, AotStep *s, Graph *g, Node *const *roots, int n_roots,
                      const PlanOpts *po) {
  s->g = g;
  plan_build(g, roots, n_roots, po, &s->plan);
  s->slot = arena_alloc(a->arena, sizeof(int) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < a->n_params; i++) {
    Node *q = graph_find(g, a->params[i].node->name);
    if (q && q->op == OP_PARAM)
      s->slot[q->id] = a->params[i].slot;
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM && !s->slot[i])
      die("parameter %s of the %s graph has no slot", g->nodes[i]->name,
          g->training ? "training" : "inference");
}

static bool layout_params(Aot *a, Graph *owner, char *err, size_t errlen) {
  a->params = arena_alloc(a->arena, sizeof(AotParam) * (size_t)(owner->n_nodes + 1));
  for (int i = 0; i < owner->n_nodes; i++) {
    Node *n = owner->nodes[i];
    if (n->op != OP_PARAM)
      continue;
    int64_t bytes = node_bytes(n);
    a->params[a->n_params] = (AotParam){n, a->n_params + 1, a->params_bytes, bytes};
    a->n_params++;
    a->params_bytes += round_up(bytes);
  }
  a->blob = calloc(1, (size_t)(a->params_bytes ? a->params_bytes : 1));
  a->params_stored = true;
  if (!a->blob) {
    snprintf(err, errlen, "out of memory: the parameters need %lld bytes",
             (long long)a->params_bytes);
    return false;
  }
  return true;
}

static void infer_io(Aot *a) {
  AotStep *s = &a->infer;
  Graph *g = s->g;
  bool *batched = arena_alloc(a->arena, sizeof(bool) * (size_t)g->n_nodes);
  Node **outs = arena_alloc(a->arena, sizeof(Node *) * (size_t)(g->n_outputs + 1));
  for (int i = 0; i < g->n_outputs; i++)
    outs[i] = g->outputs[i].node;
  a->batch = aot_batch_size(g, a->src.twin, &s->plan, outs, g->n_outputs, batched);
  s->inputs = arena_alloc(a->arena, sizeof(AotIo) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT)
      s->inputs[s->n_inputs++] = io_of(&s->plan, g->nodes[i], batched);
  s->outputs = arena_alloc(a->arena, sizeof(AotIo) * (size_t)(g->n_outputs + 1));
  for (int i = 0; i < g->n_outputs; i++) {
    s->outputs[i] = io_of(&s->plan, g->outputs[i].node, batched);
    s->outputs[i].name = g->outputs[i].name;
    if (s->outputs[i].offset < 0)
      die("output %s is not in the arena", g->outputs[i].name);
  }
  s->n_outputs = g->n_outputs;
}

/* The training step's inputs (the user's, not the optimizer's lr and step). */
static void train_io(Aot *a) {
  AotStep *s = &a->train;
  Graph *g = s->g;
  const TrainStep *ts = a->src.ts;
  s->inputs = arena_alloc(a->arena, sizeof(AotIo) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT && !g->nodes[i]->is_backward)
      s->inputs[s->n_inputs++] = io_of(&s->plan, g->nodes[i], NULL);
  /* the model's outputs that the step keeps (roots: kiln build --emit
   * obj,header adds them), readable after it */
  s->outputs = arena_alloc(a->arena, sizeof(AotIo) * (size_t)(g->n_outputs + 1));
  for (int i = 0; i < g->n_outputs; i++)
    for (int r = 0; r < ts->n_roots; r++)
      if (ts->roots[r] == g->outputs[i].node && s->plan.time[ts->roots[r]->id] >= 0) {
        s->outputs[s->n_outputs++] = io_of(&s->plan, g->outputs[i].node, NULL);
        break;
      }
}

/* The inference graph's weight-derived values: slots after the parameters,
 * places in the prepared block. */
static void layout_prepared(Aot *a) {
  AotStep *s = &a->infer;
  a->prepared = arena_alloc(a->arena, sizeof(AotParam) * (size_t)(s->plan.n_order + 1));
  for (int k = 0; k < s->plan.n_order; k++) {
    Node *n = s->plan.order[k];
    if (!n->derived)
      continue;
    int slot = a->n_params + 1 + a->n_prepared;
    a->prepared[a->n_prepared++] = (AotParam){n, slot, a->prepared_bytes, node_bytes(n)};
    a->prepared_bytes += round_up(node_bytes(n));
    s->slot[n->id] = slot;
  }
}

bool aot_init(Aot *a, const AotGraphs *gs, const PlanOpts *po, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  double t0 = rt_now();
  Graph *ge = gs->infer, *gt = gs->train;
  a->src = *gs;
  a->model = ge->name;
  a->sym = "kiln";
  a->arena = ge->arena;
  a->has_train = gt != NULL;
  if (!layout_params(a, gt ? gt : ge, err, errlen))
    return false;
  Node **outs = arena_alloc(a->arena, sizeof(Node *) * (size_t)(ge->n_outputs + 1));
  int n_outs = 0;
  for (int i = 0; i < ge->n_outputs; i++)
    outs[n_outs++] = ge->outputs[i].node;
  if (gs->test_loss)
    outs[n_outs++] = gs->test_loss;
  plan_step(a, &a->infer, ge, outs, n_outs, po);
  layout_prepared(a);
  infer_io(a);
  a->infer_data = a->infer_labels = -1;
  if (gt) {
    plan_step(a, &a->train, gt, gs->ts->roots, gs->ts->n_roots, po);
    train_io(a);
    for (int i = 0; i < a->infer.n_inputs && gs->data; i++) {
      const AotIo *in = &a->infer.inputs[i];
      if (strcmp(in->name, gs->data->name) == 0)
        a->infer_data = i;
      if (gs->labels && gs->test_loss && in->offset >= 0 && strcmp(in->name, gs->labels->name) == 0)
        a->infer_labels = i;
    }
  }
  a->times.plan = rt_now() - t0;
  return true;
}

/* --- the manifest ------------------------------------------------------------- */


static void json_type(FILE *f, const Node *n) {
  fprintf(f, "\"dtype\": \"%s\", \"shape\": [", dtype_name(n->dtype));
  for (int i = 0; i < n->shape.rank; i++)
    fprintf(f, "%s%lld", i ? ", " : "", (long long)n->shape.dim[i]);
  fputc(']', f);
}

static void json_io(FILE *f, const AotIo *io) {
  fputs("{\"name\": ", f);
  json_write_str(f, io->name);
  fputs(", ", f);
  json_type(f, io->node);
  fprintf(f, ", \"offset\": %lld, \"batch\": %d}", (long long)io->offset, io->batch);
}

static void json_ios(FILE *f, const char *key, const AotIo *ios, int n) {
  fprintf(f, "\"%s\": [", key);
  for (int i = 0; i < n; i++) {
    fputs(i ? ",\n    " : "\n    ", f);
    json_io(f, &ios[i]);
  }
  fputs("]", f);
}

static int64_t train_offset(const Aot *a, const Node *n) {
  return n && a->train.plan.time[n->id] >= 0 ? a->train.plan.offset[n->id] : -1;
}

static void json_train(FILE *f, const Aot *a) {
  const AotStep *s = &a->train;
  const TrainSpec *sp = &a->src.spec;
  fprintf(f, ",\n \"train\": {\"function\": \"%s_train_step\", \"arena\": %lld,\n  ", a->sym,
          (long long)s->plan.arena);
  json_ios(f, "inputs", s->inputs, s->n_inputs);
  if (a->src.data) { /* without labels: a model trained on its examples alone */
    AotIo data = io_of(&s->plan, a->src.data, NULL);
    fputs(",\n  \"data\": ", f);
    json_io(f, &data);
  }
  if (a->src.data && a->src.labels) {
    AotIo labels = io_of(&s->plan, a->src.labels, NULL);
    fputs(",\n  \"labels\": ", f);
    json_io(f, &labels);
  }
  int64_t test_loss = -1;
  if (a->src.test_loss && (test_loss = io_of(&a->infer.plan, a->src.test_loss, NULL).offset) < 0)
    die("the test loss is not in the inference arena");
  fprintf(f, ",\n  \"lr\": %lld, \"step\": %lld, \"loss\": %lld, \"infer_data\": %d, "
          "\"accuracy\": %d, \"ids_below\": %lld, \"test_loss\": %lld, \"infer_labels\": %d,\n"
          "  \"updates\": [",
          (long long)train_offset(a, a->src.ts->lr), (long long)train_offset(a, a->src.ts->step),
          (long long)train_offset(a, a->src.ts->loss), a->infer_data, a->src.accuracy,
          (long long)a->src.ids_below, (long long)test_loss, a->infer_labels);
  const Graph *g = s->g;
  for (int i = 0; i < g->n_updates; i++) {
    int64_t off = train_offset(a, g->updates[i].value);
    if (off < 0 || !s->slot[g->updates[i].target->id])
      die("update of %s: its value is not in the arena", g->updates[i].target->name);
    fprintf(f, "%s{\"value\": %lld, \"slot\": %d, \"bytes\": %lld}", i ? ", " : "",
            (long long)off, s->slot[g->updates[i].target->id],
            (long long)node_bytes(g->updates[i].target));
  }
  RtSchedule r = train_schedule(sp);
  fputs("],\n  \"optimizer\": ", f);
  json_write_str(f, sp->opt_name ? sp->opt_name : "sgd");
  fprintf(f, ", \"optimizer_kind\": %d,\n  \"schedule\": {\"kind\": %d, \"lr\": %.17g, "
          "\"gamma\": %.17g, \"every\": %d, \"end\": %.17g, \"epochs\": %d, \"warmup\": %lld},\n"
          "  \"epochs\": %d, \"seed\": %llu, \"shuffle\": %d}", (int)sp->opt, (int)r.kind, r.lr,
          r.gamma, r.every, r.end, r.epochs, (long long)r.warmup, sp->epochs,
          (unsigned long long)sp->seed, sp->shuffle);
}

/* "], prepared_bytes, prepared: [...": closes params, opens nothing. */
static void json_prepared(FILE *f, const Aot *a) {
  fprintf(f, "],\n \"prepared_bytes\": %lld, \"prepared\": [", (long long)a->prepared_bytes);
  for (int i = 0; i < a->n_prepared; i++) {
    const AotParam *p = &a->prepared[i];
    fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", f);
    json_write_str(f, p->node->name);
    fputs(", ", f);
    json_type(f, p->node);
    fprintf(f, ", \"offset\": %lld, \"slot\": %d}", (long long)p->offset, p->slot);
  }
}

static char *manifest(const Aot *a) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    die("out of memory");
  fputs("{\"format\": \"kiln-program\", \"version\": 1, \"model\": ", f);
  json_write_str(f, a->model);
  fprintf(f, ",\n \"ext_slots\": %d, \"params_bytes\": %lld, \"params_stored\": %d, "
          "\"init_seed\": %llu,\n \"params\": [", a->n_params + a->n_prepared + 1,
          (long long)a->params_bytes, a->params_stored, (unsigned long long)a->init_seed);
  bool *in_infer = arena_alloc(a->arena, sizeof(bool) * (size_t)(a->n_params + 2));
  for (int i = 0; i < a->infer.g->n_nodes; i++)
    in_infer[a->infer.slot[i]] = true;
  for (int i = 0; i < a->n_params; i++) {
    const AotParam *p = &a->params[i];
    fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", f);
    json_write_str(f, p->node->name);
    fputs(", ", f);
    json_type(f, p->node);
    fprintf(f, ", \"offset\": %lld, \"slot\": %d, \"trainable\": %d, \"infer\": %d",
            (long long)p->offset, p->slot, p->node->trainable, in_infer[p->slot]);
    const Init *in = &p->node->init;
    if (!a->params_stored)
      fprintf(f, ",\n   \"init\": {\"kind\": \"%s\", \"a\": %.17g, \"b\": %.17g, "
              "\"fan_in\": %lld, \"fan_out\": %lld}", rt_init_name(in->kind), in->a, in->b,
              (long long)in->fan_in, (long long)in->fan_out);
    fputc('}', f);
  }
  json_prepared(f, a);
  fprintf(f, "],\n \"infer\": {\"function\": \"%s_infer\", \"arena\": %lld, \"batch\": %lld, "
          "\"batch_name\": ", a->sym, (long long)a->infer.plan.arena, (long long)a->batch);
  json_write_str(f, a->batch && a->src.batch_name ? a->src.batch_name : "");
  fputs(",\n  ", f);
  json_ios(f, "inputs", a->infer.inputs, a->infer.n_inputs);
  fputs(",\n  ", f);
  json_ios(f, "outputs", a->infer.outputs, a->infer.n_outputs);
  fputs("}", f);
  if (a->has_train)
    json_train(f, a);
  fputs("}\n", f);
  if (fclose(f) != 0)
    die("out of memory");
  return text;
}

/* --- the module ------------------------------------------------------------------ */

static void add_bytes(Cg *cg, const char *name, const void *data, size_t len, unsigned align) {
  LLVMValueRef init = LLVMConstStringInContext(cg->ctx, data, (unsigned)len, 1);
  LLVMValueRef g = LLVMAddGlobal(cg->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMExternalLinkage);
  LLVMSetAlignment(g, align);
}

/* kiln_params through the assembler: the module's top-level assembly
 * defines the symbol and includes the file's bytes (.incbin) when the
 * object is written.  An LLVM constant of the same bytes costs time and
 * memory in every step after it (IR, the bitcode each part of
 * aot_split.c reads back, the object writer): VGG-11's 1 GB of
 * parameters and optimizer state took 60 s that way. */
static void add_params_file(Cg *cg, const char *name, const char *path, int64_t bytes) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    die("out of memory");
  fprintf(f, "\t.section .rodata.%s,\"a\",@progbits\n\t.globl %s\n"
          "\t.type %s,@object\n\t.size %s,%lld\n\t.p2align %d\n"
          "%s:\n\t.incbin \"", name, name, name, name, (long long)bytes, __builtin_ctz(PLAN_ALIGN),
          name);
  aot_asm_string(f, path);
  fputs("\"\n\t.text\n", f);
  if (fclose(f) != 0)
    die("out of memory");
  LLVMSetModuleInlineAsm2(cg->mod, text, len);
  free(text);
}

void aot_params_at_start(Aot *a, uint64_t seed) {
  free(a->blob);
  a->blob = calloc(1, 1);
  if (!a->blob)
    die("out of memory");
  a->params_stored = false;
  a->init_seed = seed;
}

bool aot_params_to_file(Aot *a, const char *path, char *err, size_t n) {
  size_t len = a->params_stored && a->params_bytes ? (size_t)a->params_bytes : 1;
  const void *pieces[] = {a->blob};
  if (rt_write_file_atomic(path, pieces, &len, 1, err, n) != RT_OK)
    return false;
  free(a->blob);
  a->blob = NULL;
  a->params_file = path;
  return true;
}

void aot_asm_string(FILE *f, const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c; c++)
    if (*c == '"' || *c == '\\' || *c < 0x20 || *c >= 0x7f)
      fprintf(f, "\\%03o", *c);
    else
      fputc(*c, f);
}

bool aot_is_entry(const Aot *a, const char *name) {
  size_t k = strlen(a->sym);
  if (strncmp(name, a->sym, k) != 0 || name[k] != '_')
    return false;
  name += k + 1;
  return strcmp(name, "infer") == 0 || strcmp(name, "train_step") == 0 ||
         strcmp(name, "prepare") == 0;
}

/* a->sym's `what`: kiln_infer, ... */
static const char *sym(const Aot *a, const char *what) {
  return arena_fmt(a->arena, "%s_%s", a->sym, what);
}

/* Whether f is a thunk MergeFunctions left behind: one block, `call
 * g(f's own parameters, in order)` of a g of the same type, then ret. */
static LLVMValueRef thunk_target(LLVMValueRef f) {
  if (LLVMCountBasicBlocks(f) != 1)
    return NULL;
  LLVMValueRef call = LLVMGetFirstInstruction(LLVMGetEntryBasicBlock(f));
  if (!call || LLVMGetInstructionOpcode(call) != LLVMCall)
    return NULL;
  LLVMValueRef ret = LLVMGetNextInstruction(call);
  if (!ret || LLVMGetInstructionOpcode(ret) != LLVMRet || LLVMGetNextInstruction(ret))
    return NULL;
  LLVMValueRef g = LLVMGetCalledValue(call);
  if (!g || !LLVMIsAFunction(g) || g == f || LLVMGlobalGetValueType(g) != LLVMGlobalGetValueType(f))
    return NULL;
  unsigned np = LLVMCountParams(f);
  if ((unsigned)LLVMGetNumArgOperands(call) != np)
    return NULL;
  for (unsigned i = 0; i < np; i++)
    if (LLVMGetOperand(call, i) != LLVMGetParam(f, i))
      return NULL;
  if (LLVMGetNumOperands(ret) == 1 && LLVMGetOperand(ret, 0) != call)
    return NULL;
  return g;
}

/* Every internal thunk replaced by its target everywhere, then deleted;
 * the number dropped. */
static int drop_thunks(LLVMModuleRef m) {
  int dropped = 0;
  LLVMValueRef next;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = next) {
    next = LLVMGetNextFunction(f);
    LLVMValueRef g = LLVMIsDeclaration(f) || LLVMGetLinkage(f) != LLVMInternalLinkage
                         ? NULL
                         : thunk_target(f);
    if (!g)
      continue;
    LLVMReplaceAllUsesWith(f, g);
    LLVMDeleteFunction(f);
    dropped++;
  }
  return dropped;
}

/* Identical functions become one (LLVM's MergeFunctions, exact): the
 * inference graph's kernels are mostly the training step's forward ones,
 * and a ResNet repeats its blocks, so a build optimizes and compiles each
 * distinct kernel once.  A function whose address is taken (a kernel's
 * parallel body, handed to the thread pool) is merged into a thunk that
 * calls its twin, which keeps the kernels that use the two apart; so the
 * thunks are replaced by their twins and the merge repeated until none is
 * left (each round merges the next level up: bodies, then kernels). */
static bool merge_functions(Cg *cg, char *err, size_t n) {
  for (int round = 0; round < 8; round++) {
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(cg->mod, "mergefunc", cg->tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (e) {
      cg_err_error(err, n, "LLVM mergefunc", e);
      return false;
    }
    if (drop_thunks(cg->mod) == 0)
      break;
  }
  return true;
}

static bool lower_step(Aot *a, AotStep *s, const char *prefix, char *err, size_t n) {
  s->calls = arena_alloc(a->arena, sizeof(CgCall) * (size_t)(s->plan.n_order + 1));
  if (!program_calls(s->g, &s->plan, s->slot, s->calls, &s->n_calls, err, n))
    return false;
  for (int i = 0; i < s->n_calls; i++) {
    Kernel *k = (Kernel *)s->calls[i].k;
    k->name = arena_fmt(a->arena, "%s_%s", prefix, k->name);
  }
  return true;
}

/* kiln_prepare's calls: the inference graph's weight-derived values. */
static bool lower_prepare(Aot *a, char *err, size_t n) {
  AotStep *s = &a->infer;
  a->prep_calls = arena_alloc(a->arena, sizeof(CgCall) * (size_t)(s->plan.n_order + 1));
  if (!program_prepare_calls(s->g, &s->plan, s->slot, a->prep_calls, &a->n_prep_calls, err, n))
    return false;
  for (int i = 0; i < a->n_prep_calls; i++) {
    Kernel *k = (Kernel *)a->prep_calls[i].k;
    k->name = arena_fmt(a->arena, "prepare_%s", k->name);
  }
  return true;
}

bool aot_compile(Aot *a, const CgOpts *co, char *err, size_t n) {
  double t0 = rt_now();
  if (!lower_step(a, &a->infer, "infer", err, n) || !lower_prepare(a, err, n) ||
      (a->has_train && !lower_step(a, &a->train, "train", err, n)))
    return false;
  double t1 = rt_now();
  a->cg = cg_new(a->model, co, err, n);
  if (!a->cg || !cg_step(a->cg, sym(a, "infer"), a->infer.calls, a->infer.n_calls, err, n) ||
      !cg_step(a->cg, sym(a, "prepare"), a->prep_calls, a->n_prep_calls, err, n) ||
      (a->has_train &&
       !cg_step(a->cg, sym(a, "train_step"), a->train.calls, a->train.n_calls, err, n)))
    return false;
  for (LLVMValueRef f = LLVMGetFirstFunction(a->cg->mod); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f) && !aot_is_entry(a, LLVMGetValueName(f)))
      LLVMSetLinkage(f, LLVMInternalLinkage);
  if (!merge_functions(a->cg, err, n))
    return false;
  a->manifest = manifest(a);
  add_bytes(a->cg, sym(a, "manifest"), a->manifest, strlen(a->manifest) + 1, 1);
  size_t blob_bytes = a->params_stored && a->params_bytes ? (size_t)a->params_bytes : 1;
  if (a->params_file)
    add_params_file(a->cg, sym(a, "params"), a->params_file, (int64_t)blob_bytes);
  else
    add_bytes(a->cg, sym(a, "params"), a->blob, blob_bytes, PLAN_ALIGN);
  a->times.lower = t1 - t0;
  a->times.emit_ir = rt_now() - t1;
  return true;
}

bool aot_optimize(Aot *a, char *err, size_t n) {
  double t = rt_now();
  bool ok = cg_optimize(a->cg, err, n);
  a->times.optimize = rt_now() - t;
  return ok;
}

/* Assembly whose parameters come from a file (add_params_file): the
 * module's top-level assembly, which holds the .incbin, is taken out while
 * LLVM prints the rest (its printer would write the file's bytes out as
 * data: a 125 MB .s for ResNet-18) and appended as written, so the .s
 * includes the file by name as the object does. */
static bool emit_assembly(Aot *a, const char *tmp, char *err, size_t n) {
  size_t len;
  const char *text = LLVMGetModuleInlineAsm(a->cg->mod, &len);
  char *kept = malloc(len + 1);
  if (!kept)
    die("out of memory");
  memcpy(kept, text, len);
  LLVMSetModuleInlineAsm2(a->cg->mod, "", 0);
  bool ok = cg_emit_file(a->cg, tmp, true, err, n);
  LLVMSetModuleInlineAsm2(a->cg->mod, kept, len);
  if (ok) {
    FILE *f = fopen(tmp, "a");
    bool wrote = f && fwrite(kept, 1, len, f) == len;
    if ((f && fclose(f) != 0) || !wrote) {
      snprintf(err, n, "%s: cannot write: %s", tmp, strerror(errno));
      ok = false;
    }
  }
  free(kept);
  return ok;
}

bool aot_write_object(Aot *a, const char *path, bool assembly, char *err, size_t n) {
  char *tmp = malloc(strlen(path) + 32);
  if (!tmp)
    die("out of memory");
  sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
  bool ok = assembly && a->params_file ? emit_assembly(a, tmp, err, n)
                                       : cg_emit_file(a->cg, tmp, assembly, err, n);
  if (ok && rename(tmp, path) != 0) {
    snprintf(err, n, "%s: cannot rename the temporary file over it", path);
    ok = false;
  }
  if (!ok)
    remove(tmp);
  free(tmp);
  return ok;
}

void aot_free(Aot *a) {
  cg_free(a->cg);
  free(a->blob);
  free(a->manifest);
  memset(a, 0, sizeof *a);
}
