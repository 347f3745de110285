// Runtime SIMD dispatch: the level is detected once, can be lowered with QUANTA_SIMD or
// set_simd_level, and never raised above what the CPU supports. Each architecture has its own
// ladder of levels: scalar, avx2, avx512 on x86-64; scalar, neon on AArch64.
#pragma once
#include <string>
#include <vector>

namespace quanta {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);    // throws std::invalid_argument
Isa best_supported_isa();                      // what this CPU and build can run
std::vector<Isa> supported_isas();             // this ladder's scalar .. best
Isa active_isa();
void set_active_isa(Isa isa);                  // throws if above best_supported_isa()
std::vector<std::string> cpu_features();       // e.g. "avx512vnni", "f16c", "dotprod"
bool cpu_has(const char* feature);             // one of the names cpu_features() can list
std::vector<std::string> compiled_isas();

}  // namespace quanta
