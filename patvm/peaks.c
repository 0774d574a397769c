/* patvm roofline micro-kernels: peak AND+popcount bit-MACs/s, fp32 FMA and int8 VNNI MACs/s.
 *
 * Built at run time by patvm/peaks.py (benchmarks/roofline.py, and once per CPU for the compiler's cost
 * model) with `cc -O3 -march=native -fopenmp` plus -DHAVE_<PATH>
 * for each path /proc/cpuinfo says the CPU has. Every kernel is register-blocked, works on data that stays
 * in L1, and keeps its partial sums in registers, so it measures the core's arithmetic ceiling, not memory.
 *
 *   ./roofline <path> <threads> <seconds>     -> one line: "<path> <threads> <ops/s> <ops per call>"
 *
 * paths: popcnt-scalar   64-bit POPCNT, 2x4 block of (AND, POPCNT, ADD)
 *        popcnt-avx2-lut AVX2 nibble table (VPSHUFB), 2x3 block, byte sums widened by VPSADBW every 28 steps
 *        popcnt-avx512   AVX-512 VPOPCNTDQ, 4x4 block of (VPANDQ, VPOPCNTQ, VPADDQ)
 *        fp32-fma-avx2   / fp32-fma-avx512: independent FMA chains (one FMA = one MAC = 2 FLOPs)
 *        int8-vnni-avx512 / int8-vnni-avx: VPDPBUSD chains (4 u8*s8 MACs per 32-bit lane)
 * ops counted: bit-MACs for popcount (one AND'ed bit pair = one bit-MAC), MACs otherwise.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEP(v) __asm__ volatile("" : "+x"(v))   /* the value may have changed: nothing is hoisted */
#define KEEPR(v) __asm__ volatile("" : "+r"(v))

static volatile uint64_t sink;

/* ---- scalar POPCNT: 2 activation words x 4 weight words per step */
#define NW 256   /* words per row: 2 KB per row, 12 KB in all (L1) */
__attribute__((optimize("no-tree-vectorize")))
static double k_popcnt_scalar(const uint64_t *a, const uint64_t *w, long reps) {
    uint64_t s[8] = {0};
    for (long r = 0; r < reps; r++) {
        uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
        for (int k = 0; k < NW; k++) {
            uint64_t a0 = a[k], a1 = a[NW + k];
            uint64_t w0 = w[k], w1 = w[NW + k], w2 = w[2 * NW + k], w3 = w[3 * NW + k];
            KEEPR(a0); KEEPR(a1);
            c0 += __builtin_popcountll(a0 & w0); c1 += __builtin_popcountll(a0 & w1);
            c2 += __builtin_popcountll(a0 & w2); c3 += __builtin_popcountll(a0 & w3);
            c4 += __builtin_popcountll(a1 & w0); c5 += __builtin_popcountll(a1 & w1);
            c6 += __builtin_popcountll(a1 & w2); c7 += __builtin_popcountll(a1 & w3);
        }
        s[0] += c0; s[1] += c1; s[2] += c2; s[3] += c3; s[4] += c4; s[5] += c5; s[6] += c6; s[7] += c7;
    }
    sink = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return (double)reps * NW * 8 * 64;
}

#ifdef HAVE_AVX2
/* ---- AVX2 nibble-table popcount: 2 x 3 block (5 loads per 6 popcounts; 2x2 loses ~20% to loads);
 * byte counts (<= 8 per step) widened by VPSADBW every 28 steps */
#define NV 112   /* 256-bit vectors per row (3.5 KB, 17.5 KB in all: L1): a multiple of 28 */
static inline __m256i pc8(__m256i x, __m256i lut, __m256i low) {
    __m256i lo = _mm256_and_si256(x, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}
static double k_popcnt_avx2(const __m256i *a, const __m256i *w, long reps) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    __m256i t0 = zero, t1 = zero, t2 = zero, t3 = zero, t4 = zero, t5 = zero;
    for (long r = 0; r < reps; r++) {
        for (int b = 0; b < NV; b += 28) {
            __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero;
            for (int k = b; k < b + 28; k++) {
                __m256i a0 = _mm256_load_si256(a + k), a1 = _mm256_load_si256(a + NV + k);
                __m256i w0 = _mm256_load_si256(w + k), w1 = _mm256_load_si256(w + NV + k),
                        w2 = _mm256_load_si256(w + 2 * NV + k);
                KEEP(a0); KEEP(a1);
                c0 = _mm256_add_epi8(c0, pc8(_mm256_and_si256(a0, w0), lut, low));
                c1 = _mm256_add_epi8(c1, pc8(_mm256_and_si256(a0, w1), lut, low));
                c2 = _mm256_add_epi8(c2, pc8(_mm256_and_si256(a0, w2), lut, low));
                c3 = _mm256_add_epi8(c3, pc8(_mm256_and_si256(a1, w0), lut, low));
                c4 = _mm256_add_epi8(c4, pc8(_mm256_and_si256(a1, w1), lut, low));
                c5 = _mm256_add_epi8(c5, pc8(_mm256_and_si256(a1, w2), lut, low));
            }
            t0 = _mm256_add_epi64(t0, _mm256_sad_epu8(c0, zero));
            t1 = _mm256_add_epi64(t1, _mm256_sad_epu8(c1, zero));
            t2 = _mm256_add_epi64(t2, _mm256_sad_epu8(c2, zero));
            t3 = _mm256_add_epi64(t3, _mm256_sad_epu8(c3, zero));
            t4 = _mm256_add_epi64(t4, _mm256_sad_epu8(c4, zero));
            t5 = _mm256_add_epi64(t5, _mm256_sad_epu8(c5, zero));
        }
    }
    __m256i t = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(t0, t1), _mm256_add_epi64(t2, t3)),
                                 _mm256_add_epi64(t4, t5));
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o, t);
    sink = o[0] + o[1] + o[2] + o[3];
    return (double)reps * NV * 6 * 256;
}

/* ---- fp32 FMA, 256-bit: 12 independent chains (2 FMA pipes x latency 4-5 need >= 10) */
static double k_fma_avx2(long reps) {
    __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    __m256 x0 = _mm256_set1_ps(1.f), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0,
           x8 = x0, x9 = x0, x10 = x0, x11 = x0;
    for (long r = 0; r < reps; r++) {
        for (int k = 0; k < 64; k++) {
            x0 = _mm256_fmadd_ps(x0, m, c); x1 = _mm256_fmadd_ps(x1, m, c); x2 = _mm256_fmadd_ps(x2, m, c);
            x3 = _mm256_fmadd_ps(x3, m, c); x4 = _mm256_fmadd_ps(x4, m, c); x5 = _mm256_fmadd_ps(x5, m, c);
            x6 = _mm256_fmadd_ps(x6, m, c); x7 = _mm256_fmadd_ps(x7, m, c); x8 = _mm256_fmadd_ps(x8, m, c);
            x9 = _mm256_fmadd_ps(x9, m, c); x10 = _mm256_fmadd_ps(x10, m, c); x11 = _mm256_fmadd_ps(x11, m, c);
        }
        KEEP(m);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float o[8];
    _mm256_storeu_ps(o, s);
    sink = (uint64_t)o[0];
    return (double)reps * 64 * 12 * 8;
}
#endif

#ifdef HAVE_AVX512_VPOPCNTDQ
/* ---- AVX-512 VPOPCNTDQ: 4 x 4 block, 64-bit counts accumulated directly */
#define NZ 48   /* 3 KB per row, 24 KB in all */
static double k_popcnt_avx512(const __m512i *a, const __m512i *w, long reps) {
    __m512i c[16];
    for (int i = 0; i < 16; i++) c[i] = _mm512_setzero_si512();
    for (long r = 0; r < reps; r++) {
        for (int k = 0; k < NZ; k++) {
            __m512i av[4], wv[4];
            for (int i = 0; i < 4; i++) { av[i] = _mm512_load_si512(a + i * NZ + k); KEEP(av[i]); }
            for (int j = 0; j < 4; j++) wv[j] = _mm512_load_si512(w + j * NZ + k);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    c[i * 4 + j] = _mm512_add_epi64(c[i * 4 + j], _mm512_popcnt_epi64(_mm512_and_si512(av[i], wv[j])));
        }
    }
    __m512i t = c[0];
    for (int i = 1; i < 16; i++) t = _mm512_add_epi64(t, c[i]);
    sink = (uint64_t)_mm512_reduce_add_epi64(t);
    return (double)reps * NZ * 16 * 512;
}
#endif

#ifdef HAVE_AVX512F
/* ---- fp32 FMA, 512-bit: 12 chains (2 FMA pipes x latency 4; 24 made gcc spill them to the stack) */
static double k_fma_avx512(long reps) {
    __m512 m = _mm512_set1_ps(0.9999999f), cc = _mm512_set1_ps(1e-7f);
    __m512 x[12];
    for (int i = 0; i < 12; i++) x[i] = _mm512_set1_ps(1.f);
    for (long r = 0; r < reps; r++) {
        for (int k = 0; k < 32; k++)
#pragma GCC unroll 12   /* unrolled, x[] lives in registers (else a store-to-load chain per FMA) */
            for (int i = 0; i < 12; i++) x[i] = _mm512_fmadd_ps(x[i], m, cc);
        KEEP(m);
    }
    __m512 s = x[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, x[i]);
    sink = (uint64_t)_mm512_reduce_add_ps(s);
    return (double)reps * 32 * 12 * 16;
}
#endif

#ifdef HAVE_AVX512_VNNI
/* ---- int8 VPDPBUSD, 512-bit: 12 chains, 64 MACs per instruction */
static double k_vnni_avx512(long reps) {
    __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    __m512i x[12];
    for (int i = 0; i < 12; i++) x[i] = _mm512_setzero_si512();
    for (long r = 0; r < reps; r++) {
        for (int k = 0; k < 32; k++)
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) x[i] = _mm512_dpbusd_epi32(x[i], a, b);
        KEEP(a);
    }
    __m512i s = x[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, x[i]);
    sink = (uint64_t)_mm512_reduce_add_epi32(s);
    return (double)reps * 32 * 12 * 64;
}
#endif

#ifdef HAVE_AVX_VNNI
/* ---- int8 VPDPBUSD, 256-bit (AVX-VNNI): 12 chains, 32 MACs per instruction */
static double k_vnni_avx(long reps) {
    __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
    __m256i x0 = _mm256_setzero_si256(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0,
            x8 = x0, x9 = x0, x10 = x0, x11 = x0;
    for (long r = 0; r < reps; r++) {
        for (int k = 0; k < 64; k++) {
            x0 = _mm256_dpbusd_avx_epi32(x0, a, b); x1 = _mm256_dpbusd_avx_epi32(x1, a, b);
            x2 = _mm256_dpbusd_avx_epi32(x2, a, b); x3 = _mm256_dpbusd_avx_epi32(x3, a, b);
            x4 = _mm256_dpbusd_avx_epi32(x4, a, b); x5 = _mm256_dpbusd_avx_epi32(x5, a, b);
            x6 = _mm256_dpbusd_avx_epi32(x6, a, b); x7 = _mm256_dpbusd_avx_epi32(x7, a, b);
            x8 = _mm256_dpbusd_avx_epi32(x8, a, b); x9 = _mm256_dpbusd_avx_epi32(x9, a, b);
            x10 = _mm256_dpbusd_avx_epi32(x10, a, b); x11 = _mm256_dpbusd_avx_epi32(x11, a, b);
        }
        KEEP(a);
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(x0, x1), _mm256_add_epi32(x2, x3)),
                                 _mm256_add_epi32(_mm256_add_epi32(x4, x5), _mm256_add_epi32(x6, x7)));
    s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(x8, x9), _mm256_add_epi32(x10, x11)));
    int o[8];
    _mm256_storeu_si256((__m256i *)o, s);
    sink = (uint64_t)o[0];
    return (double)reps * 64 * 12 * 32;
}
#endif

/* One call of `path` with `reps` repetitions on thread-private data; returns the ops it did. */
static double run_path(const char *path, long reps, void *a, void *w) {
    if (!strcmp(path, "popcnt-scalar")) return k_popcnt_scalar(a, w, reps);
#ifdef HAVE_AVX2
    if (!strcmp(path, "popcnt-avx2-lut")) return k_popcnt_avx2(a, w, reps);
    if (!strcmp(path, "fp32-fma-avx2")) return k_fma_avx2(reps);
#endif
#ifdef HAVE_AVX512_VPOPCNTDQ
    if (!strcmp(path, "popcnt-avx512")) return k_popcnt_avx512(a, w, reps);
#endif
#ifdef HAVE_AVX512F
    if (!strcmp(path, "fp32-fma-avx512")) return k_fma_avx512(reps);
#endif
#ifdef HAVE_AVX512_VNNI
    if (!strcmp(path, "int8-vnni-avx512")) return k_vnni_avx512(reps);
#endif
#ifdef HAVE_AVX_VNNI
    if (!strcmp(path, "int8-vnni-avx")) return k_vnni_avx(reps);
#endif
    return -1;
}

#define BUF_BYTES (64 * 1024)

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s <path> <threads> <seconds>\n", argv[0]); return 2; }
    const char *path = argv[1];
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    /* calibrate reps on one thread so that one call takes ~seconds */
    void *a = aligned_alloc(64, BUF_BYTES), *w = aligned_alloc(64, BUF_BYTES);
    for (int i = 0; i < BUF_BYTES; i++) { ((unsigned char *)a)[i] = (unsigned char)(i * 37 + 11); ((unsigned char *)w)[i] = (unsigned char)(i * 73 + 5); }
    long reps = 1;
    double t, ops;
    for (;;) {
        t = omp_get_wtime();
        ops = run_path(path, reps, a, w);
        t = omp_get_wtime() - t;
        if (ops < 0) { fprintf(stderr, "path %s is not compiled in\n", path); return 3; }
        if (t > seconds / 8 || reps > (1L << 40)) break;
        reps *= 2;
    }
    reps = (long)(reps * (seconds / t)) + 1;
    double total = 0, wall = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        void *ta = aligned_alloc(64, BUF_BYTES), *tw = aligned_alloc(64, BUF_BYTES);
        memcpy(ta, a, BUF_BYTES); memcpy(tw, w, BUF_BYTES);
        run_path(path, reps / 16 + 1, ta, tw);   /* warm up: clocks, caches */
#pragma omp barrier
        double t0 = omp_get_wtime();
        total += run_path(path, reps, ta, tw);
        double dt = omp_get_wtime() - t0;
#pragma omp critical
        if (dt > wall) wall = dt;
        free(ta); free(tw);
    }
    printf("%s %d %.6e %.6e\n", path, threads, total / wall, total);
    return 0;
}
