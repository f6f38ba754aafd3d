/*
 * progress.c: the progress display of a training loop, on stderr.
 *
 * A person watching a terminal wants one line that updates in place; a log
 * file or CI console wants a few whole lines it can keep.  So on a terminal
 * the line is redrawn with '\r' (at most every 0.1 s, since redrawing costs
 * more than a small training step), and elsewhere about ten plain lines are
 * printed per epoch, plus one for the last step.  Either way the epoch ends
 * with a summary line.  The loss shown is the mean of the losses reported
 * so far this epoch, which is steadier than the last batch's.
 *
 * The clock can be replaced (rt_progress_set_clock) and the mode forced
 * (rt_progress_init_mode), so tests can check the exact output.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_data.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR 20           /* bar width in characters */
#define REDRAW_EVERY 0.1 /* seconds between terminal redraws */

double rt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double system_clock(void *ctx) {
  (void)ctx;
  return rt_now();
}

void rt_progress_init_mode(RtProgress *p, FILE *f, int epoch, int epochs, int64_t steps, int64_t batch,
                           RtProgressMode mode) {
  memset(p, 0, sizeof *p);
  p->f = f ? f : stderr;
  p->epoch = epoch;
  p->epochs = epochs;
  p->steps = steps;
  p->batch = batch;
  if (mode == RT_PROGRESS_AUTO) {
    int fd = fileno(p->f); /* -1 for a memory stream */
    p->terminal = fd >= 0 && isatty(fd);
  } else {
    p->terminal = mode == RT_PROGRESS_TERMINAL;
  }
  rt_progress_set_clock(p, NULL, NULL);
}

void rt_progress_init(RtProgress *p, FILE *f, int epoch, int epochs, int64_t steps, int64_t batch) {
  rt_progress_init_mode(p, f, epoch, epochs, steps, batch, RT_PROGRESS_AUTO);
}

void rt_progress_set_clock(RtProgress *p, double (*clock)(void *ctx), void *ctx) {
  p->clock = clock ? clock : system_clock;
  p->clock_ctx = ctx;
  p->start = p->clock(p->clock_ctx);
  p->last_draw = -HUGE_VAL;
  p->finished = -1;
}

/* "0:42" or "1:02:03" for the terminal line. */
static void hms(double s, char *buf, size_t n) {
  long t;
  if (!(s >= 0 && s < 1e8)) {
    snprintf(buf, n, "-:--");
    return;
  }
  t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* "42s", "3m05s" or "1h02m" for plain lines. */
static void short_time(double s, char *buf, size_t n) {
  long t;
  if (!(s >= 0 && s < 1e8)) {
    snprintf(buf, n, "?");
    return;
  }
  t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else snprintf(buf, n, "%lds", t);
}

/* Mean loss, examples per second and seconds left, as of now. */
static void rates(const RtProgress *p, double now, double *loss, double *rate, double *eta) {
  double elapsed = now - p->start;
  *loss = p->losses ? p->loss_sum / (double)p->losses : 0.0;
  *rate = elapsed > 0 ? (double)(p->done * p->batch) / elapsed : 0.0;
  *eta = p->done > 0 && p->steps > 0 && elapsed >= 0
             ? (double)(p->steps - p->done) * elapsed / (double)p->done
             : -1.0;
}

/* Writes line over the previous terminal line, blanking what it leaves. */
static void redraw(RtProgress *p, const char *line, const char *end) {
  int w = (int)strlen(line);
  fprintf(p->f, "\r%s%*s%s", line, p->width > w ? p->width - w : 0, "", end);
  p->width = *end == '\n' ? 0 : w;
  fflush(p->f);
}

static void draw_terminal(RtProgress *p, double now) {
  char line[256], bar[BAR + 1], eta_s[32];
  double loss, rate, eta;
  rates(p, now, &loss, &rate, &eta);
  hms(eta, eta_s, sizeof eta_s);
  if (p->steps > 0) {
    int filled = (int)(p->done >= p->steps ? BAR : p->done * BAR / p->steps);
    for (int i = 0; i < BAR; i++) bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
    bar[BAR] = '\0';
    snprintf(line, sizeof line, "epoch %d/%d [%s] %lld/%lld loss %.4f | %.0f ex/s | ETA %s", p->epoch,
             p->epochs, bar, (long long)p->done, (long long)p->steps, loss, rate, eta_s);
  } else {
    snprintf(line, sizeof line, "epoch %d/%d step %lld loss %.4f | %.0f ex/s", p->epoch, p->epochs,
             (long long)p->done, loss, rate);
  }
  redraw(p, line, "");
  p->last_draw = now;
}

static void print_plain(RtProgress *p, double now) {
  char eta_s[32];
  double loss, rate, eta;
  rates(p, now, &loss, &rate, &eta);
  short_time(eta, eta_s, sizeof eta_s);
  if (p->steps > 0)
    fprintf(p->f, "epoch %d/%d step %lld/%lld loss %.4f %.0f ex/s eta %s\n", p->epoch, p->epochs,
            (long long)p->done, (long long)p->steps, loss, rate, eta_s);
  else
    fprintf(p->f, "epoch %d/%d step %lld loss %.4f %.0f ex/s\n", p->epoch, p->epochs, (long long)p->done,
            loss, rate);
  fflush(p->f);
}

void rt_progress_step(RtProgress *p, int64_t step, double loss) {
  double now = p->clock(p->clock_ctx);
  bool last;
  if (step + 1 > p->done) p->done = step + 1;
  p->loss_sum += loss;
  p->losses++;
  last = p->steps > 0 && p->done >= p->steps;
  if (last) p->finished = now;
  if (p->terminal) {
    if (last || now - p->last_draw >= REDRAW_EVERY) draw_terminal(p, now);
  } else {
    /* ceil(steps / 10), so about ten lines and never more than ten before the last */
    int64_t every = p->steps > 0 ? (p->steps + 9) / 10 : 100;
    if (last || p->done % every == 0) print_plain(p, now);
  }
}

void rt_progress_end(RtProgress *p, const char *extra) {
  double now = p->finished >= 0 ? p->finished : p->clock(p->clock_ctx), loss, rate, eta;
  char line[512], took[32];
  rates(p, now, &loss, &rate, &eta);
  if (now - p->start < 60) snprintf(took, sizeof took, "%.1fs", now - p->start);
  else short_time(now - p->start, took, sizeof took);
  snprintf(line, sizeof line, "epoch %d/%d loss %.4f | %.0f ex/s | %s%s%s", p->epoch, p->epochs, loss, rate,
           took, extra && *extra ? " | " : "", extra && *extra ? extra : "");
  if (p->terminal) redraw(p, line, "\n");
  else {
    fprintf(p->f, "%s\n", line);
    fflush(p->f);
  }
}
