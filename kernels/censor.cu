// Censoring on one 8-bit plane of a pitched NV12 device frame: pixel (x, y)
// is plane[y * pitch + x * step] (Y: step 1; UV plane: step 2, the V view
// starts one byte in). The host launches these once per mask and plane, in
// mask order, so overlapping masks compose exactly as the CPU path applies
// them one after another. `masks[m]` is the mask; only pixels it covers are
// written. No shared memory, no __syncthreads: the CPU shim can run them.
// `common.cuh` is prepended by the build.

// ---------------------------------------------------------------------------
// Blur: three box blurs per axis in Q8 integers (censor::blur): three
// vertical passes, then three horizontal ones. Every value is exact integer
// arithmetic, so the result is bit-identical to the CPU whatever the
// summation order. The work area is the clip padded by r0 + r1 + r2 and
// clamped to the plane (the "window"); edges clamp at the window border,
// which leaves every pixel inside the clip exact.
//
// Each box pass is O(1) per pixel and parallel along the line too, without
// shared memory (so the CPU shim runs it): `blur_scan` gives every
// LC_BLUR_SEG-long segment of a line its local prefix sums and total,
// `blur_carry` turns a line's segment totals into carries (exclusive
// prefix), and `blur_box` reads each window sum as a difference of two
// prefix sums plus the clamped edge samples. u32 wraps: window sums are
// below 2^32, so differences are exact even where a prefix wrapped.
//
// Stages 0..2 are the vertical passes (lines are the window's columns),
// 3..5 the horizontal ones (lines are the clip's rows across the whole
// window width). Stage s reads `a` when s is even, else `b`, and writes the
// other; stage 5 writes the plane instead. `blur_load` fills `a` first.
// Scratch: u16 a, b and u32 pre of window width x window height; u32 tot of
// lines x segments (CensorPlan sizes them).

#define LC_BLUR_SEG 32

struct LcWindow {
    int x0, y0, x1, y1;
};

LC_FN LcWindow lc_blur_window(const LcMask* m, int width, int height) {
    int64_t pad = (int64_t)m->r0 + m->r1 + m->r2;
    LcWindow w;
    w.x0 = (int)((int64_t)m->cx0 - pad > 0 ? (int64_t)m->cx0 - pad : 0);
    w.y0 = (int)((int64_t)m->cy0 - pad > 0 ? (int64_t)m->cy0 - pad : 0);
    w.x1 = (int)((int64_t)m->cx1 + pad < (int64_t)width ? (int64_t)m->cx1 + pad : width);
    w.y1 = (int)((int64_t)m->cy1 + pad < (int64_t)height ? (int64_t)m->cy1 + pad : height);
    return w;
}

// (2^32 + w/2) / w: the rounded-division multiplier (censor::blur::reciprocal).
LC_FN uint64_t lc_reciprocal(uint32_t w) {
    return ((1ull << 32) + (uint64_t)(w / 2u)) / (uint64_t)w;
}

LC_FN uint16_t lc_scaled(uint32_t sum, uint64_t mul) {
    return (uint16_t)(((uint64_t)sum * mul + (1ull << 31)) >> 32);
}

// The lines one stage works on, as views of the window-sized buffers:
// element i of line l is at base + l * ls + i * es.
struct LcLines {
    int n, count, nseg;
    int64_t base, ls, es;
};

LC_FN LcLines lc_blur_lines(const LcMask* mk, int width, int height, int stage) {
    LcWindow win = lc_blur_window(mk, width, height);
    int ww = win.x1 - win.x0, wh = win.y1 - win.y0;
    LcLines L;
    if (stage < 3) {
        L.n = wh;
        L.count = ww;
        L.base = 0;
        L.ls = 1;
        L.es = ww;
    } else {
        L.n = ww;
        L.count = mk->cy1 - mk->cy0;
        L.base = (int64_t)(mk->cy0 - win.y0) * ww;
        L.ls = ww;
        L.es = 1;
    }
    L.nseg = (L.n + LC_BLUR_SEG - 1) / LC_BLUR_SEG;
    return L;
}

// Where segment `seg` of line `line` keeps its total, then its carry:
// vertical stages put neighbouring columns side by side (coalesced).
LC_FN int64_t lc_blur_tot(const LcLines* L, int stage, int line, int seg) {
    return stage < 3 ? (int64_t)seg * L->count + line : (int64_t)line * L->nseg + seg;
}

// Sum of the first k elements of a line (k in 0..=n), from the scan.
LC_FN uint32_t lc_blur_prefix(const LcLines* L, int stage, int line, const uint32_t* pre,
                              const uint32_t* tot, int k) {
    if (k <= 0) return 0u;
    int j = k - 1;
    return pre[L->base + (int64_t)line * L->ls + (int64_t)j * L->es] +
           tot[lc_blur_tot(L, stage, line, j / LC_BLUR_SEG)];
}

LC_FN int lc_blur_radius(const LcMask* mk, int stage) {
    int k = stage % 3;
    return k == 0 ? mk->r0 : (k == 1 ? mk->r1 : mk->r2);
}

// The window as v << 8 into `a`, one thread per window pixel (launch over
// window width x window height).
extern "C" __global__ void blur_load_nv12(const uint8_t* plane, int pitch, int step, int width,
                                          int height, const LcMask* masks, int m, uint16_t* a) {
    const LcMask* mk = masks + m;
    LcWindow win = lc_blur_window(mk, width, height);
    int ww = win.x1 - win.x0, wh = win.y1 - win.y0;
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= ww || y >= wh) return;
    uint32_t p = plane[(int64_t)(win.y0 + y) * pitch + (int64_t)(win.x0 + x) * step];
    a[(int64_t)y * ww + x] = (uint16_t)(p << 8);
}

// Local inclusive prefix sums of one segment into `pre` and its total into
// `tot`, one thread per (line, segment): launch over (lines, segments) for
// a vertical stage, (segments, lines) for a horizontal one.
extern "C" __global__ void blur_scan_nv12(int width, int height, const LcMask* masks, int m,
                                          int stage, const uint16_t* a, const uint16_t* b,
                                          uint32_t* pre, uint32_t* tot) {
    const LcMask* mk = masks + m;
    LcLines L = lc_blur_lines(mk, width, height, stage);
    int tx = blockIdx.x * blockDim.x + threadIdx.x;
    int ty = blockIdx.y * blockDim.y + threadIdx.y;
    int line = stage < 3 ? tx : ty, seg = stage < 3 ? ty : tx;
    if (line >= L.count || seg >= L.nseg) return;
    const uint16_t* src = stage % 2 == 0 ? a : b;
    int64_t o = L.base + (int64_t)line * L.ls;
    int i1 = lc_min((seg + 1) * LC_BLUR_SEG, L.n);
    uint32_t acc = 0;
    for (int i = seg * LC_BLUR_SEG; i < i1; ++i) {
        acc += src[o + (int64_t)i * L.es];
        pre[o + (int64_t)i * L.es] = acc;
    }
    tot[lc_blur_tot(&L, stage, line, seg)] = acc;
}

// A line's segment totals -> each segment's carry (the sum of the segments
// before it), in place; one thread per line (launch over the lines).
extern "C" __global__ void blur_carry_nv12(int width, int height, const LcMask* masks, int m,
                                           int stage, uint32_t* tot) {
    const LcMask* mk = masks + m;
    LcLines L = lc_blur_lines(mk, width, height, stage);
    int line = blockIdx.x * blockDim.x + threadIdx.x;
    if (line >= L.count) return;
    uint32_t carry = 0;
    for (int seg = 0; seg < L.nseg; ++seg) {
        int64_t k = lc_blur_tot(&L, stage, line, seg);
        uint32_t t = tot[k];
        tot[k] = carry;
        carry += t;
    }
}

// One box pass, one thread per output: the window sum of radius r around
// element i, with out-of-line samples clamped to the line's first or last
// element, is P(min(i + r + 1, n)) - P(max(i - r, 0)) plus those edge
// copies. Launch over window width x window height (vertical stages),
// window width x clip height (stages 3, 4) or clip width x clip height
// (stage 5, which writes (v + 128) >> 8 to the pixels the mask covers).
extern "C" __global__ void blur_box_nv12(uint8_t* plane, int pitch, int step, int width,
                                         int height, const LcMask* masks, int m, int stage,
                                         uint16_t* a, uint16_t* b, const uint32_t* pre,
                                         const uint32_t* tot) {
    const LcMask* mk = masks + m;
    LcLines L = lc_blur_lines(mk, width, height, stage);
    LcWindow win = lc_blur_window(mk, width, height);
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (stage == 5) x += mk->cx0 - win.x0;
    int line = stage < 3 ? x : y, i = stage < 3 ? y : x;
    int end = stage == 5 ? mk->cx1 - win.x0 : L.n;
    if (line >= L.count || i >= end) return;
    int r = lc_blur_radius(mk, stage), n = L.n;
    const uint16_t* src = stage % 2 == 0 ? a : b;
    int64_t o = L.base + (int64_t)line * L.ls;
    uint32_t sum = lc_blur_prefix(&L, stage, line, pre, tot, lc_min(i + r + 1, n)) -
                   lc_blur_prefix(&L, stage, line, pre, tot, lc_max(i - r, 0));
    if (i < r) sum += (uint32_t)(r - i) * src[o];
    if (i + r + 1 > n) sum += (uint32_t)(i + r + 1 - n) * src[o + (int64_t)(n - 1) * L.es];
    uint16_t v = lc_scaled(sum, lc_reciprocal((uint32_t)(2 * r + 1)));
    if (stage == 5) {
        int px = win.x0 + i, py = mk->cy0 + line;
        if (lc_mask_covers(mk, px, py)) {
            plane[(int64_t)py * pitch + (int64_t)px * step] = (uint8_t)(((uint32_t)v + 128u) >> 8);
        }
    } else {
        (stage % 2 == 0 ? b : a)[o + (int64_t)i * L.es] = v;
    }
}

// ---------------------------------------------------------------------------
// Pixelate (censor::pixelate): square blocks aligned to the outline's
// top-left corner; a block's mean is over all its pixels inside the clip,
// (sum + n/2) / n, and is written where the mask covers.

struct LcBlocks {
    int64_t bx0, by0; // top-left of the first block touching the clip
    int nx, ny;       // blocks across and down
};

LC_FN LcBlocks lc_blocks(const LcMask* m) {
    int64_t b = m->block < 1 ? 1 : m->block;
    LcBlocks k;
    int64_t fx = lc_floor_div((int64_t)m->cx0 - m->ox0, b);
    int64_t lx = lc_floor_div((int64_t)m->cx1 - 1 - m->ox0, b);
    int64_t fy = lc_floor_div((int64_t)m->cy0 - m->oy0, b);
    int64_t ly = lc_floor_div((int64_t)m->cy1 - 1 - m->oy0, b);
    k.bx0 = m->ox0 + fx * b;
    k.by0 = m->oy0 + fy * b;
    k.nx = (int)(lx - fx + 1);
    k.ny = (int)(ly - fy + 1);
    return k;
}

// Block means into `means` (nx * ny bytes), one thread per block; launch
// over (nx, ny) as the host computes them with the same formula.
extern "C" __global__ void pixelate_means_nv12(const uint8_t* plane, int pitch, int step,
                                               const LcMask* masks, int m, uint8_t* means) {
    const LcMask* mk = masks + m;
    LcBlocks k = lc_blocks(mk);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int j = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= k.nx || j >= k.ny) return;
    int64_t b = mk->block < 1 ? 1 : mk->block;
    int64_t sx = k.bx0 + (int64_t)i * b, sy = k.by0 + (int64_t)j * b;
    int xs = (int)(sx > mk->cx0 ? sx : mk->cx0);
    int xe = (int)(sx + b < mk->cx1 ? sx + b : mk->cx1);
    int ys = (int)(sy > mk->cy0 ? sy : mk->cy0);
    int ye = (int)(sy + b < mk->cy1 ? sy + b : mk->cy1);
    uint64_t sum = 0;
    for (int y = ys; y < ye; ++y) {
        const uint8_t* row = plane + (int64_t)y * pitch;
        for (int x = xs; x < xe; ++x) sum += row[(int64_t)x * step];
    }
    uint64_t n = (uint64_t)(ye - ys) * (uint64_t)(xe - xs);
    means[(int64_t)j * k.nx + i] = (uint8_t)((sum + n / 2u) / n);
}

// Writes the block means where the mask covers; one thread per clip pixel
// (launch over the clip's width and height).
extern "C" __global__ void pixelate_apply_nv12(uint8_t* plane, int pitch, int step,
                                               const LcMask* masks, int m, const uint8_t* means) {
    const LcMask* mk = masks + m;
    int x = mk->cx0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = mk->cy0 + (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x >= mk->cx1 || y >= mk->cy1 || !lc_mask_covers(mk, x, y)) return;
    LcBlocks k = lc_blocks(mk);
    int64_t b = mk->block < 1 ? 1 : mk->block;
    int64_t i = ((int64_t)x - k.bx0) / b;
    int64_t j = ((int64_t)y - k.by0) / b;
    plane[(int64_t)y * pitch + (int64_t)x * step] = means[j * k.nx + i];
}

// ---------------------------------------------------------------------------
// Fill: the mask's plane value where it covers; one thread per clip pixel.
extern "C" __global__ void fill_nv12(uint8_t* plane, int pitch, int step, const LcMask* masks,
                                     int m) {
    const LcMask* mk = masks + m;
    int x = mk->cx0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = mk->cy0 + (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x >= mk->cx1 || y >= mk->cy1 || !lc_mask_covers(mk, x, y)) return;
    plane[(int64_t)y * pitch + (int64_t)x * step] = (uint8_t)mk->value;
}
