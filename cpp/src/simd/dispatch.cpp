#include "quanta/core/error.hpp"
#include "quanta/simd/amx.hpp"
#include "quanta/simd/dispatch.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif


namespace quanta {

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const std::string f = feature;
  // __builtin_cpu_supports needs literal arguments.
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "f16c") return __builtin_cpu_supports("f16c");
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (f == "avx512vnni") return __builtin_cpu_supports("avx512vnni");
  if (f == "avx512vbmi") return __builtin_cpu_supports("avx512vbmi");
  if (f == "avx512vpopcntdq") return __builtin_cpu_supports("avx512vpopcntdq");
  if (f == "avx512fp16") return __builtin_cpu_supports("avx512fp16");
  if (f == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
#elif defined(__aarch64__)
  const std::string f = feature;
  if (f == "asimd") return true;  // Advanced SIMD is part of AArch64
  if (f == "dotprod") {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
#elif defined(__APPLE__)
    int on = 0;
    size_t len = sizeof(on);
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &on, &len, nullptr, 0) == 0 && on;
#else
    return false;
#endif
  }
#endif
  (void)feature;
  return false;
}

namespace {

// This architecture's levels, lowest first.
std::vector<Isa> ladder() {
#if defined(__aarch64__)
  return {Isa::scalar, Isa::neon};
#else
  return {Isa::scalar, Isa::avx2, Isa::avx512};
#endif
}

// Whether this CPU and build run `isa` (a level of another architecture never).
bool is_supported(Isa isa) {
  const std::vector<Isa> ok = supported_isas();
  return std::find(ok.begin(), ok.end(), isa) != ok.end();
}

Isa detect_best() {
  // Never call into an ISA file before the CPU check: its code may use those instructions.
  Isa best = Isa::scalar;
#ifdef QUANTA_HAVE_AVX2
  if (cpu_has("avx2") && cpu_has("fma") && cpu_has("f16c")) best = Isa::avx2;
#endif
#ifdef QUANTA_HAVE_AVX512
  if (best == Isa::avx2 && cpu_has("avx512f") && cpu_has("avx512bw") && cpu_has("avx512vl") &&
      cpu_has("avx512dq"))
    best = Isa::avx512;
#endif
#ifdef QUANTA_HAVE_NEON
  best = Isa::neon;  // every AArch64 CPU has it
#endif
  return best;
}

Isa initial_isa() {
  Isa isa = best_supported_isa();
  if (const char* env = std::getenv("QUANTA_SIMD")) {
    if (*env) {
      Isa wanted;
      try {  // an unknown name is an error, not a silent default
        wanted = isa_from_name(env);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("environment variable QUANTA_SIMD: ") + e.what());
      }
      if (is_supported(wanted)) isa = wanted;  // a higher or foreign level is ignored
    }
  }
  return isa;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{int(initial_isa())};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
  }
  return "?";
}

Isa isa_from_name(const std::string& name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon})
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument(
      "SIMD level must be 'scalar', 'avx2', 'avx512' (x86-64) or 'neon' (AArch64); got '" + name +
      "'");
}

Isa best_supported_isa() {
  static const Isa best = detect_best();
  return best;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : ladder()) {
    out.push_back(isa);
    if (isa == best_supported_isa()) break;
  }
  return out;
}

Isa active_isa() { return Isa(active_slot().load()); }

void set_active_isa(Isa isa) {
  if (!is_supported(isa))
    throw std::invalid_argument(std::string("SIMD level '") + isa_name(isa) +
                                "' is not supported here; the best is '" +
                                isa_name(best_supported_isa()) + "'");
  active_slot().store(int(isa));
}

std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
  for (const char* f : {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                        "avx512vnni", "avx512vbmi", "avx512vpopcntdq", "avx512fp16",
                        "avx512bf16", "asimd", "dotprod"})
    if (cpu_has(f)) out.push_back(f);
  return out;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> out{"scalar"};
#ifdef QUANTA_HAVE_AVX2
  out.push_back("avx2");
#endif
#ifdef QUANTA_HAVE_AVX512
  out.push_back("avx512");
#endif
#ifdef QUANTA_HAVE_NEON
  out.push_back("neon");
#endif
  return out;
}

}  // namespace quanta

#ifndef QUANTA_HAVE_AMX
// Built without the AMX kernels (amx.cpp): never active, so nothing below is reached.
namespace quanta {
bool amx_bf16_active() { return false; }
bool amx_int8_active() { return false; }
std::vector<uint16_t> amx_pack_columns(const float* const*, size_t, size_t) { return {}; }
std::vector<int8_t> amx_pack_columns_i8(const int8_t* const*, size_t, size_t) { return {}; }
AmxScope::AmxScope() {}
AmxScope::~AmxScope() {}
void amx_bf16_products(const uint16_t*, size_t, size_t, const uint16_t*, const uint16_t*, size_t,
                       size_t, size_t, size_t, bool, float*, size_t) {
  throw Error("AMX kernel not built");
}
void amx_bf16_colmax(const uint16_t*, size_t, const uint16_t*, const uint16_t*, size_t, size_t,
                     float*) {
  throw Error("AMX kernel not built");
}
void amx_i8_colmax(const int8_t*, size_t, const int8_t*, const int8_t*, size_t, size_t,
                   int32_t*) {
  throw Error("AMX kernel not built");
}
}  // namespace quanta
#endif
