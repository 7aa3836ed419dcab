// deploypipe-run: the device app for deploypipe's TVM artifacts, with no Python on the device.
//
// It links TVM's C++ runtime (the Relax VM, compiled from the sources that ship in the apache-tvm
// and apache-tvm-ffi wheels, so it matches the compiler that made model.so) and loads a model.so
// the way tvm.runtime.vm.VirtualMachine does: vm_load_executable, vm_initialization on the CPU,
// then "main". Inputs and outputs are raw little-endian files so any board can feed it.
//
//   deploypipe-run MODEL.so --input DTYPE:D0xD1x...:FILE [--input ...] --output-dir DIR
//                  [--warmup W] [--repeat N] [--threads T]
//
// stdout: one JSON object {"outputs": [{"file", "dtype", "shape"}], "load_ms", "first_ms",
// "latency_ms": [...]}. Errors go to stderr with exit status 2 (usage) or 1 (runtime).
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/runtime/tensor.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace ffi = tvm::ffi;
using Clock = std::chrono::steady_clock;

struct InputSpec {
  DLDataType dtype;
  std::vector<int64_t> shape;
  std::string file;
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "deploypipe-run: " << why << "\n"
            << "usage: deploypipe-run MODEL.so --input DTYPE:D0xD1x...:FILE [--input ...] --output-dir DIR "
               "[--warmup W] [--repeat N] [--threads T]\n";
  std::exit(2);
}

InputSpec ParseInput(const std::string& arg) {
  size_t a = arg.find(':');
  size_t b = arg.find(':', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) Usage("bad --input " + arg);
  InputSpec spec;
  spec.dtype = ffi::StringToDLDataType(arg.substr(0, a));
  std::stringstream dims(arg.substr(a + 1, b - a - 1));
  for (std::string d; std::getline(dims, d, 'x');) {
    if (d.empty()) Usage("bad shape in --input " + arg);
    spec.shape.push_back(std::stoll(d));
  }
  spec.file = arg.substr(b + 1);
  return spec;
}

size_t NumBytes(const DLDataType& dtype, const std::vector<int64_t>& shape) {
  size_t n = (dtype.bits * dtype.lanes + 7) / 8;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::vector<char> ReadFile(const std::string& path, size_t expect) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() != expect) {
    throw std::runtime_error(path + " holds " + std::to_string(data.size()) + " bytes, the input needs " +
                             std::to_string(expect));
  }
  return data;
}

// The VM returns one tensor or a (nested) tuple of them; flatten in order.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto tensor = value.as<ffi::Tensor>()) {
    out->push_back(*tensor);
  } else if (auto array = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *array) Flatten(item, out);
  } else {
    throw std::runtime_error("main returned a " + value.GetTypeKey() + ", expected tensors");
  }
}

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int Run(int argc, char** argv) {
  if (argc < 2) Usage("missing MODEL.so");
  std::string model = argv[1];
  std::vector<InputSpec> specs;
  std::string out_dir;
  int warmup = 1, repeat = 1;
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    std::string value = argv[++i];
    if (flag == "--input") {
      specs.push_back(ParseInput(value));
    } else if (flag == "--output-dir") {
      out_dir = value;
    } else if (flag == "--warmup") {
      warmup = std::stoi(value);
    } else if (flag == "--repeat") {
      repeat = std::stoi(value);
    } else if (flag == "--threads") {
      setenv("TVM_NUM_THREADS", value.c_str(), 1);  // read when the thread pool starts
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (out_dir.empty()) Usage("missing --output-dir");
  if (repeat < 1 || warmup < 0) Usage("--repeat must be >= 1 and --warmup >= 0");

  DLDevice cpu{kDLCPU, 0};
  std::vector<tvm::runtime::Tensor> inputs;
  for (const InputSpec& spec : specs) {
    std::vector<char> bytes = ReadFile(spec.file, NumBytes(spec.dtype, spec.shape));
    tvm::runtime::Tensor t = tvm::runtime::Tensor::Empty(ffi::Shape(spec.shape), spec.dtype, cpu);
    t.CopyFromBytes(bytes.data(), bytes.size());
    inputs.push_back(t);
  }

  auto t0 = Clock::now();
  ffi::Module lib = ffi::Module::LoadFromFile(model);
  ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  constexpr int kPooledAllocator = 2;
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Function main_fn = vm->GetFunction("main").value();
  auto t1 = Clock::now();

  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  auto t2 = Clock::now();
  for (int i = 0; i < warmup; ++i) main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  std::vector<double> latency;
  for (int i = 0; i < repeat; ++i) {
    auto a = Clock::now();
    main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    latency.push_back(Ms(a, Clock::now()));
  }

  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);
  std::ostringstream json;
  json << "{\"outputs\": [";
  for (size_t i = 0; i < outputs.size(); ++i) {
    const DLTensor* t = outputs[i].GetDLTensorPtr();
    std::vector<int64_t> shape(t->shape, t->shape + t->ndim);
    std::string name = "output_" + std::to_string(i) + ".bin";
    std::ofstream out(out_dir + "/" + name, std::ios::binary);
    out.write(static_cast<const char*>(t->data) + t->byte_offset,
              static_cast<std::streamsize>(NumBytes(t->dtype, shape)));
    if (!out) throw std::runtime_error("cannot write " + out_dir + "/" + name);
    json << (i ? ", " : "") << "{\"file\": \"" << name << "\", \"dtype\": \""
         << std::string(ffi::DLDataTypeToString(t->dtype)) << "\", \"shape\": [";
    for (size_t d = 0; d < shape.size(); ++d) json << (d ? ", " : "") << shape[d];
    json << "]}";
  }
  json << "], \"load_ms\": " << Ms(t0, t1) << ", \"first_ms\": " << Ms(t1, t2) << ", \"latency_ms\": [";
  for (size_t i = 0; i < latency.size(); ++i) json << (i ? ", " : "") << latency[i];
  json << "]}";
  std::cout << json.str() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& exc) {
    std::cerr << "deploypipe-run: " << exc.what() << std::endl;
    return 1;
  }
}
