// Detector preprocessing: a pitched NV12 device frame -> one letterboxed,
// normalised NCHW RGB slot of the detector's input tensor.
//
// Mirrors detect::preprocess::preprocess_frame_as exactly: pad bottom/right to
// a square of side S = max(W, H), OpenCV INTER_LINEAR taps
// (s = (d + 0.5) * scale - 0.5, clamped at 0 and S - 1), BT.601 conversion of
// the four sampled pixels only, bilinear mix in f32, divided by 255. The
// slot is `rows x cols`: the square `size x size`, or the rectangular
// letterbox (its top-left corner, the sides Letterbox::rect gives). One
// thread per output pixel; the three channel planes are written coalesced.
// `common.cuh` is prepended by the build.

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

// `out` is the whole batch tensor [batch, 3, rows, cols]; this writes slot
// `slot`. `scale` is detect::preprocess::Letterbox::scale (host-computed).
extern "C" __global__ void preprocess_nv12(const uint8_t* yp, int y_pitch, const uint8_t* uvp,
                                           int uv_pitch, int width, int height, int rows,
                                           int cols, float scale, float* out, int slot) {
    int dx = blockIdx.x * blockDim.x + threadIdx.x;
    int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= cols || dy >= rows) return;
    float v[3];
    lc_letterbox_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, dx, dy, v);
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
                                               int cols, float scale, uint16_t* out, int slot) {
    int dx = blockIdx.x * blockDim.x + threadIdx.x;
    int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= cols || dy >= rows) return;
    float v[3];
    lc_letterbox_px(yp, y_pitch, uvp, uv_pitch, width, height, scale, dx, dy, v);
    int64_t plane = (int64_t)rows * cols;
    uint16_t* base = out + (int64_t)slot * 3 * plane + (int64_t)dy * cols + dx;
    base[0] = lc_float_to_half(v[0]);
    base[plane] = lc_float_to_half(v[1]);
    base[2 * plane] = lc_float_to_half(v[2]);
}
