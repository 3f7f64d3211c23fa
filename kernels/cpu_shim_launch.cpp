// CPU launchers for the parity tests: `launch_<kernel>(cfg, args...)` with
// cfg = {grid.x, grid.y, grid.z, block.x, block.y, block.z}. Compiled after
// cpu_shim.h, common.cuh and every kernels/*.cu in one translation unit.

extern "C" void launch_preprocess_nv12(const unsigned int* cfg, const uint8_t* yp, int y_pitch,
                                       const uint8_t* uvp, int uv_pitch, int width, int height,
                                       int rows, int cols, float scale, int filter, float* out,
                                       int slot) {
    lc_shim_launch(cfg, [&] {
        preprocess_nv12(yp, y_pitch, uvp, uv_pitch, width, height, rows, cols, scale, filter, out,
                        slot);
    });
}

extern "C" void launch_preprocess_nv12_f16(const unsigned int* cfg, const uint8_t* yp,
                                           int y_pitch, const uint8_t* uvp, int uv_pitch,
                                           int width, int height, int rows, int cols,
                                           float scale, int filter, uint16_t* out, int slot) {
    lc_shim_launch(cfg, [&] {
        preprocess_nv12_f16(yp, y_pitch, uvp, uv_pitch, width, height, rows, cols, scale, filter,
                            out, slot);
    });
}

extern "C" void launch_blur_load_nv12(const unsigned int* cfg, const uint8_t* plane, int pitch,
                                      int step, int width, int height, const LcMask* masks, int m,
                                      uint16_t* a) {
    lc_shim_launch(cfg, [&] { blur_load_nv12(plane, pitch, step, width, height, masks, m, a); });
}

extern "C" void launch_blur_scan_nv12(const unsigned int* cfg, int width, int height,
                                      const LcMask* masks, int m, int stage, const uint16_t* a,
                                      const uint16_t* b, uint32_t* pre, uint32_t* tot) {
    lc_shim_launch(cfg, [&] { blur_scan_nv12(width, height, masks, m, stage, a, b, pre, tot); });
}

extern "C" void launch_blur_carry_nv12(const unsigned int* cfg, int width, int height,
                                       const LcMask* masks, int m, int stage, uint32_t* tot) {
    lc_shim_launch(cfg, [&] { blur_carry_nv12(width, height, masks, m, stage, tot); });
}

extern "C" void launch_blur_box_nv12(const unsigned int* cfg, uint8_t* plane, int pitch, int step,
                                     int width, int height, const LcMask* masks, int m, int stage,
                                     uint16_t* a, uint16_t* b, const uint32_t* pre,
                                     const uint32_t* tot) {
    lc_shim_launch(cfg, [&] {
        blur_box_nv12(plane, pitch, step, width, height, masks, m, stage, a, b, pre, tot);
    });
}

extern "C" void launch_pixelate_means_nv12(const unsigned int* cfg, const uint8_t* plane,
                                           int pitch, int step, const LcMask* masks, int m,
                                           uint8_t* means) {
    lc_shim_launch(cfg, [&] { pixelate_means_nv12(plane, pitch, step, masks, m, means); });
}

extern "C" void launch_pixelate_apply_nv12(const unsigned int* cfg, uint8_t* plane, int pitch,
                                           int step, const LcMask* masks, int m,
                                           const uint8_t* means) {
    lc_shim_launch(cfg, [&] { pixelate_apply_nv12(plane, pitch, step, masks, m, means); });
}

extern "C" void launch_fill_nv12(const unsigned int* cfg, uint8_t* plane, int pitch, int step,
                                 const LcMask* masks, int m) {
    lc_shim_launch(cfg, [&] { fill_nv12(plane, pitch, step, masks, m); });
}

extern "C" void launch_decode_yolo_f32(const unsigned int* cfg, const float* out, int anchors,
                                       int classes, const float* thresholds,
                                       const LcImageInfo* images, int batch, LcCandidate* cands,
                                       int capacity, int* count) {
    lc_shim_launch(cfg, [&] {
        decode_yolo_f32(out, anchors, classes, thresholds, images, batch, cands, capacity, count);
    });
}

// The kernels' f32 -> f16 conversion, exposed for an exhaustive test.
extern "C" uint16_t shim_float_to_half(float f) { return lc_float_to_half(f); }
