// deploypipe shim for src/support/base64.h (not shipped in the apache-tvm wheel). TVM uses base64
// streams only to put tensors into JSON (reflection's __data_to_json__), which the device runner
// never does: these streams refuse loudly instead of carrying an unused codec.
#ifndef DEPLOYPIPE_SHIM_SUPPORT_BASE64_H_
#define DEPLOYPIPE_SHIM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cstddef>

namespace tvm {
namespace support {

class Base64Unsupported : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit Base64Unsupported(Stream*) {}
  size_t Read(void*, size_t) override { Refuse(); return 0; }
  size_t Write(const void*, size_t) override { Refuse(); return 0; }

 private:
  [[noreturn]] static void Refuse() {
    TVM_FFI_THROW(RuntimeError) << "tensor JSON (base64) serialization is not built into deploypipe-run";
  }
};

class Base64InStream : public Base64Unsupported {
 public:
  using Base64Unsupported::Base64Unsupported;
  void InitPosition() {}
};

class Base64OutStream : public Base64Unsupported {
 public:
  using Base64Unsupported::Base64Unsupported;
  void Finish() {}
};

}  // namespace support
}  // namespace tvm

#endif  // DEPLOYPIPE_SHIM_SUPPORT_BASE64_H_
