// FDE encoder: random tables built once per configuration, and a threaded batch driver.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace muvera {

struct FdeConfig {
  int dimension = 0;
  int num_repetitions = 1;
  int num_simhash_projections = 0;
  int32_t seed = 1;
  bool ams_sketch = false;          // false: identity projection
  int projection_dimension = 0;     // used with ams_sketch
  bool fill_empty_partitions = false;
  int64_t final_projection_dimension = 0;  // 0: no count-sketch
};

class FdeEncoder {
 public:
  explicit FdeEncoder(const FdeConfig& config);  // config must already be validated

  int64_t output_dimension() const { return view_.final_dim > 0 ? view_.final_dim : view_.fde_dim; }
  const FdeTablesView& tables() const { return view_; }

  // Encodes items into out (n_items x output_dimension). Returns -1 on success, else the index of
  // the first item found to hold NaN or Inf. Safe to call from several threads at once.
  int64_t encode(const ItemView* items, int64_t n_items, int dtype, bool is_document, float* out,
                 int num_threads, const KernelSet& kernels) const;

 private:
  FdeConfig config_;
  std::vector<float> gauss_;
  std::vector<int32_t> ams_col_;
  std::vector<float> ams_sign_;
  struct Schedule {
    std::vector<int32_t> unsort, group_steps;
    std::vector<int64_t> chunk_begin, steps;
  };
  Schedule schedules_[3];
  void build_schedule(int lanes, Schedule& out, AmsSchedule& view) const;
  std::vector<uint32_t> cs_index_;
  std::vector<float> cs_sign_;
  FdeTablesView view_{};
};

int default_num_threads();

}  // namespace muvera
