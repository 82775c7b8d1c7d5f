// One batch's embedding lookup into a task-local table, fused with the mean over
// each sequence field's first `length` ids: the user fields (static, then the
// pooled sequence fields) and the ad fields, forward and backward, on the CPU.
// metaheac/fused_lookup.py builds it and says when it is used.
#include <algorithm>
#include <vector>

#include "cpu_threads.h"
#include "paddle/extension.h"

namespace {

// An AVX2 copy of each loop for the CPUs that have it, picked when the library loads.
#define CLONED __attribute__((target_clones("arch=haswell", "default")))

struct Batch {
  const int64_t* static_ids;    // batch x n_static
  const int64_t* sequence_ids;  // batch x sequence_columns, the fields side by side
  const int64_t* lengths;       // batch x widths.size()
  const int64_t* ad_ids;        // batch x n_ad
  int64_t batch, n_static, sequence_columns, n_ad, dim;
  std::vector<int64_t> widths;  // each sequence field's columns

  int64_t user_fields() const { return n_static + static_cast<int64_t>(widths.size()); }
};

Batch batch_of(const paddle::Tensor& table, const paddle::Tensor& static_ids,
               const paddle::Tensor& sequence_ids, const paddle::Tensor& lengths,
               const paddle::Tensor& ad_ids, const std::vector<int64_t>& widths) {
  return {static_ids.data<int64_t>(), sequence_ids.data<int64_t>(), lengths.data<int64_t>(),
          ad_ids.data<int64_t>(),     static_ids.shape()[0],        static_ids.shape()[1],
          sequence_ids.shape()[1],    ad_ids.shape()[1],            table.shape()[1],
          widths};
}

// A sequence field's mean divides by its length, at least 1, and reads at most its width.
inline float mean_scale(int64_t length) {
  return 1.0f / static_cast<float>(std::max<int64_t>(length, 1));
}

// Batch rows [first, last).
CLONED void embed_rows(const Batch& b, const float* table, float* user, float* ad,
                       int64_t first, int64_t last) {
  const int64_t d = b.dim;
  for (int64_t r = first; r < last; ++r) {
    float* out = user + r * b.user_fields() * d;
    for (int64_t i = 0; i < b.n_static; ++i)
      std::copy_n(table + b.static_ids[r * b.n_static + i] * d, d, out + i * d);
    out += b.n_static * d;
    const int64_t* ids = b.sequence_ids + r * b.sequence_columns;
    for (size_t f = 0; f < b.widths.size(); ++f) {
      float* mean = out + f * d;
      std::fill_n(mean, d, 0.0f);
      const int64_t length = b.lengths[r * b.widths.size() + f];
      for (int64_t p = 0; p < std::min(length, b.widths[f]); ++p) {
        const float* row = table + ids[p] * d;
        for (int64_t k = 0; k < d; ++k) mean[k] += row[k];
      }
      const float scale = mean_scale(length);
      for (int64_t k = 0; k < d; ++k) mean[k] *= scale;
      ids += b.widths[f];
    }
    for (int64_t i = 0; i < b.n_ad; ++i)
      std::copy_n(table + b.ad_ids[r * b.n_ad + i] * d, d, ad + (r * b.n_ad + i) * d);
  }
}

// Zeroes table rows [lo, hi) of the gradient and adds into them every looked-up row's
// gradient that falls there: threads given disjoint ranges never write one row.
CLONED void add_row_grads(const Batch& b, const float* grad_user, const float* grad_ad,
                          float* grad_table, int64_t lo, int64_t hi) {
  const int64_t d = b.dim;
  std::fill(grad_table + lo * d, grad_table + hi * d, 0.0f);
  auto add = [&](int64_t id, const float* from, float scale) {
    if (id < lo || id >= hi) return;
    float* row = grad_table + id * d;
    for (int64_t k = 0; k < d; ++k) row[k] += scale * from[k];
  };
  for (int64_t r = 0; r < b.batch; ++r) {
    const float* in = grad_user + r * b.user_fields() * d;
    for (int64_t i = 0; i < b.n_static; ++i)
      add(b.static_ids[r * b.n_static + i], in + i * d, 1.0f);
    in += b.n_static * d;
    const int64_t* ids = b.sequence_ids + r * b.sequence_columns;
    for (size_t f = 0; f < b.widths.size(); ++f) {
      const int64_t length = b.lengths[r * b.widths.size() + f];
      const float scale = mean_scale(length);
      for (int64_t p = 0; p < std::min(length, b.widths[f]); ++p) add(ids[p], in + f * d, scale);
      ids += b.widths[f];
    }
    for (int64_t i = 0; i < b.n_ad; ++i)
      add(b.ad_ids[r * b.n_ad + i], grad_ad + (r * b.n_ad + i) * d, 1.0f);
  }
}

// Adds row i of `local` into row rows[i] of `grad`, for i < count.
CLONED void add_rows_into(const float* local, float* grad, const int64_t* rows, int64_t count,
                          int64_t dim) {
  for (int64_t i = 0; i < count; ++i) {
    const float* from = local + i * dim;
    float* to = grad + rows[i] * dim;
    for (int64_t k = 0; k < dim; ++k) to[k] += from[k];
  }
}

void check_ids(const paddle::Tensor& ids, int64_t rows, const char* what, const char* table) {
  const int64_t* id = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    PD_CHECK(id[i] >= 0 && id[i] < rows, "fused lookup: a ", what, " id is ", id[i],
             ", outside ", table, "'s ", rows, " rows");
}

}  // namespace

std::vector<paddle::Tensor> FusedLookup(const paddle::Tensor& table,
                                        const paddle::Tensor& static_ids,
                                        const paddle::Tensor& sequence_ids,
                                        const paddle::Tensor& lengths,
                                        const paddle::Tensor& ad_ids,
                                        const std::vector<int64_t>& widths, int64_t threads) {
  const int64_t rows = table.shape()[0];
  check_ids(static_ids, rows, "static", "the local table");
  check_ids(sequence_ids, rows, "sequence", "the local table");
  check_ids(ad_ids, rows, "ad", "the local table");
  const Batch b = batch_of(table, static_ids, sequence_ids, lengths, ad_ids, widths);
  auto user = paddle::empty({b.batch, b.user_fields(), b.dim}, table.dtype(), table.place());
  auto ad = paddle::empty({b.batch, b.n_ad, b.dim}, table.dtype(), table.place());
  split_over_threads(b.batch, threads, 1, [&](int64_t first, int64_t last) {
    embed_rows(b, table.data<float>(), user.data<float>(), ad.data<float>(), first, last);
  });
  return {user, ad};
}

std::vector<paddle::Tensor> FusedLookupGrad(const paddle::Tensor& table,
                                            const paddle::Tensor& static_ids,
                                            const paddle::Tensor& sequence_ids,
                                            const paddle::Tensor& lengths,
                                            const paddle::Tensor& ad_ids,
                                            const paddle::Tensor& grad_user,
                                            const paddle::Tensor& grad_ad,
                                            const std::vector<int64_t>& widths,
                                            int64_t threads) {
  const Batch b = batch_of(table, static_ids, sequence_ids, lengths, ad_ids, widths);
  auto grad_table = paddle::empty({table.shape()[0], b.dim}, table.dtype(), table.place());
  split_over_threads(table.shape()[0], threads, 1, [&](int64_t lo, int64_t hi) {
    add_row_grads(b, grad_user.data<float>(), grad_ad.data<float>(), grad_table.data<float>(),
                  lo, hi);
  });
  return {grad_table};
}

std::vector<std::vector<int64_t>> FusedLookupShape(
    const std::vector<int64_t>& table, const std::vector<int64_t>& static_ids,
    const std::vector<int64_t>& sequence_ids, const std::vector<int64_t>& lengths,
    const std::vector<int64_t>& ad_ids, const std::vector<int64_t>& widths, int64_t) {
  const int64_t user_fields = static_ids[1] + static_cast<int64_t>(widths.size());
  return {{static_ids[0], user_fields, table[1]}, {ad_ids[0], ad_ids[1], table[1]}};
}

std::vector<paddle::DataType> FusedLookupDtype(paddle::DataType table, paddle::DataType,
                                               paddle::DataType, paddle::DataType,
                                               paddle::DataType) {
  return {table, table};
}

PD_BUILD_OP(metaheac_fused_lookup)
    .Inputs({"Table", "StaticIds", "SequenceIds", "Lengths", "AdIds"})
    .Outputs({"User", "Ad"})
    .Attrs({"widths: std::vector<int64_t>", "threads: int64_t"})
    .SetKernelFn(PD_KERNEL(FusedLookup))
    .SetInferShapeFn(PD_INFER_SHAPE(FusedLookupShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FusedLookupDtype));

PD_BUILD_GRAD_OP(metaheac_fused_lookup)
    .Inputs({"Table", "StaticIds", "SequenceIds", "Lengths", "AdIds", paddle::Grad("User"),
             paddle::Grad("Ad")})
    .Outputs({paddle::Grad("Table")})
    .Attrs({"widths: std::vector<int64_t>", "threads: int64_t"})
    .SetKernelFn(PD_KERNEL(FusedLookupGrad));

// The backward of gathering a task-local table: each table's block of the local table's
// gradient added into that table's gradient, at the rows it was gathered from (a table's
// rows are distinct; one table may stand in the list more than once).
void AddRows(std::vector<paddle::Tensor>& table_grads, const paddle::Tensor& local_grad,
             const std::vector<paddle::Tensor>& rows) {
  PD_CHECK(table_grads.size() == rows.size(), "add rows: one row list per table");
  int64_t offset = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    check_ids(rows[k], table_grads[k].shape()[0], "row", "a full table");
    offset += rows[k].numel();
  }
  PD_CHECK(offset == local_grad.shape()[0], "add rows: ", offset, " rows of tables, but ",
           local_grad.shape()[0], " in the local table");
  const int64_t dim = local_grad.shape()[1];
  offset = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    add_rows_into(local_grad.data<float>() + offset * dim, table_grads[k].data<float>(),
                  rows[k].data<int64_t>(), rows[k].numel(), dim);
    offset += rows[k].numel();
  }
}

PD_BUILD_OP(metaheac_add_rows)
    .Inputs({paddle::Vec("TableGrads"), "LocalGrad", paddle::Vec("Rows")})
    .Outputs({paddle::Vec("TableGradsOut")})
    .SetInplaceMap({{paddle::Vec("TableGrads"), paddle::Vec("TableGradsOut")}})
    .SetKernelFn(PD_KERNEL(AddRows));
