// SPDX-License-Identifier: MIT
// Tests of io/file.hpp and io/safetensors.hpp: F16/BF16 bit patterns, round trips, the Python byte layout,
// validation of every header field (messages name file and key), truncation and bit-flip fuzzing, atomic writes.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "test_util.hpp"

using namespace prefixtune;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

using test::TempDir;

void write_bytes(const std::string& path, const Bytes& b) {
  fs::remove(path);  // a fresh file: ext4 flushes files that are truncated and rewritten, which is slow
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}

/// A safetensors image built by hand from the documented format: u64 LE header length, header text, data.
Bytes make_file(const std::string& header, const Bytes& data = {}) {
  Bytes b;
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

/// header padded with spaces to a multiple of 8 bytes, as the Python writer does.
std::string padded(std::string header) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return header;
}

template <class S>
Bytes le_bytes(const std::vector<S>& v) {
  Bytes b(v.size() * sizeof(S));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// Opens f and loads every tensor in its natural type (float or int64), optionally checking finiteness.
void open_and_load_all(const SafeTensorsFile& f, bool check_finite) {
  for (const std::string& name : f.names()) {
    const TensorInfo& t = f.info(name);
    if (t.shape.size() > 4) continue;
    if (dtype_is_floating(t.dtype)) {
      (void)f.load<float>(name, check_finite);
    } else {
      (void)f.load<std::int64_t>(name);
    }
    (void)f.raw(name);
  }
  (void)f.metadata();
}

/// The Error message from opening bytes as a file named bad.safetensors in dir and loading every tensor.
std::string open_error(const TempDir& dir, const Bytes& bytes) {
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  return test::error_of([&] { open_and_load_all(SafeTensorsFile::open(path), true); });
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::uint32_t float_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float bits_float(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing") {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32, DType::I64, DType::U8, DType::BOOL})
    CHECK(parse_dtype(dtype_name(d)) == d);
  CHECK(dtype_size(DType::F64) == 8);
  CHECK(dtype_size(DType::F32) == 4);
  CHECK(dtype_size(DType::BF16) == 2);
  CHECK(dtype_size(DType::BOOL) == 1);
  CHECK(contains(test::error_of([] { parse_dtype("F8_E4M3"); }), "'F8_E4M3'"));
}

TEST_CASE("F16 conversion: known bit patterns") {
  CHECK(float_to_half(1.0) == 0x3C00);
  CHECK(float_to_half(-2.0) == 0xC000);
  CHECK(float_to_half(0.0) == 0x0000);
  CHECK(float_to_half(-0.0) == 0x8000);
  CHECK(float_to_half(65504.0) == 0x7BFF);                     // largest finite
  CHECK(float_to_half(65519.0) == 0x7BFF);                     // just below the rounding midpoint to inf
  CHECK(float_to_half(65520.0) == 0x7C00);                     // midpoint rounds to even = inf
  CHECK(float_to_half(std::ldexp(1.0, -24)) == 0x0001);        // smallest subnormal
  CHECK(float_to_half(std::ldexp(1.0, -14)) == 0x0400);        // smallest normal
  CHECK(float_to_half(std::ldexp(1023.0, -24)) == 0x03FF);     // largest subnormal
  CHECK(float_to_half(std::ldexp(1.0, -25)) == 0x0000);        // half the smallest subnormal: tie to even 0
  CHECK(float_to_half(std::ldexp(3.0, -26)) == 0x0001);        // 0.75 units rounds up
  CHECK(float_to_half(std::ldexp(3.0, -25)) == 0x0002);        // 1.5 units: tie to even 2
  CHECK(float_to_half(1.0 + std::ldexp(1.0, -11)) == 0x3C00);  // tie to even (down)
  CHECK(float_to_half(1.0 + std::ldexp(3.0, -11)) == 0x3C02);  // tie to even (up)
  CHECK(float_to_half(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)) == 0x3C01);  // no double rounding
  CHECK(float_to_half(std::ldexp(1.0, -14) - std::ldexp(1.0, -25)) == 0x0400);        // rounds up into the normals
  CHECK(float_to_half(1e10) == 0x7C00);
  CHECK(float_to_half(std::numeric_limits<double>::infinity()) == 0x7C00);
  CHECK(float_to_half(-std::numeric_limits<double>::infinity()) == 0xFC00);
  CHECK(float_to_half(std::numeric_limits<double>::denorm_min()) == 0x0000);
  const std::uint16_t qnan = float_to_half(std::numeric_limits<float>::quiet_NaN());
  CHECK((qnan & 0x7C00) == 0x7C00);
  CHECK((qnan & 0x03FF) != 0);
  const std::uint16_t snan = float_to_half(bits_float(0x7F800001u));  // payload only in low bits: still NaN
  CHECK((snan & 0x7C00) == 0x7C00);
  CHECK((snan & 0x03FF) != 0);

  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x7BFF) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));
  CHECK(half_to_float(0x3555) == 0.333251953125f);
  CHECK(float_bits(half_to_float(0x8000)) == 0x80000000u);
  CHECK(float_bits(half_to_float(0x8001)) == float_bits(-std::ldexp(1.0f, -24)));
  CHECK(half_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(std::isnan(half_to_float(0x7C01)));
}

TEST_CASE("BF16 conversion: known bit patterns") {
  CHECK(float_to_bf16(1.0) == 0x3F80);
  CHECK(float_to_bf16(-2.0) == 0xC000);
  CHECK(float_to_bf16(3.140625) == 0x4049);
  CHECK(float_to_bf16(3.14159265f) == 0x4049);              // 0x40490FDB: lower half < 0x8000
  CHECK(float_to_bf16(bits_float(0x3F808000u)) == 0x3F80);  // tie to even (down)
  CHECK(float_to_bf16(bits_float(0x3F818000u)) == 0x3F82);  // tie to even (up)
  CHECK(float_to_bf16(bits_float(0x3F808001u)) == 0x3F81);
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds to inf
  CHECK(float_to_bf16(std::ldexp(1.0, -133)) == 0x0001);              // smallest bf16 subnormal
  CHECK(float_to_bf16(std::ldexp(1.0, -134)) == 0x0000);              // tie to even 0
  CHECK(float_to_bf16(std::numeric_limits<double>::infinity()) == 0x7F80);
  CHECK(float_to_bf16(-std::numeric_limits<double>::infinity()) == 0xFF80);
  CHECK(float_to_bf16(1e300) == 0x7F80);  // beyond float range, straight from double
  const std::uint16_t nan = float_to_bf16(bits_float(0x7F800001u));
  CHECK((nan & 0x7F80) == 0x7F80);
  CHECK((nan & 0x007F) != 0);

  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(bf16_to_float(0x4049) == 3.140625f);
  CHECK(bf16_to_float(0x7F7F) == bits_float(0x7F7F0000u));
  CHECK(bf16_to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(bf16_to_float(0xFF80) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bf16_to_float(0x7FC0)));
}

TEST_CASE("F16 and BF16: every bit pattern survives decode + encode; rounding is to nearest") {
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float fh = half_to_float(b), fb = bf16_to_float(b);
    if (std::isnan(fh)) {
      CHECK(std::isnan(half_to_float(float_to_half(fh))));
    } else if (float_to_half(fh) != b) {
      FAIL_CHECK("F16 pattern " << h << " does not round trip");
    }
    if (std::isnan(fb)) {
      CHECK(std::isnan(bf16_to_float(float_to_bf16(fb))));
    } else if (float_to_bf16(fb) != b) {
      FAIL_CHECK("BF16 pattern " << h << " does not round trip");
    }
  }
  // Random doubles: the chosen F16 value is at least as close as its neighbours.
  Rng rng(7);
  for (int i = 0; i < 20000; ++i) {
    const double x = rng.uniform(-1.0, 1.0) * std::ldexp(1.0, static_cast<int>(rng.below(40)) - 26);
    const std::uint16_t h = float_to_half(x);
    const double err = std::abs(static_cast<double>(half_to_float(h)) - x);
    for (int step : {-1, 1}) {
      const auto nb = static_cast<std::uint16_t>((h & 0x7FFF) == 0 ? (step > 0 ? h + 1 : (h ^ 0x8000) + 1) : h + step);
      const float nv = half_to_float(nb);
      if (std::isfinite(nv) && std::isfinite(half_to_float(h))) REQUIRE(err <= std::abs(double(nv) - x));
    }
  }
}

TEST_CASE_TEMPLATE("round trip through a file for every floating dtype", T, float, double) {
  TempDir dir;
  Rng rng(11);
  const std::vector<Shape> shapes = {Shape{}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{2, 1, 3, 5}, Shape{0, 4}};
  for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    CAPTURE(dtype_name(dtype));
    SafeTensorsWriter w;
    std::vector<Tensor<T>> src;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      Tensor<T> t(shapes[i]);
      for (std::int64_t k = 0; k < t.numel(); ++k) t.data()[k] = static_cast<T>(rng.uniform(-3.0, 3.0));
      src.push_back(t);
      w.add("t" + std::to_string(i), t, dtype);
    }
    Tensor<T> exact = Tensor<T>::from_vector(Shape{6}, {T(1), T(-2), T(0.5), T(0.375), T(-96), T(0)});
    w.add("exact", exact, dtype);
    const std::string path = dir.file(std::string("rt_") + dtype_name(dtype) + ".safetensors");
    w.write(path);

    const SafeTensorsFile f = SafeTensorsFile::open(path);
    CHECK(f.names().size() == shapes.size() + 1);
    CHECK(f.load<T>("exact", Shape{6}).to_vector() == exact.to_vector());
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const std::string name = "t" + std::to_string(i);
      CHECK(f.info(name).dtype == dtype);
      const Tensor<T> back = f.load<T>(name, shapes[i], true);
      REQUIRE(back.shape() == shapes[i]);
      const std::vector<T> a = src[i].to_vector(), b = back.to_vector();
      for (std::size_t k = 0; k < a.size(); ++k) {
        const double x = static_cast<double>(a[k]), y = static_cast<double>(b[k]);
        switch (dtype) {
          case DType::F32:
            CHECK(y == static_cast<double>(static_cast<float>(x)));
            break;
          case DType::F64:
            CHECK(y == x);
            break;
          case DType::F16:
            CHECK(y == static_cast<double>(half_to_float(float_to_half(x))));
            CHECK(std::abs(y - x) <= std::abs(x) * std::ldexp(1.0, -11));
            break;
          default:
            CHECK(y == static_cast<double>(bf16_to_float(float_to_bf16(x))));
            CHECK(std::abs(y - x) <= std::abs(x) * std::ldexp(1.0, -8));
            break;
        }
      }
    }
  }
}

TEST_CASE("a large F16 tensor round trips (chunked encode, threaded decode)") {
  TempDir dir;
  Rng rng(3);
  Tensor<float> t(Shape{300, 401});
  fill_uniform(t, rng, -100.0f, 100.0f);
  SafeTensorsWriter().add("w", t, DType::F16).write(dir.file("big.safetensors"));
  const Tensor<float> back = SafeTensorsFile::open(dir.file("big.safetensors")).load<float>("w");
  double worst = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i)
    worst = std::max(worst, std::abs(double(back.data()[i]) - double(t.data()[i])) / std::abs(double(t.data()[i])));
  CHECK(worst <= std::ldexp(1.0, -11));
}

TEST_CASE("integer tensors round trip; narrowing and range are checked") {
  TempDir dir;
  const auto ids = Tensor<std::int64_t>::from_vector(Shape{2, 3}, {0, -1, 50256, 1LL << 40, 7, -(1LL << 40)});
  const auto small = Tensor<std::int32_t>::from_vector(Shape{4}, {0, 1, 255, -5});
  const auto mask = Tensor<std::int32_t>::from_vector(Shape{3}, {1, 0, 1});
  SafeTensorsWriter w;
  w.add("ids", ids).add("small", small).add("bytes", Tensor<std::int32_t>::from_vector(Shape{2}, {0, 255}), DType::U8);
  w.add("mask", mask, DType::BOOL);
  const std::string path = dir.file("ints.safetensors");
  w.write(path);
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.info("ids").dtype == DType::I64);
  CHECK(f.info("small").dtype == DType::I32);
  CHECK(f.load<std::int64_t>("ids").to_vector() == ids.to_vector());
  CHECK(f.load<std::int32_t>("small").to_vector() == small.to_vector());
  CHECK(f.load<std::int64_t>("small").to_vector() == std::vector<std::int64_t>{0, 1, 255, -5});
  CHECK(f.load<std::int32_t>("bytes").to_vector() == std::vector<std::int32_t>{0, 255});
  CHECK(f.load<std::int32_t>("mask").to_vector() == mask.to_vector());
  const std::string narrow = test::error_of([&] { f.load<std::int32_t>("ids"); });
  CHECK(contains(narrow, "'ids'"));
  CHECK(contains(narrow, "flat index 3"));
  CHECK(contains(test::error_of([&] { f.load<float>("ids"); }), "dtype I64"));
  CHECK(contains(test::error_of([&] { f.load<std::int64_t>("nope"); }), "'nope'"));

  const std::string range = test::error_of([&] {
    SafeTensorsWriter().add("b", Tensor<std::int32_t>::from_vector(Shape{2}, {1, 256}), DType::U8).write(path);
  });
  CHECK(contains(range, path));
  CHECK(contains(range, "value 256 at flat index 1"));
  CHECK(SafeTensorsFile::open(path).load<std::int64_t>("ids").to_vector() == ids.to_vector());  // untouched
}

TEST_CASE("metadata, names, info and raw bytes") {
  TempDir dir;
  const std::string path = dir.file("meta.safetensors");
  const auto a = Tensor<float>::from_vector(Shape{2}, {1.5f, -2.5f});
  const auto b = Tensor<double>::from_vector(Shape{1, 2}, {3.0, 4.0});
  save_safetensors<float>(path, {{"z.weight", a}, {"a.bias", a}}, {{"format", "pt"}, {"peft_type", "PREFIX_TUNING"}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.path() == path);
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"peft_type", "PREFIX_TUNING"}});
  CHECK(f.names() == std::vector<std::string>{"a.bias", "z.weight"});
  CHECK(f.has("a.bias"));
  CHECK(!f.has("b"));
  CHECK(f.info("z.weight").begin == 8);  // data laid out in name order
  CHECK(f.info("z.weight").numel() == 2);
  const ByteView raw = f.raw("a.bias");
  REQUIRE(raw.size == 8);
  float v[2];
  std::memcpy(v, raw.data, 8);
  CHECK(v[0] == 1.5f);
  CHECK(v[1] == -2.5f);
  const std::string missing = test::error_of([&] { f.info("h.0.attn.bias"); });
  CHECK(contains(missing, "'h.0.attn.bias'"));
  CHECK(contains(missing, path));

  SafeTensorsWriter w;
  w.add("b", b, DType::F64).add_metadata("k", "v");
  CHECK(SafeTensorsFile::from_bytes(w.to_bytes()).metadata().at("k") == "v");
  CHECK(SafeTensorsFile::from_bytes(w.to_bytes()).load<double>("b").to_vector() == b.to_vector());
  CHECK(SafeTensorsFile::from_bytes(SafeTensorsWriter().to_bytes()).names().empty());
}

TEST_CASE("byte layout matches the Python/Rust safetensors writer") {
  // One F32 tensor [0..5] of shape (1, 1, 2, 3): compact JSON, padded with spaces to 8 bytes (N = 72).
  const std::string h1 = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  const Bytes expected1 = make_file(padded(h1), le_bytes(std::vector<float>{0, 1, 2, 3, 4, 5}));
  CHECK(expected1[0] == 72);
  const auto t = Tensor<float>::from_vector(Shape{1, 1, 2, 3}, {0, 1, 2, 3, 4, 5});
  CHECK(SafeTensorsWriter().add("attn0", t).to_bytes() == expected1);

  // No tensors: "{}" + 6 spaces; with metadata: "__metadata__" first.
  CHECK(SafeTensorsWriter().to_bytes() == make_file("{}      "));
  CHECK(SafeTensorsWriter().add_metadata("framework", "pt").to_bytes() ==
        make_file(padded(R"({"__metadata__":{"framework":"pt"}})")));

  // Mixed dtypes: ordered by descending dtype (I64, F64, F32, I32, BF16, F16, U8, BOOL), then by name.
  SafeTensorsWriter w;
  w.add("a", Tensor<float>::from_vector(Shape{1}, {1.0f}), DType::F16);
  w.add("b", Tensor<float>::from_vector(Shape{1}, {2.0f}));
  w.add("c", Tensor<std::int64_t>::from_vector(Shape{1}, {3}));
  w.add("d", Tensor<float>::from_vector(Shape{1}, {-2.0f}), DType::F16);
  const std::string h2 = padded(
      R"({"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("a":{"dtype":"F16","shape":[1],"data_offsets":[12,14]},"d":{"dtype":"F16","shape":[1],"data_offsets":[14,16]}})");
  const Bytes data2 = {3, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x40, 0x00, 0x3C, 0x00, 0xC0};
  CHECK(w.to_bytes() == make_file(h2, data2));

  // The reader takes hand-built files, unpadded ones with unaligned data and in any key order included.
  const std::string h3 = R"({"y":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
                         R"("x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"__metadata__":{"a":"b"}})";
  Bytes data3 = le_bytes(std::vector<double>{-0.25});
  for (std::uint8_t byte : {0x49, 0x40, 0x80, 0xBF}) data3.push_back(byte);
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(make_file(h3 + " ", data3), "hand.safetensors");
  CHECK((8 + h3.size() + 1) % 8 != 0);  // data starts unaligned
  CHECK(f.load<double>("x").item() == -0.25);
  CHECK(f.load<float>("y").to_vector() == std::vector<float>{3.140625f, -1.0f});
  CHECK(f.metadata().at("a") == "b");
}

TEST_CASE("validation: every malformed header throws an Error naming the file and the key") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto err = [&](const std::string& header, const Bytes& data = Bytes(16, 0)) {
    return open_error(dir, make_file(header, data));
  };
  auto entry = [](const std::string& key, const std::string& body) { return "{\"" + key + "\":{" + body + "}}"; };
  auto expect = [&](const std::string& msg, std::initializer_list<const char*> parts) {
    CAPTURE(msg);
    CHECK(contains(msg, path));
    for (const char* p : parts) CHECK(contains(msg, p));
  };

  expect(open_error(dir, {}), {"0 bytes, too short"});
  expect(open_error(dir, {4, 0, 0}), {"3 bytes, too short"});
  expect(open_error(dir, {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'}), {"header length 100 runs past the end"});
  Bytes huge = make_file("{}");
  huge[0] = 0;
  huge[7] = 0x10;  // 2^60
  expect(open_error(dir, huge), {"header length 1152921504606846976 exceeds the limit"});
  expect(err(R"({"a":)"), {"not valid JSON"});
  expect(err("{\"a\xff\":1}"), {"not valid JSON"});
  expect(err(R"([1, 2])"), {"not a JSON object"});
  expect(err(R"({"w":3})"), {"tensor 'w'", "not a JSON object"});
  expect(err(entry("w", R"("dtype":"F8","shape":[2],"data_offsets":[0,2])")), {"tensor 'w'", "unsupported dtype 'F8'"});
  expect(err(entry("w", R"("dtype":4,"shape":[2],"data_offsets":[0,8])")), {"tensor 'w'", "dtype is not a string"});
  expect(err(entry("w", R"("shape":[2],"data_offsets":[0,8])")), {"tensor 'w'", "missing field 'dtype'"});
  expect(err(entry("w", R"("dtype":"F32","data_offsets":[0,8])")), {"tensor 'w'", "missing field 'shape'"});
  expect(err(entry("w", R"("dtype":"F32","shape":[2])")), {"tensor 'w'", "missing field 'data_offsets'"});
  expect(err(entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1)")), {"tensor 'w'", "field 'x'"});
  expect(err(entry("w", R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])")),
         {"tensor 'w'", "negative dimension -2"});
  expect(err(entry("w", R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])")), {"tensor 'w'", "non-integer"});
  expect(err(entry("w", R"("dtype":"F32","shape":2,"data_offsets":[0,8])")), {"tensor 'w'", "not an array"});
  expect(err(entry("w", R"("dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4])")),
         {"tensor 'w'", "rank 9"});
  expect(err(entry("w", R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])")),
         {"tensor 'w'", "overflows int64"});
  expect(err(entry("w", R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8])")),
         {"tensor 'w'", "overflows int64"});
  expect(err(entry("w", R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8])")),
         {"tensor 'w'", "needs more than 2^64"});
  expect(err(entry("w", R"("dtype":"F32","shape":[8],"data_offsets":[0,32])")),
         {"tensor 'w'", "data_offsets [0, 32] run past the end of the data section (16 bytes)"});
  expect(err(entry("w", R"("dtype":"F32","shape":[0],"data_offsets":[8,4])")), {"tensor 'w'", "reversed"});
  expect(err(entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])")), {"tensor 'w'", "non-negative"});
  expect(err(entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0,4.0])")), {"tensor 'w'", "non-negative"});
  expect(err(entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0])")), {"tensor 'w'", "pair"});
  expect(err(entry("h.0.attn.c_attn.weight", R"("dtype":"F32","shape":[4,8],"data_offsets":[0,100])"), Bytes(128, 0)),
         {"tensor 'h.0.attn.c_attn.weight': data_offsets [0, 100] hold 100 bytes but shape (4, 8) of F32 needs 128"});
  expect(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"),
         {"tensor 'a' [0, 8] and tensor 'b' [4, 12] overlap"});
  expect(
      err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"),
      {"repeats the key 'a'"});
  expect(err(entry("w", R"("dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8])")),
         {"repeats the key 'dtype'"});
  expect(err(R"({"__metadata__":[1]})"), {"__metadata__ is not a JSON object"});
  expect(err(R"({"__metadata__":{"epoch":3}})"), {"__metadata__: value of 'epoch' is not a string"});

  // Valid edge cases: gaps between tensors, zero-size tensors anywhere, trailing bytes after the data.
  CHECK(
      err(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[9,9]}})")
          .empty());

  // Errors when loading from a valid file.
  Bytes nan_data = le_bytes(std::vector<float>{1.0f, 2.0f, std::nanf(""), std::numeric_limits<float>::infinity()});
  const std::string hx = R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                         R"("r5":{"dtype":"F32","shape":[1,1,1,0,1],"data_offsets":[0,0]}})";
  write_bytes(path, make_file(hx, nan_data));
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.load<float>("x").numel() == 4);  // not checked: fine
  CHECK(test::error_of([&] { f.load<double>("x", true); }) ==
        "prefixtune: non-finite value (nan) at flat index 2 in tensor 'x' of " + path + " [in load]");
  expect(test::error_of([&] { f.load<float>("x", Shape{4, 1}); }), {"tensor 'x' has shape (2, 2), expected (4, 1)"});
  expect(test::error_of([&] { f.load<float>("r5"); }), {"tensor 'r5' has rank 5"});
  expect(test::error_of([&] { f.load<float>("missing.key"); }), {"no tensor named 'missing.key'"});
  expect(test::error_of([&] { f.raw("missing.key"); }), {"'missing.key'"});
  write_bytes(path, make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                              le_bytes(std::vector<float>{1.0f, -std::numeric_limits<float>::infinity()})));
  expect(test::error_of([&] { SafeTensorsFile::open(path).load<float>("x", Shape{2}, true); }),
         {"non-finite value (inf) at flat index 1 in tensor 'x'"});
  write_bytes(path, make_file(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                              le_bytes(std::vector<double>{1e300})));
  CHECK(SafeTensorsFile::open(path).load<double>("x", true).item() == 1e300);
  expect(test::error_of([&] { SafeTensorsFile::open(path).load<float>("x", true); }), {"(inf) at flat index 0"});
}

TEST_CASE("MappedFile and read_text_file report the path and the system's reason") {
  TempDir dir;
  const std::string missing = dir.file("nothing.json");
  const std::string e1 = test::error_of([&] { MappedFile m(missing); });
  CHECK(contains(e1, missing));
  CHECK(contains(e1, "No such file"));
  const std::string e2 = test::error_of([&] { MappedFile m(dir.path.string()); });
  CHECK(contains(e2, dir.path.string()));
  CHECK(contains(e2, "Is a directory"));
  CHECK(contains(test::error_of([&] { read_text_file(missing); }), missing));
  CHECK(contains(test::error_of([&] { SafeTensorsFile::open(missing); }), missing));

  write_bytes(dir.file("empty"), {});
  MappedFile empty(dir.file("empty"));
  CHECK(empty.size() == 0);
  CHECK(read_text_file(dir.file("empty")).empty());

  write_text_file_atomic(dir.file("c.json"), "{\"n_layer\": 12}\n");
  CHECK(read_text_file(dir.file("c.json")) == "{\"n_layer\": 12}\n");
  MappedFile a(dir.file("c.json"));
  const std::uint8_t* p = a.data();
  MappedFile b(std::move(a));
  CHECK(b.data() == p);
  CHECK(b.size() == 16);
  CHECK(a.data() == nullptr);
  a = std::move(b);
  CHECK(a.path() == dir.file("c.json"));
  CHECK(a.data()[0] == '{');
}

TEST_CASE("write_file_atomic: a failing writer leaves the target untouched and no temporary file") {
  TempDir dir;
  const std::string target = dir.file("model.safetensors");
  write_text_file_atomic(target, "original");
  const std::string big(200000, 'x');  // more than the 64 KiB buffer, so part of it reaches the disk
  const std::string e = test::error_of([&] {
    write_file_atomic(target, [&](std::ostream& os) {
      os << big;
      throw std::runtime_error("disk on fire");
    });
  });
  CHECK(contains(e, target));
  CHECK(contains(e, "disk on fire"));
  CHECK(read_text_file(target) == "original");
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  CHECK_THROWS_AS(write_file_atomic(target, [](std::ostream&) { throw 42; }), int);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  const std::string nodir = dir.file("no/such/folder/x.bin");
  CHECK(contains(test::error_of([&] { write_text_file_atomic(nodir, "x"); }), nodir));
  const std::string over_dir = test::error_of([&] { write_text_file_atomic(dir.path.string(), "x"); });
  CHECK(contains(over_dir, dir.path.string()));

  write_file_atomic(target, [&](std::ostream& os) { os << big; });
  CHECK(read_text_file(target) == big);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // The writer's own checks fail inside write_file_atomic: the old file stays.
  const auto bad = Tensor<std::int64_t>::from_vector(Shape{1}, {1LL << 40});
  CHECK(contains(test::error_of([&] { SafeTensorsWriter().add("ids", bad, DType::I32).write(target); }), "ids"));
  CHECK(read_text_file(target) == big);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("SafeTensorsWriter rejects bad input") {
  const auto t = Tensor<float>::from_vector(Shape{1}, {1.0f});
  SafeTensorsWriter w;
  w.add("a", t);
  CHECK(contains(test::error_of([&] { w.add("a", t); }), "'a' added twice"));
  CHECK(contains(test::error_of([&] { w.add("__metadata__", t); }), "invalid tensor name"));
  CHECK(contains(test::error_of([&] { w.add("u", Tensor<float>()); }), "'u' is undefined"));
  CHECK(contains(test::error_of([&] { w.add("i", t, DType::I32); }), "cannot be stored as I32"));
  CHECK(contains(test::error_of([&] { w.add("j", Tensor<std::int32_t>::zeros(Shape{1}), DType::F16); }), "F16"));
  CHECK(contains(test::error_of([&] { SafeTensorsWriter().add("\xff", t).to_bytes(); }), "UTF-8"));
}

TEST_CASE("truncation at every length and random bit flips: success or Error, never a crash") {
  TempDir dir;
  Rng rng(2024);
  SafeTensorsWriter w;
  Tensor<float> a(Shape{3, 4});
  fill_uniform(a, rng, -2.0f, 2.0f);
  w.add("h.0.attn.c_attn.weight", a).add("h.0.ln_1.bias", a.reshape({12}), DType::BF16);
  w.add("wpe", a.reshape({2, 6}), DType::F16).add("d", Tensor<double>::full(Shape{2}, 0.5), DType::F64);
  w.add("ids", Tensor<std::int64_t>::from_vector(Shape{3}, {1, 2, 3})).add_metadata("format", "pt");
  const Bytes good = w.to_bytes();
  open_and_load_all(SafeTensorsFile::from_bytes(good), true);

  const std::string path = dir.file("cut.safetensors");
  for (std::size_t len = 0; len <= good.size(); ++len) {
    write_bytes(path, Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len)));
    bool ok = false;
    try {
      open_and_load_all(SafeTensorsFile::open(path), true);
      ok = true;
    } catch (const Error& e) {
      if (!contains(e.what(), path)) FAIL_CHECK("message without the path: " << e.what());
    }
    CHECK(ok == (len == good.size()));
  }

  int successes = 0, errors = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < flips; ++k) {
      const std::size_t pos = rng.below(4) == 0 ? rng.below(8) : rng.below(b.size());  // often the length field
      b[pos] ^= static_cast<std::uint8_t>(1u << rng.below(8));
    }
    if (rng.below(4) == 0) b.resize(rng.below(b.size() + 1));
    try {
      if (trial % 10 == 0) {  // some through real files and mmap
        write_bytes(path, b);
        open_and_load_all(SafeTensorsFile::open(path), trial % 20 == 0);
      } else {
        open_and_load_all(SafeTensorsFile::from_bytes(b, "fuzz.safetensors"), trial % 2 == 0);
      }
      ++successes;
    } catch (const Error&) {
      ++errors;
    }
  }
  MESSAGE("fuzz: " << successes << " mutated files opened and loaded, " << errors << " rejected with Error");
  CHECK(successes + errors == 2000);
  CHECK(errors > 0);
}
