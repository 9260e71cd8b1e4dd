// SPDX-License-Identifier: MIT
// Tests of train/adamw.hpp, train/schedule.hpp and train/clip.hpp: AdamW against a naive double implementation
// and PyTorch's outputs, state save/load and bit-identical resume, the linear warmup schedule, gradient clipping.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/train/adamw.hpp"
#include "prefixtune/train/clip.hpp"
#include "prefixtune/train/schedule.hpp"
#include "test_util.hpp"

using namespace prefixtune;

namespace {

template <class T>
Var<T> make_param(const Shape& s, const std::vector<double>& values, const std::string& name) {
  std::vector<T> v(values.begin(), values.end());
  return Var<T>(Tensor<T>::from_vector(s, v), true, name);
}

/// Overwrites p's gradient with values (allocating the buffer on first use).
template <class T>
void set_grad(const Var<T>& p, const std::vector<double>& values) {
  Tensor<T> g = p.grad_for_accumulation();
  REQUIRE(static_cast<std::size_t>(g.numel()) == values.size());
  for (std::size_t i = 0; i < values.size(); ++i) g.data()[i] = static_cast<T>(values[i]);
}

/// values rounded to T and widened back (what a T parameter or gradient actually holds).
template <class T>
std::vector<double> rounded(const std::vector<double>& values) {
  std::vector<double> out;
  for (double x : values) out.push_back(static_cast<double>(static_cast<T>(x)));
  return out;
}

template <class T>
std::vector<double> random_values(std::size_t n, Rng& rng) {
  auto t = test::random_tensor<T>({static_cast<std::int64_t>(n)}, rng);
  return test::as_double(t);
}

/// Textbook AdamW (Loshchilov & Hutter with PyTorch's placement of eps) in double, one parameter.
struct NaiveAdamW {
  std::vector<double> p, m, v;
  std::int64_t t = 0;
  explicit NaiveAdamW(std::vector<double> init) : p(std::move(init)), m(p.size(), 0.0), v(p.size(), 0.0) {}
  void step(const std::vector<double>& g, const AdamWConfig& c) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] -= c.lr * c.weight_decay * p[i];
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(c.beta1, static_cast<double>(t)));
      const double vhat = v[i] / (1 - std::pow(c.beta2, static_cast<double>(t)));
      p[i] -= c.lr * mhat / (std::sqrt(vhat) + c.eps);
    }
  }
};

/// max |a - b| / max(1, |b|).
double max_scaled_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return d;
}

template <class T>
bool bit_equal(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

}  // namespace

// ---- AdamW --------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("AdamW matches a naive double implementation over 5 steps", T, float, double) {
  // (3, 5) odd sizes, a 1-element bias, and 40,000 elements (the OpenMP path of the kernel).
  const std::vector<Shape> shapes = {{3, 5}, {1}, {200, 200}};
  for (double wd : {0.0, 0.1}) {
    CAPTURE(wd);
    Rng rng(42);
    AdamWConfig cfg;
    cfg.lr = 3e-2;
    cfg.beta1 = 0.8;
    cfg.beta2 = 0.95;
    cfg.eps = 1e-6;
    cfg.weight_decay = wd;
    std::vector<Var<T>> params;
    std::vector<NaiveAdamW> naive;
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto init = rounded<T>(random_values<T>(static_cast<std::size_t>(shapes[k].numel()), rng));
      params.push_back(make_param<T>(shapes[k], init, "p" + std::to_string(k)));
      naive.emplace_back(init);
    }
    AdamW<T> opt(params, cfg);
    for (int step = 0; step < 5; ++step) {
      if (step == 3) cfg.lr = 1e-2, opt.set_lr(cfg.lr);  // a schedule changing the lr between steps
      for (std::size_t k = 0; k < params.size(); ++k) {
        const auto g = rounded<T>(random_values<T>(static_cast<std::size_t>(shapes[k].numel()), rng));
        set_grad(params[k], g);
        naive[k].step(g, cfg);
      }
      opt.step();
    }
    CHECK(opt.step_count() == 5);
    CHECK(opt.lr() == 1e-2);
    for (std::size_t k = 0; k < params.size(); ++k) {
      CAPTURE(k);
      CHECK(max_scaled_diff(test::as_double(params[k].value()), naive[k].p) <
            (std::is_same_v<T, float> ? 2e-6 : 1e-13));
      CHECK(max_scaled_diff(test::as_double(opt.exp_avg(k)), naive[k].m) < (std::is_same_v<T, float> ? 1e-6 : 1e-14));
      CHECK(max_scaled_diff(test::as_double(opt.exp_avg_sq(k)), naive[k].v) <
            (std::is_same_v<T, float> ? 1e-6 : 1e-14));
    }
  }
}

// Expected values: PyTorch's torch.optim.AdamW outputs (not ours), printed by
//   /usr/bin/python3 tests/reference/optim_reference.py
// (torch 1.13.0a0, Debian python3-torch, "CPU capability usage: AVX2": the kernels whose add_ and addcmul_ round
// through fused multiply-adds; a torch run on its DEFAULT kernels, ATEN_CPU_CAPABILITY=default, differs by an ulp).
// Problem: a (2, 3), b (4) and c (37), lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1, 3 steps; b has no
// gradient in step 2 (PyTorch skips it and does not advance its step count); c is long enough for torch's
// vectorized loops and their tails and for ours. All inputs are exact in float.
namespace {
const std::vector<double> kTorchA0 = {0.5, -1.25, 2.0, 0.0, -0.75, 1.5};
const std::vector<double> kTorchB0 = {1.0, -2.0, 0.25, 3.5};
const std::vector<std::vector<double>> kTorchGradsA = {
    {0.25, -0.5, 1.0, 0.125, -2.0, 0.0}, {-0.75, 0.5, 0.375, -1.0, 1.5, 0.25}, {0.5, 0.5, -0.25, 0.0, -0.125, 2.0}};
const std::vector<std::vector<double>> kTorchGradsB = {{1.0, -0.25, 0.5, -1.5}, {}, {-0.5, 0.75, 0.0, 2.5}};
constexpr int kTorchC = 37;
/// lcg_values of optim_reference.py: n values k * scale with k a 24-bit integer from a 64-bit LCG (exact in float).
std::vector<double> lcg_values(std::uint64_t seed, int n, double scale) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    out.push_back(static_cast<double>(static_cast<std::int64_t>(seed >> 40) - (std::int64_t{1} << 23)) * scale);
  }
  return out;
}
// C0 and GRADS_C of optim_reference.py: full mantissas, values in [-1/64, 1/64), gradients in [-2, 2).
const std::vector<double> kTorchC0 = lcg_values(1, kTorchC, std::ldexp(1.0, -29));
std::vector<double> torch_grads_c(int step) { return lcg_values(2 + step, kTorchC, std::ldexp(1.0, -22)); }
// The expected results: parameters a, b, c and c's moments (exp_avg, exp_avg_sq) after the 3 steps.
const std::vector<double> kTorchF64A = {0.4932705693049102,    -1.2408216685537281,  1.9699156641985687,
                                        0.0016323972519374972, -0.73587099105369413, 1.4810185961698299};
const std::vector<double> kTorchF64B = {0.9853476297369903, -1.9909538986441853, 0.23280966784800314,
                                        3.5000578878999682};
const std::vector<double> kTorchF64C = {
    -0.007740136200941077, -0.018165666217774261, -0.025365021475276705, 0.026368741617453964,  0.029349823540145585,
    0.029209109855861524,  0.017346431822695945,  -0.028261671966143747, 0.02320969973630584,   -0.034985878503945383,
    -0.014914762629620775, -0.019151162739698979, 0.0024695199790015286, -0.032672090429198407, -0.028569758432138066,
    0.013536146910754511,  0.027356438395976242,  0.01509362334679161,   0.022217133380944748,  -0.036949563034541555,
    0.039276275675135051,  0.035165904005164242,  0.0059804463159218602, 0.020224627491089369,  0.026273847583390054,
    0.027088373233459015,  0.022188468888673221,  -0.027367259289028705, -0.014297726854455916, 0.030450950585213001,
    0.02324464089138352,   0.013665341046652327,  -0.027899866514054579, -0.014823541927340256, 0.030025348593919993,
    -0.023314429918704593, 0.0049924930482108413};
const std::vector<double> kTorchF64CExpAvg = {
    -0.069060122728347759, 0.16509591031074522,   0.25739449095726008,   -0.16815983438491819,  -0.2396062040328979,
    -0.13486750841140743,  0.039973208904266318,  -0.039102360725402824, 0.085219727993011446,  0.20028824114799496,
    0.11877736210823056,   0.021507847309112555,  0.11295063185691831,   0.29478507661819453,   0.063782779216766353,
    0.026093070745468135,  -0.28081830430030819,  -0.065139706611633277, -0.031622825622558595, 0.29731280088424672,
    -0.27814775919914242,  -0.046881337404251079, 0.094897856473922709,  0.01783346891403197,   -0.34110658192634574,
    -0.019676821708679196, -0.059420470952987664, 0.14934444236755368,   0.25480534029006952,   -0.021504950046539326,
    -0.2541428480148315,   -0.014625679731369018, 0.12851154136657714,   0.11746494126319884,   -0.25900904917716971,
    0.13747948002815244,   -0.19486743950843807};
const std::vector<double> kTorchF64CExpAvgSq = {
    0.003567931122672412,   0.0041338485944158515, 0.0026952065289089339, 0.0011458499136519592, 0.0051156870847012693,
    0.00080953405065105778, 0.0072081959595072876, 0.002711018073126824,  0.0042116955122071045, 0.0039249626640318041,
    0.0083705695039013664,  0.0062269723467316077, 0.0047977214554536926, 0.0047029936453571496, 0.0038270251200348852,
    0.0027718800232015362,  0.0033183478490722259, 0.0031769089463245391, 0.0055260893509993299, 0.0053682988933198431,
    0.0045397278027671899,  0.0018666128410104825, 0.0039676688187539324, 0.0059822360437359048, 0.0048500219700423385,
    0.0036707113651351128,  0.0057940273104714795, 0.0039230227295480573, 0.003219642759806074,  0.0026922042492388892,
    0.0026247700341185767,  0.0029224161593876369, 0.0046468535507882833, 0.003872994094174422,  0.0031058307425170773,
    0.0034249100037199538,  0.0087252184446070594};
const std::vector<double> kTorchF32A = {0.49327060580253601,  -1.2408217191696167, 1.9699158668518066,
                                        0.001632398460060358, -0.7358710765838623, 1.4810186624526978};
const std::vector<double> kTorchF32B = {0.9853476881980896, -1.9909540414810181, 0.23280966281890869,
                                        3.5000579357147217};
const std::vector<double> kTorchF32C = {
    -0.00774013577029109,  -0.018165664747357368, -0.025365021079778671, 0.026368740946054459,  0.029349822551012039,
    0.029209109023213387,  0.01734643243253231,   -0.028261672705411911, 0.023209700360894203,  -0.034985877573490143,
    -0.014914761297404766, -0.019151162356138229, 0.0024695189204066992, -0.032672092318534851, -0.028569759801030159,
    0.013536146841943264,  0.027356438338756561,  0.015093621797859669,  0.022217134013772011,  -0.036949560046195984,
    0.039276272058486938,  0.035165905952453613,  0.0059804455377161503, 0.02022462897002697,   0.026273846626281738,
    0.027088373899459839,  0.022188467904925346,  -0.027367260307073593, -0.014297725632786751, 0.030450951308012009,
    0.023244641721248627,  0.013665342703461647,  -0.027899865061044693, -0.014823541045188904, 0.03002534992992878,
    -0.023314431309700012, 0.0049924934282898903};
const std::vector<double> kTorchF32CExpAvg = {
    -0.069060131907463074, 0.16509589552879333,   0.25739449262619019,   -0.16815982758998871,  -0.23960620164871216,
    -0.13486750423908234,  0.039973221719264984,  -0.039102364331483841, 0.085219733417034149,  0.20028823614120483,
    0.11877734214067459,   0.021507835015654564,  0.1129506379365921,    0.29478508234024048,   0.063782773911952972,
    0.026093075051903725,  -0.28081831336021423,  -0.065139703452587128, -0.031622827053070068, 0.29731279611587524,
    -0.27814775705337524,  -0.046881329268217087, 0.094897858798503876,  0.017833473160862923,  -0.34110656380653381,
    -0.01967681385576725,  -0.059420447796583176, 0.14934444427490234,   0.25480532646179199,   -0.021504934877157211,
    -0.25414285063743591,  -0.014625680632889271, 0.12851153314113617,   0.11746493726968765,   -0.25900906324386597,
    0.13747948408126831,   -0.19486743211746216};
const std::vector<double> kTorchF32CExpAvgSq = {
    0.0035679314751178026,  0.0041338489390909672, 0.0026952065527439117, 0.0011458499357104301, 0.0051156873814761639,
    0.00080953410360962152, 0.0072081964462995529, 0.002711018081754446,  0.0042116958647966385, 0.0039249630644917488,
    0.0083705699071288109,  0.0062269726768136024, 0.0047977217473089695, 0.004702993668615818,  0.0038270254153758287,
    0.0027718802448362112,  0.0033183482009917498, 0.003176908940076828,  0.0055260900408029556, 0.0053682988509535789,
    0.0045397281646728516,  0.0018666129326447845, 0.0039676693268120289, 0.0059822364710271358, 0.0048500220291316509,
    0.0036707117687910795,  0.0057940278202295303, 0.0039230231195688248, 0.0032196426764130592, 0.0026922042015939951,
    0.0026247701607644558,  0.002922416664659977,  0.0046468540094792843, 0.0038729941006749868, 0.003105830866843462,
    0.0034249103628098965,  0.0087252194061875343};

/// Largest distance in units in the last place of T between got and want (rounded to T), and how many differ.
template <class T>
std::pair<std::int64_t, int> ulp_diff(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  using Bits = std::conditional_t<std::is_same_v<T, float>, std::int32_t, std::int64_t>;
  const auto ordered = [](T x) {  // monotonic in x: adjacent floats differ by 1
    Bits b;
    std::memcpy(&b, &x, sizeof b);
    return b < 0 ? std::numeric_limits<Bits>::min() - b : b;
  };
  std::int64_t worst = 0;
  int differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::int64_t d = std::abs(static_cast<std::int64_t>(ordered(static_cast<T>(got[i]))) -
                                    static_cast<std::int64_t>(ordered(static_cast<T>(want[i]))));
    worst = std::max(worst, d);
    differing += d != 0;
  }
  return {worst, differing};
}

/// Checks got == want element for element (both exact values of T), reporting the ulp distance when not.
template <class T>
void check_bit_identical(const std::string& what, const std::vector<double>& got, const std::vector<double>& want) {
  const std::pair<std::int64_t, int> d = ulp_diff<T>(got, want);  // (no structured binding: INFO captures it)
  INFO(what, ": ", d.second, " of ", want.size(), " elements differ from PyTorch's, by up to ", d.first, " ulp");
  CHECK(got == want);
}

}  // namespace

TEST_CASE_TEMPLATE("AdamW is bit-identical to torch.optim.AdamW (AVX2 CPU kernels), including a step without gradient",
                   T, float, double) {
  auto a = make_param<T>({2, 3}, kTorchA0, "a");
  auto b = make_param<T>({4}, kTorchB0, "b");
  auto c = make_param<T>({kTorchC}, kTorchC0, "c");
  AdamWConfig cfg;
  cfg.lr = 1e-2;
  cfg.weight_decay = 0.1;
  AdamW<T> opt({a, b, c}, cfg);
  for (std::size_t s = 0; s < 3; ++s) {
    set_grad(a, kTorchGradsA[s]);
    if (kTorchGradsB[s].empty()) {
      b.clear_grad();
    } else {
      set_grad(b, kTorchGradsB[s]);
    }
    set_grad(c, torch_grads_c(static_cast<int>(s)));
    opt.step();
  }
  const bool is_float = std::is_same_v<T, float>;
  check_bit_identical<T>("a", test::as_double(a.value()), is_float ? kTorchF32A : kTorchF64A);
  check_bit_identical<T>("b", test::as_double(b.value()), is_float ? kTorchF32B : kTorchF64B);
  check_bit_identical<T>("c", test::as_double(c.value()), is_float ? kTorchF32C : kTorchF64C);
  check_bit_identical<T>("c exp_avg", test::as_double(opt.exp_avg(2)), is_float ? kTorchF32CExpAvg : kTorchF64CExpAvg);
  check_bit_identical<T>("c exp_avg_sq", test::as_double(opt.exp_avg_sq(2)),
                         is_float ? kTorchF32CExpAvgSq : kTorchF64CExpAvgSq);
  // The float64 run differs from the float32 one: each type is held to its own results.
  CHECK(kTorchF32C != kTorchF64C);
}

TEST_CASE_TEMPLATE("AdamWStep::update alone (the CUDA kernel's and the non-AVX2 CPU path's) is bit-identical to torch",
                   T, float, double) {
  // Parameter c of the problem above, element by element through the shared update.
  std::vector<T> p(kTorchC0.begin(), kTorchC0.end()), m(kTorchC, T(0)), v(kTorchC, T(0));
  const AdamWConfig cfg{1e-2, 0.9, 0.999, 1e-8, 0.1};
  for (int t = 1; t <= 3; ++t) {
    const detail::AdamWStep<T> step(detail::AdamWScalars{1.0 - cfg.lr * cfg.weight_decay, cfg.beta1, cfg.beta2,
                                                         cfg.lr / (1.0 - std::pow(cfg.beta1, t)),
                                                         std::sqrt(1.0 - std::pow(cfg.beta2, t)), cfg.eps});
    const std::vector<double> g = torch_grads_c(t - 1);
    for (int i = 0; i < kTorchC; ++i) step.update(p[i], static_cast<T>(g[i]), m[i], v[i]);
  }
  const bool is_float = std::is_same_v<T, float>;
  check_bit_identical<T>("c", std::vector<double>(p.begin(), p.end()), is_float ? kTorchF32C : kTorchF64C);
  check_bit_identical<T>("c exp_avg", std::vector<double>(m.begin(), m.end()),
                         is_float ? kTorchF32CExpAvg : kTorchF64CExpAvg);
  check_bit_identical<T>("c exp_avg_sq", std::vector<double>(v.begin(), v.end()),
                         is_float ? kTorchF32CExpAvgSq : kTorchF64CExpAvgSq);
}

TEST_CASE_TEMPLATE("AdamW skips parameters without gradient and zero_grad keeps buffers", T, float, double) {
  auto a = make_param<T>({3}, {1, 2, 3}, "a");
  auto b = make_param<T>({2}, {4, 5}, "b");
  AdamW<T> opt({a, b}, AdamWConfig{1e-1});
  set_grad(a, {1, -1, 0.5});
  opt.step();
  CHECK(test::as_double(b.value()) == std::vector<double>{4, 5});  // untouched, no decay either
  CHECK(test::as_double(opt.exp_avg(1)) == std::vector<double>{0, 0});
  CHECK(a.value().to_vector() != std::vector<T>{1, 2, 3});
  const T* buffer = a.grad().data();
  opt.zero_grad();
  CHECK(a.grad().data() == buffer);
  CHECK(test::as_double(a.grad()) == std::vector<double>{0, 0, 0});
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("AdamW rejects bad configs and parameters, naming them") {
  auto w = make_param<double>({2}, {1, 2}, "prefix.w1");
  const auto with = [](auto edit) {
    AdamWConfig c;
    edit(c);
    return c;
  };
  const auto make = [&](const AdamWConfig& c) { return test::error_of([&] { AdamW<double> opt({w}, c); }); };
  CHECK(make(with([](AdamWConfig& c) { c.lr = -1e-3; })).find("invalid learning rate lr=-0.001") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.lr = std::nan(""); })).find("learning rate") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.beta1 = 1.0; })).find("invalid beta1=1") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.beta1 = -0.1; })).find("invalid beta1") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.beta2 = 1.5; })).find("invalid beta2=1.5") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.eps = -1; })).find("invalid eps") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.weight_decay = -0.1; })).find("invalid weight_decay") != std::string::npos);
  CHECK(make(with([](AdamWConfig& c) { c.beta1 = 0.0; })).empty());  // [0, 1) includes 0

  AdamW<double> opt({w});
  CHECK(test::error_of([&] { opt.set_lr(-1); }).find("invalid learning rate") != std::string::npos);
  CHECK(opt.lr() == 5e-5);

  auto frozen = Var<double>(Tensor<double>::zeros({2}), false, "wte");
  const std::string e1 = test::error_of([&] { AdamW<double> o({w, frozen}); });
  CHECK(e1.find("parameter 1 'wte' does not require grad") != std::string::npos);
  const std::string e2 = test::error_of([&] { AdamW<double> o({w, w}); });
  CHECK(e2.find("parameter 1 'prefix.w1' is the same Var as parameter 0 'prefix.w1'") != std::string::npos);
  const std::string e3 = test::error_of([&] { AdamW<double> o({w, Var<double>()}); });
  CHECK(e3.find("parameter 1 is an undefined Var") != std::string::npos);
}

// ---- State save / load ----------------------------------------------------------------------------------------

namespace {

/// Three parameters with random values; parameter "c" gets no gradient at steps 1 and 4 (per-parameter steps).
template <class T>
struct ResumeProblem {
  std::vector<Shape> shapes = {{3, 4}, {5}, {2, 3, 2}};
  std::vector<std::vector<T>> init;
  std::vector<std::vector<std::vector<double>>> grads;  // [step][param]
  LinearSchedule schedule{2e-2, 2, 8};
  AdamWConfig config{2e-2, 0.9, 0.99, 1e-8, 0.05};

  explicit ResumeProblem(int steps) {
    Rng rng(7);
    for (const Shape& s : shapes) init.push_back(test::random_tensor<T>(s, rng).to_vector());
    for (int t = 0; t < steps; ++t) {
      grads.emplace_back();
      for (const Shape& s : shapes) grads.back().push_back(random_values<T>(static_cast<std::size_t>(s.numel()), rng));
    }
  }
  std::vector<Var<T>> make_params(const std::vector<std::vector<T>>& values) const {
    const char* names[] = {"a", "b", "c"};
    std::vector<Var<T>> p;
    for (std::size_t k = 0; k < shapes.size(); ++k)
      p.emplace_back(Tensor<T>::from_vector(shapes[k], values[k]), true, names[k]);
    return p;
  }
  /// Runs steps [begin, end) of the training loop (schedule-driven lr).
  void run(AdamW<T>& opt, int begin, int end) const {
    const auto& params = opt.parameters();
    for (int t = begin; t < end; ++t) {
      for (std::size_t k = 0; k < params.size(); ++k) {
        if (k == 2 && (t == 1 || t == 4)) {
          params[k].clear_grad();
        } else {
          set_grad(params[k], grads[t][k]);
        }
      }
      opt.set_lr(schedule.lr_at(opt.step_count()));
      opt.step();
    }
  }
};

}  // namespace

TEST_CASE_TEMPLATE("AdamW state round-trips and a resumed run is bit-identical", T, float, double) {
  ResumeProblem<T> prob(7);
  // Uninterrupted.
  auto ref_params = prob.make_params(prob.init);
  AdamW<T> ref(ref_params, prob.config);
  prob.run(ref, 0, 7);

  // Interrupted after 3 steps: parameters and optimizer state go through a safetensors file.
  test::TempDir dir;
  {
    auto params = prob.make_params(prob.init);
    AdamW<T> opt(params, prob.config);
    prob.run(opt, 0, 3);
    SafeTensorsWriter w;
    // SafeTensorsWriter references tensors until write(): the parameters are cloned, save_state copies itself.
    for (const auto& p : params)
      w.add(p.name(), p.value().clone(), std::is_same_v<T, double> ? DType::F64 : DType::F32);
    opt.save_state(w, "optimizer.");
    prob.run(opt, 3, 4);  // the saved state is a snapshot: later steps do not leak into the file
    w.write(dir.file("ckpt.safetensors"));
  }
  const auto f = SafeTensorsFile::open(dir.file("ckpt.safetensors"));
  CHECK(f.metadata().at("optimizer.optimizer") == "AdamW");
  CHECK(f.metadata().at("optimizer.num_params") == "3");
  CHECK(f.metadata().at("optimizer.2.name") == "c");
  CHECK(f.metadata().at("optimizer.weight_decay") == "0.050000000000000003");
  CHECK(f.info("optimizer.1.exp_avg").dtype == (std::is_same_v<T, double> ? DType::F64 : DType::F32));
  CHECK(f.load<std::int64_t>("optimizer.step").item() == 3);
  CHECK(f.load<std::int64_t>("optimizer.2.step").item() == 2);  // "c" had no gradient at step 1

  std::vector<std::vector<T>> values;
  for (const char* n : {"a", "b", "c"}) values.push_back(f.load<T>(n).to_vector());
  auto params = prob.make_params(values);
  AdamWConfig other;  // deliberately different: load_state restores the saved config
  AdamW<T> resumed(params, other);
  resumed.load_state(f, "optimizer.");
  CHECK(resumed.step_count() == 3);
  CHECK(resumed.config().beta2 == prob.config.beta2);
  CHECK(resumed.config().weight_decay == prob.config.weight_decay);
  CHECK(resumed.lr() == prob.schedule.lr_at(2));
  prob.run(resumed, 3, 7);

  CHECK(resumed.step_count() == ref.step_count());
  for (std::size_t k = 0; k < params.size(); ++k) {
    CAPTURE(k);
    CHECK(bit_equal(params[k].value(), ref_params[k].value()));
    CHECK(bit_equal(resumed.exp_avg(k), ref.exp_avg(k)));
    CHECK(bit_equal(resumed.exp_avg_sq(k), ref.exp_avg_sq(k)));
  }
  // And the resume is not trivially equal: the parameters moved.
  CHECK(params[0].value().to_vector() != prob.init[0]);
}

TEST_CASE("AdamW::load_state rejects mismatched state, naming the parameter, and changes nothing") {
  ResumeProblem<double> prob(2);
  auto params = prob.make_params(prob.init);
  AdamW<double> opt(params, prob.config);
  prob.run(opt, 0, 2);
  SafeTensorsWriter w;
  opt.save_state(w, "opt.");
  const auto f = SafeTensorsFile::from_bytes(w.to_bytes(), "state.safetensors");

  // Wrong count.
  {
    auto fewer = prob.make_params(prob.init);
    fewer.pop_back();
    AdamW<double> o(fewer);
    const std::string e = test::error_of([&] { o.load_state(f, "opt."); });
    CHECK(e.find("holds state for 3 parameters under prefix 'opt.', this optimizer has 2") != std::string::npos);
  }
  // Wrong shape (b as (5) -> (1, 5)), with the optimizer left unchanged.
  {
    auto vals = prob.init;
    std::vector<Var<double>> ps = prob.make_params(vals);
    ps[1] = Var<double>(Tensor<double>::from_vector({1, 5}, vals[1]), true, "b");
    AdamW<double> o(ps, AdamWConfig{0.5});
    const std::string e = test::error_of([&] { o.load_state(f, "opt."); });
    CHECK(e.find("parameter 1 'b' has shape (1, 5) but its exp_avg in state.safetensors has shape (5)") !=
          std::string::npos);
    CHECK(o.lr() == 0.5);
    CHECK(o.step_count() == 0);
    CHECK(test::as_double(o.exp_avg(0)) == std::vector<double>(12, 0.0));
  }
  // Wrong name (parameters passed in another order).
  {
    auto ps = prob.make_params(prob.init);
    std::swap(ps[0], ps[2]);
    AdamW<double> o(ps);
    const std::string e = test::error_of([&] { o.load_state(f, "opt."); });
    CHECK(e.find("parameter 0 'c' is named 'a' in state.safetensors") != std::string::npos);
  }
  // Wrong prefix / no state.
  {
    AdamW<double> o(prob.make_params(prob.init));
    const std::string e = test::error_of([&] { o.load_state(f, "optimizer."); });
    CHECK(e.find("has no metadata 'optimizer.optimizer'") != std::string::npos);
  }
  // A matching optimizer loads fine.
  {
    AdamW<double> o(prob.make_params(prob.init));
    o.load_state(f, "opt.");
    CHECK(o.step_count() == 2);
    CHECK(bit_equal(o.exp_avg_sq(2), opt.exp_avg_sq(2)));
  }
}

// ---- LinearSchedule -------------------------------------------------------------------------------------------

TEST_CASE("LinearSchedule: warmup, peak, end, and transformers' formula") {
  const LinearSchedule s{1e-2, 3, 10};
  CHECK(s.lr_at(0) == 0.0);
  CHECK(s.lr_at(3) == 1e-2);  // peak at the end of warmup
  CHECK(s.lr_at(10) == 0.0);
  CHECK(s.lr_at(25) == 0.0);
  CHECK(s.lr_at(1) == doctest::Approx(1e-2 / 3));
  CHECK(s.lr_at(6) == doctest::Approx(1e-2 * 4 / 7));

  // The lambda of transformers.optimization.get_linear_schedule_with_warmup, times base_lr (LambdaLR).
  const auto transformers_lr = [](double base, std::int64_t warmup, std::int64_t total, std::int64_t step) {
    if (step < warmup)
      return base * (static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup)));
    return base * std::max(0.0, static_cast<double>(total - step) /
                                    static_cast<double>(std::max<std::int64_t>(1, total - warmup)));
  };
  for (const auto& [w, t] :
       std::vector<std::pair<std::int64_t, std::int64_t>>{{0, 1}, {0, 7}, {3, 10}, {10, 10}, {1, 2}}) {
    const LinearSchedule ls{5e-5, w, t};
    for (std::int64_t step = 0; step <= t + 2; ++step) CHECK(ls.lr_at(step) == transformers_lr(5e-5, w, t, step));
  }

  // The lrs torch's LambdaLR applied to updates 0, 1, ... (printed by tests/reference/optim_reference.py, see the
  // AdamW-vs-PyTorch test): exactly equal.
  const std::vector<double> torch_w3_t10 = {0,
                                            0.0033333333333333331,
                                            0.0066666666666666662,
                                            0.01,
                                            0.0085714285714285719,
                                            0.0071428571428571435,
                                            0.0057142857142857143,
                                            0.0042857142857142859,
                                            0.0028571428571428571,
                                            0.0014285714285714286,
                                            0,
                                            0};
  const std::vector<double> torch_w0_t4 = {0.01, 0.0074999999999999997, 0.0050000000000000001, 0.0025000000000000001, 0,
                                           0};
  for (std::size_t k = 0; k < torch_w3_t10.size(); ++k) CHECK(s.lr_at(static_cast<std::int64_t>(k)) == torch_w3_t10[k]);
  const LinearSchedule s0{1e-2, 0, 4};
  for (std::size_t k = 0; k < torch_w0_t4.size(); ++k) CHECK(s0.lr_at(static_cast<std::int64_t>(k)) == torch_w0_t4[k]);
}

TEST_CASE("LinearSchedule validation") {
  CHECK(test::error_of([] {
          LinearSchedule{1e-3, 0, 0}.lr_at(0);
        }).find("total_steps=0 must be >= 1") != std::string::npos);
  CHECK(test::error_of([] {
          LinearSchedule{1e-3, 11, 10}.lr_at(0);
        }).find("warmup_steps=11 must lie in [0, total_steps=10]") != std::string::npos);
  CHECK(test::error_of([] { LinearSchedule{1e-3, -1, 10}.lr_at(0); }).find("warmup_steps=-1") != std::string::npos);
  CHECK(test::error_of([] { LinearSchedule{-1e-3, 1, 10}.lr_at(0); }).find("base_lr=-0.001") != std::string::npos);
  CHECK(test::error_of([] { LinearSchedule{1e-3, 1, 10}.lr_at(-1); }).find("step -1 is negative") != std::string::npos);
}

// ---- Gradient clipping ----------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("clip_grad_norm: global norm, no-op below max_norm, scaling above", T, float, double) {
  auto a = make_param<T>({2}, {0, 0}, "a");
  auto b = make_param<T>({1}, {0}, "b");
  auto c = make_param<T>({3}, {0, 0, 0}, "c");  // no gradient: skipped
  const std::vector<Var<T>> params = {a, b, c};
  set_grad(a, {3, 4});
  set_grad(b, {-12});
  CHECK(global_grad_norm(params) == 13.0);  // sqrt(9 + 16 + 144)
  CHECK(global_grad_norm(std::vector<Var<T>>{}) == 0.0);

  // Below: nothing changes, bit for bit.
  CHECK(clip_grad_norm(params, 26.0) == 13.0);
  CHECK(test::as_double(a.grad()) == std::vector<double>{3, 4});
  CHECK(test::as_double(b.grad()) == std::vector<double>{-12});
  CHECK_FALSE(c.grad().defined());

  // Above: scaled by max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_.
  CHECK(clip_grad_norm(params, 6.5) == 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad()(0) == static_cast<T>(3 * static_cast<T>(coef)));
  CHECK(a.grad()(1) == static_cast<T>(4 * static_cast<T>(coef)));
  CHECK(b.grad()(0) == static_cast<T>(-12 * static_cast<T>(coef)));
  CHECK(global_grad_norm(params) == doctest::Approx(6.5).epsilon(1e-6));
  CHECK_FALSE(c.grad().defined());

  // A larger random case against a hand-written double sum (the OpenMP reduction path).
  Rng rng(3);
  auto big = make_param<T>({300, 200}, std::vector<double>(60000, 0.0), "big");
  const auto gv = random_values<T>(60000, rng);
  set_grad(big, gv);
  double ss = 0;
  for (double x : gv) ss += x * x;
  for (double x : test::as_double(a.grad())) ss += x * x;
  CHECK(global_grad_norm(std::vector<Var<T>>{big, a}) == doctest::Approx(std::sqrt(ss)).epsilon(1e-12));
}

TEST_CASE_TEMPLATE("clip_grad_norm leaves non-finite gradients untouched and returns the norm", T, float, double) {
  auto a = make_param<T>({2}, {0, 0}, "a");
  set_grad(a, {1, std::numeric_limits<double>::infinity()});
  CHECK(std::isinf(clip_grad_norm(std::vector<Var<T>>{a}, 1.0)));
  CHECK(std::isinf(static_cast<double>(a.grad()(1))));
  CHECK(a.grad()(0) == T(1));
  set_grad(a, {1, std::nan("")});
  CHECK(std::isnan(clip_grad_norm(std::vector<Var<T>>{a}, 1.0)));
  CHECK(a.grad()(0) == T(1));
  CHECK(test::error_of([&] { clip_grad_norm(std::vector<Var<T>>{a}, 0.0); }).find("max_norm=0 must be > 0") !=
        std::string::npos);
  set_grad(a, {3, 4});
  CHECK(clip_grad_norm(std::vector<Var<T>>{a}, std::numeric_limits<double>::infinity()) == 5.0);
  CHECK(a.grad()(1) == T(4));
}
