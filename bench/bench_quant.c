/* bench_quant.c: inference images/s of the seed CNN at batch 64 in fp32 and as our int8 model
 * (VNNI and portable kernels) and int4 model (weights group 32), per-layer times, the weight bytes
 * of each, and PyTorch's int8 peer run in the same process tree
 * (bench/peers/torch_seed_cnn_int8.py, medians of its rounds). Our figures are medians of
 * ROUNDS rounds of ITERS forwards, as the peer measures; fp32, int8 and int4 are also timed in
 * alternating rounds (best of each) for their ratios. The int8 layers' throughput is given against
 * the machine's int8 peak (its best int8 instruction in register-only loops, measured here).
 * Random weights and inputs. */
#include "nn.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 64, ROUNDS = 7, ITERS = 30, CAL_BATCHES = 4, TURNS = 3 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_quant: %s: %s\n", what, nl_errmsg());
    exit(1);
}

static void add(nl_module *net, const char *type, const double *args)
{
    nl_module *m = nl_module_new(nl_module_type_find(type), NULL);
    if (args) {
        double a[NL_MAX_ARGS];
        nl_module_default_args(nl_module_type_find(type), a);
        for (int i = 0; i < 5; i++) a[i] = args[i];
        nl_module_release(m);
        m = nl_module_new(nl_module_type_find(type), a);
    }
    if (!m || nl_module_add(net, m) != NL_OK) die(type);
    nl_module_release(m);
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of the ROUNDS figures v (sorted in place). */
static double median(double *v)
{
    qsort(v, ROUNDS, sizeof *v, cmp);
    return v[ROUNDS / 2];
}

/* Seconds of ITERS forwards of net on x. */
static double run_iters(nl_module *net, nl_tensor *x)
{
    const double t0 = now();
    for (int it = 0; it < ITERS; it++) {
        nl_tensor *y;
        if (nl_module_forward(net, x, &y) != NL_OK) die("forward");
        nl_tensor_release(y);
    }
    return now() - t0;
}

/* Median images/s of net on x; per-layer seconds of one forward (best of the rounds) in
 * layer[]; with peak, the int8 peak is measured again in each round (the best, in the same spells
 * as the layers' times: this machine's speed drifts). */
static double speed(nl_module *net, nl_tensor *x, double *layer, double *peak)
{
    double rounds[ROUNDS];
    for (int i = 0; i < net->nchildren; i++) layer[i] = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        rounds[r] = BATCH * ITERS / run_iters(net, x);
        if (peak) *peak = nl_quant_peak_gops(true);
        /* layer by layer as the Sequential runs them: each child's previous input let go first,
         * so every layer reuses its output buffer (no page faults in the figures) */
        nl_tensor *h = nl_tensor_retain(x);
        for (int i = 0; i < net->nchildren; i++) {
            nl_tensor_release(net->children[i]->input);
            net->children[i]->input = NULL;
            nl_tensor *y;
            const double t1 = now();
            if (nl_module_forward(net->children[i], h, &y) != NL_OK) die("layer forward");
            const double dt = now() - t1;
            layer[i] = dt < layer[i] ? dt : layer[i];
            nl_tensor_release(h);
            h = y;
        }
        nl_tensor_release(h);
    }
    return median(rounds);
}

/* Bytes of every parameter and buffer of net (weights, scales, biases). */
static int64_t weight_bytes(const nl_module *m)
{
    int64_t b = 0;
    for (int i = 0; i < m->nparams; i++)
        b += nl_tensor_numel(m->params[i].value) * (int64_t)nl_dtype_info(m->params[i].value->dtype)->size;
    for (int i = 0; i < m->nchildren; i++) b += weight_bytes(m->children[i]);
    return b;
}


/* The int8 layers' GOP/s (2 per multiply-add of the layer's shape) and their share of the machine's
 * int8 peak, then the whole forward's (at images/s img_s). */
static void print_peak(nl_module *q, const double *layer, double img_s, double peak)
{
    if (peak <= 0) {
        printf("int8 peak: none (no AVX2)\n");
        return;
    }
    printf("int8 against the machine's int8 peak: %.0f GOP/s (%s, %d threads, measured in the same rounds):",
           peak, nl_quant_peak_instr(), nl_get_threads());
    int nd = 4, od;
    int64_t shape[NL_MAX_DIMS] = {BATCH, 3, 32, 32}, out[NL_MAX_DIMS], macs, total = 0;
    for (int i = 0; i < q->nchildren; i++) {
        if (nl_module_infer(q->children[i], nd, shape, &od, out, &macs) != NL_OK) die("infer");
        if (macs > 0)
            printf(" %s %.0f GOP/s %.0f%%", q->children[i]->type->name, 2e-9 * (double)macs / layer[i],
                   100 * 2e-9 * (double)macs / layer[i] / peak);
        total += macs;
        nd = od;
        memcpy(shape, out, sizeof out);
    }
    const double whole = 2e-9 * (double)total / BATCH * img_s;
    printf("; whole forward %.0f GOP/s, %.0f%% of the peak\n", whole, 100 * whole / peak);
}

static void print_layers(const char *title, nl_module *net, const double *layer)
{
    printf("%s per layer (ms, batch %d):", title, BATCH);
    for (int i = 0; i < net->nchildren; i++) printf(" %s %.3f", net->children[i]->type->name, 1e3 * layer[i]);
    printf("\n");
}

int main(void)
{
    nl_init();
    nl_rng_seed(1);
    nl_module *net = nl_module_new(nl_module_type_find("Sequential"), NULL);
    if (!net) die("net");
    add(net, "Conv2d", (double[]){3, 32, 3, 1, 1});
    add(net, "ReLU", NULL);
    add(net, "MaxPool2d", (double[]){2, 2, 0, 0, 0});
    add(net, "Conv2d", (double[]){32, 64, 3, 1, 1});
    add(net, "ReLU", NULL);
    add(net, "MaxPool2d", (double[]){2, 2, 0, 0, 0});
    add(net, "Flatten", NULL);
    add(net, "Linear", (double[]){4096, 10, 1, 0, 0});
    nl_module_train(net, false);
    const int64_t shape[] = {BATCH, 3, 32, 32};
    nl_tensor *cal[CAL_BATCHES], *x = nl_tensor_empty(NL_F32, 4, shape, NL_CPU);
    for (int i = 0; i < CAL_BATCHES; i++) {
        cal[i] = nl_tensor_empty(NL_F32, 4, shape, NL_CPU);
        if (!cal[i] || nl_rand_normal(cal[i], 0, 1) != NL_OK) die("calibration data");
    }
    if (!x || nl_rand_normal(x, 0, 1) != NL_OK) die("input");
    nl_module *q = nl_quant_int8(net, cal, CAL_BATCHES, NULL);
    if (!q) die("quant.int8");

    nl_module *q4 = nl_quant_int4(net, 32);
    if (!q4) die("quant.int4");

    double lf[16], lq[16], lg[16], l4[16];
    double peak = 0;
    const double fp32 = speed(net, x, lf, NULL);
    const double int8 = speed(q, x, lq, &peak);
    if (nl_quant_set_isa("generic") != NL_OK) die("generic");
    const double generic = speed(q, x, lg, NULL);
    nl_quant_set_isa("auto");
    const double int4 = speed(q4, x, l4, NULL);
    /* fp32, int8 and int4 in alternating rounds, the best of each: their ratios (the machine's
     * slow spells, minutes long, would bend ratios of figures taken one after the other) */
    double tf = 1e9, t8 = 1e9, t4 = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        const double a = run_iters(net, x), b = run_iters(q, x), c = run_iters(q4, x);
        tf = a < tf ? a : tf;
        t8 = b < t8 ? b : t8;
        t4 = c < t4 ? c : t4;
    }
    printf("threads %d, batch %d, kernels %s\n", nl_get_threads(), BATCH, nl_quant_isa());
    print_layers("fp32", net, lf);
    print_layers("int8", q, lq);
    print_peak(q, lq, int8, peak);
    print_layers("int8 generic", q, lg);
    print_layers("int4", q4, l4);
    printf("weight bytes: fp32 %lld, int8 %lld, int4 (group 32) %lld (%.2fx fewer than fp32)\n",
           (long long)weight_bytes(net), (long long)weight_bytes(q), (long long)weight_bytes(q4),
           (double)weight_bytes(net) / (double)weight_bytes(q4));
    printf("ours (median of %d rounds): fp32 %.0f img/s, int8 %.0f img/s (%.2fx fp32), int4 %.0f img/s "
           "(%.2fx fp32), int8 portable C %.0f img/s\n", ROUNDS, fp32, int8, int8 / fp32, int4,
           int4 / fp32, generic);
    printf("ours (alternating rounds, best of %d): fp32 %.0f img/s, int8 %.0f img/s (%.2fx fp32; target "
           ">= 4x), int4 %.0f img/s (%.2fx fp32)\n", ROUNDS, BATCH * ITERS / tf, BATCH * ITERS / t8,
           tf / t8, BATCH * ITERS / t4, tf / t4);

    /* PyTorch's int8 model against ours in alternating turns (this machine's speed drifts over
     * minutes): each turn one peer run (the median of its rounds) and the median of ROUNDS rounds
     * of ours; the best turn of each side. */
    const char *peers = getenv("NNLAB_PEERS") ? getenv("NNLAB_PEERS") : "bench/peers";
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/torch_seed_cnn_int8.py --threads %d --batch %d 2>&1",
             peers, nl_get_threads(), BATCH);
    double peer = 0, ours = 0;
    for (int turn = 0; turn < TURNS; turn++) {
        FILE *p = popen(cmd, "r");
        double turn_peer = 0;
        while (p && fgets(line, sizeof line, p)) {
            const char *r = strstr(line, "int8_img_s=");
            if (strncmp(line, "RESULT", 6) == 0) printf("pytorch (turn %d): %s", turn + 1, line);
            if (r) turn_peer = atof(r + strlen("int8_img_s="));
        }
        if (p) pclose(p);
        if (turn_peer <= 0) break;
        double rounds[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) rounds[r] = BATCH * ITERS / run_iters(q, x);
        const double turn_ours = median(rounds);
        printf("ours (turn %d): int8_img_s=%.0f\n", turn + 1, turn_ours);
        peer = turn_peer > peer ? turn_peer : peer;
        ours = turn_ours > ours ? turn_ours : ours;
    }
    if (peer > 0)
        printf("int8: ours %.0f img/s vs pytorch %.0f img/s (best of %d alternating turns): %.2fx (target >= 2.5x)\n",
               ours, peer, TURNS, ours / peer);
    else printf("pytorch int8 peer unavailable (%s)\n", cmd);

    for (int i = 0; i < CAL_BATCHES; i++) nl_tensor_release(cal[i]);
    nl_tensor_release(x);
    nl_module_release(q);
    nl_module_release(q4);
    nl_module_release(net);
    return 0;
}
