// deploypipe shim for the one helper TVM's thread pool takes from src/support/utils.h (not shipped
// in the apache-tvm wheel): whether a TVM_BIND_THREADS-style string is a non-negative integer.
#ifndef DEPLOYPIPE_SHIM_SUPPORT_UTILS_H_
#define DEPLOYPIPE_SHIM_SUPPORT_UTILS_H_

#include <algorithm>
#include <cctype>
#include <string>

namespace tvm {
namespace support {

inline bool IsNumber(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace support
}  // namespace tvm

#endif  // DEPLOYPIPE_SHIM_SUPPORT_UTILS_H_
