// Element types a vector can be stored in, and the scalar codecs between them and float32.
// The codecs round to nearest even like IEEE casts (and ml_dtypes). Overflow: f16, bf16 and
// f8e5m2 become +-inf as IEEE does; f8e4m3 has no infinity and saturates to +-448 (OCP FP8).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace quanta {

enum class Storage : uint8_t { f32 = 0, f16 = 1, bf16 = 2, f8e4m3 = 3, f8e5m2 = 4, i8 = 5 };
constexpr int kNumStorages = 6;

// Calls fn(std::integral_constant<Storage, S>{}) for the runtime value s: one switch, so
// kernels can be templates on the storage. (Each lambda type is local to its translation
// unit, so ISA-specific instantiations never merge across files.)
template <class Fn>
decltype(auto) with_storage(Storage s, Fn&& fn) {
  switch (s) {
    case Storage::f16: return fn(std::integral_constant<Storage, Storage::f16>{});
    case Storage::bf16: return fn(std::integral_constant<Storage, Storage::bf16>{});
    case Storage::f8e4m3: return fn(std::integral_constant<Storage, Storage::f8e4m3>{});
    case Storage::f8e5m2: return fn(std::integral_constant<Storage, Storage::f8e5m2>{});
    case Storage::i8: return fn(std::integral_constant<Storage, Storage::i8>{});
    default: return fn(std::integral_constant<Storage, Storage::f32>{});
  }
}

size_t storage_bytes(Storage s);            // bytes per element
const char* storage_name(Storage s);
Storage storage_from_name(const std::string& name);  // throws std::invalid_argument
float storage_max(Storage s);               // largest finite value (127 for i8)

uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t h);
uint8_t f32_to_e4m3(float x);
uint8_t f32_to_e5m2(float x);
float e4m3_to_f32(uint8_t b);
float e5m2_to_f32(uint8_t b);

// Plain casts of n floats to / from `s` (i8: round to nearest even and clamp to [-127, 127],
// no scale). `out` holds n * storage_bytes(s) bytes.
void encode_array(Storage s, const float* x, size_t n, uint8_t* out);
void decode_array(Storage s, const uint8_t* codes, size_t n, float* out);

// Anisotropic rounding of one float8 vector (ScaNN's loss on a scalar grid): starting from
// the round-to-nearest `codes` of `x`, moves single elements to their other neighbouring code
// while that lowers  eta * <e, x>^2 / |x|^2 + |e|^2,  e = decoded - x. Error along x shifts
// every inner product with x's near neighbours, so it costs eta times more than error across
// it. Each element stays within one ulp of x; at most 16 sweeps over the elements, so the cost
// is linear in n.
void round_f8_anisotropic(Storage s, const float* x, size_t n, float eta, uint8_t* codes);

}  // namespace quanta
