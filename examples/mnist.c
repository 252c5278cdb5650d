/* Train the reference MNIST CNN through nabla's public API, evaluate it and
 * save its weights: the model file carries the network and its recipe.
 *
 *   build/release/mnist models/mnist_cnn.cfg [MNIST_DIR] */
#include <stdio.h>

#include "nabla/nabla.h"

#define CHECK(expr)                                                                                \
  do {                                                                                             \
    if ((expr) != NB_OK) {                                                                         \
      fprintf(stderr, "mnist: %s\n", nb_last_error());                                             \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

int main(int argc, char **argv) {
  const char *model_path = argc > 1 ? argv[1] : "models/mnist_cnn.cfg";
  const char *data_arg = argc > 2 ? argv[2] : NULL;

  nb_model *model;
  CHECK(nb_model_load(model_path, &model));

  /* MNIST from the given folder, $NABLA_DATA or ../shared/data/mnist */
  char dir[1024];
  nb_dataset train = {0}, test = {0};
  CHECK(nb_data_find("mnist", data_arg, dir, sizeof dir));
  CHECK(nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &train));
  CHECK(nb_mnist_load(dir, NB_SPLIT_TEST, 0, &test));
  CHECK(nb_recipe_normalize(nb_model_recipe(model), &train));
  CHECK(nb_recipe_normalize(nb_model_recipe(model), &test));

  /* parameters live in a state on a backend; plans share it */
  nb_backend *cpu;
  nb_state *state;
  CHECK(nb_backend_new("cpu", &cpu));
  CHECK(nb_state_new(cpu, &state));

  nb_fit_options opt = nb_fit_defaults();
  opt.out_dir = "runs/mnist_example"; /* checkpoints, weights, TensorBoard, CSV */
  nb_fit_result res;
  CHECK(nb_fit(model, cpu, state, &train, &test, &opt, &res));

  /* a full report on the test set */
  nb_confusion *cm;
  double loss;
  CHECK(nb_confusion_new(10, &cm));
  CHECK(nb_evaluate(model, cpu, state, &test, 500, cm, &loss));
  CHECK(nb_confusion_report(cm, stdout, (const char *const *)test.class_names, 4));
  printf("test accuracy %.2f%%, %.0f images/s, weights in %s\n", 100.0 * nb_confusion_accuracy(cm),
         res.images_per_sec, res.weights);

  nb_confusion_free(cm);
  nb_state_free(state);
  nb_backend_free(cpu);
  nb_dataset_free(&train);
  nb_dataset_free(&test);
  nb_model_free(model);
  return 0;
}
