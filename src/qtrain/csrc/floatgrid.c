/* qtrain float-format rounding onto bfloat16 / float16 / float8 over a contiguous float32 array:
 * Q_s (stochastic != 0): the same bits as the vectorised torch path in qtrain/floatgrid.py,
 * with the counter-based random source of qtrain/rng.py:
 *   u_i = (mix32(mix32(lo32(i) + k0) ^ (k1 + hi32(i))) >> 8) * 2^-24.
 * m: mantissa bits of the format; sub_lim: float32 bits of 2^emin (0 for bfloat16: its subnormals
 * are float32's, the bit path covers them); up/down: 2^(m - emin), 2^(emin - m);
 * sat: bits of the largest finite value when the format saturates (e4m3fn), else 0x7fffffff.
 * Q_d (stochastic == 0): round-to-nearest-even, the bits of torch's cast x.to(dtype).
 * Returns how many inputs have no level (NaN, inf; with inf formats: Q_s |x| > max, Q_d rounding to inf).
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU;
    x ^= x >> 15; x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static int64_t nearest(const float *restrict x, float *restrict out, int64_t n, int m,
                       uint32_t sub_lim, float up, float down, uint32_t sat, uint32_t fmax) {
    int64_t bad = 0;
    const int d = 23 - m;
    const uint32_t mask = (1u << d) - 1u, half = (1u << (d - 1)) - 1u;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = f2u(x[i]), a = b & 0x7fffffffu;
        uint32_t r = (a + half + ((a >> d) & 1u)) & ~mask;  /* ties to even */
        if (a < sub_lim)
            r = f2u(rintf(fabsf(x[i]) * up) * down);  /* rintf: the default mode, nearest-even */
        bad += (a >= 0x7f800000u) | (r > fmax);
        r = r > sat ? sat : r;
        out[i] = u2f(r | (b & 0x80000000u));
    }
    return bad;
}

static int64_t segment(const float *restrict x, float *restrict out, int64_t n, uint32_t lo0, int m,
                       uint32_t sub_lim, float up, float down, uint32_t sat, uint32_t bad_lim,
                       uint32_t k0, uint32_t k1h) {
    int64_t bad = 0;
    const int d = 23 - m;
    const uint32_t mask = (1u << d) - 1u;
    const float scale = 1.0f / (float)(1u << d);
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = f2u(x[i]), a = b & 0x7fffffffu, low = a & mask;
        float u = (float)(mix32(mix32(lo0 + (uint32_t)i + k0) ^ k1h) >> 8) * 0x1p-24f;
        uint32_t r = (a - low) + ((uint32_t)(u < (float)low * scale) << d);
        if (a < sub_lim) {
            float t = fabsf(x[i]) * up, f = floorf(t);
            r = f2u((f + (float)(u < t - f)) * down);
        }
        r = r > sat ? sat : r;
        bad += a > bad_lim;
        out[i] = u2f(r | (b & 0x80000000u));
    }
    return bad;
}

int64_t qtrain_float_sr_f32(const float *x, float *out, int64_t n, int64_t start, int m, uint32_t sub_lim,
                            float up, float down, uint32_t sat, uint32_t bad_lim, uint32_t k0, uint32_t k1,
                            int stochastic) {
    int64_t bad = 0, done = 0;
    if (!stochastic)  /* bad_lim: bits of the largest finite value with inf formats, else of float32's max */
        return nearest(x, out, n, m, sub_lim, up, down, sat, bad_lim);
    while (done < n) {  /* segments keep hi32(index) fixed */
        uint64_t j = (uint64_t)(start + done);
        int64_t room = (int64_t)((((j >> 32) + 1) << 32) - j), cnt = n - done < room ? n - done : room;
        bad += segment(x + done, out + done, cnt, (uint32_t)j, m, sub_lim, up, down, sat, bad_lim,
                       k0, k1 + (uint32_t)(j >> 32));
        done += cnt;
    }
    return bad;
}
