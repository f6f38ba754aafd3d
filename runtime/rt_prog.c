/*
 * rt_prog.c: the manifest, parameters and messages of a built program
 * (see rt_prog.h and codegen/aot.h for the manifest's fields).
 *
 * The manifest is read with the runtime's own strict JSON reader (json.c)
 * into a small tree; numbers keep their text, so 64-bit seeds and offsets
 * parse exactly.  It was written by kiln build, so a malformed manifest is
 * an internal error, reported with the field that is wrong.
 */
#include "rt_prog.h"
#include "rt_internal.h"

#include <stdlib.h>
#include <string.h>

/* --- a JSON tree ------------------------------------------------------------- */

struct RtProgJson {
  char kind;  /* 'o' object, 'a' array, 's' string, 'n' number */
  char *key;  /* as a member of an object */
  char *text; /* string value or number text */
  RtProgJson *kid;
  int n;
};

static void json_free(RtProgJson *v) {
  for (int i = 0; i < v->n; i++) json_free(&v->kid[i]);
  free(v->kid);
  free(v->key);
  free(v->text);
}

static RtStatus parse(RtJson *j, RtProgJson *v, int depth);

static RtStatus push(RtJson *j, RtProgJson *v, char *key, int depth) {
  RtProgJson *k = realloc(v->kid, sizeof(RtProgJson) * (size_t)(v->n + 1));
  if (!k) {
    free(key);
    return rt_fail(j->c, RT_ERR_ALLOC, "out of memory");
  }
  v->kid = k;
  memset(&k[v->n], 0, sizeof *k);
  k[v->n].key = key;
  return parse(j, &k[v->n++], depth + 1);
}

static RtStatus parse(RtJson *j, RtProgJson *v, int depth) {
  int ch = rt_json_peek(j), first = 1, more;
  RtStatus s = RT_OK;
  char *key;
  if (depth > 16) return rt_fail(j->c, RT_ERR_FORMAT, "nested too deeply");
  if (ch == '"') return v->kind = 's', rt_json_string(j, &v->text, "a string");
  if (ch == '-' || (ch >= '0' && ch <= '9')) {
    const unsigned char *b = j->p;
    while (j->p < j->end && strchr("+-.eE0123456789", *j->p)) j->p++;
    v->kind = 'n';
    if (!(v->text = malloc((size_t)(j->p - b) + 1))) return rt_fail(j->c, RT_ERR_ALLOC, "out of memory");
    memcpy(v->text, b, (size_t)(j->p - b));
    v->text[j->p - b] = '\0';
    return RT_OK;
  }
  if (ch != '{' && ch != '[')
    return rt_fail(j->c, RT_ERR_FORMAT, "byte %ld: expected a value, found %s", rt_json_off(j),
                   rt_json_kind(ch));
  j->p++;
  v->kind = ch == '{' ? 'o' : 'a';
  if (v->kind == 'o') {
    while (!(s = rt_json_member(j, &first, &more, &key)) && more)
      if ((s = push(j, v, key, depth))) return s;
    return s;
  }
  if (rt_json_peek(j) == ']') return j->p++, RT_OK;
  for (;;) {
    if ((s = push(j, v, NULL, depth))) return s;
    ch = rt_json_peek(j);
    if (ch != ',' && ch != ']')
      return rt_fail(j->c, RT_ERR_FORMAT, "byte %ld: expected ',' or ']'", rt_json_off(j));
    j->p++;
    if (ch == ']') return RT_OK;
  }
}

/* --- typed access: the first missing or mistyped field is remembered ----------- */

typedef struct Rd {
  char bad[96];
} Rd;

static RtProgJson *get(Rd *r, RtProgJson *o, const char *key, char kind) {
  static RtProgJson nil[4];
  for (int i = 0; o && o->kind == 'o' && i < o->n; i++)
    if (strcmp(o->kid[i].key, key) == 0 && o->kid[i].kind == kind) return &o->kid[i];
  if (!r->bad[0]) snprintf(r->bad, sizeof r->bad, "%s", key);
  static char zero[] = "0";
  RtProgJson *v = &nil[kind == 'o' ? 0 : kind == 'a' ? 1 : kind == 's' ? 2 : 3];
  v->kind = kind;
  v->text = kind == 'n' ? zero : zero + 1;
  return v;
}

static int64_t num(Rd *r, RtProgJson *o, const char *key) {
  return strtoll(get(r, o, key, 'n')->text, NULL, 10);
}
/* A field only some tensors have (slot, trainable, infer, batch): 0 if absent. */
static int opt(RtProgJson *o, const char *key) {
  Rd r = {{0}};
  return (int)num(&r, o, key);
}

static const char *str(Rd *r, RtProgJson *o, const char *key) { return get(r, o, key, 's')->text; }

/* A parameter's initializer: {kind (a name), a, b, fan_in, fan_out}. */
static void init_spec(Rd *r, RtProgJson *o, RtProgTensor *t) {
  int k = rt_init_lookup(str(r, o, "kind"));
  t->init.kind = k > RT_INIT_AUTO ? (RtInitKind)k : RT_INIT_AUTO;
  t->init.a = strtod(get(r, o, "a", 'n')->text, NULL);
  t->init.b = strtod(get(r, o, "b", 'n')->text, NULL);
  t->init.fan_in = num(r, o, "fan_in");
  t->init.fan_out = num(r, o, "fan_out");
  if (k <= RT_INIT_AUTO) snprintf(r->bad, sizeof r->bad, "%s's init", t->name);
}

static void tensor(Rd *r, RtProgJson *o, RtProgTensor *t) {
  RtProgJson *shape = get(r, o, "shape", 'a');
  const char *dt = str(r, o, "dtype");
  t->name = str(r, o, "name");
  t->dtype = strcmp(dt, "i32") == 0 ? RT_I32 : RT_F32;
  t->rank = shape->n <= RT_MAX_RANK ? shape->n : RT_MAX_RANK;
  for (int i = 0; i < t->rank; i++)
    t->dim[i] = strtoll(shape->kid[i].text ? shape->kid[i].text : "0", NULL, 10);
  t->offset = num(r, o, "offset");
  t->slot = opt(o, "slot");
  t->trainable = opt(o, "trainable");
  t->infer = opt(o, "infer");
  t->batch = opt(o, "batch");
  for (int i = 0; i < o->n; i++)
    if (strcmp(o->kid[i].key, "init") == 0) init_spec(r, &o->kid[i], t);
  if (shape->n > RT_MAX_RANK || (strcmp(dt, "i32") && strcmp(dt, "f32")))
    snprintf(r->bad, sizeof r->bad, "%s's type", t->name);
}

static RtProgTensor *tensors(Rd *r, RtProgJson *o, const char *key, int *n) {
  RtProgJson *a = get(r, o, key, 'a');
  RtProgTensor *t = calloc((size_t)a->n + 1, sizeof *t);
  *n = t ? a->n : 0;
  for (int i = 0; i < *n; i++) tensor(r, &a->kid[i], &t[i]);
  return t;
}

static void read_train(Rd *r, RtProg *p, RtProgJson *t) {
  RtProgJson *s = get(r, t, "schedule", 'o'), *u = get(r, t, "updates", 'a');
  p->has_train = 1;
  p->train_arena = num(r, t, "arena");
  tensor(r, get(r, t, "data", 'o'), &p->data);
  p->has_labels = 0;
  for (int i = 0; i < t->n && !p->has_labels; i++) p->has_labels = !strcmp(t->kid[i].key, "labels");
  if (p->has_labels) /* absent: a model trained on its examples alone */
    tensor(r, get(r, t, "labels", 'o'), &p->labels);
  else
    p->labels = (RtProgTensor){.name = "", .offset = -1};
  p->lr = num(r, t, "lr");
  p->step = num(r, t, "step");
  p->loss = num(r, t, "loss");
  p->infer_data = (int)num(r, t, "infer_data");
  p->accuracy = (int)num(r, t, "accuracy");
  p->ids_below = num(r, t, "ids_below");
  p->test_loss = num(r, t, "test_loss");
  p->infer_labels = (int)num(r, t, "infer_labels");
  p->optimizer = str(r, t, "optimizer");
  p->sched.kind = (RtSched)num(r, s, "kind");
  p->sched.lr = strtod(get(r, s, "lr", 'n')->text, NULL);
  p->sched.gamma = strtod(get(r, s, "gamma", 'n')->text, NULL);
  p->sched.every = (int)num(r, s, "every");
  p->sched.end = strtod(get(r, s, "end", 'n')->text, NULL);
  p->sched.epochs = (int)num(r, s, "epochs");
  p->sched.warmup = num(r, s, "warmup");
  p->epochs = (int)num(r, t, "epochs");
  p->seed = strtoull(get(r, t, "seed", 'n')->text, NULL, 10);
  p->shuffle = (int)num(r, t, "shuffle");
  p->updates = calloc((size_t)u->n + 1, sizeof *p->updates);
  p->n_updates = p->updates ? u->n : 0;
  for (int i = 0; i < p->n_updates; i++) {
    p->updates[i].value = num(r, &u->kid[i], "value");
    p->updates[i].slot = (int)num(r, &u->kid[i], "slot");
    p->updates[i].bytes = num(r, &u->kid[i], "bytes");
  }
  if (p->infer_data >= p->n_inputs || p->accuracy >= p->n_outputs || p->infer_labels >= p->n_inputs)
    snprintf(r->bad, sizeof r->bad, "train.infer_data, train.accuracy or train.infer_labels");
}

int rt_prog_read(RtProg *p, const char *name, const char *json, char *err, size_t n) {
  RtCtx c = {"the program's manifest", err, n};
  RtJson j = {(const unsigned char *)json, (const unsigned char *)json,
              (const unsigned char *)json + strlen(json), &c};
  Rd r = {{0}};
  memset(p, 0, sizeof *p);
  p->name = name;
  if (!(p->json = calloc(1, sizeof *p->json)) || parse(&j, p->json, 0)) {
    if (!p->json) rt_fail(&c, RT_ERR_ALLOC, "out of memory");
    return RP_USER;
  }
  RtProgJson *m = p->json, *in = get(&r, m, "infer", 'o');
  if (num(&r, m, "version") != 1) snprintf(r.bad, sizeof r.bad, "version (not 1)");
  p->model = str(&r, m, "model");
  p->ext_slots = (int)num(&r, m, "ext_slots");
  p->params_bytes = num(&r, m, "params_bytes");
  p->params_stored = (int)num(&r, m, "params_stored");
  p->init_seed = strtoull(get(&r, m, "init_seed", 'n')->text, NULL, 10);
  p->params = tensors(&r, m, "params", &p->n_params);
  p->prepared_bytes = num(&r, m, "prepared_bytes");
  p->prepared = tensors(&r, m, "prepared", &p->n_prepared);
  p->infer_arena = num(&r, in, "arena");
  p->batch = num(&r, in, "batch");
  p->batch_name = str(&r, in, "batch_name");
  p->inputs = tensors(&r, in, "inputs", &p->n_inputs);
  p->outputs = tensors(&r, in, "outputs", &p->n_outputs);
  p->accuracy = p->infer_data = p->infer_labels = -1;
  p->test_loss = -1;
  for (int i = 0; i < m->n; i++)
    if (strcmp(m->kid[i].key, "train") == 0) read_train(&r, p, &m->kid[i]);
  for (int i = 0; i < p->n_params; i++) {
    if (p->params[i].slot < 1 || p->params[i].slot >= p->ext_slots)
      snprintf(r.bad, sizeof r.bad, "params.slot");
    if (p->params[i].offset < 0 || p->params[i].offset + (int64_t)rt_prog_bytes(&p->params[i]) > p->params_bytes)
      snprintf(r.bad, sizeof r.bad, "params.offset");
    if (!p->params_stored && p->params[i].init.kind == RT_INIT_AUTO)
      snprintf(r.bad, sizeof r.bad, "params.init");
  }
  for (int i = 0; i < p->n_prepared; i++)
    if (p->prepared[i].slot <= p->n_params || p->prepared[i].slot >= p->ext_slots ||
        p->prepared[i].offset < 0 || p->prepared[i].offset + (int64_t)rt_prog_bytes(&p->prepared[i]) > p->prepared_bytes)
      snprintf(r.bad, sizeof r.bad, "prepared");
  if (r.bad[0] || !p->params || !p->prepared || !p->inputs || !p->outputs) {
    rt_fail(&c, RT_ERR_FORMAT, "missing or malformed field '%s'", r.bad[0] ? r.bad : "(out of memory)");
    return RP_USER;
  }
  return RP_OK;
}

void rt_prog_free(RtProg *p) {
  if (p->json) json_free(p->json);
  free(p->json);
  free(p->params);
  free(p->prepared);
  free(p->inputs);
  free(p->outputs);
  free(p->updates);
  memset(p, 0, sizeof *p);
}

/* --- messages and options ------------------------------------------------------- */

int rt_prog_error(const RtProg *p, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", p->name);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return code;
}

int rt_prog_usage(const RtProg *p, const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s%s%s: error: ", p->name, cmd ? " " : "", cmd ? cmd : "");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n(see %s%s%s --help)\n", p->name, cmd ? " " : "", cmd ? cmd : "");
  va_end(ap);
  return RP_USAGE;
}

int rt_prog_opt(int argc, char **argv, int *i, const char *name, int takes_value, const char **val) {
  size_t len = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, len) != 0 || (a[len] && (a[len] != '=' || !takes_value))) return 0;
  if (!takes_value) return 1;
  if (a[len] == '=') return *val = a + len + 1, 1;
  if (*i + 1 >= argc) return -1;
  *val = argv[++*i];
  return 1;
}

int rt_prog_positive(const char *v, int64_t *out) {
  char *end;
  long long k = strtoll(v, &end, 10);
  if (!*v || *end || k < 1) return 0;
  *out = k;
  return 1;
}

/* --- tensors, parameters, arenas ---------------------------------------------------- */

RtTensor rt_prog_tensor(const RtProgTensor *t, void *data) {
  RtTensor r = {t->dtype, t->rank, {0}, data};
  memcpy(r.dim, t->dim, sizeof r.dim);
  return r;
}

size_t rt_prog_bytes(const RtProgTensor *t) {
  RtTensor r = rt_prog_tensor(t, NULL);
  return rt_nbytes(&r);
}

char *rt_prog_type(const RtProgTensor *t, char *buf, size_t n) {
  RtTensor r = rt_prog_tensor(t, NULL);
  return rt_tensor_type_str(&r, buf, n);
}

char *rt_prog_arena(int64_t bytes) {
  size_t n = ((size_t)bytes + 64) / 64 * 64;
  char *a = aligned_alloc(64, n);
  if (a) memset(a, 0, n);
  return a;
}

int rt_prog_params_init(const RtProg *p, RtProgParams *s) {
  memset(s, 0, sizeof *s);
  s->block = (unsigned char *)rt_prog_arena(p->params_bytes);
  s->prepared = (unsigned char *)rt_prog_arena(p->prepared_bytes);
  s->ext = calloc((size_t)p->ext_slots + 1, sizeof(void *));
  if (!s->block || !s->prepared || !s->ext) return rt_prog_error(p, RP_USER, "out of memory for the parameters");
  if (p->params_stored) memcpy(s->block, kiln_params, (size_t)p->params_bytes);
  for (int i = 0; i < p->n_params && !p->params_stored; i++) {
    const RtProgTensor *t = &p->params[i];
    char err[256];
    RtTensor x = rt_prog_tensor(t, s->block + t->offset);
    if (rt_init_fill(&t->init, p->init_seed, t->name, t->dtype, x.data, rt_numel(&x), err, sizeof err) != RT_OK)
      return rt_prog_error(p, RP_USER, "%s", err);
  }
  s->ext[0] = &s->counter;
  for (int i = 0; i < p->n_params; i++) s->ext[p->params[i].slot] = s->block + p->params[i].offset;
  for (int i = 0; i < p->n_prepared; i++) s->ext[p->prepared[i].slot] = s->prepared + p->prepared[i].offset;
  rt_prog_prepare(s);
  return RP_OK;
}

void rt_prog_prepare(RtProgParams *s) { kiln_prepare(NULL, (void *const *)s->ext); }

void rt_prog_params_free(RtProgParams *s) {
  free(s->block);
  free(s->prepared);
  free(s->ext);
  memset(s, 0, sizeof *s);
}

/* Optimizer state is named after its parameter ("w.momentum_buffer"). */
static int state_of_param(const RtProg *p, const char *name) {
  for (int i = 0; i < p->n_params; i++) {
    size_t len = strlen(p->params[i].name);
    if (p->params[i].trainable && strncmp(name, p->params[i].name, len) == 0 && name[len] == '.') return 1;
  }
  return 0;
}

static int same_type(const RtProgTensor *t, const RtTensor *f) {
  if (t->dtype != f->dtype || t->rank != f->rank) return 0;
  for (int i = 0; i < t->rank; i++)
    if (t->dim[i] != f->dim[i]) return 0;
  return 1;
}

int rt_prog_params_load(const RtProg *p, RtProgParams *s, const char *path, int all, int *epoch,
                        int64_t *step) {
  RtTensorFile tf = {0};
  char err[512], a[160], b[160];
  int rc = RP_OK;
  if (rt_safetensors_read(path, &tf, err, sizeof err) != RT_OK) return rt_prog_error(p, RP_USER, "%s", err);
  for (int i = 0; i < p->n_params && rc == RP_OK; i++) {
    const RtProgTensor *t = &p->params[i];
    if (!all && !t->infer) continue;
    const RtNamedTensor *f = rt_tensor_file_find(&tf, t->name);
    if (f && same_type(t, &f->t))
      memcpy(s->ext[t->slot], f->t.data, rt_prog_bytes(t));
    else if (f)
      rc = rt_prog_error(p, RP_USER, "%s: parameter %s: expected %s, got %s", path, t->name,
                         rt_prog_type(t, a, sizeof a), rt_tensor_type_str(&f->t, b, sizeof b));
    else
      rc = rt_prog_error(p, RP_USER, "%s: parameter %s: expected %s, the file does not have it%s", path,
                         t->name, rt_prog_type(t, a, sizeof a),
                         t->trainable ? "" : " (saved by another model or optimizer?)");
  }
  for (int i = 0; i < tf.n && rc == RP_OK; i++) {
    int known = state_of_param(p, tf.items[i].name);
    for (int k = 0; k < p->n_params && !known; k++) known = strcmp(p->params[k].name, tf.items[i].name) == 0;
    if (!known)
      fprintf(stderr, "%s: warning: %s: tensor %s is not a parameter of model %s (ignored)\n", p->name, path,
              tf.items[i].name, p->model);
  }
  for (int i = 0; i < tf.n_meta; i++)
    if (epoch && strcmp(tf.meta_keys[i], "epoch") == 0)
      *epoch = atoi(tf.meta_values[i]);
    else if (step && strcmp(tf.meta_keys[i], "step") == 0)
      *step = atoll(tf.meta_values[i]);
  rt_tensor_file_free(&tf);
  if (rc == RP_OK) rt_prog_prepare(s); /* never infer with the previous weights' copies */
  return rc;
}

int rt_prog_params_save(const RtProg *p, const RtProgParams *s, const char *path, int epoch, int64_t step) {
  RtNamedTensor *items = calloc((size_t)p->n_params + 1, sizeof *items);
  char e[32], st[32], err[512];
  if (!items) return rt_prog_error(p, RP_USER, "out of memory");
  for (int i = 0; i < p->n_params; i++) {
    items[i].name = (char *)p->params[i].name;
    items[i].t = rt_prog_tensor(&p->params[i], s->ext[p->params[i].slot]);
  }
  snprintf(e, sizeof e, "%d", epoch);
  snprintf(st, sizeof st, "%lld", (long long)step);
  const char *keys[] = {"format", "model", "optimizer", "epoch", "step"};
  const char *vals[] = {"kiln", p->model, p->optimizer ? p->optimizer : "", e, st};
  RtStatus rs = rt_safetensors_write(path, items, p->n_params, keys, vals, 5, err, sizeof err);
  free(items);
  return rs == RT_OK ? RP_OK : rt_prog_error(p, RP_USER, "%s", err);
}
