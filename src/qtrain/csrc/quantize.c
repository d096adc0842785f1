/* qtrain fast CPU kernel: Q_d and Q_s over a contiguous float32 array.
 *
 * Bit-for-bit the same arithmetic as the eager torch path in qtrain/rounding.py
 * (float32 throughout, no FMA contraction), and the same counter-based random source
 * as qtrain/rng.py: u_i = (mix32(mix32(lo32(i) + k0) ^ (k1 + hi32(i))) >> 8) * 2^-24.
 * Each element is independent, so any split of [0, n) across threads gives the same bits.
 * Returns non-zero when an entry has no finite level (the caller raises); out may equal x.
 */
#include <stdint.h>
#include <math.h>
#include <float.h>
#include <string.h>

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU;
    x ^= x >> 15; x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* bit 31 set when f is NaN or +-inf: (|f| bits) + 2^23 carries into bit 31 exactly when the
 * exponent is all ones (an OR of these over a loop is one flag, without a counter) */
static inline uint32_t exp_all_ones_bits(uint32_t u) {
    return (u & 0x7fffffffU) + 0x00800000U;
}

static inline uint32_t exp_all_ones(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return exp_all_ones_bits(u);
}

static inline float unif(uint32_t lo, uint32_t k0, uint32_t k1h) {
    return (float)(mix32(mix32(lo + k0) ^ k1h) >> 8) * 0x1p-24f;
}

/* mode 0: nearest, uniform grid   mode 1: stochastic, uniform grid
 * mode 2: nearest, binary grid    mode 3: stochastic, binary grid
 * x, out point at element `start` of the logical tensor; n elements are processed. */
/* One block of at most 2^20 elements: 32-bit lane index and counter, so the loops vectorize
 * without 64-bit lanes. */
/* The two uniform-grid loops, with the quotient t = x / delta spelled QUOT: a power-of-two delta
 * (whose reciprocal is a normal float) divides as x * (1/delta), the same exact scaling rounded
 * once, so the same bits, without the vector division. */
#define LOOP_NEAREST(QUOT) \
    _Pragma("GCC ivdep") \
    for (uint32_t i = 0; i < m; i++) { \
        float xi = x[i], t = QUOT, a = fabsf(t), f = floorf(a); \
        f = (a - f >= 0.5f) ? f + 1.0f : f; \
        float k = copysignf(f, t); \
        k = k < kmin ? kmin : k; \
        k = k > kmax ? kmax : k; \
        float o = (k + 0.0f) * delta;  /* + 0: one zero, +0, on every path */ \
        out[i] = o; \
        nonfinite |= exp_all_ones(o); \
    }
/* a value already on a level stays there, even when x/delta rounds off the integer (ON_LEVEL 1).
 * With a power-of-two delta (2^-121 <= delta <= 2^119) every product k * delta is exact and x on a
 * level gives t = x / delta exact, so t == f and p = 0 there (|t| >= 2^24: f + 1 == f), and the
 * tests change no output (ON_LEVEL 0: the same bits, fewer ops). */
#define LOOP_STOCHASTIC(QUOT, ON_LEVEL) \
    _Pragma("GCC ivdep") \
    for (uint32_t i = 0; i < m; i++) { \
        float xi = x[i], t = QUOT, f = floorf(t), p = t - f; \
        if (ON_LEVEL) { \
            p = (xi == f * delta) ? 0.0f : p; \
            p = (xi == (f + 1.0f) * delta) ? 1.0f : p; \
        } \
        float k = (unif(lo0 + i, k0, k1h) < p) ? f + 1.0f : f; \
        k = k < kmin ? kmin : k; \
        k = k > kmax ? kmax : k; \
        float o = (k + 0.0f) * delta; \
        out[i] = o; \
        nonfinite |= exp_all_ones(o); \
    }

static int32_t block(const float *x, float *out, uint32_t m, uint32_t lo0, int mode, float delta,
                     float kmin, float kmax, float scale, uint32_t k0, uint32_t k1h) {
    int32_t bad = 0, e = 0;
    uint32_t nonfinite = 0;
    int pow2 = frexpf(delta, &e) == 0.5f && e >= -120 && e <= 120;
    float inv = pow2 ? ldexpf(1.0f, 1 - e) : 0.0f;
    if (mode == 0) {
        if (pow2) { LOOP_NEAREST(xi * inv) } else { LOOP_NEAREST(xi / delta) }
    } else if (mode == 1) {
        if (pow2) { LOOP_STOCHASTIC(xi * inv, 0) } else { LOOP_STOCHASTIC(xi / delta, 1) }
    } else if (mode == 2) {
#pragma GCC ivdep
        for (uint32_t i = 0; i < m; i++) {
            float xi = x[i];
            out[i] = (xi >= 0.0f) ? scale : -scale;
            bad += (xi != xi);
        }
    } else {
        float two_s = 2.0f * scale;
#pragma GCC ivdep
        for (uint32_t i = 0; i < m; i++) {
            float xi = x[i];
            float c = xi < -scale ? -scale : (xi > scale ? scale : xi);
            float p = (c + scale) / two_s;
            out[i] = (unif(lo0 + i, k0, k1h) < p) ? scale : -scale;
            bad += (xi != xi);
        }
    }
    return bad + (int32_t)(nonfinite >> 31);
}

static int64_t segment(const float *x, float *out, int64_t n, uint32_t lo0,
                       int mode, float delta, int bounded, float kmin, float kmax, float scale,
                       uint32_t k0, uint32_t k1h) {
    /* out may be x itself (in-place rounding): each element is read before it is written, and
     * there is no dependence between iterations (ivdep), so the loops vectorize either way.
     * Flagged as bad: every non-finite output (NaN in; inf in on an unbounded grid; a finite
     * x whose x/delta or k*delta overflows) on uniform grids, NaN inputs on binary ones. */
    int64_t bad = 0;
    if (!bounded) { kmin = -INFINITY; kmax = INFINITY; }  /* branch-free clamp (the loops vectorize) */
    for (int64_t b = 0; b < n; b += (int64_t)1 << 20) {
        uint32_t m = (uint32_t)(n - b < ((int64_t)1 << 20) ? n - b : ((int64_t)1 << 20));
        bad += block(x + b, out + b, m, lo0 + (uint32_t)b, mode, delta, kmin, kmax, scale, k0, k1h);
    }
    return bad;
}

/* Entry point: elements [start, start + n) of the logical tensor; segments keep hi32(index) fixed. */
int64_t qtrain_quantize_f32(const float *x, float *out, int64_t n, int64_t start,
                            int mode, float delta, int bounded, float kmin, float kmax, float scale,
                            uint32_t k0, uint32_t k1) {
    int64_t nan = 0, done = 0;
    while (done < n) {
        uint64_t j = (uint64_t)(start + done);
        int64_t room = (int64_t)((((j >> 32) + 1) << 32) - j), m = n - done < room ? n - done : room;
        nan += segment(x + done, out + done, m, (uint32_t)j, mode, delta, bounded, kmin, kmax, scale,
                       k0, k1 + (uint32_t)(j >> 32));
        done += m;
    }
    return nan;
}

/* Packed records: one ctypes call rounds many tensors (few, cheap arguments; see qtrain/_kernel.py).
 * flags: bit 0 bounded, bit 1 clamp x into latent first (BC: latent = clip(x), out = Q(latent)),
 * bit 2 derive the key from the step head: key = splitmix64(splitmix64(head ^ index)). */
typedef struct {
    const float *x; float *out; float *latent; int64_t n;
    int32_t mode, flags; uint64_t key;
    float delta, scale, kmin, kmax, lo, hi;
    int64_t bad;
} qtrain_rec;

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static int64_t run_rec(const qtrain_rec *r, uint64_t key) {
    if (!(r->flags & 2))
        return qtrain_quantize_f32(r->x, r->out, r->n, 0, r->mode, r->delta, r->flags & 1, r->kmin, r->kmax,
                                   r->scale, (uint32_t)key, (uint32_t)(key >> 32));
    /* BC: latent = clip(x), out = Q(latent), chunk by chunk so the latent is re-read from L1 */
    float lo = r->lo, hi = r->hi;
    int64_t bad = 0;
    for (int64_t b = 0; b < r->n; b += 4096) {
        int64_t m = r->n - b < 4096 ? r->n - b : 4096;
        const float *x = r->x + b;
        float *lat = r->latent + b;
        if (r->x == r->latent) {  /* the base step moved the latent itself: write back clipped entries only */
#pragma GCC ivdep
            for (int64_t i = 0; i < m; i++) {
                float xi = lat[i];
                if (xi < lo) lat[i] = lo;
                if (xi > hi) lat[i] = hi;
            }
        } else {
#pragma GCC ivdep
            for (int64_t i = 0; i < m; i++) {
                float xi = x[i];
                lat[i] = xi < lo ? lo : (xi > hi ? hi : xi);  /* NaN stays NaN, as torch.clamp */
            }
        }
        bad += qtrain_quantize_f32(lat, r->out + b, m, b, r->mode, r->delta, r->flags & 1, r->kmin, r->kmax,
                                   r->scale, (uint32_t)key, (uint32_t)(key >> 32));
    }
    return bad;
}

/* One record, read only (quantize() of one tensor); non-zero when an entry has no level. */
int64_t qtrain_quantize_rec(const qtrain_rec *r) {
    return run_rec(r, r->key);
}

/* count records; head: the step's shared key part (for flag 4, the record's key slot holds the
 * parameter index). Writes each record's bad flag (non-zero: an entry had no level); returns their sum. */
int64_t qtrain_quantize_recs(qtrain_rec *recs, int64_t count, uint64_t head) {
    int64_t total = 0;
    for (int64_t j = 0; j < count; j++) {
        qtrain_rec *r = recs + j;
        uint64_t key = (r->flags & 4) ? splitmix64(splitmix64(head ^ r->key)) : r->key;
        r->bad = run_rec(r, key);
        total += r->bad;
    }
    return total;
}

/* 1 if any of `count` float32 arrays (ptrs_ns: pointer, length pairs) holds NaN or inf, else 0:
 * an integer OR over the exponent bits (vectorizes; no float sum that could overflow), reading
 * 16 KB ahead with prefetches (a gradient too large for the caches streams from memory ~25%
 * faster here than with the hardware prefetcher alone). */
int64_t qtrain_nonfinite_f32(const int64_t *ptrs_ns, int64_t count) {
    for (int64_t j = 0; j < count; j++) {
        const uint32_t *x = (const uint32_t *)(intptr_t)ptrs_ns[2 * j];
        int64_t n = ptrs_ns[2 * j + 1];
        uint32_t acc = 0;
        for (int64_t b = 0; b < n; b += 1024) {
            int64_t m = n - b < 1024 ? n - b : 1024;
            if (n - b > 4096)
                for (int64_t k = 0; k < 1024; k += 16)
                    __builtin_prefetch(x + b + 4096 + k, 0, 2);
            for (int64_t i = 0; i < m; i++)
                acc |= exp_all_ones_bits(x[b + i]);
            if (acc >> 31)
                return 1;
        }
    }
    return 0;
}
