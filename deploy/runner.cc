// patvm runner: run a patvm-exported module (a TVM Relax VM executable in a shared library) on .npy inputs.
//
//   runner MODULE.so INPUT.npy [INPUT.npy ...] -o OUTPUT.npy [--repeat N]
//
// Loads MODULE.so with the TVM runtime (libtvm_runtime.so + libtvm_ffi.so), creates the Relax VM on the
// CPU, reads the inputs (C-order .npy, in the model's input order; float32 for patvm models), expands the
// weights a module stores as codes (once: "main_transform_params" of "patvm_weight_codes"), runs "main"
// and writes output 0 to OUTPUT.npy, output i > 0 (if "main" returns a tuple) to OUTPUT.<i>.npy.
// With --repeat N it then runs "main" N more times and prints the mean and best wall time (meaningless
// under qemu; on a board set TVM_NUM_THREADS to the number of big cores first).
//
// It needs only the tvm-ffi C++ headers (the apache-tvm wheel's tvm/runtime headers do not compile on
// their own). Build (see the Makefile that `patvm deploy` writes):
//   g++ -std=c++17 -O2 -Iinclude runner.cc -o runner -Llib -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi
//       -Wl,-rpath,'$ORIGIN/lib' -ldl -lpthread
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <limits.h>
#include <stdlib.h>

namespace {

using tvm::ffi::Any;
using tvm::ffi::Function;
using tvm::ffi::Module;
using tvm::ffi::Tensor;

// ---- CPU tensors --------------------------------------------------------------------------------------
struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = (tvm::ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
    if (t->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

Tensor Empty(const std::vector<int64_t>& shape, DLDataType dtype) {
  return Tensor::FromNDAlloc(CPUAlloc(), tvm::ffi::Shape(shape), dtype, DLDevice{kDLCPU, 0});
}

// ---- .npy (format version 1.0 / 2.0 / 3.0, little endian, C order) -----------------------------------
struct NpyType {
  const char* descr;
  DLDataType dtype;
};

const NpyType kNpyTypes[] = {
    {"<f4", {kDLFloat, 32, 1}}, {"<f8", {kDLFloat, 64, 1}}, {"<f2", {kDLFloat, 16, 1}},
    {"|i1", {kDLInt, 8, 1}},    {"<i2", {kDLInt, 16, 1}},   {"<i4", {kDLInt, 32, 1}},
    {"<i8", {kDLInt, 64, 1}},   {"|u1", {kDLUInt, 8, 1}},   {"<u2", {kDLUInt, 16, 1}},
    {"<u4", {kDLUInt, 32, 1}},  {"<u8", {kDLUInt, 64, 1}},  {"|b1", {kDLBool, 8, 1}},
};

std::string Descr(DLDataType dtype) {
  for (const auto& t : kNpyTypes) {
    if (t.dtype.code == dtype.code && t.dtype.bits == dtype.bits && t.dtype.lanes == dtype.lanes) return t.descr;
  }
  throw std::runtime_error("the model returned a tensor of a dtype .npy cannot hold here (code " +
                           std::to_string(dtype.code) + ", " + std::to_string(dtype.bits) + " bits)");
}

// The value of `key` in the header dict, as the raw text up to the next top-level ',' or '}'.
std::string HeaderField(const std::string& header, const std::string& key, const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error(path + ": .npy header has no '" + key + "'");
  at = header.find(':', at);
  if (at == std::string::npos) throw std::runtime_error(path + ": malformed .npy header");
  size_t end = at + 1;
  int depth = 0;
  for (; end < header.size(); ++end) {
    char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  std::string value = header.substr(at + 1, end - at - 1);
  value.erase(0, value.find_first_not_of(" \t"));
  value.erase(value.find_last_not_of(" \t") + 1);
  return value;
}

Tensor ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw std::runtime_error(path + " is not a .npy file");
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) throw std::runtime_error(path + ": truncated .npy header");
    header_len = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) throw std::runtime_error(path + ": truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  } else {
    throw std::runtime_error(path + ": unknown .npy version " + std::to_string(int(magic[6])));
  }
  if (header_len > (1u << 20)) throw std::runtime_error(path + ": .npy header too long");
  std::string header(header_len, '\0');
  if (!f.read(&header[0], header_len)) throw std::runtime_error(path + ": truncated .npy header");

  std::string descr = HeaderField(header, "descr", path);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"')) {
    throw std::runtime_error(path + ": unsupported dtype " + descr);
  }
  descr = descr.substr(1, descr.size() - 2);
  if (descr.size() == 3 && descr[0] == '=') descr[0] = '<';  // native order: this runner is little endian
  const NpyType* type = nullptr;
  for (const auto& t : kNpyTypes) {
    if (descr == t.descr) type = &t;
  }
  if (type == nullptr) throw std::runtime_error(path + ": unsupported dtype '" + descr + "' (little endian only)");
  if (HeaderField(header, "fortran_order", path) != "False") {
    throw std::runtime_error(path + ": Fortran-order arrays are not supported (save np.ascontiguousarray(x))");
  }
  std::string shape_text = HeaderField(header, "shape", path);
  if (shape_text.size() < 2 || shape_text.front() != '(' || shape_text.back() != ')') {
    throw std::runtime_error(path + ": malformed shape " + shape_text);
  }
  std::vector<int64_t> shape;
  std::stringstream dims(shape_text.substr(1, shape_text.size() - 2));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    dim.erase(0, dim.find_first_not_of(" \t"));
    dim.erase(dim.find_last_not_of(" \t") + 1);
    if (dim.empty()) continue;  // the trailing comma of a 1-tuple
    char* end = nullptr;
    long long v = std::strtoll(dim.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > (1LL << 40)) throw std::runtime_error(path + ": bad dimension '" + dim + "'");
    shape.push_back(v);
  }
  Tensor t = Empty(shape, type->dtype);
  size_t bytes = tvm::ffi::GetDataSize(t);
  if (bytes > 0 && !f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes))) {
    throw std::runtime_error(path + ": file shorter than its header says");
  }
  return t;
}

void WriteNpy(const std::string& path, const Tensor& t) {
  if (t.device().device_type != kDLCPU) throw std::runtime_error("output is not on the CPU");
  if (!t.IsContiguous()) throw std::runtime_error("output is not contiguous");
  std::string shape = "(";
  for (int i = 0; i < t.ndim(); ++i) shape += std::to_string(t.size(i)) + (t.ndim() == 1 ? ",)" : i + 1 < t.ndim() ? ", " : ")");
  if (t.ndim() == 0) shape += ")";
  std::string header = "{'descr': '" + Descr(t.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot write " + path);
  const char preamble[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(preamble, 8);
  f.write(len_bytes, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  const char* data = static_cast<const char*>(t.data_ptr()) + t.byte_offset();
  f.write(data, static_cast<std::streamsize>(tvm::ffi::GetDataSize(t)));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string ShapeText(const Tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

std::string OutputPath(const std::string& first, size_t i) {
  if (i == 0) return first;
  std::string stem = first;
  if (stem.size() > 4 && stem.compare(stem.size() - 4, 4, ".npy") == 0) stem.resize(stem.size() - 4);
  return stem + "." + std::to_string(i) + ".npy";
}

// "main" returns one tensor or a (possibly nested) tuple of tensors.
void Flatten(const Any& value, std::vector<Tensor>* out) {
  if (auto t = value.try_cast<Tensor>()) {
    out->push_back(*t);
  } else if (auto a = value.try_cast<tvm::ffi::Array<Any>>()) {
    for (const Any& v : *a) Flatten(v, out);
  } else {
    throw std::runtime_error("main returned a " + value.GetTypeKey() + ", not tensors");
  }
}

int Usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s MODULE.so INPUT.npy [INPUT.npy ...] -o OUTPUT.npy [--repeat N]\n", argv0);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string module_path, output_path;
  std::vector<std::string> inputs;
  long repeat = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "-o" || arg == "--output") && i + 1 < argc) {
      output_path = argv[++i];
    } else if (arg == "--repeat" && i + 1 < argc) {
      char* end = nullptr;
      repeat = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || repeat < 0) return Usage(argv[0]);
    } else if (arg == "-h" || arg == "--help") {
      return Usage(argv[0]);
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "unknown option %s\n", arg.c_str());
      return Usage(argv[0]);
    } else if (module_path.empty()) {
      module_path = arg;
    } else {
      inputs.push_back(arg);
    }
  }
  if (module_path.empty() || inputs.empty() || output_path.empty()) return Usage(argv[0]);

  try {
    // dlopen needs a path with a slash, or it searches the library path instead of the file named
    char resolved[PATH_MAX];
    if (realpath(module_path.c_str(), resolved) == nullptr) throw std::runtime_error("no such module: " + module_path);
    Module lib = Module::LoadFromFile(resolved);
    auto load = lib->GetFunction("vm_load_executable");
    if (!load.has_value()) throw std::runtime_error(module_path + " is not a Relax VM executable (patvm export)");
    Module vm = (*load)().cast<Module>();
    // (device type, device id, allocator: 2 = pooled, as tvm.relax.VirtualMachine does by default)
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
    Function main_fn = vm->GetFunction("main").value();

    std::vector<Any> args;
    for (const std::string& path : inputs) args.emplace_back(ReadNpy(path));
    // weights stored as codes: expanded once, here, and passed to "main" after the inputs
    if (auto codes = vm->GetFunction("patvm_weight_codes")) {
      Any expanded = vm->GetFunction("main_transform_params").value()((*codes)());
      std::vector<Tensor> weights;
      Flatten(expanded, &weights);
      // "main" takes the inputs, then the weights: count the inputs here, where the user can fix them
      if (auto arity = vm->GetFunction("get_function_arity")) {
        int64_t expected = (*arity)(std::string("main")).cast<int64_t>() - static_cast<int64_t>(weights.size());
        if (expected != static_cast<int64_t>(inputs.size()))
          throw std::runtime_error("main expects " + std::to_string(expected) + " arguments (model inputs), got " +
                                   std::to_string(inputs.size()));
      }
      for (const Tensor& w : weights) args.emplace_back(w);
    }
    std::vector<tvm::ffi::AnyView> views(args.begin(), args.end());
    auto call = [&]() {
      Any result;
      main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
      return result;
    };

    auto start = std::chrono::steady_clock::now();
    Any result = call();
    double first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::vector<Tensor> outputs;
    Flatten(result, &outputs);
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::string path = OutputPath(output_path, i);
      WriteNpy(path, outputs[i]);
      std::printf("output %zu: shape %s -> %s\n", i, ShapeText(outputs[i]).c_str(), path.c_str());
    }
    std::printf("first run: %.3f ms\n", first_ms);
    if (repeat > 0) {
      double total = 0, best = 1e300;
      for (long r = 0; r < repeat; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        call();
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        total += ms;
        best = std::min(best, ms);
      }
      std::printf("%ld runs: mean %.3f ms, best %.3f ms\n", repeat, total / repeat, best);
    }
  } catch (const tvm::ffi::Error& e) {
    std::fprintf(stderr, "runner: error: %s: %s\n", e.kind().c_str(), e.message().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "runner: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
