#include "prune.h"

#include <algorithm>

namespace muvera {

int64_t build_bags(const uint8_t* codes, int64_t width, const int64_t* offsets, int64_t begin, int64_t end,
                   int64_t k, std::vector<uint16_t>& ids, int64_t* lengths) {
  std::vector<int64_t> seen(static_cast<size_t>(k), -1);  // the last document each id was seen in
  for (int64_t doc = begin; doc < end; ++doc) {
    const size_t start = ids.size();
    for (int64_t t = offsets[doc]; t < offsets[doc + 1]; ++t) {
      const uint8_t* row = codes + t * width;
      const uint16_t id = static_cast<uint16_t>(row[0] | (row[1] << 8));
      if (id >= k) return doc;
      if (seen[id] != doc) {
        seen[id] = doc;
        ids.push_back(id);
      }
    }
    std::sort(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.end());  // ascending: the table is read in order
    lengths[doc - begin] = static_cast<int64_t>(ids.size() - start);
  }
  return -1;
}

}  // namespace muvera
