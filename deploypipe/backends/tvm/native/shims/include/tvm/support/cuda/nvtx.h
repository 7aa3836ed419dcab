// deploypipe shim for TVM's NVTX ranges (CUDA profiler markers): a CPU-only device runner has no
// NVTX, as in TVM builds without CUDA, where the range is a no-op.
#ifndef DEPLOYPIPE_SHIM_SUPPORT_CUDA_NVTX_H_
#define DEPLOYPIPE_SHIM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const std::string&) {}
  explicit NVTXScopedRange(const char*) {}
};

}  // namespace support
}  // namespace tvm

#endif  // DEPLOYPIPE_SHIM_SUPPORT_CUDA_NVTX_H_
