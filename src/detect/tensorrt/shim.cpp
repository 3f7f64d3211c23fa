// livecensor's TensorRT shim: a C ABI (prefix lc_trt_) over the TensorRT C++
// API, compiled by build.rs against TensorRT's headers only.
//
// Everything in TensorRT's C++ API is an inline wrapper over virtual
// interfaces obtained from three exported factories
// (createInferRuntime_INTERNAL, createInferBuilder_INTERNAL,
// createNvOnnxParser_INTERNAL), so the shim dlopens libnvinfer and
// libnvonnxparser at run time and links nothing but -ldl: the binary builds
// and starts where TensorRT is absent. No C++ exception crosses the C
// boundary: every entry point catches everything, returns a status (0 ok,
// -1 error) or a null handle, and writes the reason into the caller's
// buffer.

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR < 10
#error "livecensor's TensorRT shim needs TensorRT 10 or newer headers"
#endif

namespace {

using nvinfer1::Dims;
using nvinfer1::ILogger;

using CreateFn = void* (*)(void*, int32_t);
using CreateParserFn = void* (*)(void*, void*, int32_t);
using VersionFn = int32_t (*)();

using lc_trt_log_fn = void (*)(void* user, int32_t severity, char const* msg);
// 1: a batch is in *device_ptr; 0: no more batches; < 0: failed.
using lc_trt_calib_fn = int32_t (*)(void* user, void** device_ptr);

void set_err(char* buf, size_t len, std::string const& msg) noexcept
{
    if (buf == nullptr || len == 0)
    {
        return;
    }
    size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
    std::memcpy(buf, msg.data(), n);
    buf[n] = '\0';
}

std::string version_string(int64_t v)
{
    return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

// The last error TensorRT logged on this thread: most TensorRT errors are
// logged synchronously by the failing call, so the message that explains a
// null return is this thread's.
thread_local std::string tl_last_error;

class Logger : public ILogger
{
public:
    lc_trt_log_fn callback{nullptr};
    void* user{nullptr};

    void log(Severity severity, char const* msg) noexcept override
    {
        try
        {
            if (severity <= Severity::kERROR)
            {
                tl_last_error = msg;
                std::lock_guard<std::mutex> g(mMutex);
                mLastError = msg;
            }
            if (callback != nullptr)
            {
                callback(user, static_cast<int32_t>(severity), msg);
            }
        }
        catch (...)
        {
        }
    }

    // This thread's last error, else any thread's; then forgets both.
    std::string take_last_error()
    {
        std::string m;
        m.swap(tl_last_error);
        std::lock_guard<std::mutex> g(mMutex);
        if (m.empty())
        {
            m = mLastError;
        }
        mLastError.clear();
        return m;
    }

private:
    std::mutex mMutex;
    std::string mLastError;
};

// `what`, plus TensorRT's own explanation when it logged one.
std::string with_log(Logger& logger, std::string what)
{
    std::string logged = logger.take_last_error();
    if (!logged.empty())
    {
        what += ": ";
        what += logged;
    }
    return what;
}

std::string dl_error()
{
    char const* e = dlerror();
    return e != nullptr ? std::string(e) : std::string("unknown dlopen error");
}

// Runs `f`, turning any exception into `fail` and a message.
template <typename T, typename F>
T guard(char* err, size_t len, T fail, F&& f) noexcept
{
    try
    {
        return f();
    }
    catch (std::exception const& e)
    {
        set_err(err, len, std::string("TensorRT shim: ") + e.what());
    }
    catch (...)
    {
        set_err(err, len, "TensorRT shim: unknown C++ exception");
    }
    return fail;
}

bool to_dims(int32_t nb, int64_t const* values, Dims& out)
{
    if (nb < 0 || nb > Dims::MAX_DIMS || (nb > 0 && values == nullptr))
    {
        return false;
    }
    out.nbDims = nb;
    for (int32_t i = 0; i < Dims::MAX_DIMS; ++i)
    {
        out.d[i] = i < nb ? values[i] : 0;
    }
    return true;
}

void from_dims(Dims const& d, int64_t* values, int32_t* nb)
{
    int32_t n = d.nbDims < 0 ? -1 : (d.nbDims > Dims::MAX_DIMS ? Dims::MAX_DIMS : d.nbDims);
    if (nb != nullptr)
    {
        *nb = n;
    }
    if (values != nullptr)
    {
        for (int32_t i = 0; i < n; ++i)
        {
            values[i] = d.d[i];
        }
    }
}

std::string major_soname(char const* stem, int major)
{
    return std::string(stem) + ".so." + std::to_string(major);
}

#if NV_TENSORRT_MAJOR < 11
// TensorRT 10's implicit INT8 calibration; each batch comes from Rust.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
class Calibrator : public nvinfer1::IInt8EntropyCalibrator2
{
public:
    Calibrator(std::string input, lc_trt_calib_fn next, void* user)
        : mInput(std::move(input))
        , mNext(next)
        , mUser(user)
    {
    }

    // Explicit-batch networks take the batch from the calibration profile.
    int32_t getBatchSize() const noexcept override
    {
        return 1;
    }

    bool getBatch(void* bindings[], char const* names[], int32_t nbBindings) noexcept override
    {
        void* ptr = nullptr;
        int32_t r = mNext(mUser, &ptr);
        if (r < 0)
        {
            failed = true;
        }
        if (r != 1 || ptr == nullptr)
        {
            return false;
        }
        bool found = false;
        for (int32_t i = 0; i < nbBindings; ++i)
        {
            if (names[i] != nullptr && mInput == names[i])
            {
                bindings[i] = ptr;
                found = true;
            }
        }
        return found;
    }

    void const* readCalibrationCache(std::size_t& length) noexcept override
    {
        length = 0;
        return nullptr;
    }

    void writeCalibrationCache(void const*, std::size_t) noexcept override {}

    bool failed{false};

private:
    std::string mInput;
    lc_trt_calib_fn mNext;
    void* mUser;
};
#pragma GCC diagnostic pop
#endif

} // namespace

struct lc_trt_lib
{
    void* nvinfer{nullptr};
    void* parser{nullptr};
    std::string nvinfer_path;
    std::string parser_path;
    CreateFn create_runtime{nullptr};
    CreateFn create_builder{nullptr};
    CreateParserFn create_parser{nullptr};
    int32_t version{0};
    Logger logger;

    ~lc_trt_lib()
    {
        if (parser != nullptr)
        {
            dlclose(parser);
        }
        if (nvinfer != nullptr)
        {
            dlclose(nvinfer);
        }
    }
};

struct lc_trt_blob
{
    nvinfer1::IHostMemory* mem{nullptr};

    ~lc_trt_blob()
    {
        delete mem;
    }
};

struct lc_trt_builder
{
    lc_trt_lib* lib{nullptr};
    nvinfer1::IBuilder* builder{nullptr};
    nvinfer1::INetworkDefinition* network{nullptr};
    nvonnxparser::IParser* parser{nullptr};
    nvinfer1::IBuilderConfig* config{nullptr};
#if NV_TENSORRT_MAJOR < 11
    Calibrator* calibrator{nullptr};
#endif

    ~lc_trt_builder()
    {
        delete parser;
        delete config;
        delete network;
        delete builder;
#if NV_TENSORRT_MAJOR < 11
        delete calibrator;
#endif
    }
};

struct lc_trt_engine
{
    lc_trt_lib* lib{nullptr};
    nvinfer1::IRuntime* runtime{nullptr};
    nvinfer1::ICudaEngine* engine{nullptr};

    ~lc_trt_engine()
    {
        delete engine;
        delete runtime;
    }
};

struct lc_trt_context
{
    lc_trt_engine* engine{nullptr};
    nvinfer1::IExecutionContext* context{nullptr};
    int32_t profile{0};

    ~lc_trt_context()
    {
        delete context;
    }
};

extern "C" {

// NV_TENSORRT_VERSION of the headers the shim was compiled against
// (major * 10000 + minor * 100 + patch).
int32_t lc_trt_header_version(void)
{
    return static_cast<int32_t>(NV_TENSORRT_VERSION);
}

// Whether these headers still have implicit INT8 calibration and the FP16
// builder flag (both removed in TensorRT 11, where networks are always
// strongly typed).
int32_t lc_trt_calibration_supported(void)
{
    return NV_TENSORRT_MAJOR < 11 ? 1 : 0;
}

// Loads libnvinfer (`nvinfer`, else libnvinfer.so.<header major>, then
// libnvinfer.so, then other majors so that a mismatch is named) and checks
// that its major version matches the headers'.
lc_trt_lib* lc_trt_open(char const* nvinfer, lc_trt_log_fn log, void* user, char* err, size_t len)
{
    return guard<lc_trt_lib*>(err, len, nullptr, [&]() -> lc_trt_lib* {
        std::vector<std::string> names;
        if (nvinfer != nullptr && nvinfer[0] != '\0')
        {
            names.emplace_back(nvinfer);
        }
        else
        {
            names.push_back(major_soname("libnvinfer", NV_TENSORRT_MAJOR));
            names.emplace_back("libnvinfer.so");
            for (int m : {11, 10})
            {
                if (m != NV_TENSORRT_MAJOR)
                {
                    names.push_back(major_soname("libnvinfer", m));
                }
            }
        }
        void* handle = nullptr;
        std::string first_error;
        std::string tried;
        std::string found;
        for (auto const& n : names)
        {
            dlerror();
            handle = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (handle != nullptr)
            {
                found = n;
                break;
            }
            if (first_error.empty())
            {
                first_error = dl_error();
            }
            tried += (tried.empty() ? "" : ", ") + n;
        }
        if (handle == nullptr)
        {
            set_err(err, len,
                "library not found: " + first_error + " (tried " + tried + "); install TensorRT "
                    + std::to_string(NV_TENSORRT_MAJOR) + " and put its lib folder on LD_LIBRARY_PATH");
            return nullptr;
        }
        std::unique_ptr<lc_trt_lib> lib(new lc_trt_lib());
        lib->nvinfer = handle;
        lib->nvinfer_path = found;
        auto sym = [&](char const* name) -> void* {
            dlerror();
            void* p = dlsym(handle, name);
            if (p == nullptr)
            {
                set_err(err, len, found + ": symbol " + name + " missing: " + dl_error());
            }
            return p;
        };
        auto version = reinterpret_cast<VersionFn>(sym("getInferLibVersion"));
        if (version == nullptr)
        {
            return nullptr;
        }
        lib->version = version();
        if (lib->version / 10000 != NV_TENSORRT_MAJOR)
        {
            set_err(err, len,
                found + " is TensorRT " + version_string(lib->version) + " but livecensor's TensorRT shim was built "
                    + "against TensorRT " + version_string(NV_TENSORRT_VERSION) + " headers: rebuild with "
                    + "TENSORRT_INCLUDE_DIR set to the installed TensorRT's include folder");
            return nullptr;
        }
        lib->create_runtime = reinterpret_cast<CreateFn>(sym("createInferRuntime_INTERNAL"));
        lib->create_builder = reinterpret_cast<CreateFn>(sym("createInferBuilder_INTERNAL"));
        if (lib->create_runtime == nullptr || lib->create_builder == nullptr)
        {
            return nullptr;
        }
        lib->logger.callback = log;
        lib->logger.user = user;
        return lib.release();
    });
}

// TensorRT version of the loaded library (same encoding as the headers').
int32_t lc_trt_lib_version(lc_trt_lib const* lib)
{
    return lib != nullptr ? lib->version : 0;
}

// The name the library was loaded by.
char const* lc_trt_lib_path(lc_trt_lib const* lib)
{
    return lib != nullptr ? lib->nvinfer_path.c_str() : "";
}

// Unloads the libraries; every engine, context and builder made from `lib`
// must be freed first.
void lc_trt_close(lc_trt_lib* lib)
{
    try
    {
        delete lib;
    }
    catch (...)
    {
    }
}

// Parses an ONNX file into a new network (loads libnvonnxparser on first use).
lc_trt_builder* lc_trt_builder_new(lc_trt_lib* lib, char const* onnx, char* err, size_t len)
{
    return guard<lc_trt_builder*>(err, len, nullptr, [&]() -> lc_trt_builder* {
        if (lib == nullptr || onnx == nullptr)
        {
            set_err(err, len, "null argument");
            return nullptr;
        }
        if (lib->parser == nullptr)
        {
            std::string names[2] = {major_soname("libnvonnxparser", NV_TENSORRT_MAJOR), "libnvonnxparser.so"};
            std::string first_error;
            for (auto const& n : names)
            {
                dlerror();
                lib->parser = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
                if (lib->parser != nullptr)
                {
                    lib->parser_path = n;
                    break;
                }
                if (first_error.empty())
                {
                    first_error = dl_error();
                }
            }
            if (lib->parser == nullptr)
            {
                set_err(err, len,
                    "ONNX parser library not found: " + first_error + " (tried " + names[0] + ", " + names[1] + ")");
                return nullptr;
            }
            dlerror();
            lib->create_parser
                = reinterpret_cast<CreateParserFn>(dlsym(lib->parser, "createNvOnnxParser_INTERNAL"));
            if (lib->create_parser == nullptr)
            {
                set_err(err, len, lib->parser_path + ": symbol createNvOnnxParser_INTERNAL missing: " + dl_error());
                return nullptr;
            }
        }
        std::unique_ptr<lc_trt_builder> b(new lc_trt_builder());
        b->lib = lib;
        b->builder = static_cast<nvinfer1::IBuilder*>(lib->create_builder(&lib->logger, NV_TENSORRT_VERSION));
        if (b->builder == nullptr)
        {
            set_err(err, len, with_log(lib->logger, "createInferBuilder failed"));
            return nullptr;
        }
        b->network = b->builder->createNetworkV2(0);
        b->config = b->builder->createBuilderConfig();
        if (b->network == nullptr || b->config == nullptr)
        {
            set_err(err, len, with_log(lib->logger, "creating the network definition failed"));
            return nullptr;
        }
        b->parser = static_cast<nvonnxparser::IParser*>(
            lib->create_parser(b->network, &lib->logger, NV_ONNX_PARSER_VERSION));
        if (b->parser == nullptr)
        {
            set_err(err, len, with_log(lib->logger, "createNvOnnxParser failed"));
            return nullptr;
        }
        if (!b->parser->parseFromFile(onnx, static_cast<int>(ILogger::Severity::kWARNING)))
        {
            std::string msg = std::string("parsing ") + onnx + " failed";
            for (int32_t i = 0; i < b->parser->getNbErrors(); ++i)
            {
                msg += i == 0 ? ": " : "; ";
                msg += b->parser->getError(i)->desc();
            }
            set_err(err, len, with_log(lib->logger, msg));
            return nullptr;
        }
        return b.release();
    });
}

int32_t lc_trt_builder_nb_inputs(lc_trt_builder const* b)
{
    return b != nullptr ? b->network->getNbInputs() : 0;
}

int32_t lc_trt_builder_nb_outputs(lc_trt_builder const* b)
{
    return b != nullptr ? b->network->getNbOutputs() : 0;
}

// Name (owned by the builder), dims (up to 8, -1 for a dynamic axis) and
// DataType of network input `i`; output `i` when `output` is nonzero.
int32_t lc_trt_builder_tensor(
    lc_trt_builder const* b, int32_t output, int32_t i, char const** name, int64_t* dims, int32_t* nb, int32_t* dtype)
{
    try
    {
        if (b == nullptr)
        {
            return -1;
        }
        nvinfer1::ITensor* t = output != 0 ? b->network->getOutput(i) : b->network->getInput(i);
        if (t == nullptr)
        {
            return -1;
        }
        if (name != nullptr)
        {
            *name = t->getName();
        }
        from_dims(t->getDimensions(), dims, nb);
        if (dtype != nullptr)
        {
            *dtype = static_cast<int32_t>(t->getType());
        }
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

// Adds one optimisation profile for `input`; returns its index or -1.
int32_t lc_trt_builder_add_profile(lc_trt_builder* b, char const* input, int32_t nb, int64_t const* min,
    int64_t const* opt, int64_t const* max, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        Dims dmin{}, dopt{}, dmax{};
        if (b == nullptr || input == nullptr || !to_dims(nb, min, dmin) || !to_dims(nb, opt, dopt)
            || !to_dims(nb, max, dmax))
        {
            set_err(err, len, "bad profile arguments");
            return -1;
        }
        nvinfer1::IOptimizationProfile* p = b->builder->createOptimizationProfile();
        using nvinfer1::OptProfileSelector;
        if (p == nullptr || !p->setDimensions(input, OptProfileSelector::kMIN, dmin)
            || !p->setDimensions(input, OptProfileSelector::kOPT, dopt)
            || !p->setDimensions(input, OptProfileSelector::kMAX, dmax))
        {
            set_err(err, len, with_log(b->lib->logger, std::string("setting the profile of ") + input + " failed"));
            return -1;
        }
        int32_t index = b->config->addOptimizationProfile(p);
        if (index < 0)
        {
            set_err(err, len, with_log(b->lib->logger, "addOptimizationProfile failed"));
        }
        return index;
    });
}

// Workspace limit (0: TensorRT's default) and the FP16 builder flag, which
// only exists before TensorRT 11.
int32_t lc_trt_builder_configure(lc_trt_builder* b, int32_t fp16, uint64_t workspace, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        if (b == nullptr)
        {
            set_err(err, len, "null builder");
            return -1;
        }
        if (workspace > 0)
        {
            b->config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(workspace));
        }
        if (fp16 != 0)
        {
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
            b->config->setFlag(nvinfer1::BuilderFlag::kFP16);
#pragma GCC diagnostic pop
#else
            set_err(err, len,
                "TensorRT " + std::to_string(NV_TENSORRT_MAJOR)
                    + " builds strongly typed networks and has no FP16 flag: convert the ONNX model to fp16 "
                      "and build it without --fp16");
            return -1;
#endif
        }
        return 0;
    });
}

// INT8 with implicit calibration: batches of `dims` (the calibration
// profile) come from `next`. TensorRT 11 removed it: an error there.
int32_t lc_trt_builder_set_calibrator(lc_trt_builder* b, char const* input, int32_t nb, int64_t const* dims,
    lc_trt_calib_fn next, void* user, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        if (b == nullptr || input == nullptr || next == nullptr)
        {
            set_err(err, len, "null argument");
            return -1;
        }
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        Dims d{};
        if (!to_dims(nb, dims, d))
        {
            set_err(err, len, "bad calibration dims");
            return -1;
        }
        nvinfer1::IOptimizationProfile* p = b->builder->createOptimizationProfile();
        using nvinfer1::OptProfileSelector;
        if (p == nullptr || !p->setDimensions(input, OptProfileSelector::kMIN, d)
            || !p->setDimensions(input, OptProfileSelector::kOPT, d)
            || !p->setDimensions(input, OptProfileSelector::kMAX, d) || !b->config->setCalibrationProfile(p))
        {
            set_err(err, len, with_log(b->lib->logger, "setting the calibration profile failed"));
            return -1;
        }
        delete b->calibrator;
        b->calibrator = new Calibrator(input, next, user);
        b->config->setFlag(nvinfer1::BuilderFlag::kINT8);
        b->config->setInt8Calibrator(b->calibrator);
        return 0;
#pragma GCC diagnostic pop
#else
        (void) nb;
        (void) dims;
        (void) user;
        set_err(err, len,
            "TensorRT " + std::to_string(NV_TENSORRT_MAJOR)
                + " removed implicit INT8 calibration: quantize the ONNX model (explicit Q/DQ nodes, e.g. with "
                  "NVIDIA ModelOpt) and build it without --int8");
        return -1;
#endif
    });
}

// Builds and serialises the plan.
lc_trt_blob* lc_trt_builder_build(lc_trt_builder* b, char* err, size_t len)
{
    return guard<lc_trt_blob*>(err, len, nullptr, [&]() -> lc_trt_blob* {
        if (b == nullptr)
        {
            set_err(err, len, "null builder");
            return nullptr;
        }
        nvinfer1::IHostMemory* mem = b->builder->buildSerializedNetwork(*b->network, *b->config);
#if NV_TENSORRT_MAJOR < 11
        if (b->calibrator != nullptr && b->calibrator->failed)
        {
            delete mem;
            set_err(err, len, "INT8 calibration failed while reading a batch");
            return nullptr;
        }
#endif
        if (mem == nullptr || mem->size() == 0)
        {
            delete mem;
            set_err(err, len, with_log(b->lib->logger, "building the engine failed"));
            return nullptr;
        }
        lc_trt_blob* blob = new lc_trt_blob();
        blob->mem = mem;
        return blob;
    });
}

void lc_trt_builder_free(lc_trt_builder* b)
{
    try
    {
        delete b;
    }
    catch (...)
    {
    }
}

void const* lc_trt_blob_data(lc_trt_blob const* blob)
{
    return blob != nullptr ? blob->mem->data() : nullptr;
}

size_t lc_trt_blob_size(lc_trt_blob const* blob)
{
    return blob != nullptr ? blob->mem->size() : 0;
}

void lc_trt_blob_free(lc_trt_blob* blob)
{
    try
    {
        delete blob;
    }
    catch (...)
    {
    }
}

// Deserialises a plan (needs the CUDA context current on this thread).
lc_trt_engine* lc_trt_engine_new(lc_trt_lib* lib, void const* plan, size_t size, char* err, size_t len)
{
    return guard<lc_trt_engine*>(err, len, nullptr, [&]() -> lc_trt_engine* {
        if (lib == nullptr || plan == nullptr || size == 0)
        {
            set_err(err, len, "empty plan");
            return nullptr;
        }
        std::unique_ptr<lc_trt_engine> e(new lc_trt_engine());
        e->lib = lib;
        e->runtime = static_cast<nvinfer1::IRuntime*>(lib->create_runtime(&lib->logger, NV_TENSORRT_VERSION));
        if (e->runtime == nullptr)
        {
            set_err(err, len, with_log(lib->logger, "createInferRuntime failed"));
            return nullptr;
        }
        e->engine = e->runtime->deserializeCudaEngine(plan, size);
        if (e->engine == nullptr)
        {
            set_err(err, len, with_log(lib->logger, "deserializing the plan failed"));
            return nullptr;
        }
        return e.release();
    });
}

int32_t lc_trt_engine_nb_io(lc_trt_engine const* e)
{
    return e != nullptr ? e->engine->getNbIOTensors() : 0;
}

// Name (owned by the engine), direction, DataType and dims of I/O tensor `i`.
int32_t lc_trt_engine_io(
    lc_trt_engine const* e, int32_t i, char const** name, int32_t* is_input, int32_t* dtype, int64_t* dims, int32_t* nb)
{
    try
    {
        if (e == nullptr)
        {
            return -1;
        }
        char const* n = e->engine->getIOTensorName(i);
        if (n == nullptr)
        {
            return -1;
        }
        if (name != nullptr)
        {
            *name = n;
        }
        if (is_input != nullptr)
        {
            *is_input = e->engine->getTensorIOMode(n) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
        }
        if (dtype != nullptr)
        {
            *dtype = static_cast<int32_t>(e->engine->getTensorDataType(n));
        }
        from_dims(e->engine->getTensorShape(n), dims, nb);
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

int32_t lc_trt_engine_nb_profiles(lc_trt_engine const* e)
{
    return e != nullptr ? e->engine->getNbOptimizationProfiles() : 0;
}

// kMIN / kOPT / kMAX dims of `input` in `profile`.
int32_t lc_trt_engine_profile_shape(
    lc_trt_engine const* e, char const* input, int32_t profile, int64_t* min, int64_t* opt, int64_t* max, int32_t* nb)
{
    try
    {
        if (e == nullptr || input == nullptr)
        {
            return -1;
        }
        using nvinfer1::OptProfileSelector;
        int32_t n0 = -1, n1 = -1, n2 = -1;
        from_dims(e->engine->getProfileShape(input, profile, OptProfileSelector::kMIN), min, &n0);
        from_dims(e->engine->getProfileShape(input, profile, OptProfileSelector::kOPT), opt, &n1);
        from_dims(e->engine->getProfileShape(input, profile, OptProfileSelector::kMAX), max, &n2);
        if (nb != nullptr)
        {
            *nb = n0;
        }
        return n0 < 0 || n0 != n1 || n0 != n2 ? -1 : 0;
    }
    catch (...)
    {
        return -1;
    }
}

// Frees the engine (and its runtime); its contexts must be freed first.
void lc_trt_engine_free(lc_trt_engine* e)
{
    try
    {
        delete e;
    }
    catch (...)
    {
    }
}

// An execution context bound to optimisation profile `profile`, selected on
// `stream` (a cudaStream_t / CUstream).
lc_trt_context* lc_trt_context_new(lc_trt_engine* e, int32_t profile, void* stream, char* err, size_t len)
{
    return guard<lc_trt_context*>(err, len, nullptr, [&]() -> lc_trt_context* {
        if (e == nullptr)
        {
            set_err(err, len, "null engine");
            return nullptr;
        }
        std::unique_ptr<lc_trt_context> c(new lc_trt_context());
        c->engine = e;
        c->profile = profile;
        c->context = e->engine->createExecutionContext();
        if (c->context == nullptr)
        {
            set_err(err, len, with_log(e->lib->logger, "createExecutionContext failed"));
            return nullptr;
        }
        if (!c->context->setOptimizationProfileAsync(profile, static_cast<cudaStream_t>(stream)))
        {
            set_err(err, len,
                with_log(e->lib->logger, "selecting optimisation profile " + std::to_string(profile) + " failed"));
            return nullptr;
        }
        return c.release();
    });
}

int32_t lc_trt_context_set_input_shape(
    lc_trt_context* c, char const* name, int32_t nb, int64_t const* dims, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        Dims d{};
        if (c == nullptr || name == nullptr || !to_dims(nb, dims, d))
        {
            set_err(err, len, "bad input shape arguments");
            return -1;
        }
        if (!c->context->setInputShape(name, d))
        {
            set_err(err, len, with_log(c->engine->lib->logger, std::string("setInputShape(") + name + ") failed"));
            return -1;
        }
        return 0;
    });
}

// Shape of a tensor once the input shapes are set (-1 axes unresolved).
int32_t lc_trt_context_tensor_shape(lc_trt_context const* c, char const* name, int64_t* dims, int32_t* nb)
{
    try
    {
        if (c == nullptr || name == nullptr)
        {
            return -1;
        }
        from_dims(c->context->getTensorShape(name), dims, nb);
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

int32_t lc_trt_context_set_address(lc_trt_context* c, char const* name, void* ptr, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        if (c == nullptr || name == nullptr)
        {
            set_err(err, len, "null argument");
            return -1;
        }
        if (!c->context->setTensorAddress(name, ptr))
        {
            set_err(
                err, len, with_log(c->engine->lib->logger, std::string("setTensorAddress(") + name + ") failed"));
            return -1;
        }
        return 0;
    });
}

// Queues inference on `stream`; the caller synchronises.
int32_t lc_trt_context_enqueue(lc_trt_context* c, void* stream, char* err, size_t len)
{
    return guard<int32_t>(err, len, -1, [&]() -> int32_t {
        if (c == nullptr)
        {
            set_err(err, len, "null context");
            return -1;
        }
        if (!c->context->allInputDimensionsSpecified())
        {
            set_err(err, len, "enqueue before every input shape was set");
            return -1;
        }
        if (!c->context->enqueueV3(static_cast<cudaStream_t>(stream)))
        {
            set_err(err, len, with_log(c->engine->lib->logger, "enqueueV3 failed"));
            return -1;
        }
        return 0;
    });
}

void lc_trt_context_free(lc_trt_context* c)
{
    try
    {
        delete c;
    }
    catch (...)
    {
    }
}

} // extern "C"
