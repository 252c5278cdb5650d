/* LoRA on the command line: the `nabla train` flags (--init-from,
 * --lora-rank, --lora-alpha, --lora-dropout, --lora-targets) and
 * `nabla lora merge`, in cmd_lora.c. */
#ifndef NABLA_CMD_LORA_H
#define NABLA_CMD_LORA_H

#include <stdio.h>

#include "nabla/nabla.h"

/* The LoRA flags of `nabla train`, as parsed (rank 0 = no LoRA). */
typedef struct nabla_lora_flags {
  int rank;
  float alpha; /* 0: the rank (scale 1) */
  float dropout;
  const char *targets;
  int given; /* some --lora-* flag was given */
} nabla_lora_flags;

/* Help lines for the flags, for `nabla train --help`. */
extern const char nabla_lora_train_usage[];

/* Parses one of the flags (`flag` with value `v`) into f: 1 if it was one
 * (*bad set when the value is not a number), 0 if not a LoRA flag. */
int nabla_lora_parse_flag(const char *flag, const char *v, nabla_lora_flags *f, int *bad);

/* Attaches the adapters the flags ask for to m (nothing without
 * --lora-rank) and reports them with the trainable parameter count on log. */
nb_status nabla_lora_setup(nb_model *m, const nabla_lora_flags *f, FILE *log);

/* A new state holding `weights` for m's network without adapters, for
 * `--init-from`: every variable of the network must be in the file
 * (adapters and optimizer moments in it are skipped). The adapters are
 * created later, when the training step is compiled on this state. */
nb_status nabla_init_state(nb_model *m, nb_backend *be, const char *weights, nb_state **st);

/* After training: OUT_DIR/lora.safetensors with the adapters when m has
 * them (path set, else path[0] = 0). */
nb_status nabla_lora_write(const nb_model *m, const nb_state *st, const char *out_dir, char *path,
                           size_t cap);

/* `nabla lora merge MODEL WEIGHTS ADAPTERS -o MERGED`. */
int nabla_cmd_lora(int argc, char **argv);

#endif
