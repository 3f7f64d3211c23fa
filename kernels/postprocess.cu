// Detector output decoding on the device, so only candidates cross to the
// host (NMS on those few stays on the host: detect::postprocess::nms).
//
// Mirrors detect::postprocess::decode: per anchor the best class is the
// first maximum (strict >, NaN never wins), the anchor survives when that
// score is >= the class's threshold, the box goes centre -> corner, is
// scaled by the letterbox scale (padding is bottom/right: no offset), is
// clipped to the frame, and is dropped when empty. Survivors are appended
// with an atomic counter; their order is arbitrary (the host sorts by
// image, anchor). `common.cuh` is prepended by the build.

// Per image of the batch: detect::preprocess::Letterbox (scale, width, height).
struct LcImageInfo {
    float scale;
    int width;
    int height;
    int pad_;
};

// One surviving anchor; mirrors `gpu::Candidate` (#[repr(C)], 32 bytes).
struct LcCandidate {
    float x0, y0, x1, y1;
    float score;
    int cls;
    int image;
    int anchor;
};

LC_FN float lc_neg_inf() {
    union {
        uint32_t u;
        float f;
    } c;
    c.u = 0xff800000u;
    return c.f;
}

// `out` is [batch, 4 + classes, anchors] f32; `thresholds` has `classes`
// entries. Launch over (anchors, batch). `count` must be zeroed before the
// launch; it ends as the number of survivors even when that exceeds
// `capacity` (only the first `capacity` are stored), so the host can tell.
extern "C" __global__ void decode_yolo_f32(const float* out, int anchors, int classes,
                                           const float* thresholds, const LcImageInfo* images,
                                           int batch, LcCandidate* cands, int capacity,
                                           int* count) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    int img = blockIdx.y;
    if (a >= anchors || img >= batch) return;
    const float* base = out + (int64_t)img * (4 + classes) * anchors;
    int best_c = 0;
    float best = lc_neg_inf();
    for (int c = 0; c < classes; ++c) {
        float s = base[(int64_t)(4 + c) * anchors + a];
        if (s > best) {
            best = s;
            best_c = c;
        }
    }
    if (!(best >= thresholds[best_c])) return;
    float cx = base[a], cy = base[anchors + a];
    float hw = base[2 * (int64_t)anchors + a] * 0.5f;
    float hh = base[3 * (int64_t)anchors + a] * 0.5f;
    LcImageInfo info = images[img];
    float w = (float)info.width, h = (float)info.height;
    float x0 = lc_clampf((cx - hw) * info.scale, 0.0f, w);
    float y0 = lc_clampf((cy - hh) * info.scale, 0.0f, h);
    float x1 = lc_clampf((cx + hw) * info.scale, 0.0f, w);
    float y1 = lc_clampf((cy + hh) * info.scale, 0.0f, h);
    if (lc_max0(x1 - x0) <= 0.0f || lc_max0(y1 - y0) <= 0.0f) return;
    int slot = atomicAdd(count, 1);
    if (slot >= capacity) return;
    LcCandidate k;
    k.x0 = x0;
    k.y0 = y0;
    k.x1 = x1;
    k.y1 = y1;
    k.score = best;
    k.cls = best_c;
    k.image = img;
    k.anchor = a;
    cands[slot] = k;
}
