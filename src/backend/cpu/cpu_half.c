/* Half-precision operands (bf16, f16) of matmul and the convolutions on the
 * CPU: each half-precision input is widened to a dense f32 copy in the
 * workspace, and the f32 kernel runs on the copies. Widening is exact, and
 * the f32 kernels accumulate in f32, so the result is what a GPU's
 * half-precision GEMM with f32 accumulation computes, up to summation
 * order. It is correct, not fast: OpenBLAS has no bf16 GEMM we can rely
 * on, and a mixed-precision run belongs on a GPU. The path exists so that
 * autocast graphs (graph.h, nb_graph_set_autocast) run and are tested end
 * to end on any machine. */
#include <string.h>

#include "cpu_internal.h"

/* The f32 kernels this file wraps, copied at registration. */
static nb_cpu_kernel_entry base[NB_OP_COUNT];

static const nb_opcode wrapped[] = {NB_OP_MATMUL, NB_OP_CONV2D, NB_OP_CONV2D_BWD_INPUT,
                                    NB_OP_CONV2D_BWD_WEIGHT};
#define N_WRAPPED ((int)(sizeof wrapped / sizeof wrapped[0]))
#define MAX_IN    2 /* matmul and the convolutions take two operands */

int nb_cpu_has_half_input(const nb_tensor *node) {
  for (int i = 0; i < node->n_in; i++)
    if (node->in[i]->dtype == NB_BF16 || node->in[i]->dtype == NB_F16) return 1;
  return 0;
}

static size_t round64(size_t n) { return (n + 63u) & ~(size_t)63u; }

/* f32 copies of the half inputs first, then the wrapped kernel's own. */
static size_t copies_bytes(const nb_tensor *node) {
  size_t n = 0;
  for (int i = 0; i < node->n_in; i++)
    if (node->in[i]->dtype == NB_BF16 || node->in[i]->dtype == NB_F16)
      n += round64((size_t)nb_tensor_numel(node->in[i]) * sizeof(float));
  return n;
}

static size_t half_workspace(const nb_tensor *node) {
  size_t inner = base[node->op].workspace ? base[node->op].workspace(node) : 0;
  return nb_cpu_has_half_input(node) ? copies_bytes(node) + inner : inner;
}

static nb_status run_half(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  const nb_cpu_kernel_entry *k = &base[node->op];
  if (!nb_cpu_has_half_input(node)) return k->run(c);
  const char *op = nb_op_def_get(node->op)->name;
  /* nb_cpu_has_half_input turns epilogues off for these nodes (cpu_backend.c) */
  if (c->group || node->n_in > MAX_IN || c->n_in != node->n_in)
    return nb_error(NB_ERR_INTERNAL, "%s: half-precision operands with an epilogue or %d inputs",
                    op, node->n_in);
  size_t need = copies_bytes(node);
  if (c->workspace_bytes < need)
    return nb_error(NB_ERR_INTERNAL, "%s: workspace of %zu bytes, half-precision operands need %zu",
                    op, c->workspace_bytes, need);
  /* The node as the f32 kernel sees it: same op, params and shapes, its
   * half inputs replaced by dense f32 tensors that live in the workspace. */
  nb_tensor wide[MAX_IN], *ins[MAX_IN], self = *node;
  void *ptrs[MAX_IN];
  unsigned char *ws = c->workspace;
  for (int i = 0; i < node->n_in; i++) {
    nb_tensor *x = node->in[i];
    ins[i] = x;
    ptrs[i] = c->in[i];
    if (x->dtype != NB_BF16 && x->dtype != NB_F16) continue;
    wide[i] = *x;
    wide[i].dtype = NB_F32;
    wide[i].base = NULL;
    wide[i].offset = 0;
    nb_set_contiguous_strides(&wide[i]);
    nb_status st = nb_cpu_strided_copy(x, c->in[i], ws, NB_F32);
    if (st) return st;
    ins[i] = &wide[i];
    ptrs[i] = ws;
    ws += round64((size_t)nb_tensor_numel(x) * sizeof(float));
  }
  self.in = ins;
  nb_kernel_call call = *c;
  call.node = &self;
  call.in = ptrs;
  call.workspace = c->workspace_bytes > need ? ws : NULL;
  call.workspace_bytes = c->workspace_bytes - need;
  return k->run(&call);
}

void nb_cpu_register_half(nb_cpu_kernel_entry *t) {
  for (int i = 0; i < N_WRAPPED; i++) {
    nb_opcode op = wrapped[i];
    base[op] = t[op];
    t[op].run = run_half;
    t[op].workspace = half_workspace;
  }
}
