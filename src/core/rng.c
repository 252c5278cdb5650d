/* xoshiro256** for sequential streams (initialisers, shuffling) and a
 * splitmix-style hash for order-independent per-element randomness. */
#include <math.h>

#include "nabla/tensor.h"

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* These functions return no status; a NULL generator or buffer is ignored
 * (and yields 0) instead of crashing. */
void nb_rng_seed(nb_rng *r, uint64_t seed) {
  if (!r) return;
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nb_rng_next(nb_rng *r) {
  if (!r) return 0;
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double nb_rng_uniform(nb_rng *r) { return (double)(nb_rng_next(r) >> 11) * 0x1.0p-53; }

double nb_rng_normal(nb_rng *r) {
  if (!r) return 0.0;
  double u1 = nb_rng_uniform(r), u2 = nb_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void nb_rng_fill_uniform(nb_rng *r, float *dst, size_t n, float lo, float hi) {
  if (!r || !dst) return;
  for (size_t i = 0; i < n; i++) dst[i] = lo + (hi - lo) * (float)nb_rng_uniform(r);
}

void nb_rng_fill_normal(nb_rng *r, float *dst, size_t n, float mean, float std) {
  if (!r || !dst) return;
  for (size_t i = 0; i < n; i++) dst[i] = mean + std * (float)nb_rng_normal(r);
}

float nb_hash_uniform(uint64_t seed, uint64_t counter) {
  uint64_t x = seed ^ (counter * 0xd1b54a32d192ed03ull);
  uint64_t h = splitmix64(&x);
  return (float)(h >> 40) * 0x1.0p-24f;
}
