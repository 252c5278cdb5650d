/* Image files (PNG through libpng, JPEG through libjpeg) and folders of
 * them, one subfolder per class. Both libraries report errors by longjmp;
 * every object that must survive the jump lives in a context struct owned
 * by the caller of the function that calls setjmp, so nothing touched after
 * setjmp is an automatic variable of that function. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jpeglib.h>
#include <png.h>

#include "data_internal.h"

/* Larger images are refused before any pixel buffer is allocated: a corrupt
 * header must not turn into a multi-gigabyte allocation. */
#define MAX_IMAGE_PIXELS ((int64_t)1 << 28)

typedef struct {
  unsigned char *pixels; /* h rows of w * ch bytes */
  int w, h, ch;          /* ch: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
} raw_image;

/* ---- PNG -------------------------------------------------------------------- */

typedef struct {
  jmp_buf jb;
  char msg[256];
  png_structp png;
  png_infop info;
  png_bytep *rows;
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->msg, sizeof c->msg, "%s", msg);
  longjmp(c->jb, 1);
}

/* Warnings concern ancillary data we do not use; errors that matter for
 * the pixels are raised as errors (benign errors included, see below). */
static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

static int png_decode(png_ctx *c, FILE *f, raw_image *img) {
  if (setjmp(c->jb)) return 1;
  png_set_benign_errors(c->png, 0);
  png_init_io(c->png, f);
  png_read_info(c->png, c->info);
  png_uint_32 w = png_get_image_width(c->png, c->info), h = png_get_image_height(c->png, c->info);
  if ((int64_t)w * (int64_t)h > MAX_IMAGE_PIXELS) png_error(c->png, "image too large");
  png_set_expand(c->png); /* palette -> RGB, grey < 8 bits -> 8 bits, tRNS -> alpha */
  png_set_strip_16(c->png);
  png_set_interlace_handling(c->png);
  png_read_update_info(c->png, c->info);
  int ch = png_get_channels(c->png, c->info);
  size_t rowbytes = png_get_rowbytes(c->png, c->info);
  if (ch < 1 || ch > 4 || rowbytes != (size_t)w * (size_t)ch)
    png_error(c->png, "unexpected pixel layout after conversion to 8 bits");
  img->pixels = malloc((size_t)h * rowbytes);
  c->rows = malloc((size_t)h * sizeof *c->rows);
  if (!img->pixels || !c->rows) png_error(c->png, "out of memory");
  for (png_uint_32 y = 0; y < h; y++) c->rows[y] = img->pixels + (size_t)y * rowbytes;
  png_read_image(c->png, c->rows);
  png_read_end(c->png, NULL); /* a file cut after the pixels is still corrupt */
  img->w = (int)w;
  img->h = (int)h;
  img->ch = ch;
  return 0;
}

static nb_status read_png(const char *path, FILE *f, raw_image *img) {
  png_ctx c;
  memset(&c, 0, sizeof c);
  c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error, png_on_warning);
  if (c.png) c.info = png_create_info_struct(c.png);
  if (!c.png || !c.info) {
    png_destroy_read_struct(&c.png, NULL, NULL);
    return nb_error(NB_ERR_OOM, "%s: out of memory for the PNG decoder", path);
  }
  int failed = png_decode(&c, f, img);
  png_destroy_read_struct(&c.png, &c.info, NULL);
  free(c.rows);
  if (failed) return nb_error(NB_ERR_FORMAT, "%s: corrupt or truncated PNG: %s", path, c.msg);
  return NB_OK;
}

/* ---- JPEG ------------------------------------------------------------------- */

typedef struct {
  struct jpeg_error_mgr err; /* first: libjpeg hands us a pointer to it */
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  struct jpeg_decompress_struct d;
  int created;
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
  jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
  cinfo->err->format_message(cinfo, c->msg);
  longjmp(c->jb, 1);
}

/* libjpeg only warns about a truncated or damaged stream and fills the
 * rest with grey; we keep the first warning and fail the file afterwards. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
  jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
  if (level >= 0) return; /* trace messages */
  if (cinfo->err->num_warnings++ == 0) cinfo->err->format_message(cinfo, c->msg);
}

static int jpeg_decode(jpeg_ctx *c, FILE *f, int channels, raw_image *img) {
  if (setjmp(c->jb)) return 1;
  jpeg_create_decompress(&c->d);
  c->created = 1;
  jpeg_stdio_src(&c->d, f);
  jpeg_read_header(&c->d, TRUE);
  /* libjpeg converts YCbCr/grey/RGB to what we ask; grey is its Y channel */
  c->d.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  if ((int64_t)c->d.image_width * (int64_t)c->d.image_height > MAX_IMAGE_PIXELS) {
    snprintf(c->msg, sizeof c->msg, "image too large (%ux%u)", c->d.image_width, c->d.image_height);
    return 1;
  }
  jpeg_start_decompress(&c->d);
  const int w = (int)c->d.output_width, h = (int)c->d.output_height, ch = c->d.output_components;
  img->pixels = malloc((size_t)w * (size_t)h * (size_t)ch);
  if (!img->pixels) {
    snprintf(c->msg, sizeof c->msg, "out of memory");
    return 1;
  }
  while (c->d.output_scanline < c->d.output_height) {
    JSAMPROW row = img->pixels + (size_t)c->d.output_scanline * (size_t)w * (size_t)ch;
    jpeg_read_scanlines(&c->d, &row, 1);
  }
  jpeg_finish_decompress(&c->d);
  img->w = w;
  img->h = h;
  img->ch = ch;
  return c->err.num_warnings > 0;
}

static nb_status read_jpeg(const char *path, FILE *f, int channels, raw_image *img) {
  jpeg_ctx *c = calloc(1, sizeof *c); /* big (the decoder struct): keep it off the stack */
  if (!c) return nb_error(NB_ERR_OOM, "%s: out of memory for the JPEG decoder", path);
  c->d.err = jpeg_std_error(&c->err);
  c->err.error_exit = jpeg_on_error;
  c->err.emit_message = jpeg_on_message;
  int failed = jpeg_decode(c, f, channels, img);
  if (c->created) jpeg_destroy_decompress(&c->d);
  nb_status st = NB_OK;
  if (failed) st = nb_error(NB_ERR_FORMAT, "%s: corrupt or truncated JPEG: %s", path, c->msg);
  free(c);
  return st;
}

/* ---- conversion ------------------------------------------------------------- */

/* 8-bit interleaved pixels -> channels x h x w floats in [0, 1]. */
static void to_planes(const raw_image *img, int channels, float *dst) {
  const size_t plane = (size_t)img->w * (size_t)img->h;
  const int colour = img->ch >= 3; /* 2 and 4 carry alpha, which is dropped */
  for (size_t p = 0; p < plane; p++) {
    const unsigned char *s = img->pixels + p * (size_t)img->ch;
    if (channels == 1) {
      dst[p] = colour ? (0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2]) / 255.0f : s[0] / 255.0f;
    } else {
      for (int c = 0; c < 3; c++) dst[(size_t)c * plane + p] = s[colour ? c : 0] / 255.0f;
    }
  }
}

/* Bilinear resize of each of c planes, half-pixel centres, source
 * coordinates clamped at 0 and at the last pixel (PyTorch's
 * interpolate(mode="bilinear", align_corners=False, antialias=False)). */
static void resize_bilinear(const float *src, int c, int h, int w, float *dst, int oh, int ow) {
  const float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  for (int y = 0; y < oh; y++) {
    float fy = ((float)y + 0.5f) * sy - 0.5f;
    if (fy < 0) fy = 0;
    const int y0 = (int)fy, y1 = y0 < h - 1 ? y0 + 1 : y0;
    const float ly = fy - (float)y0;
    for (int x = 0; x < ow; x++) {
      float fx = ((float)x + 0.5f) * sx - 0.5f;
      if (fx < 0) fx = 0;
      const int x0 = (int)fx, x1 = x0 < w - 1 ? x0 + 1 : x0;
      const float lx = fx - (float)x0;
      for (int k = 0; k < c; k++) {
        const float *p = src + (size_t)k * h * w;
        const float top = (1 - lx) * p[(size_t)y0 * w + x0] + lx * p[(size_t)y0 * w + x1];
        const float bot = (1 - lx) * p[(size_t)y1 * w + x0] + lx * p[(size_t)y1 * w + x1];
        dst[((size_t)k * oh + y) * ow + x] = (1 - ly) * top + ly * bot;
      }
    }
  }
}

static nb_status check_options(const nb_image_options *o, const char *fn) {
  if (!o) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL options", fn);
  if (o->channels != 1 && o->channels != 3)
    return nb_error(NB_ERR_INVALID_ARG, "%s: channels %d must be 1 (grey) or 3 (RGB)", fn,
                    o->channels);
  if (o->height < 1 || o->width < 1 || o->height > 65535 || o->width > 65535)
    return nb_error(NB_ERR_INVALID_ARG, "%s: size %dx%d is outside [1, 65535]", fn, o->height,
                    o->width);
  if (o->resize != NB_RESIZE_BILINEAR && o->resize != NB_RESIZE_REJECT)
    return nb_error(NB_ERR_INVALID_ARG, "%s: unknown resize mode %d", fn, (int)o->resize);
  return NB_OK;
}

nb_status nb_image_load(const char *path, const nb_image_options *opt, float *dst) {
  if (!path || !dst) return nb_error(NB_ERR_INVALID_ARG, "nb_image_load: NULL argument");
  nb_status st = check_options(opt, "nb_image_load");
  if (st) return st;
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  unsigned char sig[8];
  size_t got = fread(sig, 1, sizeof sig, f);
  rewind(f);
  raw_image img = {NULL, 0, 0, 0};
  if (got == 8 && !png_sig_cmp(sig, 0, 8))
    st = read_png(path, f, &img);
  else if (got >= 3 && sig[0] == 0xFF && sig[1] == 0xD8 && sig[2] == 0xFF)
    st = read_jpeg(path, f, opt->channels, &img);
  else
    st = nb_error(NB_ERR_FORMAT, "%s: not a PNG or JPEG file (%s at byte 0)", path,
                  got ? "unknown signature" : "empty file");
  fclose(f);
  if (!st && opt->resize == NB_RESIZE_REJECT && (img.h != opt->height || img.w != opt->width))
    st = nb_error(NB_ERR_SHAPE, "%s: image is %dx%d (height x width), expected %dx%d", path, img.h,
                  img.w, opt->height, opt->width);
  if (!st) {
    if (img.h == opt->height && img.w == opt->width) {
      to_planes(&img, opt->channels, dst);
    } else {
      float *tmp = malloc((size_t)img.w * (size_t)img.h * (size_t)opt->channels * sizeof *tmp);
      if (!tmp) {
        st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
      } else {
        to_planes(&img, opt->channels, tmp);
        resize_bilinear(tmp, opt->channels, img.h, img.w, dst, opt->height, opt->width);
        free(tmp);
      }
    }
  }
  free(img.pixels);
  return st;
}

/* ---- folders ---------------------------------------------------------------- */

typedef struct {
  char **items;
  size_t n, cap;
} name_list;

static void list_free(name_list *l) {
  for (size_t i = 0; i < l->n; i++) free(l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
}

static int list_push(name_list *l, const char *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    char **it = realloc(l->items, cap * sizeof *it);
    if (!it) return 0;
    l->items = it;
    l->cap = cap;
  }
  if (!(l->items[l->n] = strdup(s))) return 0;
  l->n++;
  return 1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && (!strcasecmp(dot + 1, "png") || !strcasecmp(dot + 1, "jpg") ||
                 !strcasecmp(dot + 1, "jpeg"));
}

/* Sorted entries of dir that are directories (want_dirs) or image files. */
static nb_status list_dir(const char *dir, int want_dirs, name_list *out) {
  DIR *d = opendir(dir);
  if (!d) return nb_error(NB_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
  nb_status st = NB_OK;
  char p[NB_DATA_PATH_MAX];
  for (struct dirent *e; !st && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue; /* ., .. and hidden files (.DS_Store, ...) */
    st = nb_data_join(p, sizeof p, dir, e->d_name);
    if (st) break;
    int keep = want_dirs ? nb_data_is_dir(p) : nb_data_is_file(p) && is_image_name(e->d_name);
    if (keep && !list_push(out, e->d_name)) st = nb_error(NB_ERR_OOM, "%s: out of memory", dir);
  }
  closedir(d);
  if (st)
    list_free(out);
  else if (out->n)
    qsort(out->items, out->n, sizeof *out->items, cmp_str);
  return st;
}

nb_status nb_image_folder_load(const char *dir, const nb_image_options *opt, nb_dataset *out) {
  if (!dir || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_image_folder_load: NULL argument");
  memset(out, 0, sizeof *out);
  nb_status st = check_options(opt, "nb_image_folder_load");
  if (st) return st;
  name_list classes = {NULL, 0, 0}, files = {NULL, 0, 0};
  st = list_dir(dir, 1, &classes);
  if (!st && classes.n == 0)
    st = nb_error(NB_ERR_FORMAT,
                  "%s: no class subfolders (expected one folder of images per "
                  "class)",
                  dir);
  if (!st && classes.n > 1000000)
    st = nb_error(NB_ERR_FORMAT, "%s: %zu class subfolders is too many", dir, classes.n);
  /* every file path, in order, and its class */
  int64_t *labels = NULL;
  size_t labels_cap = 0;
  char p[NB_DATA_PATH_MAX];
  for (size_t c = 0; !st && c < classes.n; c++) {
    name_list in_class = {NULL, 0, 0};
    st = nb_data_join(p, sizeof p, dir, classes.items[c]);
    if (!st) st = list_dir(p, 0, &in_class);
    for (size_t i = 0; !st && i < in_class.n; i++) {
      char fp[NB_DATA_PATH_MAX];
      st = nb_data_join(fp, sizeof fp, p, in_class.items[i]);
      if (st) break;
      if (files.n == labels_cap) {
        labels_cap = labels_cap ? labels_cap * 2 : 64;
        int64_t *nl = realloc(labels, labels_cap * sizeof *labels);
        if (!nl) {
          st = nb_error(NB_ERR_OOM, "%s: out of memory", dir);
          break;
        }
        labels = nl;
      }
      if (!list_push(&files, fp)) {
        st = nb_error(NB_ERR_OOM, "%s: out of memory", dir);
        break;
      }
      labels[files.n - 1] = (int64_t)c;
    }
    list_free(&in_class);
  }
  if (!st && files.n == 0)
    st = nb_error(NB_ERR_FORMAT, "%s: no .png, .jpg or .jpeg files in its %zu class subfolders",
                  dir, classes.n);
  int64_t shape[3] = {opt->channels, opt->height, opt->width};
  if (!st) st = nb_dataset_alloc(out, (int64_t)files.n, 3, shape);
  if (!st) st = nb_dataset_set_classes(out, (int)classes.n, (const char *const *)classes.items);
  for (size_t i = 0; !st && i < files.n; i++) {
    st = nb_image_load(files.items[i], opt, out->x + (int64_t)i * out->example_numel);
    out->y[i] = labels[i];
  }
  free(labels);
  list_free(&files);
  list_free(&classes);
  if (st) nb_dataset_free(out);
  return st;
}
