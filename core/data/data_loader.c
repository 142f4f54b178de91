/* data_loader.c: seeded, augmented mini-batches of a data set, each prepared by a background
 * thread while the caller trains on the previous one (two buffers, one job in flight). The thread
 * only runs nl_dataset_fill on buffers the caller's thread allocated: it never allocates, never
 * touches refcounts and never calls into Lua. */
#include "dataset.h"
#include "train.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One batch buffer. */
typedef struct {
    nl_tensor *x, *y;
} slot;

struct nl_loader {
    nl_dataset *ds;
    nl_loader_opts o;
    float *lut;           /* C x 256 normalisation table */
    int64_t nbatches;
    uint64_t epoch;       /* the epoch being served (>= 1) */
    int64_t pos;          /* batches of it handed out */
    nl_tensor *order;     /* i32 [n]: the epoch's sample order */
    int64_t *idx;         /* the job's sample positions (batch entries) */
    slot slots[2];
    /* The job: preparing batch job_pos of epoch job_epoch into slots[job_slot]. Guarded by mu. */
    pthread_t thread;
    bool started;         /* the thread runs */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool job_queued, job_running, job_done, quit;
    int job_slot;
    uint64_t job_epoch;
    int64_t job_pos;
    nl_fill_spec spec;
    nl_status job_status;
    char job_err[512];
};

nl_loader_opts nl_loader_opts_default(void)
{
    return (nl_loader_opts){.batch = 64, .shuffle = true, .seed = 1};
}

static void *worker(void *arg)
{
    nl_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !l->job_queued) pthread_cond_wait(&l->cv, &l->mu);
        if (l->quit) break;
        l->job_queued = false;
        l->job_running = true;
        slot *s = &l->slots[l->job_slot];
        int64_t n = s->y->shape[0];
        pthread_mutex_unlock(&l->mu);
        nl_status st = nl_dataset_fill(l->ds, l->idx, n, &l->spec, s->x, s->y);
        pthread_mutex_lock(&l->mu);
        l->job_status = st;
        if (st != NL_OK) snprintf(l->job_err, sizeof l->job_err, "%s", nl_errmsg());
        l->job_running = false;
        l->job_done = true;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Waits until no job is queued or running. */
static void wait_idle(nl_loader *l)
{
    pthread_mutex_lock(&l->mu);
    while (l->job_queued || l->job_running) pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

/* Samples of an epoch this loader hands out: all, or its shard's share. */
static int64_t epoch_samples(const nl_loader *l)
{
    int64_t n = l->ds->n, N = l->o.nshards;
    return N > 1 ? (n + N - 1) / N : n;
}

/* Samples in batch pos of an epoch. */
static int64_t batch_size(const nl_loader *l, int64_t pos)
{
    int64_t left = epoch_samples(l) - pos * l->o.batch;
    return left < l->o.batch ? left : l->o.batch;
}

/* Makes slot s hold buffers of n samples that only the loader references: a buffer still held
 * by someone (a batch handed out earlier) is left to them and replaced. */
static nl_status own_slot(nl_loader *l, slot *s, int64_t n)
{
    if (s->x && (s->x->refcount > 1 || s->x->shape[0] != n)) {
        nl_tensor_release(s->x);
        s->x = NULL;
    }
    if (s->y && (s->y->refcount > 1 || s->y->shape[0] != n)) {
        nl_tensor_release(s->y);
        s->y = NULL;
    }
    int64_t shape[4];
    memcpy(shape, l->ds->images->shape, sizeof shape);
    shape[0] = n;
    if (!s->x && !(s->x = nl_tensor_empty(NL_F32, 4, shape, NL_CPU))) return nl_errcode();
    if (!s->y && !(s->y = nl_tensor_empty(NL_I32, 1, &n, NL_CPU))) return nl_errcode();
    return NL_OK;
}

/* Draws the order of epoch l->epoch. */
static void draw_order(nl_loader *l)
{
    int32_t *p = nl_tensor_data(l->order);
    if (l->o.shuffle) {
        nl_permutation(l->order, nl_rng_hash(l->o.seed, l->epoch - 1));
    } else {
        for (int64_t i = 0; i < l->ds->n; i++) p[i] = (int32_t)i;
    }
}

/* Queues batch l->pos of epoch l->epoch into the slot not handed out last. The loader is idle. */
static nl_status submit(nl_loader *l)
{
    int which = l->job_slot ^ 1;
    int64_t n = batch_size(l, l->pos);
    nl_status s = own_slot(l, &l->slots[which], n);
    if (s != NL_OK) return s;
    const int32_t *order = nl_tensor_data(l->order);
    /* Shard entry q is the epoch's position shard + q * nshards (wrapped): the augmentation
     * draws follow that position, so they do not depend on the number of shards. */
    int64_t N = l->o.nshards > 1 ? l->o.nshards : 1, first = l->o.shard + l->pos * l->o.batch * N;
    for (int64_t k = 0; k < n; k++) l->idx[k] = order[(first + k * N) % l->ds->n];
    pthread_mutex_lock(&l->mu);
    l->spec = (nl_fill_spec){
        .lut = l->lut, .crop = l->o.crop, .cutout = l->o.cutout, .flip = l->o.flip,
        .key = nl_rng_hash(~l->o.seed, l->epoch - 1), .first = (uint64_t)first,
        .stride = (uint64_t)N, .label_offset = l->o.label_offset,
    };
    l->job_slot = which;
    l->job_epoch = l->epoch;
    l->job_pos = l->pos;
    l->job_done = false;
    l->job_queued = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NL_OK;
}

nl_loader *nl_loader_new(nl_dataset *ds, const nl_loader_opts *o)
{
    const int64_t *sh = ds->images->shape;
    int C = (int)sh[1];
    if (o->batch < 1) {
        nl_seterr(NL_EINVAL, "loader: batch size %lld (expected at least 1)", (long long)o->batch);
        return NULL;
    }
    if (o->nshards > 1 && (o->shard < 0 || o->shard >= o->nshards)) {
        nl_seterr(NL_EINVAL, "loader: shard %d of %d is out of range", o->shard, o->nshards);
        return NULL;
    }
    if (ds->n == 0 || (o->drop_last && ds->n < o->batch)) {
        nl_seterr(NL_EINVAL, "loader: data set '%s' has %lld samples: no batch of %lld", ds->name,
                  (long long)ds->n, (long long)o->batch);
        return NULL;
    }
    if (o->crop < 0 || o->crop > sh[2] || o->crop > sh[3] || o->cutout < 0 ||
        o->cutout > sh[2] || o->cutout > sh[3]) {
        nl_seterr(NL_EINVAL, "loader: crop %d and cutout %d must be between 0 and the image size "
                  "%lldx%lld", o->crop, o->cutout, (long long)sh[3], (long long)sh[2]);
        return NULL;
    }
    nl_loader *l = calloc(1, sizeof *l);
    float *lut = malloc((size_t)C * 256 * sizeof *lut);
    int64_t *idx = malloc((size_t)o->batch * sizeof *idx);
    nl_tensor *order = nl_tensor_empty(NL_I32, 1, &ds->n, NL_CPU);
    static const double plain_mean = 0, plain_std = 1;
    nl_status s = l && lut && idx && order ? NL_OK : nl_seterr(NL_ENOMEM, "loader: out of memory");
    if (s == NL_OK)
        s = o->mean || o->std ? nl_dataset_lut(lut, C, o->mean, o->mean ? o->nmean : 0, o->std,
                                               o->std ? o->nstd : 0)
                              : nl_dataset_lut(lut, C, &plain_mean, 1, &plain_std, 1);
    if (s != NL_OK) {
        free(l);
        free(lut);
        free(idx);
        nl_tensor_release(order);
        return NULL;
    }
    *l = (nl_loader){.ds = nl_dataset_retain(ds), .o = *o, .lut = lut, .idx = idx, .order = order,
                     .epoch = 1, .job_slot = 1};
    l->o.mean = l->o.std = NULL; /* copied into the table */
    int64_t m = epoch_samples(l);
    l->nbatches = o->drop_last ? m / o->batch : (m + o->batch - 1) / o->batch;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int rc = pthread_create(&l->thread, NULL, worker, l);
    l->started = rc == 0;
    if (rc != 0) {
        nl_seterr(NL_EIO, "loader: cannot start a thread: %s", strerror(rc));
        nl_loader_free(l);
        return NULL;
    }
    draw_order(l);
    if (submit(l) != NL_OK) {
        nl_loader_free(l);
        return NULL;
    }
    return l;
}

void nl_loader_free(nl_loader *l)
{
    if (!l) return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->quit = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    for (int i = 0; i < 2; i++) {
        nl_tensor_release(l->slots[i].x);
        nl_tensor_release(l->slots[i].y);
    }
    nl_tensor_release(l->order);
    nl_dataset_release(l->ds);
    free(l->lut);
    free(l->idx);
    free(l);
}

nl_status nl_loader_next(nl_loader *l, nl_tensor **x, nl_tensor **y)
{
    *x = *y = NULL;
    wait_idle(l);
    if (l->pos == l->nbatches) { /* the end: move on to the next epoch, start its first batch */
        l->epoch++;
        l->pos = 0;
        draw_order(l);
        return submit(l);
    }
    /* The job holds this batch unless an error or a seek left it elsewhere. */
    bool ready = l->job_done && l->job_epoch == l->epoch && l->job_pos == l->pos;
    if (!ready || l->job_status != NL_OK) {
        nl_status s = submit(l);
        if (s != NL_OK) return s;
        wait_idle(l);
        if (l->job_status != NL_OK) {
            l->job_done = false;
            return nl_seterr(l->job_status, "%s", l->job_err);
        }
    }
    slot *s = &l->slots[l->job_slot];
    *x = nl_tensor_retain(s->x);
    *y = nl_tensor_retain(s->y);
    l->pos++;
    if (l->pos < l->nbatches) {
        nl_status st = submit(l);
        if (st != NL_OK) { /* keep the loader where it was: this batch is served again */
            l->pos--;
            nl_tensor_release(*x);
            nl_tensor_release(*y);
            *x = *y = NULL;
            return st;
        }
    }
    return NL_OK;
}

nl_status nl_loader_seek(nl_loader *l, uint64_t epoch, int64_t position)
{
    if (epoch < 1 || position < 0 || position > l->nbatches)
        return nl_seterr(NL_EINVAL, "loader: position %lld of epoch %llu is out of range (epochs "
                         "from 1, positions 0 to %lld)", (long long)position,
                         (unsigned long long)epoch, (long long)l->nbatches);
    wait_idle(l);
    if (epoch != l->epoch) {
        l->epoch = epoch;
        draw_order(l);
    }
    l->pos = position;
    return position < l->nbatches ? submit(l) : NL_OK;
}

void nl_loader_tell(const nl_loader *l, uint64_t *epoch, int64_t *position)
{
    *epoch = l->epoch;
    *position = l->pos;
}

int64_t nl_loader_batches(const nl_loader *l)
{
    return l->nbatches;
}

int64_t nl_loader_batch_size(const nl_loader *l)
{
    return l->o.batch;
}

nl_dataset *nl_loader_dataset(const nl_loader *l)
{
    return l->ds;
}
