/*
 * inflate.c: a DEFLATE (RFC 1951) decoder and gzip (RFC 1952) reader.
 *
 * Why kiln has its own: the runtime is linked into every program kiln
 * builds and depends on libc and libm alone, yet datasets such as
 * Fashion-MNIST ship gzip-compressed.  Decompression only is needed, and a
 * careful decoder is a few hundred lines.
 *
 * DEFLATE in brief.  The data is a sequence of blocks, each starting with
 * 3 header bits: BFINAL (this is the last block) and BTYPE (00 stored,
 * 01 fixed Huffman codes, 10 dynamic Huffman codes, 11 invalid).  Bits are
 * packed starting at the least significant bit of each byte; multi-bit
 * fields are read LSB first, but Huffman codes are packed starting with
 * their most significant bit.  A stored block is byte-aligned: LEN and its
 * one's complement NLEN (16 bits each), then LEN literal bytes.  A Huffman
 * block is a stream of symbols from a literal/length alphabet: 0..255 are
 * literal bytes, 256 ends the block, and 257..285 are lengths (3..258,
 * some followed by extra bits) which are followed by a distance symbol
 * (0..29, plus extra bits, giving 1..32768): copy `length` bytes starting
 * `distance` bytes back in the output, possibly overlapping what is being
 * written.  Fixed blocks use codes defined by the RFC; dynamic blocks
 * describe their codes first, as code lengths, themselves Huffman-coded by
 * a small "code-length code".
 *
 * Huffman decoding is table-driven and canonical: a code is determined by
 * its code lengths alone (shorter codes first, ties in symbol order), so
 * it is stored as the number of codes of each length plus the symbols in
 * code order, and decoded a bit at a time by walking the lengths.  As a
 * shortcut, a 512-entry table indexed by the next 9 input bits resolves
 * every code of 9 bits or fewer (nearly all of them) in one step; longer
 * codes, and the last few bits of the input, take the bit-at-a-time path.
 *
 * Safety: every read is bounds-checked (running out of input is an error,
 * never a read past the end), every loop consumes input or ends, distances
 * are checked against the bytes written by the current member, codes are
 * validated as the RFC requires (no over-subscribed codes; incomplete ones
 * only where a single code is allowed), and the output buffer, grown
 * geometrically, is capped by a limit.
 */
#include "rt_data.h"
#include "rt_internal.h"

#include <stdlib.h>
#include <string.h>

#define MAXBITS 15    /* longest Huffman code */
#define MAXLCODES 286 /* literal/length codes a dynamic block may declare */
#define MAXDCODES 30  /* distance codes a dynamic block may declare */
#define FIXLCODES 288 /* literal/length codes of the fixed code (286, 287 unused) */
#define FIXDCODES 32  /* distance codes of the fixed code (30, 31 unused) */
#define FAST 9        /* bits resolved by the lookup table */

/* gzip header flag bits (FLG) */
enum { FTEXT = 1, FHCRC = 2, FEXTRA = 4, FNAME = 8, FCOMMENT = 16, FRESERVED = 0xe0 };

/* A canonical Huffman code. */
typedef struct Huff {
  uint16_t count[MAXBITS + 1]; /* number of codes of each length (count[0]: unused symbols) */
  uint16_t symbol[FIXLCODES];  /* the symbols in code order */
  uint16_t fast[1 << FAST];    /* next FAST bits -> (length << 9) | symbol; 0: not a short code */
} Huff;

/* CRC-32 lookup tables (see crc_table). */
typedef struct CrcTab {
  uint32_t t[4][256];
} CrcTab;

/* The decoder's state: input, bit buffer and output. */
typedef struct Inflate {
  const RtCtx *c;
  const unsigned char *in;
  size_t len, pos; /* input and the next byte to load */
  uint64_t bitbuf; /* loaded bits not yet used, next bit lowest */
  int bitcnt;      /* how many */
  unsigned char *out;
  size_t n, cap, limit;
  size_t member; /* where the current gzip member's output starts */
  CrcTab crc;
  int have_fixed; /* fixed codes built yet? */
  Huff fixlen, fixdist, len_code, dist_code;
} Inflate;

/* Base lengths and extra bits of length symbols 257..285. */
static const uint16_t LBASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                   31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEXT[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
/* Base distances and extra bits of distance symbols 0..29. */
static const uint16_t DBASE[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                   33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                   1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t DEXT[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* ---- CRC-32 (the gzip/zlib polynomial, reflected: 0xEDB88320) ----
 * t[0] advances the CRC over one byte.  t[k][b] is the effect of byte b
 * followed by k zero bytes, so four table lookups advance it over four
 * bytes at once ("slicing by 4"): about three times faster than a byte at
 * a time, which matters for 47 MB of Fashion-MNIST pixels.  Bytes are
 * loaded one by one, so the result does not depend on the host's byte order. */

static void crc_table(CrcTab *ct) {
  uint32_t(*tab)[256] = ct->t;
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    tab[0][i] = c;
  }
  for (int k = 1; k < 4; k++)
    for (int i = 0; i < 256; i++) tab[k][i] = (tab[k - 1][i] >> 8) ^ tab[0][tab[k - 1][i] & 0xff];
}

static uint32_t crc32_of(const CrcTab *ct, const unsigned char *p, size_t n) {
  const uint32_t(*tab)[256] = ct->t;
  uint32_t c = 0xFFFFFFFFu;
  for (; n >= 4; n -= 4, p += 4) {
    c ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    c = tab[3][c & 0xff] ^ tab[2][(c >> 8) & 0xff] ^ tab[1][(c >> 16) & 0xff] ^ tab[0][c >> 24];
  }
  for (; n; n--, p++) c = tab[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* ---- input bits ---- */

/* The input byte holding the next unread bit, for messages. */
static size_t at(const Inflate *s) { return s->pos - (size_t)(s->bitcnt + 7) / 8; }

static RtStatus truncated(const Inflate *s, const char *where) {
  return rt_fail(s->c, RT_ERR_FORMAT, "truncated gzip data: the input ends %s (%zu bytes)", where, s->len);
}

/* Loads whole bytes into the bit buffer while there is room and input. */
static void refill(Inflate *s) {
  while (s->bitcnt <= 56 && s->pos < s->len) {
    s->bitbuf |= (uint64_t)s->in[s->pos++] << s->bitcnt;
    s->bitcnt += 8;
  }
}

/* The next `need` bits (0 to 16) as an LSB-first number. */
static RtStatus bits(Inflate *s, int need, unsigned *v) {
  *v = 0; /* set on failure too: gcc -O3 cannot see that callers stop then */
  if (s->bitcnt < need) {
    refill(s);
    if (s->bitcnt < need) return truncated(s, "inside a deflate block");
  }
  *v = (unsigned)(s->bitbuf & (((uint64_t)1 << need) - 1));
  s->bitbuf >>= need;
  s->bitcnt -= need;
  return RT_OK;
}

/* Goes to a byte boundary: drops the rest of the current byte and hands
 * the whole bytes still buffered back to the input. */
static void align(Inflate *s) {
  s->pos -= (size_t)s->bitcnt / 8;
  s->bitbuf = 0;
  s->bitcnt = 0;
}

/* ---- output ---- */

static RtStatus too_big(const Inflate *s) {
  if (s->limit % ((size_t)1 << 30) == 0 && s->limit)
    return rt_fail(s->c, RT_ERR_SHAPE, "decompressed data exceeds the %zu GiB limit", s->limit >> 30);
  return rt_fail(s->c, RT_ERR_SHAPE, "decompressed data exceeds the %zu-byte limit", s->limit);
}

/* Makes room for `need` more output bytes, doubling the buffer. */
static RtStatus grow(Inflate *s, size_t need) {
  size_t cap = s->cap ? s->cap : 4096;
  unsigned char *p;
  if (need > s->limit - s->n) return too_big(s);
  while (cap - s->n < need) cap = cap > s->limit / 2 ? s->limit : cap * 2;
  if (cap > s->limit) cap = s->limit;
  if (!(p = realloc(s->out, cap ? cap : 1)))
    return rt_fail(s->c, RT_ERR_ALLOC, "out of memory for %zu bytes of decompressed data", cap);
  s->out = p;
  s->cap = cap;
  return RT_OK;
}

/* ---- canonical Huffman codes ---- */

/* Builds h from the code lengths of symbols 0..n-1.  Returns 0 for a
 * complete code (and for one with no codes at all, which then decodes
 * nothing), a positive number for an incomplete code (unused bit
 * patterns), and a negative one for an over-subscribed code (more codes
 * of some length than the shorter ones leave room for). */
static int build(Huff *h, const uint8_t *lengths, int n) {
  uint16_t offs[MAXBITS + 1], next[MAXBITS + 1];
  unsigned code = 0;
  int left = 1;
  memset(h->count, 0, sizeof h->count);
  memset(h->fast, 0, sizeof h->fast);
  for (int sym = 0; sym < n; sym++) h->count[lengths[sym]]++;
  if (h->count[0] == n) return 0;
  /* Each length doubles the patterns available; codes of that length use some. */
  for (int len = 1; len <= MAXBITS; len++) {
    left = left * 2 - h->count[len];
    if (left < 0) return left;
  }
  /* Symbols sorted by length, then by value: the canonical code order. */
  offs[1] = 0;
  for (int len = 1; len < MAXBITS; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
  for (int sym = 0; sym < n; sym++)
    if (lengths[sym]) h->symbol[offs[lengths[sym]]++] = (uint16_t)sym;
  /* The first code of each length (RFC 1951 section 3.2.2), for the table. */
  for (int len = 1; len <= MAXBITS; len++) {
    code = (code + (len > 1 ? h->count[len - 1] : 0u)) << 1;
    next[len] = (uint16_t)code;
  }
  for (int sym = 0; sym < n; sym++) {
    int len = lengths[sym];
    unsigned c, rev = 0;
    if (!len) continue;
    c = next[len]++;
    if (len > FAST) continue;
    /* The code arrives most significant bit first, so in the bit buffer
     * it appears reversed; every pattern of the remaining bits maps to it. */
    for (int k = 0; k < len; k++) rev |= ((c >> k) & 1u) << (len - 1 - k);
    for (unsigned i = rev; i < (1u << FAST); i += 1u << len) h->fast[i] = (uint16_t)(len << 9 | sym);
  }
  return left;
}

/* Decodes one symbol of code h ("literal/length", ...: for messages). */
static RtStatus decode(Inflate *s, const Huff *h, int *sym, const char *what) {
  int code = 0, first = 0, index = 0;
  unsigned e, b;
  RtStatus st;
  if (s->bitcnt < FAST) refill(s);
  e = h->fast[s->bitbuf & ((1u << FAST) - 1)];
  if (e && (int)(e >> 9) <= s->bitcnt) {
    s->bitbuf >>= e >> 9;
    s->bitcnt -= (int)(e >> 9);
    *sym = (int)(e & 511);
    return RT_OK;
  }
  /* Bit by bit: `code` is the bits so far, `first` the first code of this
   * length and `index` the position of that code's symbol. */
  for (int len = 1; len <= MAXBITS; len++) {
    if ((st = bits(s, 1, &b))) return st;
    code |= (int)b;
    if (code - first < h->count[len]) {
      *sym = h->symbol[index + code - first];
      return RT_OK;
    }
    index += h->count[len];
    first = (first + h->count[len]) << 1;
    code <<= 1;
  }
  return rt_fail(s->c, RT_ERR_FORMAT, "invalid %s code at byte %zu", what, at(s));
}

/* ---- blocks ---- */

static RtStatus stored(Inflate *s) {
  size_t n;
  align(s);
  if (s->len - s->pos < 4) return truncated(s, "inside a stored block's header");
  n = (size_t)rt_load_le(s->in + s->pos, 2);
  if (n != (~rt_load_le(s->in + s->pos + 2, 2) & 0xffff))
    return rt_fail(s->c, RT_ERR_FORMAT, "stored block at byte %zu: length %zu does not match its complement",
                   s->pos, n);
  s->pos += 4;
  if (s->len - s->pos < n) return truncated(s, "inside a stored block");
  if (s->cap - s->n < n) {
    RtStatus st = grow(s, n);
    if (st) return st;
  }
  if (n) memcpy(s->out + s->n, s->in + s->pos, n);
  s->pos += n;
  s->n += n;
  return RT_OK;
}

/* Decodes a Huffman block's symbols up to and including end-of-block. */
static RtStatus codes(Inflate *s, const Huff *lencode, const Huff *distcode) {
  RtStatus st;
  for (;;) {
    int sym, dsym;
    unsigned extra;
    size_t len, dist;
    if ((st = decode(s, lencode, &sym, "literal/length"))) return st;
    if (sym < 256) {
      if (s->n == s->cap && (st = grow(s, 1))) return st;
      s->out[s->n++] = (unsigned char)sym;
      continue;
    }
    if (sym == 256) return RT_OK;
    if (sym - 257 >= 29)
      return rt_fail(s->c, RT_ERR_FORMAT, "invalid length symbol %d at byte %zu", sym, at(s));
    if ((st = bits(s, LEXT[sym - 257], &extra))) return st;
    len = LBASE[sym - 257] + extra;
    if ((st = decode(s, distcode, &dsym, "distance"))) return st;
    if (dsym >= 30)
      return rt_fail(s->c, RT_ERR_FORMAT, "invalid distance symbol %d at byte %zu", dsym, at(s));
    if ((st = bits(s, DEXT[dsym], &extra))) return st;
    dist = DBASE[dsym] + extra;
    if (dist > s->n - s->member)
      return rt_fail(s->c, RT_ERR_FORMAT, "distance %zu too far back at byte %zu (only %zu byte%s written)",
                     dist, at(s), s->n - s->member, s->n - s->member == 1 ? "" : "s");
    if (s->cap - s->n < len && (st = grow(s, len))) return st;
    {
      unsigned char *d = s->out + s->n;
      const unsigned char *from = d - dist;
      if (dist >= len) memcpy(d, from, len);
      else /* overlapping: each byte may be one just written */
        for (size_t i = 0; i < len; i++) d[i] = from[i];
      s->n += len;
    }
  }
}

/* The fixed codes of RFC 1951 section 3.2.6, built on first use. */
static void fixed_codes(Inflate *s) {
  uint8_t lengths[FIXLCODES];
  int sym = 0;
  if (s->have_fixed) return;
  for (; sym < 144; sym++) lengths[sym] = 8;
  for (; sym < 256; sym++) lengths[sym] = 9;
  for (; sym < 280; sym++) lengths[sym] = 7;
  for (; sym < FIXLCODES; sym++) lengths[sym] = 8;
  build(&s->fixlen, lengths, FIXLCODES);
  memset(lengths, 5, FIXDCODES);
  build(&s->fixdist, lengths, FIXDCODES);
  s->have_fixed = 1;
}

static RtStatus bad_lengths(const Inflate *s, size_t start, const char *what) {
  return rt_fail(s->c, RT_ERR_FORMAT, "invalid code lengths in the dynamic block at byte %zu: %s", start,
                 what);
}

/* A dynamic block's header: the code lengths of both codes, themselves
 * coded with a code-length code whose own lengths come first, 3 bits each,
 * in the order below (the lengths most often unused go last). */
static RtStatus dynamic(Inflate *s) {
  static const uint8_t ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  uint8_t lengths[MAXLCODES + MAXDCODES];
  unsigned nlen, ndist, ncode, v;
  size_t start = at(s);
  int index = 0, err;
  RtStatus st;
  if ((st = bits(s, 5, &nlen)) || (st = bits(s, 5, &ndist)) || (st = bits(s, 4, &ncode))) return st;
  nlen += 257, ndist += 1, ncode += 4;
  if (nlen > MAXLCODES || ndist > MAXDCODES) {
    char m[96];
    snprintf(m, sizeof m, "%u literal/length and %u distance codes (at most 286 and 30)", nlen, ndist);
    return bad_lengths(s, start, m);
  }
  memset(lengths, 0, 19);
  for (unsigned i = 0; i < ncode; i++) {
    if ((st = bits(s, 3, &v))) return st;
    lengths[ORDER[i]] = (uint8_t)v;
  }
  if ((err = build(&s->len_code, lengths, 19)) != 0)
    return bad_lengths(
        s, start, err < 0 ? "the code-length code is over-subscribed" : "the code-length code is incomplete");
  /* 0..15 are lengths; 16 repeats the previous length 3..6 times; 17 and
   * 18 give 3..10 and 11..138 zeros. */
  while (index < (int)(nlen + ndist)) {
    int sym, len = 0;
    unsigned rep;
    if ((st = decode(s, &s->len_code, &sym, "code-length"))) return st;
    if (sym < 16) {
      lengths[index++] = (uint8_t)sym;
      continue;
    }
    if (sym == 16) {
      if (index == 0) return bad_lengths(s, start, "a repeat code with no previous length");
      len = lengths[index - 1];
      if ((st = bits(s, 2, &rep))) return st;
      rep += 3;
    } else if (sym == 17) {
      if ((st = bits(s, 3, &rep))) return st;
      rep += 3;
    } else {
      if ((st = bits(s, 7, &rep))) return st;
      rep += 11;
    }
    if (index + (int)rep > (int)(nlen + ndist))
      return bad_lengths(s, start, "repeats run past the declared codes");
    while (rep--) lengths[index++] = (uint8_t)len;
  }
  if (lengths[256] == 0) return bad_lengths(s, start, "no code for end-of-block");
  /* Incomplete codes are allowed only when they hold a single code. */
  err = build(&s->len_code, lengths, (int)nlen);
  if (err < 0 || (err > 0 && nlen != (unsigned)(s->len_code.count[0] + s->len_code.count[1])))
    return bad_lengths(s, start,
                       err < 0 ? "the literal/length code is over-subscribed"
                               : "the literal/length code is incomplete");
  err = build(&s->dist_code, lengths + nlen, (int)ndist);
  if (err < 0 || (err > 0 && ndist != (unsigned)(s->dist_code.count[0] + s->dist_code.count[1])))
    return bad_lengths(s, start,
                       err < 0 ? "the distance code is over-subscribed" : "the distance code is incomplete");
  return RT_OK;
}

/* One deflate stream: blocks until the one marked final. */
static RtStatus inflate_stream(Inflate *s) {
  unsigned last = 0, type;
  RtStatus st;
  while (!last) {
    size_t start = at(s);
    if ((st = bits(s, 1, &last)) || (st = bits(s, 2, &type))) return st;
    if (type == 0) st = stored(s);
    else if (type == 1) {
      fixed_codes(s);
      st = codes(s, &s->fixlen, &s->fixdist);
    } else if (type == 2) {
      if (!(st = dynamic(s))) st = codes(s, &s->len_code, &s->dist_code);
    } else return rt_fail(s->c, RT_ERR_FORMAT, "invalid deflate block type 3 at byte %zu", start);
    if (st) return st;
  }
  align(s);
  return RT_OK;
}

/* ---- gzip ---- */

/* Skips a NUL-terminated header field starting at b[*h]. */
static RtStatus skip_string(const Inflate *s, const unsigned char *b, size_t left, size_t *h,
                            const char *what) {
  const unsigned char *z = *h < left ? memchr(b + *h, 0, left - *h) : NULL;
  if (!z)
    return rt_fail(s->c, RT_ERR_FORMAT, "truncated gzip data: the input ends inside the header's %s", what);
  *h = (size_t)(z - b) + 1;
  return RT_OK;
}

/* One member: header, deflate data, then CRC-32 and ISIZE (the size mod
 * 2^32), both little-endian. */
static RtStatus member(Inflate *s) {
  const unsigned char *b = s->in + s->pos;
  size_t left = s->len - s->pos, h = 10, got;
  uint32_t crc, want;
  unsigned flg;
  RtStatus st;
  if (left < 10) return truncated(s, "inside a gzip header");
  if (b[2] != 8)
    return rt_fail(s->c, RT_ERR_FORMAT,
                   "gzip member at byte %zu: unsupported compression method %d (expected 8, deflate)", s->pos,
                   b[2]);
  flg = b[3];
  if (flg & FRESERVED)
    return rt_fail(s->c, RT_ERR_FORMAT, "gzip member at byte %zu: reserved header flags 0x%02x are set",
                   s->pos, flg & FRESERVED);
  if (flg & FEXTRA) {
    if (left - h < 2) return truncated(s, "inside a gzip header");
    h += 2 + (size_t)rt_load_le(b + h, 2);
    if (h > left) return truncated(s, "inside the header's extra field");
  }
  if ((flg & FNAME) && (st = skip_string(s, b, left, &h, "file name"))) return st;
  if ((flg & FCOMMENT) && (st = skip_string(s, b, left, &h, "comment"))) return st;
  if (flg & FHCRC) { /* the low 16 bits of the CRC-32 of the header so far */
    if (left - h < 2) return truncated(s, "inside a gzip header");
    if ((crc32_of(&s->crc, b, h) & 0xffff) != rt_load_le(b + h, 2))
      return rt_fail(s->c, RT_ERR_FORMAT, "gzip member at byte %zu: header CRC mismatch", s->pos);
    h += 2;
  }
  s->pos += h;
  s->member = s->n;
  if ((st = inflate_stream(s))) return st;
  if (s->len - s->pos < 8) return truncated(s, "before the gzip trailer (CRC-32 and size)");
  got = s->n - s->member;
  crc = crc32_of(&s->crc, s->out + s->member, got);
  want = (uint32_t)rt_load_le(s->in + s->pos, 4);
  if (crc != want)
    return rt_fail(s->c, RT_ERR_FORMAT,
                   "CRC-32 mismatch at byte %zu: stored 0x%08x, data gives 0x%08x (corrupt data)", s->pos,
                   (unsigned)want, (unsigned)crc);
  if ((uint32_t)got != (uint32_t)rt_load_le(s->in + s->pos + 4, 4))
    return rt_fail(s->c, RT_ERR_FORMAT,
                   "size mismatch at byte %zu: ISIZE says %u bytes (mod 2^32), the data is %zu", s->pos + 4,
                   (unsigned)rt_load_le(s->in + s->pos + 4, 4), got);
  s->pos += 8;
  return RT_OK;
}

bool rt_is_gzip(const void *in, size_t len) {
  const unsigned char *b = in;
  return b && len >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* The last member's ISIZE as a first guess at the output size, when it is
 * plausible (deflate expands at most about 1032:1); else 4x the input. */
static size_t first_capacity(const unsigned char *in, size_t len, size_t limit) {
  size_t guess = len > SIZE_MAX / 4 ? SIZE_MAX : len * 4;
  if (len >= 18) {
    uint64_t isize = rt_load_le(in + len - 4, 4);
    if (isize / 1032 <= len) guess = (size_t)isize;
  }
  if (guess < 64) guess = 64;
  return guess < limit ? guess : limit;
}

RtStatus rt_gunzip_limit(const void *in, size_t len, const char *name, size_t limit, void **out,
                         size_t *out_len, char *err, size_t errlen) {
  const RtCtx c = {name ? name : "(buffer)", err, errlen};
  Inflate *s;
  RtStatus st = RT_OK;
  *out = NULL;
  *out_len = 0;
  if (err && errlen) err[0] = '\0';
  if (!in) len = 0;
  if (!rt_is_gzip(in, len))
    return rt_fail(&c, RT_ERR_FORMAT,
                   len < 2 ? "%zu bytes is too short for a gzip file"
                           : "not a gzip file (%zu bytes; expected magic bytes 0x1f 0x8b)",
                   len);
  if (!(s = calloc(1, sizeof *s))) return rt_fail(&c, RT_ERR_ALLOC, "out of memory");
  s->c = &c;
  s->in = in;
  s->len = len;
  s->limit = limit;
  crc_table(&s->crc);
  if (!(st = grow(s, first_capacity(in, len, limit)))) {
    while (!(st = member(s)) && s->pos < s->len) {
      size_t k = s->pos;
      while (k < s->len && s->in[k] == 0) k++;
      if (k == s->len) break; /* zero padding after the last member */
      if (!rt_is_gzip(s->in + s->pos, s->len - s->pos)) {
        st = rt_fail(&c, RT_ERR_FORMAT,
                     "unexpected data at byte %zu after a gzip member (not another member)", s->pos);
        break;
      }
    }
  }
  if (st == RT_OK) {
    unsigned char *p = realloc(s->out, s->n ? s->n : 1); /* give back the spare capacity */
    *out = p ? p : s->out;
    *out_len = s->n;
  } else {
    free(s->out);
  }
  free(s);
  return st;
}

RtStatus rt_gunzip(const void *in, size_t len, const char *name, void **out, size_t *out_len, char *err,
                   size_t errlen) {
  return rt_gunzip_limit(in, len, name, RT_GUNZIP_MAX, out, out_len, err, errlen);
}
