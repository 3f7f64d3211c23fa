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
// Scratch: two u16 buffers (a, b) of window width x window height.

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

// One vertical box pass down column `col` of a window-sized buffer: a
// running sum, exact, with the window's top and bottom rows clamped.
LC_FN void lc_box_column(const uint16_t* src, uint16_t* dst, int ww, int wh, int col, int r) {
    int last = wh - 1;
    uint64_t mul = lc_reciprocal((uint32_t)(2 * r + 1));
    uint32_t sum = 0;
    for (int j = -r; j <= r; ++j) {
        sum += src[(int64_t)lc_clampi(j, 0, last) * ww + col];
    }
    for (int i = 0; i < wh; ++i) {
        dst[(int64_t)i * ww + col] = lc_scaled(sum, mul);
        sum += src[(int64_t)lc_min(i + r + 1, last) * ww + col];
        sum -= src[(int64_t)lc_max(i - r, 0) * ww + col];
    }
}

// Loads the window (as v << 8) and runs the three vertical passes, one
// thread per window column (launch over the window width); each thread
// touches only its own column, so threads never race. Result in `b`.
extern "C" __global__ void blur_v_nv12(const uint8_t* plane, int pitch, int step, int width,
                                       int height, const LcMask* masks, int m, uint16_t* a,
                                       uint16_t* b) {
    const LcMask* mk = masks + m;
    LcWindow win = lc_blur_window(mk, width, height);
    int ww = win.x1 - win.x0, wh = win.y1 - win.y0;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= ww) return;
    const uint8_t* src = plane + (int64_t)(win.x0 + col) * step;
    for (int i = 0; i < wh; ++i) {
        a[(int64_t)i * ww + col] = (uint16_t)((uint32_t)src[(int64_t)(win.y0 + i) * pitch] << 8);
    }
    lc_box_column(a, b, ww, wh, col, mk->r0);
    lc_box_column(b, a, ww, wh, col, mk->r1);
    lc_box_column(a, b, ww, wh, col, mk->r2);
}

// Horizontal pass `pass` on the clip's rows, one thread per pixel:
// pass 0 reads b and writes a, pass 1 reads a and writes b, both over the
// whole window width (launch over window width x clip height); pass 2 reads
// b over the clip's columns only (launch over clip width x clip height) and
// writes (v + 128) >> 8 to the pixels the mask covers.
extern "C" __global__ void blur_h_nv12(uint8_t* plane, int pitch, int step, int width, int height,
                                       const LcMask* masks, int m, int pass, uint16_t* a,
                                       uint16_t* b) {
    const LcMask* mk = masks + m;
    LcWindow win = lc_blur_window(mk, width, height);
    int ww = win.x1 - win.x0;
    int y = mk->cy0 + (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (y >= mk->cy1) return;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (pass == 2) col += mk->cx0 - win.x0;
    if (col >= (pass == 2 ? mk->cx1 - win.x0 : ww)) return;
    int r = pass == 0 ? mk->r0 : (pass == 1 ? mk->r1 : mk->r2);
    const uint16_t* row = (pass == 1 ? a : b) + (int64_t)(y - win.y0) * ww;
    uint32_t sum = 0;
    for (int j = col - r; j <= col + r; ++j) sum += row[lc_clampi(j, 0, ww - 1)];
    uint16_t v = lc_scaled(sum, lc_reciprocal((uint32_t)(2 * r + 1)));
    if (pass == 2) {
        int x = win.x0 + col;
        if (lc_mask_covers(mk, x, y)) {
            plane[(int64_t)y * pitch + (int64_t)x * step] = (uint8_t)(((uint32_t)v + 128u) >> 8);
        }
    } else {
        (pass == 0 ? a : b)[(int64_t)(y - win.y0) * ww + col] = v;
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
