/* The nabla command-line program. */
#include <stdio.h>
#include <string.h>

#include "nabla/nabla.h"

int nabla_cmd_ops(int argc, char **argv);
int nabla_cmd_summary(int argc, char **argv);
int nabla_cmd_train(int argc, char **argv);
int nabla_cmd_eval(int argc, char **argv);
int nabla_cmd_predict(int argc, char **argv);
int nabla_cmd_onnx_test(int argc, char **argv);
int nabla_cmd_export(int argc, char **argv);
int nabla_cmd_run(int argc, char **argv);
int nabla_cmd_bench(int argc, char **argv);
int nabla_cmd_lora(int argc, char **argv);
int nabla_cmd_generate(int argc, char **argv);
int nabla_cmd_tokenizer(int argc, char **argv);

static void usage(FILE *f) {
  fprintf(f, "usage: nabla COMMAND [ARGS]\n"
             "\n"
             "commands:\n"
             "  train      train a model file on its dataset (MNIST, CIFAR-10, text; mpirun)\n"
             "  eval       accuracy, report and confusion matrix of weights (text: val loss)\n"
             "  predict    classify images with trained weights or an ONNX model\n"
             "  generate   write text with a trained text model (KV cache, sampling)\n"
             "  bench      time a model's training step and inference (images/s, memory)\n"
             "  lora       merge LoRA adapters into base weights (lora merge)\n"
             "  tokenizer  train a byte-level BPE vocabulary on text; encode, decode\n"
             "  ops        print the op table (forward, backward, cpu, cuda)\n"
             "  run        run an ONNX model on .npy inputs, write its outputs as .npy\n"
             "  export     write a model file with trained weights as an ONNX model\n"
             "  onnx-test  run ONNX backend test cases (model.onnx + test_data_set_*)\n"
             "  summary    layers, shapes, parameters and training memory of a model file\n"
             "  --version  print the version, git commit and build options\n"
             "  --help     print this help\n");
}

static int version(void) {
  printf("nabla %s (commit %s)\n", NABLA_VERSION, NABLA_GIT_COMMIT);
  printf("build: %s, blas: %s, openmp: yes, cuda: %s, cudnn: %s, mpi: %s, sanitizers: %s\n",
         NABLA_BUILD_TYPE, NABLA_BLAS, NABLA_CUDA_BUILT ? "yes" : "no",
         NABLA_CUDNN_BUILT ? "yes" : "no", nb_dist_mpi_built() ? "yes" : "no",
         NABLA_SANITIZED ? "yes" : "no");
  if (NABLA_CUDA_BUILT) { /* NCCL is loaded at run time, not linked */
    char nccl[600];
    printf("nccl: %s\n", nb_dist_nccl_version(nccl, sizeof nccl)
                             ? "not found (only GPU data-parallel training needs it: docs/cuda.md)"
                             : nccl);
  }
  printf("threads: %d\n", nb_get_num_threads());
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) return version();
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "ops")) return nabla_cmd_ops(argc - 1, argv + 1);
  if (!strcmp(cmd, "summary")) return nabla_cmd_summary(argc - 1, argv + 1);
  if (!strcmp(cmd, "train")) return nabla_cmd_train(argc - 1, argv + 1);
  if (!strcmp(cmd, "eval")) return nabla_cmd_eval(argc - 1, argv + 1);
  if (!strcmp(cmd, "predict")) return nabla_cmd_predict(argc - 1, argv + 1);
  if (!strcmp(cmd, "bench")) return nabla_cmd_bench(argc - 1, argv + 1);
  if (!strcmp(cmd, "lora")) return nabla_cmd_lora(argc - 1, argv + 1);
  if (!strcmp(cmd, "generate")) return nabla_cmd_generate(argc - 1, argv + 1);
  if (!strcmp(cmd, "tokenizer")) return nabla_cmd_tokenizer(argc - 1, argv + 1);
  if (!strcmp(cmd, "onnx-test")) return nabla_cmd_onnx_test(argc - 1, argv + 1);
  if (!strcmp(cmd, "export")) return nabla_cmd_export(argc - 1, argv + 1);
  if (!strcmp(cmd, "run")) return nabla_cmd_run(argc - 1, argv + 1);
  fprintf(stderr, "nabla: unknown command '%s' (try nabla --help)\n", cmd);
  return 2;
}
