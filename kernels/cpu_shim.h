// Runs the CUDA kernels on the CPU for the parity tests
// (tests/kernels_cpu_shim.rs): compiled under g++ in front of common.cuh and
// the kernels/*.cu sources, with kernels/cpu_shim_launch.cpp last.
//
// A "launch" loops over every block and thread of the grid on one CPU
// thread, setting threadIdx/blockIdx. That is a valid schedule only for
// kernels without __syncthreads or shared memory, which is why none of the
// livecensor kernels use them. atomicAdd is a plain read-modify-write.

#ifndef LC_CPU_SHIM_H
#define LC_CPU_SHIM_H

#include <math.h>
#include <stdint.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static thread_local dim3 blockDim;
static thread_local dim3 gridDim;

inline int atomicAdd(int* p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    unsigned int old = *p;
    *p = old + v;
    return old;
}

inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}

// Runs `body` once per (block, thread) of the grid, in order.
template <class F>
void lc_shim_launch(const unsigned int* cfg, F body) {
    gridDim = dim3(cfg[0], cfg[1], cfg[2]);
    blockDim = dim3(cfg[3], cfg[4], cfg[5]);
    for (unsigned int bz = 0; bz < gridDim.z; ++bz)
        for (unsigned int by = 0; by < gridDim.y; ++by)
            for (unsigned int bx = 0; bx < gridDim.x; ++bx)
                for (unsigned int tz = 0; tz < blockDim.z; ++tz)
                    for (unsigned int ty = 0; ty < blockDim.y; ++ty)
                        for (unsigned int tx = 0; tx < blockDim.x; ++tx) {
                            blockIdx = uint3{bx, by, bz};
                            threadIdx = uint3{tx, ty, tz};
                            body();
                        }
}

#endif // LC_CPU_SHIM_H
