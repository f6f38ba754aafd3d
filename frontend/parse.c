/*
 * parse.c: runs the flex scanner and the bison parser over one source.
 *
 * Errors found while scanning or parsing are recorded in the ParseState
 * (the first one wins) and raised with error_at only after the scanner and
 * the parser have freed their memory, so a syntax error leaks nothing.
 */
#include <string.h>

#include "parse_state.h"
#include "parser.h"

typedef struct yy_buffer_state *YY_BUFFER_STATE;
int kiln_yylex_init_extra(ParseState *extra, yyscan_t *scanner);
int kiln_yylex_destroy(yyscan_t scanner);
YY_BUFFER_STATE kiln_yy_scan_bytes(const char *bytes, int len, yyscan_t scanner);
int kiln_yyparse(yyscan_t scanner, ParseState *ps);

int kiln_yylex_raw(KILN_YYSTYPE *lval, KILN_YYLTYPE *lloc, yyscan_t scanner);
ParseState *kiln_yyget_extra(yyscan_t scanner);

/* The parser's scanner: the flex one, remembering where tokens end so a
 * syntax error found on the next line can point at the end of this one. */
int kiln_yylex(KILN_YYSTYPE *lval, KILN_YYLTYPE *lloc, yyscan_t scanner) {
  ParseState *ps = kiln_yyget_extra(scanner);
  memcpy(ps->prev_text, ps->last_text, sizeof ps->prev_text);
  int tok = kiln_yylex_raw(lval, lloc, scanner);
  ps->prev_kind = ps->tok_kind;
  ps->prev_line = ps->tok_line;
  ps->prev_col = ps->tok_col;
  ps->prev_end_col = ps->tok_end_col;
  ps->tok_kind = tok;
  ps->tok_line = lloc->first_line;
  ps->tok_col = lloc->first_column;
  /* a token ends on its own line; an end of line ends where the line does */
  ps->tok_end_col = tok == TK_NL ? lloc->first_column : lloc->last_column;
  return tok;
}

void parse_state_error(ParseState *ps, int line, int col, const char *msg) {
  if (ps->failed)
    return;
  ps->failed = true;
  ps->err_line = line;
  ps->err_col = col;
  snprintf(ps->err_msg, sizeof ps->err_msg, "%s", msg);
}

Loc parse_loc(const ParseState *ps, int line, int col) { return (Loc){ps->src, line, col}; }

void parse_source(Arena *a, Diag *d, const Source *src, Program *prog) {
  ParseState ps = {0};
  ps.arena = a;
  ps.src = src;
  ps.prog = prog;
  ps.line = ps.col = 1;
  if (src->len > (size_t)64 << 20)
    error_plain(d, "%s: file is larger than 64 MiB", src->name);
  yyscan_t scanner;
  if (kiln_yylex_init_extra(&ps, &scanner))
    die("cannot create the scanner");
  kiln_yy_scan_bytes(src->text, (int)src->len, scanner);
  int rc = kiln_yyparse(scanner, &ps);
  kiln_yylex_destroy(scanner);
  if (ps.failed)
    error_at(d, parse_loc(&ps, ps.err_line, ps.err_col), "%s", ps.err_msg);
  if (rc)
    error_at(d, parse_loc(&ps, ps.line, ps.col), "cannot parse this file");
}
