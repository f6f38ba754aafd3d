/*
 * parser.y: the grammar of the kiln language (bison, pure, with locations).
 *
 * The grammar only builds the AST (ast.h); it knows no op names: any
 * `name(args)` is a call, and elaboration decides whether it is a block, a
 * compile-time builtin or an op from ir/ops.def.  So adding an op never
 * touches this file.
 *
 *   program  := { model | block | train | end-of-line }
 *   model    := 'model' NAME '(' params ')' body
 *   block    := 'block' NAME '(' params ')' body
 *   train    := 'train' NAME '{' { NAME [expr] end-of-line } '}'
 *   body     := '{' { stmt end-of-line } '}'
 *   stmt     := NAME {',' NAME} '=' expr
 *             | 'input' NAME ':' type
 *             | 'output' NAME ['=' expr]
 *             | 'param' NAME ':' type { NAME '=' expr }
 *             | 'for' NAME 'in' expr ['..' expr] body
 *             | 'if' expr body ['else' (body | if)]
 *             | 'return' [expr {',' expr}]
 *             | 'assert' expr {',' expr}
 *             | call                      (for its effect: assign(...))
 *   type     := dtype ['[' [expr {',' expr}] ']']
 *   expr     := binary and unary operators over postfix expressions:
 *               or < and < not < comparisons < + - < * / // % @ < unary - < **
 *   postfix  := primary { '[' slice {',' slice} ']' }
 *   primary  := number | string | true | false | dtype | NAME | '(' expr ')'
 *             | '[' [expr {',' expr} [',']] ']' | NAME '(' args ')' | 'op' '.' NAME '(' args ')'
 *   args     := [arg {',' arg} [',']]     arg := expr | NAME '=' expr
 *   slice    := expr | [expr] ':' [expr] [':' [expr]]
 *
 * A syntax error is recorded in the ParseState (first one wins) and
 * reported by parse_source through error_at, after the parser and the
 * scanner have released their memory.
 */
%define api.pure full
%define api.prefix {kiln_yy}
%define parse.error custom
%define parse.lac full
%locations
%param {yyscan_t scanner}
%parse-param {ParseState *ps}

%code requires {
#include "parse_state.h"
typedef void *yyscan_t;
}

%code {
#include <string.h>
#define YYMAXDEPTH 2000 /* bounds nesting, hence recursion in elaboration */
int kiln_yylex(KILN_YYSTYPE *lval, KILN_YYLTYPE *lloc, yyscan_t scanner);
static void kiln_yyerror(KILN_YYLTYPE *loc, yyscan_t scanner, ParseState *ps, const char *msg);

#define L(yl) parse_loc(ps, (yl).first_line, (yl).first_column)
#define NEW(T) ((T *)arena_alloc(ps->arena, sizeof(T)))
#define PUSH(obj, field, val) \
  VEC_PUSH(ps->arena, (obj)->field, (obj)->n_##field, (obj)->cap_##field, (val))

/* Builds an expression and checks nesting depth (hostile input can nest
 * deeply enough to exhaust the elaborator's stack). */
static Expr *mk(ParseState *ps, ExprKind k, Loc loc, Expr *a, Expr *b) {
  Expr *e = NEW(Expr);
  e->kind = k;
  e->loc = loc;
  e->a = a;
  e->b = b;
  int d = 0;
  if (a && a->depth > d) d = a->depth;
  if (b && b->depth > d) d = b->depth;
  e->depth = d + 1;
  if (e->depth > MAX_NESTING && !ps->failed)
    parse_state_error(ps, loc.line, loc.col, "expression is nested too deeply");
  return e;
}

static void note_depth(ParseState *ps, Expr *parent, Expr *child) {
  if (child && child->depth + 1 > parent->depth) {
    parent->depth = child->depth + 1;
    if (parent->depth > MAX_NESTING && !ps->failed)
      parse_state_error(ps, parent->loc.line, parent->loc.col, "expression is nested too deeply");
  }
}

static Expr *binary(ParseState *ps, int op, Loc loc, Expr *a, Expr *b) {
  Expr *e = mk(ps, E_BINARY, loc, a, b);
  e->op = op;
  return e;
}

static Stmt *stmt(ParseState *ps, StmtKind k, Loc loc) {
  Stmt *s = NEW(Stmt);
  s->kind = k;
  s->loc = loc;
  return s;
}

static void stmt_target(ParseState *ps, Stmt *s, const char *name, Loc loc) {
  Name n = {name, loc};
  PUSH(s, targets, n);
}

static Decl *decl(ParseState *ps, DeclKind k, const char *name, Loc loc) {
  Decl *d = NEW(Decl);
  d->kind = k;
  d->name = name;
  d->loc = loc;
  VEC_PUSH(ps->arena, ps->prog->decls, ps->prog->n_decls, ps->prog->cap_decls, d);
  return d;
}
}

%union {
  int64_t ival;
  double fval;
  const char *str;
  Expr *expr;
  Stmt *stmt;
  StmtList *stmts;
  Decl *decl;
  TypeExpr *type;
  SliceItem *slice;
}

%token TK_MODEL "'model'" TK_BLOCK "'block'" TK_TRAIN "'train'" TK_INPUT "'input'"
%token TK_OUTPUT "'output'" TK_PARAM "'param'" TK_FOR "'for'" TK_IN "'in'" TK_IF "'if'"
%token TK_ELSE "'else'" TK_RETURN "'return'" TK_ASSERT "'assert'"
%token TK_AND "'and'" TK_OR "'or'" TK_NOT "'not'"
%token <ival> TK_INT "integer" TK_BOOL "true or false" TK_DTYPE "dtype"
%token <fval> TK_FLOAT "number"
%token <str> TK_IDENT "name" TK_STRING "string"
%token TK_NL "end of line" TK_LEXERR "invalid token"
%token TK_DOTDOT "'..'" TK_POW "'**'" TK_FLOORDIV "'//'"
%token TK_EQ "'=='" TK_NE "'!='" TK_LE "'<='" TK_GE "'>='"

%left TK_OR
%left TK_AND
%precedence TK_NOT
%nonassoc TK_EQ TK_NE '<' TK_LE '>' TK_GE
%left '+' '-'
%left '*' '/' '@' '%' TK_FLOORDIV
%precedence UMINUS
%right TK_POW

%type <expr> expr postfix primary call args_opt args exprs list_items opt_expr slices
%type <stmt> stmt if_stmt targets popts
%type <stmts> body stmts
%type <decl> model_head block_head train_head params_opt params train_entries
%type <type> type
%type <slice> slice

%%

program
  : %empty
  | program decl
  | program sep
  ;

sep : TK_NL | ';' ;
opt_nl : %empty | TK_NL ;

decl
  : model_head '(' params_opt ')' opt_nl body  { $1->body = *$6; }
  | block_head '(' params_opt ')' opt_nl body  { $1->body = *$6; }
  | train_head opt_nl '{' train_entries '}'
  | train_head opt_nl '{' train_entries train_entry '}'
  ;

model_head : TK_MODEL TK_IDENT { $$ = decl(ps, D_MODEL, $2, L(@2)); } ;
block_head : TK_BLOCK TK_IDENT { $$ = decl(ps, D_BLOCK, $2, L(@2)); } ;
train_head : TK_TRAIN TK_IDENT { $$ = decl(ps, D_TRAIN, $2, L(@2)); } ;

params_opt
  : %empty         { $$ = ps->prog->decls[ps->prog->n_decls - 1]; }
  | params
  | params ','
  ;

params
  : TK_IDENT               { $$ = ps->prog->decls[ps->prog->n_decls - 1];
                             ParamDecl p = {$1, NULL, L(@1)}; PUSH($$, params, p); }
  | TK_IDENT '=' expr      { $$ = ps->prog->decls[ps->prog->n_decls - 1];
                             ParamDecl p = {$1, $3, L(@1)}; PUSH($$, params, p); }
  | params ',' TK_IDENT    { ParamDecl p = {$3, NULL, L(@3)}; PUSH($1, params, p); $$ = $1; }
  | params ',' TK_IDENT '=' expr
                           { ParamDecl p = {$3, $5, L(@3)}; PUSH($1, params, p); $$ = $1; }
  ;

train_entries
  : %empty                         { $$ = ps->prog->decls[ps->prog->n_decls - 1]; }
  | train_entries sep              { $$ = $1; }
  | train_entries train_entry sep  { $$ = $1; }
  ;

train_entry
  : TK_IDENT        { Decl *d = ps->prog->decls[ps->prog->n_decls - 1];
                      TrainEntry t = {$1, NULL, L(@1)}; PUSH(d, entries, t); }
  | TK_IDENT exprs  { Decl *d = ps->prog->decls[ps->prog->n_decls - 1];
                      TrainEntry t = {$1, $2->n_items == 1 ? $2->items[0] : $2, L(@1)};
                      PUSH(d, entries, t); }
  ;

body
  : '{' stmts '}'       { $$ = $2; }
  | '{' stmts stmt '}'  { PUSH($2, items, $3); $$ = $2; }
  ;

stmts
  : %empty         { $$ = NEW(StmtList); }
  | stmts sep      { $$ = $1; }
  | stmts stmt sep { PUSH($1, items, $2); $$ = $1; }
  ;

stmt
  : targets '=' expr                  { $$ = $1; $$->value = $3; }
  | TK_INPUT TK_IDENT ':' type        { $$ = stmt(ps, S_INPUT, L(@1)); stmt_target(ps, $$, $2, L(@2));
                                        $$->type = *$4; }
  | TK_OUTPUT TK_IDENT                { $$ = stmt(ps, S_OUTPUT, L(@1)); stmt_target(ps, $$, $2, L(@2)); }
  | TK_OUTPUT TK_IDENT '=' expr       { $$ = stmt(ps, S_OUTPUT, L(@1)); stmt_target(ps, $$, $2, L(@2));
                                        $$->value = $4; }
  | TK_PARAM TK_IDENT ':' type popts  { $$ = $5; $$->loc = L(@1); stmt_target(ps, $$, $2, L(@2));
                                        $$->type = *$4; }
  | TK_FOR TK_IDENT TK_IN expr TK_DOTDOT expr opt_nl body
                                      { $$ = stmt(ps, S_FOR, L(@1)); stmt_target(ps, $$, $2, L(@2));
                                        $$->value = $4; $$->hi = $6; $$->body = *$8; }
  | TK_FOR TK_IDENT TK_IN expr opt_nl body
                                      { $$ = stmt(ps, S_FOR, L(@1)); stmt_target(ps, $$, $2, L(@2));
                                        $$->value = $4; $$->body = *$6; }
  | if_stmt
  | TK_RETURN                         { $$ = stmt(ps, S_RETURN, L(@1)); }
  | TK_RETURN exprs                   { $$ = stmt(ps, S_RETURN, L(@1));
                                        $$->values = $2->items; $$->n_values = $2->n_items; }
  | TK_ASSERT exprs                   { $$ = stmt(ps, S_ASSERT, L(@1));
                                        $$->values = $2->items; $$->n_values = $2->n_items; }
  | call                              { $$ = stmt(ps, S_EXPR, $1->loc); $$->value = $1; }
  ;

if_stmt
  : TK_IF expr opt_nl body            { $$ = stmt(ps, S_IF, L(@1)); $$->value = $2; $$->body = *$4; }
  | TK_IF expr opt_nl body TK_ELSE opt_nl body
                                      { $$ = stmt(ps, S_IF, L(@1)); $$->value = $2; $$->body = *$4;
                                        $$->else_body = *$7; }
  | TK_IF expr opt_nl body TK_ELSE if_stmt
                                      { $$ = stmt(ps, S_IF, L(@1)); $$->value = $2; $$->body = *$4;
                                        PUSH(&$$->else_body, items, $6); }
  ;

targets
  : TK_IDENT              { $$ = stmt(ps, S_ASSIGN, L(@1)); stmt_target(ps, $$, $1, L(@1)); }
  | targets ',' TK_IDENT  { $$ = $1; stmt_target(ps, $$, $3, L(@3)); }
  ;

type
  : TK_DTYPE                  { $$ = NEW(TypeExpr); $$->dtype = (DType)$1; $$->loc = L(@1); }
  | TK_DTYPE '[' ']'          { $$ = NEW(TypeExpr); $$->dtype = (DType)$1; $$->loc = L(@1); }
  | TK_DTYPE '[' exprs ']'    { $$ = NEW(TypeExpr); $$->dtype = (DType)$1; $$->loc = L(@1);
                                $$->dims = $3->items; $$->n_dims = $3->n_items; }
  ;

popts
  : %empty                    { $$ = stmt(ps, S_PARAM, L(@$)); }
  | popts TK_IDENT '=' expr   { Arg a = {$2, $4, L(@2)}; PUSH($1, opts, a); $$ = $1; }
  ;

exprs
  : expr            { $$ = mk(ps, E_LIST, $1->loc, NULL, NULL); PUSH($$, items, $1); note_depth(ps, $$, $1); }
  | exprs ',' expr  { PUSH($1, items, $3); note_depth(ps, $1, $3); $$ = $1; }
  ;

expr
  : postfix
  | '-' expr %prec UMINUS     { $$ = mk(ps, E_UNARY, L(@1), $2, NULL); $$->op = UOP_NEG; }
  | TK_NOT expr               { $$ = mk(ps, E_UNARY, L(@1), $2, NULL); $$->op = UOP_NOT; }
  | expr '+' expr             { $$ = binary(ps, BOP_ADD, L(@2), $1, $3); }
  | expr '-' expr             { $$ = binary(ps, BOP_SUB, L(@2), $1, $3); }
  | expr '*' expr             { $$ = binary(ps, BOP_MUL, L(@2), $1, $3); }
  | expr '/' expr             { $$ = binary(ps, BOP_DIV, L(@2), $1, $3); }
  | expr TK_FLOORDIV expr     { $$ = binary(ps, BOP_FLOORDIV, L(@2), $1, $3); }
  | expr '%' expr             { $$ = binary(ps, BOP_MOD, L(@2), $1, $3); }
  | expr '@' expr             { $$ = binary(ps, BOP_MATMUL, L(@2), $1, $3); }
  | expr TK_POW expr          { $$ = binary(ps, BOP_POW, L(@2), $1, $3); }
  | expr TK_EQ expr           { $$ = binary(ps, BOP_EQ, L(@2), $1, $3); }
  | expr TK_NE expr           { $$ = binary(ps, BOP_NE, L(@2), $1, $3); }
  | expr '<' expr             { $$ = binary(ps, BOP_LT, L(@2), $1, $3); }
  | expr TK_LE expr           { $$ = binary(ps, BOP_LE, L(@2), $1, $3); }
  | expr '>' expr             { $$ = binary(ps, BOP_GT, L(@2), $1, $3); }
  | expr TK_GE expr           { $$ = binary(ps, BOP_GE, L(@2), $1, $3); }
  | expr TK_AND expr          { $$ = binary(ps, BOP_AND, L(@2), $1, $3); }
  | expr TK_OR expr           { $$ = binary(ps, BOP_OR, L(@2), $1, $3); }
  ;

postfix
  : primary
  | postfix '[' slices ']'    { $$ = $3; $$->a = $1; note_depth(ps, $$, $1); }
  ;

slices
  : slice             { $$ = mk(ps, E_INDEX, $1->loc, NULL, NULL); PUSH($$, slices, *$1);
                        note_depth(ps, $$, $1->lo); note_depth(ps, $$, $1->hi); note_depth(ps, $$, $1->step); }
  | slices ',' slice  { PUSH($1, slices, *$3); $$ = $1;
                        note_depth(ps, $$, $3->lo); note_depth(ps, $$, $3->hi); note_depth(ps, $$, $3->step); }
  ;

slice
  : expr                                { $$ = NEW(SliceItem); $$->kind = SL_INDEX; $$->lo = $1; $$->loc = $1->loc; }
  | opt_expr ':' opt_expr               { $$ = NEW(SliceItem); $$->kind = SL_RANGE; $$->lo = $1; $$->hi = $3;
                                          $$->loc = $1 ? $1->loc : L(@2); }
  | opt_expr ':' opt_expr ':' opt_expr  { $$ = NEW(SliceItem); $$->kind = SL_RANGE; $$->lo = $1; $$->hi = $3;
                                          $$->step = $5; $$->loc = $1 ? $1->loc : L(@2); }
  ;

opt_expr : %empty { $$ = NULL; } | expr ;

primary
  : TK_INT             { $$ = mk(ps, E_INT, L(@1), NULL, NULL); $$->ival = $1; }
  | TK_FLOAT           { $$ = mk(ps, E_FLOAT, L(@1), NULL, NULL); $$->fval = $1; }
  | TK_STRING          { $$ = mk(ps, E_STR, L(@1), NULL, NULL); $$->str = $1; }
  | TK_BOOL            { $$ = mk(ps, E_BOOL, L(@1), NULL, NULL); $$->ival = $1; }
  | TK_DTYPE           { $$ = mk(ps, E_NAME, L(@1), NULL, NULL); $$->str = $1 == DT_F32 ? "f32" : "i32"; }
  | TK_IDENT           { $$ = mk(ps, E_NAME, L(@1), NULL, NULL); $$->str = $1; }
  | '(' expr ')'       { $$ = $2; }
  | '[' ']'            { $$ = mk(ps, E_LIST, L(@1), NULL, NULL); }
  | '[' list_items ']' { $$ = $2; $$->loc = L(@1); }
  | call
  ;

list_items
  : exprs
  | exprs ','
  ;

call
  : TK_IDENT '(' args_opt ')'              { $$ = $3; $$->str = $1; $$->loc = L(@1); }
  | TK_IDENT '.' TK_IDENT '(' args_opt ')' { $$ = $5; $$->str = $3; $$->loc = L(@3); $$->qualified = true;
                                             if (strcmp($1, "op") != 0)
                                               parse_state_error(ps, @1.first_line, @1.first_column,
                                                 "only op.NAME(...) may be qualified (it calls the op NAME, not a block)"); }
  ;

args_opt
  : %empty     { $$ = mk(ps, E_CALL, L(@$), NULL, NULL); }
  | args
  | args ','
  ;

args
  : expr                       { $$ = mk(ps, E_CALL, $1->loc, NULL, NULL);
                                 Arg a = {NULL, $1, $1->loc}; PUSH($$, args, a); note_depth(ps, $$, $1); }
  | TK_IDENT '=' expr          { $$ = mk(ps, E_CALL, L(@1), NULL, NULL);
                                 Arg a = {$1, $3, L(@1)}; PUSH($$, args, a); note_depth(ps, $$, $3); }
  | args ',' expr              { Arg a = {NULL, $3, $3->loc}; PUSH($1, args, a); note_depth(ps, $1, $3); $$ = $1; }
  | args ',' TK_IDENT '=' expr { Arg a = {$3, $5, L(@3)}; PUSH($1, args, a); note_depth(ps, $1, $5); $$ = $1; }
  ;

%%

static void kiln_yyerror(KILN_YYLTYPE *loc, yyscan_t scanner, ParseState *ps, const char *msg) {
  if (strstr(msg, "exhausted")) /* the parser stack reached YYMAXDEPTH */
    msg = "brackets or blocks are nested too deeply";
  parse_state_error(ps, loc->first_line, loc->first_column, msg);
}

/* Tokens that can start an expression: listed as one "an expression". */
static bool starts_expr(yysymbol_kind_t k) {
  static const char *const punct[] = {"'-'", "'('", "'['"};
  switch ((int)k) {
  case YYSYMBOL_TK_INT: case YYSYMBOL_TK_FLOAT: case YYSYMBOL_TK_STRING: case YYSYMBOL_TK_BOOL:
  case YYSYMBOL_TK_IDENT: case YYSYMBOL_TK_DTYPE: case YYSYMBOL_TK_NOT:
    return true;
  }
  for (int i = 0; i < 3; i++)
    if (strcmp(yysymbol_name(k), punct[i]) == 0)
      return true;
  return false;
}

static void describe_unexpected(ParseState *ps, yysymbol_kind_t k, char *buf, size_t n) {
  switch ((int)k) {
  case YYSYMBOL_YYEOF: snprintf(buf, n, "end of file"); break;
  case YYSYMBOL_TK_IDENT: snprintf(buf, n, "name '%s'", ps->last_text); break;
  case YYSYMBOL_TK_INT: case YYSYMBOL_TK_FLOAT: snprintf(buf, n, "number %s", ps->last_text); break;
  case YYSYMBOL_TK_STRING: snprintf(buf, n, "string %s", ps->last_text); break;
  default: snprintf(buf, n, "%s", yysymbol_name(k)); break;
  }
}

static bool is_operator(yysymbol_kind_t k) {
  static const char *const ops[] = {"'+'", "'-'", "'*'", "'/'", "'@'", "'%'", "'<'", "'>'"};
  switch ((int)k) {
  case YYSYMBOL_TK_POW: case YYSYMBOL_TK_FLOORDIV: case YYSYMBOL_TK_EQ: case YYSYMBOL_TK_NE:
  case YYSYMBOL_TK_LE: case YYSYMBOL_TK_GE: case YYSYMBOL_TK_AND: case YYSYMBOL_TK_OR:
    return true;
  }
  for (int i = 0; i < 8; i++)
    if (strcmp(yysymbol_name(k), ops[i]) == 0)
      return true;
  return false;
}

static bool is_closer(yysymbol_kind_t k) {
  const char *n = yysymbol_name(k);
  return strcmp(n, "')'") == 0 || strcmp(n, "']'") == 0 || strcmp(n, "'}'") == 0;
}

/* Tokens that could continue any expression (operators, indexing, a call,
 * a named argument): left out of "expected" lists, where they are noise. */
static bool continues_expr(yysymbol_kind_t k) {
  const char *n = yysymbol_name(k);
  return is_operator(k) || strcmp(n, "'['") == 0 || strcmp(n, "'('") == 0 ||
         strcmp(n, "'.'") == 0 || strcmp(n, "'='") == 0;
}

/* ", expected A, B or C" for up to five expected tokens; empty otherwise.
 * After an expression the operators are dropped; at the end of the file
 * only the brackets still open are named. */
static void describe_expected(const yypcontext_t *ctx, bool at_eof, char *buf, size_t size) {
  enum { MAX_EXP = 40 };
  yysymbol_kind_t exp[MAX_EXP];
  int n = yypcontext_expected_tokens(ctx, exp, MAX_EXP);
  buf[0] = 0;
  if (n <= 0 || n >= MAX_EXP)
    return;
  const char *names[MAX_EXP];
  int m = 0;
  bool expr_listed = false, has_int = false, after_expr = false, closers = false;
  for (int i = 0; i < n; i++) {
    has_int = has_int || exp[i] == YYSYMBOL_TK_INT;
    after_expr = after_expr || strcmp(yysymbol_name(exp[i]), "'+'") == 0;
    closers = closers || is_closer(exp[i]);
  }
  for (int pass = 0; pass < 2; pass++) {
    /* pass 1, at the end of the file, names only the brackets still open */
    bool only_closers = pass == 1;
    m = 0;
    expr_listed = false;
    for (int i = 0; i < n; i++) {
      if ((only_closers && !is_closer(exp[i])) || (after_expr && continues_expr(exp[i])))
        continue;
      if (has_int && starts_expr(exp[i])) {
        if (!expr_listed)
          names[m++] = "an expression";
        expr_listed = true;
      } else {
        names[m++] = yysymbol_name(exp[i]);
      }
    }
    if (m <= 5 || !at_eof || !closers)
      break;
  }
  if (m == 0 || m > 5)
    return;
  size_t k = (size_t)snprintf(buf, size, ", expected ");
  for (int i = 0; i < m && k < size; i++)
    k += (size_t)snprintf(buf + k, size - k, "%s%s", i == 0 ? "" : i == m - 1 ? " or " : ", ",
                          names[i]);
}

static bool is_keyword(int tok) {
  switch (tok) {
  case TK_MODEL: case TK_BLOCK: case TK_TRAIN: case TK_INPUT: case TK_OUTPUT: case TK_PARAM:
  case TK_FOR: case TK_IN: case TK_IF: case TK_ELSE: case TK_RETURN: case TK_ASSERT:
  case TK_AND: case TK_OR: case TK_NOT: case TK_BOOL: case TK_DTYPE:
    return true;
  }
  return false;
}

/* Mistakes common enough to deserve their own sentence; false if none fits. */
static bool report_common_mistake(ParseState *ps, yysymbol_kind_t got, const KILN_YYLTYPE *loc) {
  const char *g = yysymbol_name(got);
  char msg[256];
  if (is_keyword(ps->prev_kind) && (strcmp(g, "'='") == 0 || strcmp(g, "','") == 0)) {
    snprintf(msg, sizeof msg, "'%s' is a keyword and cannot be used as a name", ps->prev_text);
    parse_state_error(ps, ps->prev_line, ps->prev_col, msg);
    return true;
  }
  if (got == YYSYMBOL_TK_ELSE && ps->prev_kind == TK_NL) {
    parse_state_error(ps, loc->first_line, loc->first_column,
                      "'else' must be on the same line as the '}' that closes the if");
    return true;
  }
  if (is_operator(got) && got != YYSYMBOL_TK_NOT && ps->prev_kind == TK_NL) {
    snprintf(msg, sizeof msg, "%s cannot be at the start of a statement; to continue the previous "
             "line, end that line with the operator", g);
    parse_state_error(ps, loc->first_line, loc->first_column, msg);
    return true;
  }
  return false;
}

static int yyreport_syntax_error(const yypcontext_t *ctx, yyscan_t scanner, ParseState *ps) {
  yysymbol_kind_t got = yypcontext_token(ctx);
  if (got == YYSYMBOL_TK_LEXERR || ps->failed)
    return 0;
  const KILN_YYLTYPE *loc = yypcontext_location(ctx);
  if (report_common_mistake(ps, got, loc))
    return 0;
  char what[96], expected[400], msg[512];
  describe_unexpected(ps, got, what, sizeof what);
  describe_expected(ctx, got == YYSYMBOL_YYEOF, expected, sizeof expected);
  if (got == YYSYMBOL_YYEOF && ps->prev_line) {
    /* right after the last token, not after trailing blanks and comments */
    snprintf(msg, sizeof msg, "unexpected end of file%s", expected);
    parse_state_error(ps, ps->prev_line, ps->prev_end_col, msg);
  } else if (ps->prev_line && loc->first_line > ps->prev_line && ps->prev_kind != TK_NL) {
    /* the statement was left open at the end of the previous line */
    snprintf(msg, sizeof msg, "unexpected end of line%s", expected);
    parse_state_error(ps, ps->prev_line, ps->prev_end_col, msg);
  } else {
    snprintf(msg, sizeof msg, "unexpected %s%s", what, expected);
    parse_state_error(ps, loc->first_line, loc->first_column, msg);
  }
  return 0;
}
