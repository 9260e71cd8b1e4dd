// SPDX-License-Identifier: MIT
// AdamW (torch.optim.AdamW: decoupled weight decay) over a list of trainable Vars, with its state saved to and
// restored from safetensors so that an interrupted run resumes bit-identically.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/ops/optimizer.hpp"

namespace prefixtune {

/// Hyper-parameters of AdamW; the defaults are PyTorch's except weight_decay (0 here, 1e-2 there).
struct AdamWConfig {
  double lr = 5e-5, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;

  /// Throws Error unless lr >= 0, 0 <= beta1, beta2 < 1, eps >= 0 and weight_decay >= 0 (all finite).
  void validate() const {
    PREFIXTUNE_CHECK(std::isfinite(lr) && lr >= 0.0, "AdamW: invalid learning rate lr=", lr, " (must be >= 0)");
    PREFIXTUNE_CHECK(beta1 >= 0.0 && beta1 < 1.0, "AdamW: invalid beta1=", beta1, " (must be in [0, 1))");
    PREFIXTUNE_CHECK(beta2 >= 0.0 && beta2 < 1.0, "AdamW: invalid beta2=", beta2, " (must be in [0, 1))");
    PREFIXTUNE_CHECK(std::isfinite(eps) && eps >= 0.0, "AdamW: invalid eps=", eps, " (must be >= 0)");
    PREFIXTUNE_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0, "AdamW: invalid weight_decay=", weight_decay,
                     " (must be >= 0)");
  }
};

namespace detail {

/// "parameter 2 'prefix.w1'": how optimizer messages name a parameter.
template <class T, class Device>
std::string describe_parameter(std::size_t index, const Var<T, Device>& p) {
  return str_cat("parameter ", index, " '", p.name(), "'");
}

/// x with 17 significant digits: parses back (std::strtod) to the same double.
inline std::string exact_double_string(double x) {
  std::ostringstream os;
  os.precision(17);
  os << x;
  return os.str();
}

}  // namespace detail

/// torch.optim.AdamW (amsgrad=False, maximize=False, foreach=False), step by step: for every parameter p whose
/// gradient g is defined, with its own step count t (incremented first),
///   p *= 1 - lr * weight_decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
///   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
/// Parameters with an undefined gradient are skipped (their m, v and t stay as they are), like PyTorch's
/// `p.grad is None`. The scalars are computed in double (Python's float math) and rounded to T once; the element
/// math runs in T with torch's operations, roundings and fused multiply-adds (detail::AdamWStep), so float and
/// double results are bit-identical to torch 1.13's on its AVX2 CPU kernels (tests/train/test_optim.cpp).
template <class T, class Device = Cpu>
class AdamW {
 public:
  /// Takes the parameters (copies of the Vars share their nodes: step() updates the caller's parameters).
  /// Each must be defined, require grad and appear once; m and v start at zero.
  explicit AdamW(std::vector<Var<T, Device>> params, AdamWConfig config = {})
      : params_(std::move(params)), config_(config) {
    config_.validate();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Var<T, Device>& p = params_[i];
      PREFIXTUNE_CHECK(p.defined(), "AdamW: parameter ", i, " is an undefined Var");
      PREFIXTUNE_CHECK(p.requires_grad(), "AdamW: ", detail::describe_parameter(i, p),
                       " does not require grad (a frozen tensor cannot be optimized)");
      for (std::size_t j = 0; j < i; ++j)
        PREFIXTUNE_CHECK(!params_[j].same_node(p), "AdamW: ", detail::describe_parameter(i, p), " is the same Var as ",
                         detail::describe_parameter(j, params_[j]), " (duplicate parameters)");
      exp_avg_.push_back(Tensor<T, Device>::zeros(p.shape()));
      exp_avg_sq_.push_back(Tensor<T, Device>::zeros(p.shape()));
    }
    param_steps_.assign(params_.size(), 0);
  }

  /// One update of every parameter that has a gradient (see the class comment).
  void step() {
    ++step_count_;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Var<T, Device>& p = params_[i];
      const Tensor<T, Device>& g = p.grad();
      if (!g.defined()) continue;
      PREFIXTUNE_CHECK(g.shape() == p.shape(), "AdamW: ", detail::describe_parameter(i, p), " has gradient shape ",
                       g.shape(), " but value shape ", p.shape());
      const std::int64_t t = ++param_steps_[i];
      const double bias_correction1 = 1.0 - std::pow(config_.beta1, static_cast<double>(t));
      const double bias_correction2 = 1.0 - std::pow(config_.beta2, static_cast<double>(t));
      const detail::AdamWScalars s{1.0 - config_.lr * config_.weight_decay,
                                   config_.beta1,
                                   config_.beta2,
                                   config_.lr / bias_correction1,
                                   std::sqrt(bias_correction2),
                                   config_.eps};
      Tensor<T, Device> value = p.value();  // a handle: the update writes the parameter's storage
      adamw_step(value, g, exp_avg_[i], exp_avg_sq_[i], s);
    }
  }

  /// Sets every parameter's gradient to zero (the buffers are kept).
  void zero_grad() const { prefixtune::zero_grad(params_); }

  /// Changes the learning rate used by the next step() (what an LR schedule calls before each step).
  void set_lr(double lr) {
    PREFIXTUNE_CHECK(std::isfinite(lr) && lr >= 0.0, "AdamW: invalid learning rate lr=", lr, " (must be >= 0)");
    config_.lr = lr;
  }
  double lr() const { return config_.lr; }
  const AdamWConfig& config() const { return config_; }
  /// Number of step() calls so far (restored by load_state).
  std::int64_t step_count() const { return step_count_; }
  const std::vector<Var<T, Device>>& parameters() const { return params_; }
  /// First and second moment estimates of parameter i (shaped like it).
  const Tensor<T, Device>& exp_avg(std::size_t i) const { return exp_avg_.at(i); }
  const Tensor<T, Device>& exp_avg_sq(std::size_t i) const { return exp_avg_sq_.at(i); }

  /// Adds a snapshot (copies) of the state to w, every key starting with prefix (e.g. "optimizer."):
  /// tensors `<prefix>step` (I64 [1], step_count()), and per parameter i `<prefix><i>.exp_avg`,
  /// `<prefix><i>.exp_avg_sq` (F32 for float, F64 for double: exact) and `<prefix><i>.step` (I64 [1]);
  /// metadata `<prefix>optimizer` = "AdamW", `<prefix>num_params`, `<prefix><i>.name` and the config
  /// (`<prefix>lr`, `beta1`, `beta2`, `eps`, `weight_decay`, 17 significant digits).
  void save_state(SafeTensorsWriter& w, const std::string& prefix) const {
    constexpr DType dtype = std::is_same_v<T, double> ? DType::F64 : DType::F32;
    w.add(prefix + "step", Tensor<std::int64_t>::from_vector({1}, {step_count_}));
    w.add_metadata(prefix + "optimizer", "AdamW");
    w.add_metadata(prefix + "num_params", std::to_string(params_.size()));
    for (const auto& [key, value] : config_fields(config_)) w.add_metadata(prefix + key, value);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::string key = prefix + std::to_string(i) + ".";
      w.add(key + "exp_avg", exp_avg_[i].template to<Cpu>(), dtype);
      w.add(key + "exp_avg_sq", exp_avg_sq_[i].template to<Cpu>(), dtype);
      w.add(key + "step", Tensor<std::int64_t>::from_vector({1}, {param_steps_[i]}));
      w.add_metadata(key + "name", params_[i].name());
    }
  }

  /// Restores what save_state wrote under prefix: moments, step counts and the config (lr included, as
  /// PyTorch's load_state_dict does; call set_lr afterwards to override it). Throws Error, leaving this optimizer
  /// unchanged, when the state is absent, holds another number of parameters, or a parameter's name or shape
  /// differs (the message names the parameter). Moments saved as F32 load into double (and vice versa, rounded);
  /// a bit-identical resume needs the same T.
  void load_state(const SafeTensorsFile& f, const std::string& prefix) {
    const auto& meta = f.metadata();
    const auto get = [&](const std::string& key) -> const std::string& {
      const auto it = meta.find(prefix + key);
      PREFIXTUNE_CHECK(it != meta.end(), "AdamW::load_state: ", f.path(), " has no metadata '", prefix, key,
                       "' (no AdamW state saved under prefix '", prefix, "'?)");
      return it->second;
    };
    PREFIXTUNE_CHECK(get("optimizer") == "AdamW", "AdamW::load_state: ", f.path(), " holds '", get("optimizer"),
                     "' state under prefix '", prefix, "', not AdamW");
    const std::string count = get("num_params");  // a copy (g++ 13 -Wdangling-reference)
    PREFIXTUNE_CHECK(count == std::to_string(params_.size()), "AdamW::load_state: ", f.path(), " holds state for ",
                     count, " parameters under prefix '", prefix, "', this optimizer has ", params_.size());
    AdamWConfig config;
    double* const fields[] = {&config.lr, &config.beta1, &config.beta2, &config.eps, &config.weight_decay};
    const auto names = config_fields(config_);
    for (std::size_t k = 0; k < names.size(); ++k)
      *fields[k] = parse_double(f, prefix + names[k].first, get(names[k].first));
    config.validate();

    const std::int64_t step_count = load_step(f, prefix + "step");
    std::vector<Tensor<T, Device>> m(params_.size()), v(params_.size());
    std::vector<std::int64_t> steps(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Var<T, Device>& p = params_[i];
      const std::string key = prefix + std::to_string(i) + ".";
      const std::string saved_name = get(std::to_string(i) + ".name");  // a copy (g++ 13 -Wdangling-reference)
      PREFIXTUNE_CHECK(saved_name == p.name(), "AdamW::load_state: ", detail::describe_parameter(i, p), " is named '",
                       saved_name, "' in ", f.path());
      const auto load_moment = [&](const std::string& which) {
        const std::string name = key + which;  // named: no reference into a call on a temporary (g++ 13)
        const TensorInfo& info = f.info(name);
        PREFIXTUNE_CHECK(info.shape == std::vector<std::int64_t>(p.shape().begin(), p.shape().end()),
                         "AdamW::load_state: ", detail::describe_parameter(i, p), " has shape ", p.shape(), " but its ",
                         which, " in ", f.path(), " has shape ", detail::dims_to_string(info.shape));
        Tensor<T, Device> t(p.shape());
        t.copy_from(f.load<T>(key + which));
        return t;
      };
      m[i] = load_moment("exp_avg");
      v[i] = load_moment("exp_avg_sq");
      steps[i] = load_step(f, key + "step");
      PREFIXTUNE_CHECK(steps[i] <= step_count, "AdamW::load_state: ", detail::describe_parameter(i, p), " has ",
                       steps[i], " steps in ", f.path(), ", more than the optimizer's ", step_count);
    }
    config_ = config;
    step_count_ = step_count;
    exp_avg_ = std::move(m);
    exp_avg_sq_ = std::move(v);
    param_steps_ = std::move(steps);
  }

 private:
  static std::vector<std::pair<std::string, std::string>> config_fields(const AdamWConfig& c) {
    return {{"lr", detail::exact_double_string(c.lr)},
            {"beta1", detail::exact_double_string(c.beta1)},
            {"beta2", detail::exact_double_string(c.beta2)},
            {"eps", detail::exact_double_string(c.eps)},
            {"weight_decay", detail::exact_double_string(c.weight_decay)}};
  }

  static double parse_double(const SafeTensorsFile& f, const std::string& key, const std::string& text) {
    char* end = nullptr;
    const double x = std::strtod(text.c_str(), &end);
    PREFIXTUNE_CHECK(!text.empty() && end == text.c_str() + text.size(), "AdamW::load_state: metadata '", key, "' in ",
                     f.path(), " is not a number: '", text, "'");
    return x;
  }

  static std::int64_t load_step(const SafeTensorsFile& f, const std::string& key) {
    const TensorInfo& info = f.info(key);
    PREFIXTUNE_CHECK(info.numel() == 1 && !dtype_is_floating(info.dtype), "AdamW::load_state: '", key, "' in ",
                     f.path(), " is not one integer (", dtype_name(info.dtype), " ", detail::dims_to_string(info.shape),
                     ")");
    const std::int64_t s = f.load<std::int64_t>(key).item();
    PREFIXTUNE_CHECK(s >= 0, "AdamW::load_state: '", key, "' in ", f.path(), " is negative (", s, ")");
    return s;
  }

  std::vector<Var<T, Device>> params_;
  AdamWConfig config_;
  std::vector<Tensor<T, Device>> exp_avg_, exp_avg_sq_;
  std::vector<std::int64_t> param_steps_;  // per parameter, as PyTorch's state[p]["step"]
  std::int64_t step_count_ = 0;
};

}  // namespace prefixtune
