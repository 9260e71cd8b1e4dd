// SPDX-License-Identifier: MIT
// `--device cuda` of the CLI: the CUDA instantiations of the model commands live in cuda_commands.cu (compiled by nvcc
// when the build has PREFIXTUNE_ENABLE_CUDA); without it they fail with a clear message.
#pragma once

#include <cstdint>
#include <string>

#include "commands.hpp"

namespace prefixtune_cli {

#if defined(PREFIXTUNE_CLI_WITH_CUDA)
int cmd_score_cuda(const std::string& model_dir, const std::string& prefix_path, const std::string& data,
                   std::int64_t batch_size, const std::string& instruction);
int cmd_train_cuda(const TrainOptions& options);
int cmd_generate_cuda(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                      std::int64_t batch_size, const std::string& instruction);
int cmd_train_bart_cuda(const TrainOptions& options);
int cmd_generate_bart_cuda(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                           std::int64_t batch_size);
#else
[[noreturn]] inline void no_cuda() {
  PREFIXTUNE_FAIL(
      "--device cuda: this prefixtune was built without CUDA (configure with -DPREFIXTUNE_ENABLE_CUDA=ON "
      "and the CUDA toolkit)");
}
template <class... Args>
int cmd_score_cuda(const Args&...) {
  no_cuda();
}
template <class... Args>
int cmd_train_cuda(const Args&...) {
  no_cuda();
}
template <class... Args>
int cmd_generate_cuda(const Args&...) {
  no_cuda();
}
template <class... Args>
int cmd_train_bart_cuda(const Args&...) {
  no_cuda();
}
template <class... Args>
int cmd_generate_bart_cuda(const Args&...) {
  no_cuda();
}
#endif

}  // namespace prefixtune_cli
