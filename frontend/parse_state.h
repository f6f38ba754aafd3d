/*
 * parse_state.h: state shared by the lexer and the parser of one source.
 */
#ifndef KILN_PARSE_STATE_H
#define KILN_PARSE_STATE_H

#include "ast.h"

typedef struct ParseState {
  Arena *arena;
  const Source *src;
  Program *prog;
  int line, col;      /* position of the next byte */
  int nesting;        /* open ( and [ : newlines inside them are blanks */
  int ends_stmt;      /* the last token could end a statement */
  char last_text[48]; /* text of the last token, for messages */
  int tok_kind, tok_line, tok_col, tok_end_col;      /* the last token read ... */
  int prev_kind, prev_line, prev_col, prev_end_col;  /* ... and the one before it */
  char prev_text[48];
  bool failed;        /* first error recorded below */
  int err_line, err_col;
  char err_msg[512];
} ParseState;

void parse_state_error(ParseState *ps, int line, int col, const char *msg);
Loc parse_loc(const ParseState *ps, int line, int col);

#endif
