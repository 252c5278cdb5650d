/* `nabla ops`: the op table, straight from the library. */
#include <stdio.h>
#include <string.h>

#include "nabla/nabla.h"

int nabla_cmd_ops(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: nabla ops\n\nPrints one row per op: its fusion class and whether it has a\n"
           "forward (cpu, cuda) and a backward. Composite ops are built from others.\n");
    return 0;
  }
  nb_backend *cpu = NULL;
  if (nb_backend_new("cpu", &cpu)) {
    fprintf(stderr, "nabla ops: %s\n", nb_last_error());
    return 1;
  }
  printf("%-24s %-12s %-8s %-8s %-5s %-5s\n", "op", "class", "forward", "backward", "cpu", "cuda");
  int n = nb_op_count();
  for (int i = 0; i < n; i++) {
    nb_op_info info = nb_op_get_info(i);
    int leaf = !strcmp(info.fusion, "leaf");
    int cpu_ok = leaf || info.composite || !strcmp(info.fusion, "view") ||
                 nb_backend_supports_op(cpu, info.name);
    /* nabla's CUDA backend, also in a build without it (see backend.h);
     * composites are built from ops that both backends run */
    int cuda_ok = info.composite || nb_backend_kind_supports_op("cuda", info.name);
    printf("%-24s %-12s %-8s %-8s %-5s %-5s\n", info.name, info.fusion, "yes",
           info.has_backward || leaf ? "yes" : "no", cpu_ok ? "yes" : "no", cuda_ok ? "yes" : "no");
  }
  nb_backend_free(cpu);
  return 0;
}
