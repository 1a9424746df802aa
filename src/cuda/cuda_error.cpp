#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"

namespace flashmin::cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err) + " (" + expr +
                           " at " + file + ":" + std::to_string(line) + ")");
}

}  // namespace flashmin::cuda
