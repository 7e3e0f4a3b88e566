/* What one thread of this machine's memory system allows the quantizer, in the units of the
 * `quantize_ratio` benchmark (a copy of the same 64 Mi-element f32 buffer), with no Rust or
 * moq-core in the way: a read-only pass (the min/max pass), and the 8-bit quantizing pass with
 * ordinary stores and with non-temporal stores (which skip reading the destination before
 * writing it, as `memcpy` does for a buffer this size).
 *
 *   gcc -O2 -mavx512f -mavx512dq -o /tmp/memory_floor benches/memory_floor.c && /tmp/memory_floor
 *
 * Needs an AVX-512 CPU (the lanes of moq-core's widest path). Prints 5 rounds. Figures and
 * what they mean: docs/benchmarks.md, "CPU fake quantization". */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N (64u << 20)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static void min_max(const float *x, size_t n, float *lo, float *hi) {
  __m512 a = _mm512_set1_ps(1e30f), b = _mm512_set1_ps(-1e30f);
  for (size_t i = 0; i < n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    a = _mm512_min_ps(a, v);
    b = _mm512_max_ps(b, v);
  }
  *lo = _mm512_reduce_min_ps(a);
  *hi = _mm512_reduce_max_ps(b);
}

__attribute__((noinline)) static void quantize(const float *x, float *y, size_t n, float inv,
                                               float scale, int streaming) {
  const __m512 vi = _mm512_set1_ps(inv), vs = _mm512_set1_ps(scale);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (size_t i = 0; i < n; i += 16) {
    __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi), 0);
    __m512 v = _mm512_mul_ps(_mm512_min_ps(_mm512_max_ps(q, lo), hi), vs);
    if (streaming)
      _mm512_stream_ps(y + i, v);
    else
      _mm512_storeu_ps(y + i, v);
  }
  _mm_sfence();
}

int main(void) {
  float *x = aligned_alloc(64, N * sizeof(float)), *y = aligned_alloc(64, N * sizeof(float));
  if (!x || !y) return 1;
  for (size_t i = 0; i < N; i++) {
    x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    y[i] = 0.0f;
  }
  for (int r = 0; r < 5; r++) {
    float lo, hi;
    double t0 = now();
    memcpy(y, x, N * sizeof(float));
    double t1 = now();
    min_max(x, N, &lo, &hi);
    double t2 = now();
    quantize(x, y, N, 127.0f / hi, hi / 127.0f, 0);
    double t3 = now();
    quantize(x, y, N, 127.0f / hi, hi / 127.0f, 1);
    double t4 = now();
    double copy = t1 - t0;
    printf("copy %.1f ms  read pass %.2f  quantize pass %.2f (streaming %.2f)  "
           "two passes/copy %.2f (streaming %.2f)\n",
           copy * 1e3, (t2 - t1) / copy, (t3 - t2) / copy, (t4 - t3) / copy,
           (t3 - t1) / copy, (t2 - t1 + t4 - t3) / copy);
  }
  free(x);
  free(y);
  return 0;
}
