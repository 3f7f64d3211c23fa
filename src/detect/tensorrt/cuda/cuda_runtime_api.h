/* Stand-in for CUDA's cuda_runtime_api.h, used by build.rs only when no CUDA
 * toolkit headers are found. TensorRT's headers (10.x, 11.x) take just these
 * two opaque handle types from it; they are declared exactly as CUDA's
 * driver_types.h declares them, so the shim's ABI is the same either way. */
#ifndef LIVECENSOR_CUDA_RUNTIME_API_STANDIN_H
#define LIVECENSOR_CUDA_RUNTIME_API_STANDIN_H
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
#endif
