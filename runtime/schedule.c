/*
 * schedule.c: learning-rate schedules, shared by `kiln train` and the
 * programs `kiln build --train` makes, so both follow the same curve.
 *
 * t is the global step from 0, per_epoch the steps in an epoch, total the
 * steps of the whole run.  constant: lr; step: lr gamma^floor(epoch / every);
 * cosine and linear: from lr to `end` over `epochs` epochs (0: the whole
 * run), then held; warm-up multiplies by (t + 1) / warmup for t < warmup.
 */
#include <math.h>

#include "rt_data.h"

double rt_schedule_lr(const RtSchedule *s, int64_t t, int64_t per_epoch, int64_t total) {
  double lr = s->lr, epoch = per_epoch ? (double)(t / per_epoch) : 0;
  int64_t len = s->epochs > 0 ? s->epochs * per_epoch : total;
  double frac = len > 0 ? (double)(t < len ? t : len) / (double)len : 0;
  switch (s->kind) {
  case RT_SCHED_CONSTANT: break;
  case RT_SCHED_STEP: lr *= pow(s->gamma, floor(epoch / (s->every > 0 ? s->every : 1))); break;
  case RT_SCHED_COSINE: lr = s->end + (lr - s->end) * 0.5 * (1 + cos(3.141592653589793 * frac)); break;
  case RT_SCHED_LINEAR: lr = lr + (s->end - lr) * frac; break;
  }
  if (s->warmup > 0 && t < s->warmup)
    lr *= (double)(t + 1) / (double)s->warmup;
  return lr;
}
