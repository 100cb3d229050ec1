// CPU kernels for projections/, called from JAX through XLA's FFI (jax.ffi).
//
// Built by projections/native.py at first use (g++ -O3, into a per-user cache dir) and
// registered for the "cpu" platform only; on other backends, or when no compiler is
// found, the pure-JAX formulations in hadamard.py / sketch.py are used instead.
//
//  * fedjax_fwht_f32: x f32[..., L] -> x @ H_L along the last axis (unnormalised
//    Sylvester Walsh-Hadamard, L a power of two). Cache-blocked: all butterfly stages
//    inside contiguous blocks of kBlock floats (L1-sized), then the remaining stages on
//    panels of strided rows copied into an L2-resident scratch. Only additions and
//    subtractions of float32 values, the same butterflies as the reference (so results
//    are exact whenever the inputs are integers of moderate size, and otherwise differ
//    from another summation order by rounding only).
//  * fedjax_gather_tile_f32 / fedjax_fold_perm_f32: Fastfood's permutation composed
//    with tiling a block of n = 2^k entries (lift) and its adjoint, folding onto n (project).
//  * fedjax_fwht_diag_f32: (x zero-padded to L, times a diagonal) @ H_L, times a diagonal,
//    the multiplications folded into the transform's own copies (Fastfood for large L).
//  * fedjax_fastfood_project_f32 / fedjax_fastfood_lift_f32: Fastfood's whole project / lift
//    of each vector of a batch in one cache-resident scratch (for L below the threading
//    threshold), bitwise the composition of the kernels above.
//  * fedjax_sketch_hashed_f32: count-sketch table of x f32[B, D] with the csvec-style
//    hashes of sketch.py recomputed inline (exact integer arithmetic mod 2^31 - 1).
//  * fedjax_sketch_cached_f32: the same from precomputed signed buckets i32[rows, D].
//
// Up to FEDJAX_INTRINSIC_THREADS (default 2) threads per call for large inputs.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// ---------------------------------------------------------------------------------------
// Threads

int MaxThreads() {
  static const int n = [] {
    const char* s = std::getenv("FEDJAX_INTRINSIC_THREADS");
    int v = s ? std::atoi(s) : 2;
    unsigned hw = std::thread::hardware_concurrency();
    if (hw > 0 && v > static_cast<int>(hw)) v = static_cast<int>(hw);
    return v < 1 ? 1 : v;
  }();
  return n;
}

// Runs fn(t, nt) for t in [0, nt) on nt threads (the caller's thread is t = 0).
void Parallel(int nt, const std::function<void(int, int)>& fn) {
  if (nt <= 1) {
    fn(0, 1);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  for (int t = 1; t < nt; ++t) pool.emplace_back(fn, t, nt);
  fn(0, nt);
  for (auto& th : pool) th.join();
}

// Below this many elements a call runs on one thread (spawning costs more, all the more on
// a loaded machine).
constexpr size_t kThreadMin = size_t(1) << 19;

// The threads a call on `elements` floats in all uses (every kernel's rule; the fused Fastfood
// kernels rely on it to repeat the fold's summation order of the separate kernels).
int CallThreads(size_t elements) { return elements >= (kThreadMin) ? MaxThreads() : 1; }

// [lo, hi) of task range n for thread t of nt.
inline void Share(size_t n, int t, int nt, size_t* lo, size_t* hi) {
  *lo = n * t / nt;
  *hi = n * (t + 1) / nt;
}

// ---------------------------------------------------------------------------------------
// Walsh-Hadamard transform

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8 Ld(const float* p) {
  v8 r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
inline void St(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

#if defined(__clang__)
#define SHUF(a, ...) __builtin_shufflevector(a, a, __VA_ARGS__)
#else
#define SHUF(a, ...) __builtin_shuffle(a, (v8i){__VA_ARGS__})
#endif

// Stages h = 1, 2, 4 inside one vector of 8 (lane j pairs with lane j ^ h).
inline v8 InVector(v8 a) {
  const v8 s1 = {1, -1, 1, -1, 1, -1, 1, -1};
  const v8 s2 = {1, 1, -1, -1, 1, 1, -1, -1};
  const v8 s4 = {1, 1, 1, 1, -1, -1, -1, -1};
  a = a * s1 + SHUF(a, 1, 0, 3, 2, 5, 4, 7, 6);  // a * ±1 is exact: one rounding, a ± b
  a = a * s2 + SHUF(a, 2, 3, 0, 1, 6, 7, 4, 5);
  a = a * s4 + SHUF(a, 4, 5, 6, 7, 0, 1, 2, 3);
  return a;
}

#if defined(__FMA__) && !defined(FEDJAX_NO_FMA_SUB)
// a - b as fma(-b, 1, a) (exact: b * 1 is exact, one rounding), so that the subtractions
// run on the FMA ports and the additions on the add ports.
#include <immintrin.h>
inline v8 One() {
  v8 one = {1, 1, 1, 1, 1, 1, 1, 1};
  __asm__("" : "+x"(one));  // keep the compiler from folding fma(., 1, .) back to a sub
  return one;
}
#define SUB(a, b, one) ((v8)_mm256_fnmadd_ps((__m256)(b), (__m256)(one), (__m256)(a)))
#else
inline v8 One() { return (v8){1, 1, 1, 1, 1, 1, 1, 1}; }
#define SUB(a, b, one) ((a) - (b))
#endif

#define Bfly(a, b)           \
  do {                       \
    v8 t_ = (a);             \
    (a) = t_ + (b);          \
    (b) = SUB(t_, (b), one); \
  } while (0)

// Stages h, 2h, 4h (h % 8 == 0) of a length-n contiguous transform, in one sweep.
void Radix8(float* x, size_t n, size_t h) {
  const v8 one = One();
  for (size_t base = 0; base < n; base += 8 * h) {
    for (size_t j = 0; j < h; j += 8) {
      float* p = x + base + j;
      v8 v0 = Ld(p), v1 = Ld(p + h), v2 = Ld(p + 2 * h), v3 = Ld(p + 3 * h);
      v8 v4 = Ld(p + 4 * h), v5 = Ld(p + 5 * h), v6 = Ld(p + 6 * h), v7 = Ld(p + 7 * h);
      Bfly(v0, v1); Bfly(v2, v3); Bfly(v4, v5); Bfly(v6, v7);
      Bfly(v0, v2); Bfly(v1, v3); Bfly(v4, v6); Bfly(v5, v7);
      Bfly(v0, v4); Bfly(v1, v5); Bfly(v2, v6); Bfly(v3, v7);
      St(p, v0); St(p + h, v1); St(p + 2 * h, v2); St(p + 3 * h, v3);
      St(p + 4 * h, v4); St(p + 5 * h, v5); St(p + 6 * h, v6); St(p + 7 * h, v7);
    }
  }
}

void Radix4(float* x, size_t n, size_t h) {
  const v8 one = One();
  for (size_t base = 0; base < n; base += 4 * h) {
    for (size_t j = 0; j < h; j += 8) {
      float* p = x + base + j;
      v8 v0 = Ld(p), v1 = Ld(p + h), v2 = Ld(p + 2 * h), v3 = Ld(p + 3 * h);
      Bfly(v0, v1); Bfly(v2, v3);
      Bfly(v0, v2); Bfly(v1, v3);
      St(p, v0); St(p + h, v1); St(p + 2 * h, v2); St(p + 3 * h, v3);
    }
  }
}

void Radix2(float* x, size_t n, size_t h) {
  const v8 one = One();
  for (size_t base = 0; base < n; base += 2 * h) {
    for (size_t j = 0; j < h; j += 8) {
      float* p = x + base + j;
      v8 v0 = Ld(p), v1 = Ld(p + h);
      Bfly(v0, v1);
      St(p, v0); St(p + h, v1);
    }
  }
}

// Stages h = h0, 2 h0, ... < h1 of a contiguous length-n transform (h0 % 8 == 0).
void Stages(float* x, size_t n, size_t h0, size_t h1) {
  size_t h = h0;
  while (h < h1) {
    if (8 * h <= h1) {
      Radix8(x, n, h);
      h *= 8;
    } else if (4 * h <= h1) {
      Radix4(x, n, h);
      h *= 4;
    } else {
      Radix2(x, n, h);
      h *= 2;
    }
  }
}

// The whole transform of a contiguous x[n], n a power of two (small: in cache).
void WhtContiguous(float* x, size_t n) {
  if (n < 8) {
    for (size_t h = 1; h < n; h *= 2)
      for (size_t i = 0; i < n; i += 2 * h)
        for (size_t j = i; j < i + h; ++j) {
          float a = x[j], b = x[j + h];
          x[j] = a + b;
          x[j + h] = a - b;
        }
    return;
  }
  if (n < 64) {
    for (size_t i = 0; i < n; i += 8) St(x + i, InVector(Ld(x + i)));
    Stages(x, n, 8, n);
    return;
  }
  // First sweep: stages 1, 2, 4 in-vector, then 8, 16, 32 across 8 consecutive vectors.
  const v8 one = One();
  for (size_t i = 0; i < n; i += 64) {
    float* p = x + i;
    v8 v0 = InVector(Ld(p)), v1 = InVector(Ld(p + 8)), v2 = InVector(Ld(p + 16));
    v8 v3 = InVector(Ld(p + 24)), v4 = InVector(Ld(p + 32)), v5 = InVector(Ld(p + 40));
    v8 v6 = InVector(Ld(p + 48)), v7 = InVector(Ld(p + 56));
    Bfly(v0, v1); Bfly(v2, v3); Bfly(v4, v5); Bfly(v6, v7);
    Bfly(v0, v2); Bfly(v1, v3); Bfly(v4, v6); Bfly(v5, v7);
    Bfly(v0, v4); Bfly(v1, v5); Bfly(v2, v6); Bfly(v3, v7);
    St(p, v0); St(p + 8, v1); St(p + 16, v2); St(p + 24, v3);
    St(p + 32, v4); St(p + 40, v5); St(p + 48, v6); St(p + 56, v7);
  }
  Stages(x, n, 64, n);
}

#ifndef FEDJAX_WHT_LOG2_BLOCK
#define FEDJAX_WHT_LOG2_BLOCK 12
#endif
#ifndef FEDJAX_WHT_PANEL_BYTES
#define FEDJAX_WHT_PANEL_BYTES (256 * 1024)
#endif
constexpr size_t kBlock = size_t(1) << FEDJAX_WHT_LOG2_BLOCK;  // floats per contiguous block

// Panel width (floats per strided row, 8 .. 64) for the stages above kBlock, R rows.
size_t PanelWidth(size_t R) {
  size_t c = 64;
  while (c > 8 && R * c * sizeof(float) > FEDJAX_WHT_PANEL_BYTES) c /= 2;
  return std::min(c, kBlock);
}

// y[v] = (x[v] zero-padded from m to L entries, times pre) @ H_L, times post: x f32[nvec, m]
// (m <= L), pre and post f32[L], f32[1] (a scalar) or null (none), y f32[nvec, L]; x and y may
// be the same buffer when m == L. The same products and butterflies as the steps done apart (an
// elementwise pass, the transform, an elementwise pass): the multiplications ride on the
// transform's copy into each block and on its write-back from each panel, so they cost no pass
// of their own. Cache-blocked: all butterfly stages inside contiguous blocks of kBlock floats
// (phase A), then the remaining stages on panels of strided rows copied into an L2-resident
// scratch (phase B).
void FwhtDiag(const float* x, const float* pre, size_t npre, const float* post, size_t npost,
              float* y, size_t nvec, size_t m, size_t L) {
  int nt = CallThreads(nvec * L);
  // dst[0, len) = (pad(x) * pre)[lo, lo + len)
  auto load = [&](const float* xv, float* dst, size_t lo, size_t len) {
    const size_t inside = lo >= m ? 0 : std::min(len, m - lo);
    if (pre == nullptr) {
      if (dst != xv + lo) std::memcpy(dst, xv + lo, inside * sizeof(float));
      std::fill(dst + inside, dst + len, 0.0f);
      return;
    }
    for (size_t i = 0; i < len; ++i) {
      const size_t g = lo + i;
      dst[i] = (i < inside ? xv[g] : 0.0f) * pre[npre == 1 ? 0 : g];
    }
  };
  // dst[0, len) = src[0, len) * post[lo, lo + len)
  auto store = [&](float* dst, const float* src, size_t lo, size_t len) {
    if (post == nullptr) {
      if (dst != src) std::memcpy(dst, src, len * sizeof(float));
      return;
    }
    for (size_t i = 0; i < len; ++i) dst[i] = src[i] * post[npost == 1 ? 0 : lo + i];
  };
  if (L <= kBlock) {
    nt = std::min<size_t>(nt, nvec);
    Parallel(nt, [&](int t, int n_t) {
      size_t lo, hi;
      Share(nvec, t, n_t, &lo, &hi);
      for (size_t v = lo; v < hi; ++v) {
        float* yv = y + v * L;
        load(x + v * m, yv, 0, L);
        WhtContiguous(yv, L);
        store(yv, yv, 0, L);
      }
    });
    return;
  }
  const size_t blocks = L / kBlock, R = blocks, c = PanelWidth(R);
  const size_t panels = kBlock / c;
  // Phase A: every block of every vector, in cache.
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(nvec * blocks, t, n_t, &lo, &hi);
    for (size_t k = lo; k < hi; ++k) {
      float* dst = y + k * kBlock;
      load(x + (k / blocks) * m, dst, (k % blocks) * kBlock, kBlock);
      WhtContiguous(dst, kBlock);
    }
  });
  // Phase B: stages kBlock .. L/2 = a length-R transform down each column, on panels of c
  // columns copied into a contiguous scratch (row r of the panel at scratch + r * c).
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(nvec * panels, t, n_t, &lo, &hi);
    std::vector<float> scratch(R * c + 16);
    float* s = scratch.data();
    for (size_t k = lo; k < hi; ++k) {
      const size_t col = (k % panels) * c;
      float* base = y + (k / panels) * L + col;
      for (size_t r = 0; r < R; ++r) std::memcpy(s + r * c, base + r * kBlock, c * sizeof(float));
      Stages(s, R * c, c, R * c);
      for (size_t r = 0; r < R; ++r) store(base + r * kBlock, s + r * c, r * kBlock + col, c);
    }
  });
}

// y[nvec, L] = x[nvec, L] @ H_L (x and y may be the same buffer).
void Fwht(const float* x, float* y, size_t nvec, size_t L) {
  FwhtDiag(x, nullptr, 0, nullptr, 0, y, nvec, L, L);
}

// ---------------------------------------------------------------------------------------
// Fastfood's permutation, folded onto a power-of-two block of n entries (mask = n - 1)

// out[v, i] = u[v, perm[i] & mask] for i < L.
void GatherTile(const float* u, const int32_t* perm, float* out, size_t nvec, size_t n,
                size_t L) {
  const uint32_t mask = static_cast<uint32_t>(n - 1);
  const int nt = CallThreads(nvec * L);
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(L, t, n_t, &lo, &hi);
    for (size_t v = 0; v < nvec; ++v) {
      const float* uv = u + v * n;
      float* ov = out + v * L;
      for (size_t i = lo; i < hi; ++i) ov[i] = uv[static_cast<uint32_t>(perm[i]) & mask];
    }
  });
}

// acc[j] = sum of u[k] over k in [lo, hi) with perm[k] & mask == j (j < n), in k order.
void FoldRange(const float* __restrict__ u, const int32_t* __restrict__ perm,
               float* __restrict__ acc, size_t n, size_t lo, size_t hi) {
  const uint32_t mask = static_cast<uint32_t>(n - 1);
  std::fill(acc, acc + n, 0.0f);
  for (size_t k = lo; k < hi; ++k) acc[static_cast<uint32_t>(perm[k]) & mask] += u[k];
}

// out[v, j] = sum of u[v, k] over k < L with perm[k] & mask == j (j < n): [0, L) split over
// the call's threads, the parts added in thread order.
void FoldPerm(const float* __restrict__ u, const int32_t* __restrict__ perm,
              float* __restrict__ out, size_t nvec, size_t n, size_t L) {
  const uint32_t mask = static_cast<uint32_t>(n - 1);
  const int nt = CallThreads(nvec * L);
  if (n == L) {  // perm is a bijection of [0, L): a plain scatter, no collisions
    Parallel(nt, [&](int t, int n_t) {
      size_t lo, hi;
      Share(L, t, n_t, &lo, &hi);
      for (size_t v = 0; v < nvec; ++v)
        for (size_t k = lo; k < hi; ++k)
          out[v * L + (static_cast<uint32_t>(perm[k]) & mask)] = u[v * L + k];
    });
    return;
  }
  std::vector<std::vector<float>> priv(nt > 1 ? nt - 1 : 0);
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(L, t, n_t, &lo, &hi);
    if (t > 0) priv[t - 1].resize(nvec * n);
    for (size_t v = 0; v < nvec; ++v)
      FoldRange(u + v * L, perm, (t > 0 ? priv[t - 1].data() : out) + v * n, n, lo, hi);
  });
  for (auto& p : priv)
    for (size_t j = 0; j < nvec * n; ++j) out[j] += p[j];
}

// ---------------------------------------------------------------------------------------
// Fastfood's project and lift, one vector at a time in an L-float scratch (L small enough to
// stay in cache): the operations of fastfood.py's composition in the same order, so the
// result is bitwise that of the composition's kernels on the same batch. Only the fold sums:
// FoldPerm on nvec vectors splits [0, L) over CallThreads(nvec * L) threads and adds the parts
// in thread order, which FoldOne repeats for one vector.

// out[j] = sum of u[k] over k < L with perm[k] & mask == j (j < n), in FoldPerm's order for a
// call of fold_nt threads (tmp: n floats of scratch).
void FoldOne(const float* u, const int32_t* perm, float* out, float* tmp, size_t n, size_t L,
             int fold_nt) {
  if (n == L) {
    for (size_t k = 0; k < L; ++k) out[static_cast<uint32_t>(perm[k]) & (n - 1)] = u[k];
    return;
  }
  for (int t = 0; t < fold_nt; ++t) {
    size_t lo, hi;
    Share(L, t, fold_nt, &lo, &hi);
    FoldRange(u, perm, t == 0 ? out : tmp, n, lo, hi);
    if (t > 0)
      for (size_t j = 0; j < n; ++j) out[j] += tmp[j];
  }
}

// y[v] = Aᵀ x[v]: x f32[nvec, D] -> y f32[nvec, d].
void FastfoodProject(const float* x, const float* signs, const int32_t* perm,
                     const float* gauss, float scale, float* y, size_t nvec, size_t D, size_t d,
                     size_t n, size_t L) {
  const int fold_nt = CallThreads(nvec * L);
  const int nt = static_cast<int>(std::min<size_t>(fold_nt, nvec));
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(nvec, t, n_t, &lo, &hi);
    std::vector<float> scratch(L + 2 * n);
    float* v = scratch.data();
    float* u = v + L;
    float* tmp = u + n;
    for (size_t b = lo; b < hi; ++b) {
      FwhtDiag(x + b * D, &scale, 1, gauss, L, v, 1, D, L);          // pad, ·s, H, ·G
      FoldOne(v, perm, u, tmp, n, L, fold_nt);                        // fold Πᵀ onto n
      Fwht(u, u, 1, n);                                               // H_n
      float* yb = y + b * d;
      for (size_t i = 0; i < d; ++i) yb[i] = u[i] * signs[i];         // ·B, first d
    }
  });
}

// x[v] = A z[v]: z f32[nvec, d] -> x f32[nvec, D].
void FastfoodLift(const float* z, const float* signs, const int32_t* perm, const float* gauss,
                  float scale, float* x, size_t nvec, size_t D, size_t d, size_t n, size_t L) {
  const uint32_t mask = static_cast<uint32_t>(n - 1);
  const int nt = static_cast<int>(std::min<size_t>(CallThreads(nvec * L), nvec));
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(nvec, t, n_t, &lo, &hi);
    std::vector<float> scratch(L + n);
    float* v = scratch.data();
    float* u = v + L;
    for (size_t b = lo; b < hi; ++b) {
      const float* zb = z + b * d;
      for (size_t i = 0; i < d; ++i) u[i] = zb[i] * signs[i];         // ·B, pad to n
      std::fill(u + d, u + n, 0.0f);
      Fwht(u, u, 1, n);                                               // H_n
      for (size_t i = 0; i < L; ++i)                                  // Π of the tiling, ·G
        v[i] = u[static_cast<uint32_t>(perm[i]) & mask] * gauss[i];
      Fwht(v, v, 1, L);                                               // H
      float* xb = x + b * D;
      for (size_t i = 0; i < D; ++i) xb[i] = v[i] * scale;            // ·s, first D
    }
  });
}

// ---------------------------------------------------------------------------------------
// Count sketch

constexpr uint64_t kP = (uint64_t(1) << 31) - 1;

inline uint64_t ModP(uint64_t v) {  // v < 2^63 -> v mod p
  v = (v & kP) + (v >> 31);
  v = (v & kP) + (v >> 31);
  return v >= kP ? v - kP : v;
}

constexpr size_t kChunk = 1024;  // a multiple of kLanes
constexpr int kLanes = 8;
#ifndef FEDJAX_PREFETCH
#define FEDJAX_PREFETCH 16
#endif
constexpr size_t kPrefetch = FEDJAX_PREFETCH;  // scatter: prefetch this many updates ahead

typedef uint32_t v8u __attribute__((vector_size(32)));

inline v8u AddModP(v8u a, v8u b) {  // a, b < p: (a + b) mod p, no overflow (< 2^32)
  v8u s = a + b;
  v8u t = s - static_cast<uint32_t>(kP);
  return s < t ? s : t;  // s >= p: t = s - p < s; s < p: t wraps above s
}

// The hashes of one row, walked forward from coordinate i0 in lanes of kLanes
// coordinates (lane l holds i0 + l + kLanes * step). Exact integer arithmetic, the same
// values as sketch.py's: the bucket hash (a i + b mod p) mod cols is advanced by adding
// kLanes * a (mod p, and its residue mod cols, minus p mod cols on wrap-around); the sign
// polynomial g(i) (degree 3 mod p) by forward differences with step kLanes.
struct RowHasher {
  v8u h, hm, g, d1, d2, d3;
  uint32_t step, step_m, p_m, cols;

  static uint64_t Poly(const uint32_t* c, uint64_t i) {
    uint64_t g = ModP(uint64_t(c[0]) * i + c[1]);
    g = ModP(g * i + c[2]);
    return ModP(g * i + c[3]);
  }

  RowHasher(const uint32_t* bc, const uint32_t* sc, uint32_t cols_, uint64_t i0)
      : cols(cols_) {
    const uint64_t a = bc[0], b = bc[1];
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t i = i0 + l;
      const uint32_t hv = static_cast<uint32_t>(ModP(a * i + b));
      h[l] = hv;
      hm[l] = hv % cols;
      const uint64_t g0 = Poly(sc, i), g1 = Poly(sc, i + kLanes);
      const uint64_t g2 = Poly(sc, i + 2 * kLanes), g3 = Poly(sc, i + 3 * kLanes);
      g[l] = static_cast<uint32_t>(g0);
      d1[l] = static_cast<uint32_t>((g1 + kP - g0) % kP);
      d2[l] = static_cast<uint32_t>((g2 + 2 * kP - 2 * g1 + g0) % kP);
      d3[l] = static_cast<uint32_t>((g3 + 3 * g1 + 4 * kP - 3 * g2 - g0) % kP);  // >= 4
    }
    step = static_cast<uint32_t>(ModP(a * kLanes));
    step_m = step % cols;
    p_m = static_cast<uint32_t>(kP % cols);
  }

  // Writes the current lanes' buckets and sign bits, then advances by kLanes coordinates.
  inline void Next(uint32_t* buckets, uint32_t* neg) {
    std::memcpy(buckets, &hm, sizeof(hm));
    v8u sg = g & 1u;
    std::memcpy(neg, &sg, sizeof(sg));
    const v8u s = h + step;  // < 2^32
    const v8u wrap = s >= static_cast<uint32_t>(kP);  // all-ones where it wrapped
    h = s - (wrap & static_cast<uint32_t>(kP));
    v8u m = hm + step_m;  // < 2 cols
    m = m >= cols ? m - cols : m;
    const v8u mw = m >= p_m ? m - p_m : m + (cols - p_m);  // (m - p mod cols) mod cols
    hm = wrap ? mw : m;
    g = AddModP(g, d1);
    d1 = AddModP(d1, d2);
    d2 = AddModP(d2, d3);
  }
};

// table[rows, cols] (+)= sketch of x[D]: 'hashed' from coefficients or 'cached' buckets.
void SketchOne(const float* x, size_t D, size_t rows, uint32_t cols, const uint32_t* bcoef,
               const uint32_t* scoef, const int32_t* signed_buckets, float* table) {
  const int nt = CallThreads(D);
  std::vector<std::vector<float>> priv(nt > 1 ? nt - 1 : 0);
  std::fill(table, table + rows * cols, 0.0f);
  Parallel(nt, [&](int t, int n_t) {
    size_t lo, hi;
    Share(D, t, n_t, &lo, &hi);
    float* out = table;
    if (t > 0) {
      priv[t - 1].assign(rows * cols, 0.0f);
      out = priv[t - 1].data();
    }
    uint32_t buckets[kChunk], neg[kChunk];
    for (size_t r = 0; r < rows; ++r) {
      float* row = out + r * cols;
      if (signed_buckets) {
        const int32_t* sb = signed_buckets + r * D;
        for (size_t i = lo; i < hi; ++i) {
          const int32_t s = sb[i];
          if (s >= 0) row[s] += x[i]; else row[-1 - s] -= x[i];
        }
        continue;
      }
      RowHasher hasher(bcoef + 2 * r, scoef + 4 * r, cols, lo);
      for (size_t i0 = lo; i0 < hi; i0 += kChunk) {
        const size_t n = std::min(kChunk, hi - i0);
        for (size_t k = 0; k < n; k += kLanes) hasher.Next(buckets + k, neg + k);
        const float* xi = x + i0;
        for (size_t k = 0; k < n; ++k) {
#ifndef FEDJAX_NO_PREFETCH
          if (k + kPrefetch < n) __builtin_prefetch(row + buckets[k + kPrefetch], 1, 3);
#endif
          const float v = xi[k];
          row[buckets[k]] += neg[k] ? -v : v;
        }
      }
    }
  });
  for (auto& p : priv)
    for (size_t j = 0; j < rows * cols; ++j) table[j] += p[j];
}

}  // namespace

// ---------------------------------------------------------------------------------------
// FFI handlers

static ffi::Error FwhtImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto dims = x.dimensions();
  if (dims.size() < 1) return ffi::Error::InvalidArgument("fwht: x needs >= 1 axis");
  const size_t L = static_cast<size_t>(dims.back());
  if (L == 0 || (L & (L - 1))) return ffi::Error::InvalidArgument("fwht: L not a power of 2");
  const size_t total = x.element_count();
  Fwht(x.typed_data(), y->typed_data(), total / L, L);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxFwhtF32, FwhtImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

static ffi::Error SketchHashedImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U32> bcoef,
                                   ffi::Buffer<ffi::U32> scoef,
                                   ffi::ResultBuffer<ffi::F32> table, int64_t cols) {
  auto xd = x.dimensions(), bd = bcoef.dimensions();
  if (xd.size() < 1 || bd.size() != 2 || bd[1] != 2)
    return ffi::Error::InvalidArgument("sketch: bad shapes");
  const size_t D = static_cast<size_t>(xd.back()), rows = static_cast<size_t>(bd[0]);
  const size_t nvec = D ? x.element_count() / D : 0;
  for (size_t v = 0; v < nvec; ++v)
    SketchOne(x.typed_data() + v * D, D, rows, static_cast<uint32_t>(cols),
              bcoef.typed_data(), scoef.typed_data(), nullptr,
              table->typed_data() + v * rows * cols);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxSketchHashedF32, SketchHashedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("cols"));

static ffi::Error SketchCachedImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> sb,
                                   ffi::ResultBuffer<ffi::F32> table, int64_t cols) {
  auto xd = x.dimensions(), sd = sb.dimensions();
  if (xd.size() < 1 || sd.size() != 2 || sd[1] != xd.back())
    return ffi::Error::InvalidArgument("sketch: bad shapes");
  const size_t D = static_cast<size_t>(xd.back()), rows = static_cast<size_t>(sd[0]);
  const size_t nvec = D ? x.element_count() / D : 0;
  for (size_t v = 0; v < nvec; ++v)
    SketchOne(x.typed_data() + v * D, D, rows, static_cast<uint32_t>(cols), nullptr, nullptr,
              sb.typed_data(), table->typed_data() + v * rows * cols);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxSketchCachedF32, SketchCachedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("cols"));

// The third operand (inv_perm) is read only by the pure-JAX lowerings.
static ffi::Error GatherTileImpl(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::S32> perm,
                                 ffi::Buffer<ffi::S32>, ffi::ResultBuffer<ffi::F32> out) {
  auto ud = u.dimensions(), pd = perm.dimensions();
  if (ud.size() < 1 || pd.size() != 1) return ffi::Error::InvalidArgument("gather: shapes");
  const size_t n = static_cast<size_t>(ud.back()), L = static_cast<size_t>(pd[0]);
  if (n == 0 || (n & (n - 1)) || n > L) return ffi::Error::InvalidArgument("gather: n");
  GatherTile(u.typed_data(), perm.typed_data(), out->typed_data(), u.element_count() / n, n,
             L);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxGatherTileF32, GatherTileImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

static ffi::Error FoldPermImpl(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::S32> perm,
                               ffi::Buffer<ffi::S32>, ffi::ResultBuffer<ffi::F32> out) {
  auto ud = u.dimensions(), od = out->dimensions();
  if (ud.size() < 1 || od.size() != ud.size()) return ffi::Error::InvalidArgument("fold");
  const size_t L = static_cast<size_t>(ud.back()), n = static_cast<size_t>(od.back());
  if (n == 0 || (n & (n - 1)) || n > L || perm.element_count() != L)
    return ffi::Error::InvalidArgument("fold: n");
  FoldPerm(u.typed_data(), perm.typed_data(), out->typed_data(), u.element_count() / L, n,
           L);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxFoldPermF32, FoldPermImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Operands: x (project: f32[..., D]; lift: f32[..., d]), signs f32[L], perm i32[L], inv_perm
// i32[L] (unused), gauss f32[L], scale f32[]; attribute n (the power of two >= d).
template <bool kProject>
static ffi::Error FastfoodImpl(ffi::Buffer<ffi::F32> in, ffi::Buffer<ffi::F32> signs,
                               ffi::Buffer<ffi::S32> perm, ffi::Buffer<ffi::S32>,
                               ffi::Buffer<ffi::F32> gauss, ffi::Buffer<ffi::F32> scale,
                               ffi::ResultBuffer<ffi::F32> out, int64_t n_attr) {
  auto id = in.dimensions(), od = out->dimensions();
  if (id.size() < 1 || od.size() != id.size() || scale.element_count() != 1)
    return ffi::Error::InvalidArgument("fastfood: shapes");
  const size_t L = static_cast<size_t>(perm.element_count()), n = static_cast<size_t>(n_attr);
  const size_t D = static_cast<size_t>(kProject ? id.back() : od.back());
  const size_t d = static_cast<size_t>(kProject ? od.back() : id.back());
  if (L == 0 || (L & (L - 1)) || n == 0 || (n & (n - 1)) || n > L || d > n || D > L ||
      signs.element_count() != L || gauss.element_count() != L)
    return ffi::Error::InvalidArgument("fastfood: sizes");
  const size_t nvec = in.element_count() / (kProject ? D : d);
  const float s = scale.typed_data()[0];
  if (kProject)
    FastfoodProject(in.typed_data(), signs.typed_data(), perm.typed_data(), gauss.typed_data(),
                    s, out->typed_data(), nvec, D, d, n, L);
  else
    FastfoodLift(in.typed_data(), signs.typed_data(), perm.typed_data(), gauss.typed_data(), s,
                 out->typed_data(), nvec, D, d, n, L);
  return ffi::Error::Success();
}

#define FEDJAX_FASTFOOD_BINDING                 \
  ffi::Ffi::Bind()                              \
      .Arg<ffi::Buffer<ffi::F32>>()             \
      .Arg<ffi::Buffer<ffi::F32>>()             \
      .Arg<ffi::Buffer<ffi::S32>>()             \
      .Arg<ffi::Buffer<ffi::S32>>()             \
      .Arg<ffi::Buffer<ffi::F32>>()             \
      .Arg<ffi::Buffer<ffi::F32>>()             \
      .Ret<ffi::Buffer<ffi::F32>>()             \
      .Attr<int64_t>("n")

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxFastfoodProjectF32, FastfoodImpl<true>,
                              FEDJAX_FASTFOOD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxFastfoodLiftF32, FastfoodImpl<false>,
                              FEDJAX_FASTFOOD_BINDING);

// x f32[..., m], pre f32[L] or [1], post f32[L] or [1] -> y f32[..., L] (attribute L).
static ffi::Error FwhtDiagImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> pre,
                               ffi::Buffer<ffi::F32> post, ffi::ResultBuffer<ffi::F32> y,
                               int64_t L_attr) {
  auto xd = x.dimensions();
  const size_t L = static_cast<size_t>(L_attr);
  if (xd.size() < 1 || L == 0 || (L & (L - 1))) return ffi::Error::InvalidArgument("fwht_diag");
  const size_t m = static_cast<size_t>(xd.back());
  const size_t npre = pre.element_count(), npost = post.element_count();
  if (m == 0 || m > L || (npre != 1 && npre != L) || (npost != 1 && npost != L))
    return ffi::Error::InvalidArgument("fwht_diag: sizes");
  FwhtDiag(x.typed_data(), pre.typed_data(), npre, post.typed_data(), npost, y->typed_data(),
           x.element_count() / m, m, L);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FedjaxFwhtDiagF32, FwhtDiagImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("L"));
