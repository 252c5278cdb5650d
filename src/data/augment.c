/* Image augmentation: random crop of a zero-padded image and horizontal
 * flip. The random draws are spelled out in data.h so that a test, or a
 * reimplementation elsewhere, can reproduce them exactly. */
#include <string.h>

#include "nabla/data.h"

nb_status nb_crop_padded(const float *src, float *dst, int64_t c, int64_t h, int64_t w, int pad,
                         int dy, int dx) {
  if (!src || !dst) return nb_error(NB_ERR_INVALID_ARG, "nb_crop_padded: NULL buffer");
  if (c < 1 || h < 1 || w < 1 || pad < 0 || dy < 0 || dx < 0 || dy > 2 * pad || dx > 2 * pad)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_crop_padded: image %lldx%lldx%lld, pad %d, offset (%d, %d): sizes must be "
                    ">= 1 and offsets in [0, %d]",
                    (long long)c, (long long)h, (long long)w, pad, dy, dx, 2 * pad);
  const int64_t sy = dy - pad, sx = dx - pad; /* source pixel of dst (0, 0) */
  /* the columns of dst that come from src, the same for every row */
  const int64_t j0 = sx < 0 ? -sx : 0, j1 = sx > 0 ? w - sx : w;
  for (int64_t ch = 0; ch < c; ch++)
    for (int64_t i = 0; i < h; i++) {
      float *row = dst + (ch * h + i) * w;
      const int64_t si = i + sy;
      if (si < 0 || si >= h || j1 <= j0) {
        memset(row, 0, (size_t)w * sizeof *row);
        continue;
      }
      const float *srow = src + (ch * h + si) * w;
      if (j0 > 0) memset(row, 0, (size_t)j0 * sizeof *row);
      memcpy(row + j0, srow + j0 + sx, (size_t)(j1 - j0) * sizeof *row);
      if (j1 < w) memset(row + j1, 0, (size_t)(w - j1) * sizeof *row);
    }
  return NB_OK;
}

void nb_hflip(float *x, int64_t c, int64_t h, int64_t w) {
  if (!x) return;
  for (int64_t r = 0; r < c * h; r++) {
    float *row = x + r * w;
    for (int64_t a = 0, b = w - 1; a < b; a++, b--) {
      float t = row[a];
      row[a] = row[b];
      row[b] = t;
    }
  }
}

nb_status nb_augment_apply(const nb_augment *a, int ndim, const int64_t *shape, const float *src,
                           float *dst, nb_rng *rng) {
  if (!a || !shape || !src || !dst || !rng)
    return nb_error(NB_ERR_INVALID_ARG, "nb_augment_apply: NULL argument");
  if (ndim != 2 && ndim != 3)
    return nb_error(NB_ERR_SHAPE,
                    "nb_augment_apply: needs [C, H, W] or [H, W] examples, got rank %d", ndim);
  if (a->crop_pad < 0 || a->hflip < 0 || a->hflip > 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_augment_apply: crop_pad %d must be >= 0, hflip %d 0 or 1", a->crop_pad,
                    a->hflip);
  const int64_t c = ndim == 3 ? shape[0] : 1, h = shape[ndim - 2], w = shape[ndim - 1];
  if (a->crop_pad > 0) {
    const uint64_t span = 2 * (uint64_t)a->crop_pad + 1;
    const int dy = (int)(nb_rng_next(rng) % span), dx = (int)(nb_rng_next(rng) % span);
    nb_status st = nb_crop_padded(src, dst, c, h, w, a->crop_pad, dy, dx);
    if (st) return st;
  } else if (dst != src) {
    memcpy(dst, src, (size_t)(c * h * w) * sizeof *dst);
  }
  if (a->hflip && (nb_rng_next(rng) & 1)) nb_hflip(dst, c, h, w);
  return NB_OK;
}
