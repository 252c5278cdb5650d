/* CPU backend internals: the kernel table and helpers shared by kernels. */
#ifndef NB_CPU_INTERNAL_H
#define NB_CPU_INTERNAL_H

#include "../backend_internal.h"

typedef nb_status (*nb_cpu_kernel)(const nb_kernel_call *c);

typedef struct nb_cpu_kernel_entry {
  nb_cpu_kernel run;
  /* scratch bytes for a node; NULL = none */
  size_t (*workspace)(const nb_tensor *node);
  /* 1: run() applies call->group to its output when given one (epilogue) */
  int epilogue;
} nb_cpu_kernel_entry;

/* Epilogues (cpu_elementwise.c): with call->group set, an opaque kernel
 * writes its result into call->out and then runs the group over it, either
 * on each finished chunk [start, start + len) of elements, on the calling
 * thread (inside the kernel's own parallel loop), or over everything at the
 * end with nb_cpu_epilogue_all (parallel). */
nb_status nb_cpu_epilogue(const nb_kernel_call *c, int64_t start, int64_t len);
nb_status nb_cpu_epilogue_all(const nb_kernel_call *c);

/* Epilogues that kernels apply in registers (cpu_epilogue_match.c): 1 if
 * call->group is exactly that group, with *m filled in; 0 otherwise (the
 * kernel then runs the group through nb_cpu_epilogue). A channel-bias
 * match counts itself as applied (nb_cpu_note_fused_epilogue); callers of
 * the ReLU-gradient match note it when they apply it. */
typedef struct {
  const float *bias; /* out[n][k][...] = prod + bias[k * stride], then ReLU if relu */
  int64_t stride;
  int relu;
} nb_cpu_chan_bias;
int nb_cpu_match_chan_bias(const nb_kernel_call *c, nb_cpu_chan_bias *m);
typedef struct {
  const float *t; /* out[i] = prod[i] * (t[i] > s ? 1 : 0): ReLU's gradient */
  float s;
} nb_cpu_relu_grad;
int nb_cpu_match_relu_grad(const nb_kernel_call *c, nb_cpu_relu_grad *m);
/* Counts launches that applied a matched epilogue themselves (for tests). */
void nb_cpu_note_fused_epilogue(void);
int64_t nb_cpu_fused_epilogues(void);

/* Each kernel family fills its entries of the table (indexed by opcode). */
void nb_cpu_register_elementwise(nb_cpu_kernel_entry *t);
void nb_cpu_register_copy(nb_cpu_kernel_entry *t);
void nb_cpu_register_reduce(nb_cpu_kernel_entry *t);
void nb_cpu_register_matmul(nb_cpu_kernel_entry *t);
void nb_cpu_register_conv(nb_cpu_kernel_entry *t);
void nb_cpu_register_pool(nb_cpu_kernel_entry *t);
void nb_cpu_register_softmax(nb_cpu_kernel_entry *t);
void nb_cpu_register_movement(nb_cpu_kernel_entry *t);
void nb_cpu_register_attention(nb_cpu_kernel_entry *t);
void nb_cpu_register_dist(nb_cpu_kernel_entry *t);
void nb_cpu_register_decode(nb_cpu_kernel_entry *t);

/* Copies strided x (its data at src) densely into dst, converting to dst_dt
 * like nb_convert (cpu_copy.c). */
nb_status nb_cpu_strided_copy(const nb_tensor *x, const void *src, void *dst, nb_dtype dst_dt);

/* Half-precision operands (cpu_half.c): wraps the f32 kernels of matmul and
 * the convolutions, registered above, so that bf16/f16 operands are widened
 * to f32 in the workspace first. Registered last. */
void nb_cpu_register_half(nb_cpu_kernel_entry *t);
/* 1 if a node has a bf16/f16 input (its kernel then takes no epilogue). */
int nb_cpu_has_half_input(const nb_tensor *node);

/* The run-time position of a write_at / slice_at / attention_cached node:
 * `pos` (one i32 or i64 element) read from its data `p` (cpu_decode.c). */
nb_status nb_cpu_read_pos(const nb_tensor *node, const nb_tensor *pos, const void *p, int64_t *out);

/* Hot inner loops are compiled twice, for AVX2 and for the baseline x86-64
 * the build targets; the loader picks one at start-up (GNU ifunc). A Release
 * build stays portable and still gets 8-wide vectors where the CPU has them.
 * The clone is keyed on the AVX2 feature, not on "arch=haswell", which GCC
 * dispatches by CPU model and so never picks on AMD Zen. FMA is not enabled:
 * both versions round identically (C11 forbids contraction by default). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define NB_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NB_CPU_CLONES
#endif

/* Threads for our parallel loops (nb_set_num_threads, or the running
 * device's own count: cpu_device.c). */
int nb_cpu_threads(void);
/* cpu_device.c: this thread's device thread count (0 = none); applying a
 * device's count around a kernel (enter returns what leave restores); and
 * preparing a worker thread of a multi-device plan. */
int nb_cpu_thread_override(void);
int nb_cpu_scope_enter(const nb_backend *be);
void nb_cpu_scope_leave(int prev);
void nb_cpu_bind_thread(nb_backend *be, int share);
/* The most threads a kernel may be asked to use: the larger of the current
 * setting and the core count. Per-thread workspace is sized for this many. */
int nb_cpu_max_threads(void);

/* ---- direct convolution (cpu_conv_direct.c) ---------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NB_CPU_DIRECT_CONV 1
#else
#define NB_CPU_DIRECT_CONV 0
#endif

/* One convolution as the direct kernels see it (NCHW, grouped):
 * out[n][g*kg + k][p][q] = sum over c < cg, r, s of
 *   in[n][g*cg + c][p*sh + r*dh - ph][q*sw + s*dw - pw] * weight(g, k, c, r, s),
 * reads outside the input being 0. */
typedef struct nb_dconv {
  int64_t n, cin, h, w;   /* input */
  int64_t cout, p, q;     /* output */
  int64_t groups, cg, kg; /* input and output channels per group */
  int64_t r, s, sh, sw, ph, pw, dh, dw;
} nb_dconv;

/* 1 if this CPU runs the direct kernels (AVX2 and FMA). */
int nb_conv_direct_available(void);
size_t nb_conv_direct_fwd_workspace(const nb_dconv *d, int threads);
size_t nb_conv_direct_bwdw_workspace(const nb_dconv *d, int threads);
/* out = conv(in, w). flip = 0: w is [cout][cg][r][s]. flip = 1: this is the
 * input gradient of a stride-1 convolution with weights [groups * cg][kg][r][s]
 * (its output channels are our input channels), used rotated by 180 degrees.
 * epi: a call whose group runs on each finished chunk of out, or NULL. */
nb_status nb_conv_direct_fwd(const nb_dconv *d, const float *in, const float *w, int flip,
                             float *out, void *ws, size_t ws_bytes, const nb_kernel_call *epi);
/* Winograd F(2x2, 3x3) (cpu_conv_winograd.c), which nb_conv_direct_fwd
 * runs where it takes fewer operations (3x3, stride 1, undilated, enough
 * images; NABLA_CONV=direct turns it off). Same contract as
 * nb_conv_direct_fwd. */
int nb_conv_winograd_applies(const nb_dconv *d);
size_t nb_conv_winograd_workspace(const nb_dconv *d, int threads);
nb_status nb_conv_winograd_fwd(const nb_dconv *d, const float *in, const float *w, int flip,
                               float *out, void *ws, size_t ws_bytes, const nb_kernel_call *epi);
/* dw [cout][cg][r][s] = gradient of conv(in, w) given dy = dL/dout. */
nb_status nb_conv_direct_bwd_weight(const nb_dconv *d, const float *in, const float *dy, float *dw,
                                    void *ws, size_t ws_bytes);

/* Walks the elements of a strided tensor in row-major order: the element
 * offset (in elements) of linear index `i` of shape/stride. */
static inline int64_t nb_strided_offset(int ndim, const int64_t *shape, const int64_t *stride,
                                        int64_t i) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; d--) {
    int64_t n = shape[d];
    if (n > 1) {
      off += (i % n) * stride[d];
      i /= n;
    }
  }
  return off;
}

#endif
