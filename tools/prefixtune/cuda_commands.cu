// SPDX-License-Identifier: MIT
// The CLI's model commands on the GPU: the same templates as on the CPU, instantiated on Cuda by nvcc.
#include <prefixtune/cuda.cuh>

#include "bart_commands.hpp"
#include "cuda_commands.hpp"

namespace prefixtune_cli {

int cmd_score_cuda(const std::string& model_dir, const std::string& prefix_path, const std::string& data,
                   std::int64_t batch_size, const std::string& instruction) {
  return cmd_score<Cuda>(model_dir, prefix_path, data, batch_size, instruction);
}

int cmd_train_cuda(const TrainOptions& options) { return cmd_train<Cuda>(options); }

int cmd_generate_cuda(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                      std::int64_t batch_size, const std::string& instruction) {
  return cmd_generate<Cuda>(model_dir, prefix_path, cfg, batch_size, instruction);
}

int cmd_train_bart_cuda(const TrainOptions& options) { return cmd_train_bart<Cuda>(options); }

int cmd_generate_bart_cuda(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                           std::int64_t batch_size) {
  return cmd_generate_bart<Cuda>(model_dir, prefix_path, cfg, batch_size);
}

}  // namespace prefixtune_cli
