// Detector preprocessing: a pitched NV12 device frame -> one letterboxed,
// normalised NCHW RGB slot of the detector's input tensor.
//
// Mirrors detect::preprocess::preprocess_frame_with exactly. `filter` 0
// (ResizeFilter::Linear, NudeNet's own): pad bottom/right to a square of side
// S = max(W, H), OpenCV INTER_LINEAR taps (s = (d + 0.5) * scale - 0.5,
// clamped at 0 and S - 1), BT.601 conversion of the four sampled pixels
// only, bilinear mix in f32, divided by 255. `filter` 1
// (ResizeFilter::Triangle): the antialiased triangle of the module doc of
// detect::preprocess, Y and the chroma planes filtered before conversion, in
// the reference's operation order (per horizontal tap, that column's
// vertical sum first). The slot is `rows x cols`: the square `size x size`,
// or the rectangular letterbox (its top-left corner, the sides
// Letterbox::rect gives). One thread per output pixel; the three channel
// planes are written coalesced. `common.cuh` is prepended by the build.

// One axis: first tap, second tap, weight of the second.
LC_FN void lc_tap(int d, int side, float scale, int* i0, int* i1, float* w1) {
    int last = side - 1;
    float s = ((float)d + 0.5f) * scale - 0.5f;
    float f = floorf(s);
    if (f < 0.0f) {
        *i0 = 0;
        *w1 = 0.0f;
    } else if ((int64_t)f >= (int64_t)last) {
        *i0 = last;
        *w1 = 0.0f;
    } else {
        *i0 = (int)f;
        *w1 = s - f;
    }
    *i1 = lc_min(*i0 + 1, last);
}

// RGB of frame pixel (x, y), black in the padding.
LC_FN void lc_fetch_nv12(const uint8_t* yp, int y_pitch, const uint8_t* uvp, int uv_pitch,
                         int width, int height, int x, int y, float* rgb) {
    if (x < width && y < height) {
        const uint8_t* uv = uvp + (int64_t)(y / 2) * uv_pitch + 2 * (x / 2);
        lc_yuv_to_rgb(yp[(int64_t)y * y_pitch + x], uv[0], uv[1], rgb);
    } else {
        rgb[0] = 0.0f;
        rgb[1] = 0.0f;
        rgb[2] = 0.0f;
    }
}

// The three normalised channel values of output pixel (dx, dy).
LC_FN void lc_letterbox_px(const uint8_t* yp, int y_pitch, const uint8_t* uvp, int uv_pitch,
                           int width, int height, float scale, int dx, int dy, float* out3) {
    if (width <= 0 || height <= 0) {
        out3[0] = 0.0f;
        out3[1] = 0.0f;
        out3[2] = 0.0f;
        return;
    }
    int side = lc_max(width, height);
    int x0, x1, y0, y1;
    float wx, wy;
    lc_tap(dx, side, scale, &x0, &x1, &wx);
    lc_tap(dy, side, scale, &y0, &y1, &wy);
    float p00[3], p01[3], p10[3], p11[3];
    lc_fetch_nv12(yp, y_pitch, uvp, uv_pitch, width, height, x0, y0, p00);
    lc_fetch_nv12(yp, y_pitch, uvp, uv_pitch, width, height, x1, y0, p01);
    lc_fetch_nv12(yp, y_pitch, uvp, uv_pitch, width, height, x0, y1, p10);
    lc_fetch_nv12(yp, y_pitch, uvp, uv_pitch, width, height, x1, y1, p11);
    for (int c = 0; c < 3; ++c) {
        float top = p00[c] * (1.0f - wx) + p01[c] * wx;
        float bottom = p10[c] * (1.0f - wx) + p11[c] * wx;
        out3[c] = (top * (1.0f - wy) + bottom * wy) * (1.0f / 255.0f);
    }
}

// The triangle filter's taps of output `d` along an axis of `side` pixels:
// [lo, hi) clipped to the padded square, and what each weight needs.
struct LcSpan {
    int lo, hi;
    float center, inv, sum;
};

// Raw (unnormalised) weight of tap x.
LC_FN float lc_span_raw(const LcSpan* s, int x) {
    float t = ((float)x + 0.5f - s->center) * s->inv;
    float w = 1.0f - fabsf(t);
    return w > 0.0f ? w : 0.0f;
}

LC_FN void lc_span(int d, int side, float scale, LcSpan* s) {
    float support = scale > 1.0f ? scale : 1.0f;
    s->inv = 1.0f / support;
    s->center = ((float)d + 0.5f) * scale;
    float lo = floorf(s->center - support + 0.5f);
    float hi = floorf(s->center + support + 0.5f);
    s->lo = lo > 0.0f ? (int)lo : 0;
    s->hi = lc_min(hi > 0.0f ? (int)hi : 0, side);
    float sum = 0.0f;
    for (int x = s->lo; x < s->hi; ++x) sum += lc_span_raw(s, x);
    s->sum = sum;
}

// Normalised weight of tap x.
LC_FN float lc_span_w(const LcSpan* s, int x) {
    float w = lc_span_raw(s, x);
    return s->sum > 0.0f ? w / s->sum : w;
}

// Weight of tap x if it lies in [lo, end) (inside the picture), else 0.
LC_FN float lc_span_in(const LcSpan* s, int x, int end) {
    return (x >= s->lo && x < end) ? lc_span_w(s, x) : 0.0f;
}

// The three normalised channel values of output pixel (dx, dy) under the
// triangle filter (detect::preprocess::letterbox_triangle).
LC_FN void lc_triangle_px(const uint8_t* yp, int y_pitch, const uint8_t* uvp, int uv_pitch,
                          int width, int height, float scale, int dx, int dy, float* out3) {
    int side = lc_max(width, height);
    LcSpan sx, sy;
    lc_span(dx, side, scale, &sx);
    lc_span(dy, side, scale, &sy);
    int xe = lc_min(sx.hi, width);
    int ye = lc_min(sy.hi, height);
    float ax = 0.0f, ay = 0.0f;
    for (int x = sx.lo; x < xe; ++x) ax += lc_span_w(&sx, x);
    for (int y = sy.lo; y < ye; ++y) ay += lc_span_w(&sy, y);
    float yf = 0.0f, uf = 0.0f, vf = 0.0f;
    for (int x = sx.lo; x < xe; ++x) {
        float col = 0.0f;
        for (int y = sy.lo; y < ye; ++y)
            col += lc_span_w(&sy, y) * (float)yp[(int64_t)y * y_pitch + x];
        yf += lc_span_w(&sx, x) * col;
    }
    if (xe > sx.lo && ye > sy.lo) {
        for (int k = sx.lo / 2; k <= (xe - 1) / 2; ++k) {
            float wk = lc_span_in(&sx, 2 * k, xe) + lc_span_in(&sx, 2 * k + 1, xe);
            float cu = 0.0f, cv = 0.0f;
            for (int j = sy.lo / 2; j <= (ye - 1) / 2; ++j) {
                float wj = lc_span_in(&sy, 2 * j, ye) + lc_span_in(&sy, 2 * j + 1, ye);
                const uint8_t* uv = uvp + (int64_t)j * uv_pitch + 2 * k;
                cu += wj * (float)uv[0];
                cv += wj * (float)uv[1];
            }
            uf += wk * cu;
            vf += wk * cv;
        }
    }
    float a = ax * ay;
    float c = 1.164f * (yf - 16.0f * a);
    float d = uf - 128.0f * a;
    float e = vf - 128.0f * a;
    float top = 255.0f * a;
    float rgb[3] = {c + 1.596f * e, c - 0.392f * d - 0.813f * e, c + 2.017f * d};
    for (int i = 0; i < 3; ++i) {
        float v = rgb[i] < 0.0f ? 0.0f : rgb[i];
        v = v > top ? top : v;
        out3[i] = v * (1.0f / 255.0f);
    }
}

// One output pixel under `filter` (0 linear, 1 triangle).
LC_FN void lc_preprocess_px(const uint8_t* yp, int y_pitch, const uint8_t* uvp, int uv_pitch,
                            int width, int height, float scale, int filter, int dx, int dy,
                            float* out3) {
    if (filter == 1 && width > 0 && height > 0) {
        lc_triangle_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, dx, dy, out3);
    } else {
        lc_letterbox_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, dx, dy, out3);
    }
}

// `out` is the whole batch tensor [batch, 3, rows, cols]; this writes slot
// `slot`. `scale` is detect::preprocess::Letterbox::scale (host-computed),
// `filter` ResizeFilter::code.
extern "C" __global__ void preprocess_nv12(const uint8_t* yp, int y_pitch, const uint8_t* uvp,
                                           int uv_pitch, int width, int height, int rows,
                                           int cols, float scale, int filter, float* out,
                                           int slot) {
    int dx = blockIdx.x * blockDim.x + threadIdx.x;
    int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= cols || dy >= rows) return;
    float v[3];
    lc_preprocess_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, filter, dx, dy, v);
    int64_t plane = (int64_t)rows * cols;
    float* base = out + (int64_t)slot * 3 * plane + (int64_t)dy * cols + dx;
    base[0] = v[0];
    base[plane] = v[1];
    base[2 * plane] = v[2];
}

// Same values as preprocess_nv12, stored as IEEE half bits (round to nearest
// even) for an f16 engine input.
extern "C" __global__ void preprocess_nv12_f16(const uint8_t* yp, int y_pitch, const uint8_t* uvp,
                                               int uv_pitch, int width, int height, int rows,
                                               int cols, float scale, int filter, uint16_t* out,
                                               int slot) {
    int dx = blockIdx.x * blockDim.x + threadIdx.x;
    int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= cols || dy >= rows) return;
    float v[3];
    lc_preprocess_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, filter, dx, dy, v);
    int64_t plane = (int64_t)rows * cols;
    uint16_t* base = out + (int64_t)slot * 3 * plane + (int64_t)dy * cols + dx;
    base[0] = lc_float_to_half(v[0]);
    base[plane] = lc_float_to_half(v[1]);
    base[2 * plane] = lc_float_to_half(v[2]);
}
