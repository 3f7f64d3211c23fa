// Shared helpers for every livecensor kernel.
//
// This file is include-free under NVRTC on purpose: the build concatenates
// it in front of each kernels/*.cu (NVRTC has no include path and cannot
// find <cstdint>), and tests/kernels_cpu_shim.rs compiles the same text
// under g++ after kernels/cpu_shim.h, which defines __global__/__device__/
// threadIdx.
//
// Every function mirrors a Rust reference exactly (same f32 operation order,
// same integer arithmetic), so the kernels must be compiled with FMA
// contraction off (NVRTC/nvcc `--fmad=false`, g++ `-ffp-contract=off`).

#ifndef LC_COMMON_CUH
#define LC_COMMON_CUH

// NVRTC has no system headers: there the fixed-width types are defined here
// (__CUDACC_RTC__). nvcc (which pre-includes cuda_runtime.h) and the CPU
// shim's g++ take them from <stdint.h>, so the definitions never clash.
#if defined(__CUDACC_RTC__)
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
#else
#include <stdint.h>
#endif

#define LC_FN __device__ __forceinline__

// Mask outline shapes (crate::frame::MaskShape).
#define LC_SHAPE_RECT 0
#define LC_SHAPE_ELLIPSE 1

// One mask on one plane; mirrors `gpu::KernelMask` (#[repr(C)], 14 x i32).
// The outline is the float box rounded outward (may extend beyond the
// plane, |v| <= 2^28); the clip is the outline intersected with the plane
// and is where writes happen (censor::region::Region).
struct LcMask {
    int ox0, oy0, ox1, oy1; // outline [ox0, ox1) x [oy0, oy1)
    int cx0, cy0, cx1, cy1; // clip, non-empty, inside the plane
    int shape;              // LC_SHAPE_*
    int r0, r1, r2;         // blur: the three box radii (censor::blur::box_radii)
    int block;              // pixelate: block side in pixels, >= 1
    int value;              // fill: the plane's value (Y, U or V)
};

LC_FN int lc_min(int a, int b) { return a < b ? a : b; }
LC_FN int lc_max(int a, int b) { return a > b ? a : b; }
LC_FN int lc_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Rust's f32::clamp: NaN passes through.
LC_FN float lc_clampf(float v, float lo, float hi) {
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return v;
}

// Rust's f32::max(v, 0.0): NaN gives 0.
LC_FN float lc_max0(float v) { return v > 0.0f ? v : 0.0f; }

// Floor division for a positive divisor (i64::div_euclid).
LC_FN int64_t lc_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b) != 0 && a < 0) q -= 1;
    return q;
}

// frame::clamp_u8: round half away from zero, then clamp to [0, 255].
LC_FN uint8_t lc_round_u8(float v) {
    float r = lc_clampf(roundf(v), 0.0f, 255.0f);
    return (uint8_t)(int)r;
}

// frame::yuv_to_rgb (BT.601 limited range), same f32 operation order.
LC_FN void lc_yuv_to_rgb(uint8_t y, uint8_t u, uint8_t v, float* rgb) {
    float c = 1.164f * ((float)y - 16.0f);
    float d = (float)u - 128.0f;
    float e = (float)v - 128.0f;
    float r = c + 1.596f * e;
    float g = c - 0.392f * d - 0.813f * e;
    float b = c + 2.017f * d;
    rgb[0] = (float)lc_round_u8(r);
    rgb[1] = (float)lc_round_u8(g);
    rgb[2] = (float)lc_round_u8(b);
}

// f32 -> IEEE binary16 bits, round to nearest even (what __float2half_rn
// does), written out so no cuda_fp16.h is needed.
LC_FN uint16_t lc_float_to_half(float f) {
    union {
        float f;
        uint32_t u;
    } c;
    c.f = f;
    uint32_t x = c.u;
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                     // half subnormal or zero
        if (ax <= 0x33000000u) return (uint16_t)sign;           // <= 2^-25 ties to 0
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - (ax >> 23);
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r += 1u;
        return (uint16_t)(sign | r);
    }
    uint32_t h = (ax - 0x38000000u) >> 13;
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1u;
    return (uint16_t)(sign | h);
}

// a * b as a 128-bit (hi, lo) pair, portable (no __int128, no intrinsics).
LC_FN void lc_mul_wide(uint64_t a, uint64_t b, uint64_t* hi, uint64_t* lo) {
    uint64_t a0 = a & 0xffffffffull, a1 = a >> 32;
    uint64_t b0 = b & 0xffffffffull, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffull) + (p10 & 0xffffffffull);
    *lo = (mid << 32) | (p00 & 0xffffffffull);
    *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

// censor::region::Region::contains for a pixel already inside the clip:
// the pixel centre lies in the ellipse inscribed in the outline iff
// dx^2 h^2 + dy^2 w^2 <= w^2 h^2 (exact; 128-bit when the numbers are big).
LC_FN bool lc_mask_covers(const LcMask* m, int x, int y) {
    if (x < m->cx0 || x >= m->cx1 || y < m->cy0 || y >= m->cy1) return false;
    if (m->shape != LC_SHAPE_ELLIPSE) return true;
    int64_t w = (int64_t)m->ox1 - m->ox0;
    int64_t h = (int64_t)m->oy1 - m->oy0;
    if (w <= 0 || h <= 0) return false;
    int64_t dx = 2 * (int64_t)x + 1 - ((int64_t)m->ox0 + m->ox1);
    int64_t dy = 2 * (int64_t)y + 1 - ((int64_t)m->oy0 + m->oy1);
    uint64_t adx = (uint64_t)(dx < 0 ? -dx : dx);
    uint64_t ady = (uint64_t)(dy < 0 ? -dy : dy);
    uint64_t uw = (uint64_t)w, uh = (uint64_t)h;
    if (uw < 32768u && uh < 32768u && adx < 65536u && ady < 65536u) {
        // Every product below 2^62: plain 64-bit arithmetic is exact.
        return adx * adx * uh * uh + ady * ady * uw * uw <= uw * uw * uh * uh;
    }
    uint64_t ah, al, bh, bl, ch, cl;
    lc_mul_wide(adx * adx, uh * uh, &ah, &al);
    lc_mul_wide(ady * ady, uw * uw, &bh, &bl);
    lc_mul_wide(uw * uw, uh * uh, &ch, &cl);
    uint64_t sl = al + bl;
    uint64_t sh = ah + bh + (sl < al ? 1u : 0u);
    return sh < ch || (sh == ch && sl <= cl);
}

#endif // LC_COMMON_CUH
