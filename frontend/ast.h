/*
 * ast.h: the syntax tree of a .kiln file, as the parser builds it.
 *
 * The AST is a faithful record of the text (every node keeps its Loc); it
 * has no types or shapes.  Elaboration (elab*.c) walks it with compile-time
 * values and turns it into Graph IR.  Everything is allocated in the
 * compilation's arena.
 */
#ifndef KILN_AST_H
#define KILN_AST_H

#include "ir.h"

typedef enum ExprKind {
  E_INT,    /* ival */
  E_FLOAT,  /* fval */
  E_STR,    /* str */
  E_BOOL,   /* ival 0/1 */
  E_NAME,   /* str */
  E_LIST,   /* [items] */
  E_UNARY,  /* op a: '-', 'n' (not) */
  E_BINARY, /* a op b: + - * / @ % ** // == != < <= > >= and or */
  E_CALL,   /* callee(args); qualified: op.callee */
  E_INDEX,  /* a[slices] */
} ExprKind;

/* Binary and unary operator codes (single chars where possible). */
enum {
  BOP_ADD = '+', BOP_SUB = '-', BOP_MUL = '*', BOP_DIV = '/', BOP_MATMUL = '@', BOP_MOD = '%',
  BOP_POW = 256, BOP_FLOORDIV, BOP_EQ, BOP_NE, BOP_LT, BOP_LE, BOP_GT, BOP_GE, BOP_AND, BOP_OR,
  UOP_NEG = '-', UOP_NOT = '!',
};

typedef struct Expr Expr;

typedef struct Arg {
  const char *name; /* NULL for a positional argument */
  Expr *value;
  Loc loc; /* of the name, or of the value when positional */
} Arg;

typedef enum SliceKind { SL_INDEX, SL_RANGE } SliceKind;

typedef struct SliceItem {
  SliceKind kind;
  Expr *lo, *hi, *step; /* SL_INDEX: lo only; SL_RANGE: each may be NULL */
  Loc loc;
} SliceItem;

struct Expr {
  ExprKind kind;
  Loc loc;
  int depth; /* height of this subtree, bounded by MAX_NESTING */
  int64_t ival;
  double fval;
  const char *str; /* E_STR text, E_NAME name, E_CALL callee */
  bool qualified;  /* E_CALL written op.name(...) */
  int op;          /* E_UNARY, E_BINARY */
  Expr *a, *b;
  Expr **items; /* E_LIST */
  int n_items, cap_items;
  Arg *args; /* E_CALL */
  int n_args, cap_args;
  SliceItem *slices; /* E_INDEX */
  int n_slices, cap_slices;
};

typedef struct TypeExpr {
  DType dtype;
  Expr **dims;
  int n_dims, cap_dims;
  Loc loc;
} TypeExpr;

typedef enum StmtKind {
  S_ASSIGN, /* targets = value */
  S_INPUT,  /* input name: type */
  S_OUTPUT, /* output name [= value] */
  S_PARAM,  /* param name: type [key=value ...] */
  S_FOR,    /* for var in lo .. hi { body }  or  for var in list { body } */
  S_IF,     /* if cond { body } else { else_body } */
  S_RETURN, /* return values */
  S_ASSERT, /* assert cond, message pieces */
  S_EXPR,   /* a call evaluated for its effect: assign(running_mean, ...) */
} StmtKind;

typedef struct Stmt Stmt;

typedef struct StmtList {
  Stmt **items;
  int n_items, cap_items;
} StmtList;

typedef struct Name {
  const char *name;
  Loc loc;
} Name;

struct Stmt {
  StmtKind kind;
  Loc loc;
  Name *targets; /* S_ASSIGN; S_INPUT/OUTPUT/PARAM/FOR use targets[0] */
  int n_targets, cap_targets;
  Expr *value;      /* S_ASSIGN, S_OUTPUT (may be NULL), S_IF cond, S_FOR lo or list */
  Expr *hi;         /* S_FOR over a range: exclusive end */
  TypeExpr type;    /* S_INPUT, S_PARAM */
  Arg *opts;        /* S_PARAM options (init=, trainable=) */
  int n_opts, cap_opts;
  Expr **values;    /* S_RETURN, S_ASSERT (cond then message pieces) */
  int n_values, cap_values;
  StmtList body, else_body; /* S_FOR, S_IF */
};

typedef struct ParamDecl {
  const char *name;
  Expr *dflt; /* NULL: required */
  Loc loc;
} ParamDecl;

typedef enum DeclKind { D_MODEL, D_BLOCK, D_TRAIN } DeclKind;

typedef struct Decl {
  DeclKind kind;
  const char *name;
  Loc loc;
  ParamDecl *params;
  int n_params, cap_params;
  StmtList body;
  TrainEntry *entries; /* D_TRAIN */
  int n_entries, cap_entries;
  bool creates_params; /* D_BLOCK: declares a param or calls a block that does */
} Decl;

typedef struct Program {
  Decl **decls;
  int n_decls, cap_decls;
} Program;

/* --- parse.c --- */
/* Parses one source into prog (appending its declarations).  A syntax or
 * lexical error raises through d (error_at). */
void parse_source(Arena *a, Diag *d, const Source *src, Program *prog);

/* Limits that keep hostile input from exhausting the stack. */
enum { MAX_NESTING = 200 };

#endif
