/* window.c: the SDL2 window that shows the current view's canvas (scaled to fit, aspect kept),
 * the list of views, the keys, pausing and read-back screenshots. */
#include "window.h"

#include <SDL.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_VIEWS 16
#define PUMP_MS 30
#define PAUSE_BG NL_RGB(190, 50, 40) /* the banner over a paused view */

static struct {
    bool video;                  /* SDL's video subsystem is up */
    SDL_Window *win;
    SDL_Renderer *ren;
    SDL_Texture *tex;
    int tex_w, tex_h;
    nl_canvas *shown;            /* the current view with the pause banner, while paused */
    int w, h;                    /* the size asked for (used while closed) */
    struct {
        char name[24];
        nl_canvas *c;
    } views[MAX_VIEWS];
    int nviews, current;
    bool paused;
    double last_pump;
    char note[160];              /* the last thing a key did, shown in the title */
} W = {.w = NL_VIEW_W, .h = NL_VIEW_H};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------- views ----------------- */

nl_canvas *nl_view_current(const char **name)
{
    if (W.nviews == 0) {
        if (name) *name = NULL;
        return NULL;
    }
    if (name) *name = W.views[W.current].name;
    return W.views[W.current].c;
}

nl_canvas *nl_view_get(const char *name)
{
    for (int i = 0; i < W.nviews; i++)
        if (strcmp(W.views[i].name, name) == 0) return W.views[i].c;
    return NULL;
}

int nl_view_names(const char **names, int max)
{
    for (int i = 0; i < W.nviews && i < max; i++) names[i] = W.views[i].name;
    return W.nviews;
}

/* ---------------------------------------------------------------- drawing --------------- */

static void set_title(void)
{
    const char *name;
    nl_view_current(&name);
    char title[320];
    snprintf(title, sizeof title, "nnlab: %s%s  |  tab: next view  space: %s  s: save  q: close%s%s",
             name ? name : "no view yet", W.paused ? " (PAUSED)" : "", W.paused ? "resume" : "pause",
             W.note[0] ? "  |  " : "", W.note);
    SDL_SetWindowTitle(W.win, title);
}

/* The canvas c with a banner across its top saying training is paused (a copy kept in W.shown),
 * so the picture shows the pause and not only the title. */
static nl_canvas *with_pause_banner(nl_canvas *c)
{
    if (!W.shown || W.shown->w != c->w || W.shown->h != c->h) {
        nl_canvas_release(W.shown);
        if (!(W.shown = nl_canvas_new(c->w, c->h, 0))) return c;
    }
    memcpy(W.shown->px, c->px, (size_t)c->w * (size_t)c->h * sizeof *c->px);
    int bh = c->h / 12 < 24 ? 24 : c->h / 12, size = bh * 11 / 20;
    nl_canvas_fill_rect(W.shown, (nl_rect){0, 0, c->w, bh}, PAUSE_BG);
    nl_canvas_text(W.shown, c->w / 2, (bh - size * 5 / 4) / 2, size, NL_RGB(255, 255, 255), NL_ALIGN_CENTER,
                   "PAUSED: training waits. Space here resumes it");
    return W.shown;
}

/* Draws the current view into the renderer's back buffer (no present). */
static bool draw(void)
{
    nl_canvas *c = nl_view_current(NULL);
    if (c && W.paused) c = with_pause_banner(c);
    if (!c) {
        SDL_SetRenderDrawColor(W.ren, 245, 245, 245, 255);
        SDL_RenderClear(W.ren);
        return true;
    }
    if (!W.tex || W.tex_w != c->w || W.tex_h != c->h) {
        if (W.tex) SDL_DestroyTexture(W.tex);
        W.tex = SDL_CreateTexture(W.ren, SDL_PIXELFORMAT_ARGB8888, SDL_TEXTUREACCESS_STREAMING, c->w, c->h);
        if (!W.tex) return false;
        W.tex_w = c->w;
        W.tex_h = c->h;
        SDL_RenderSetLogicalSize(W.ren, c->w, c->h);
    }
    SDL_UpdateTexture(W.tex, NULL, c->px, c->w * 4);
    SDL_SetRenderDrawColor(W.ren, 245, 245, 245, 255);
    SDL_RenderClear(W.ren);
    return SDL_RenderCopy(W.ren, W.tex, NULL, NULL) == 0;
}

static void present(void)
{
    if (!W.win) return;
    set_title();
    if (draw()) SDL_RenderPresent(W.ren);
}

void nl_view_set(const char *name, nl_canvas *c, bool make_current)
{
    int i = 0;
    while (i < W.nviews && strcmp(W.views[i].name, name) != 0) i++;
    if (i == MAX_VIEWS) i = MAX_VIEWS - 1; /* full: the last slot is reused */
    if (i == W.nviews && W.nviews < MAX_VIEWS) {
        W.nviews++;
        W.views[i].c = NULL;
        snprintf(W.views[i].name, sizeof W.views[i].name, "%s", name);
    }
    nl_canvas_retain(c);
    nl_canvas_release(W.views[i].c);
    W.views[i].c = c;
    if (make_current || W.nviews == 1) W.current = i;
    if (W.current == i) present();
}

/* ---------------------------------------------------------------- the window ------------ */

/* At exit: closes the window and shuts SDL down (its D-Bus connection included). */
static void quit_video(void)
{
    nl_window_close();
    SDL_Quit();
    W.video = false;
}

nl_status nl_window_open(void)
{
    if (!W.video) {
        /* Without a display server SDL would try the console (KMSDRM) and print wayland's
         * complaints: say plainly what is missing instead, unless a driver was asked for. */
        if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY") && !getenv("SDL_VIDEODRIVER"))
            return nl_seterr(NL_EDEVICE, "viz: no display ($DISPLAY is not set); panels still draw "
                             "and viz.save works");
        SDL_SetHint(SDL_HINT_NO_SIGNAL_HANDLERS, "1");
        SDL_SetHint(SDL_HINT_FRAMEBUFFER_ACCELERATION, "0");
        SDL_SetHint(SDL_HINT_VIDEO_ALLOW_SCREENSAVER, "1");
        if (SDL_InitSubSystem(SDL_INIT_VIDEO) != 0 || !SDL_GetCurrentVideoDriver()) {
            nl_status s = nl_seterr(NL_EDEVICE, "viz: no display (%s); panels still draw and "
                                    "viz.save works", SDL_GetError());
            SDL_QuitSubSystem(SDL_INIT_VIDEO);
            return s;
        }
        W.video = true;
        atexit(quit_video);
    }
    if (W.win) {
        SDL_RaiseWindow(W.win);
        present();
        return NL_OK;
    }
    W.win = SDL_CreateWindow("nnlab", SDL_WINDOWPOS_UNDEFINED, SDL_WINDOWPOS_UNDEFINED, W.w, W.h,
                             SDL_WINDOW_RESIZABLE);
    /* One texture copy per frame needs no GPU: the software renderer works on every display
     * (Xvfb, ssh -X, VMs) and loads no GL driver. */
    if (W.win) W.ren = SDL_CreateRenderer(W.win, -1, SDL_RENDERER_SOFTWARE);
    if (!W.ren) {
        nl_status s = nl_seterr(NL_EDEVICE, "viz: cannot open a window: %s", SDL_GetError());
        nl_window_close();
        return s;
    }
    W.last_pump = now_ms();
    present();
    return NL_OK;
}

void nl_window_close(void)
{
    if (W.tex) SDL_DestroyTexture(W.tex);
    if (W.ren) SDL_DestroyRenderer(W.ren);
    if (W.win) SDL_DestroyWindow(W.win);
    W.tex = NULL;
    W.ren = NULL;
    W.win = NULL;
    W.paused = false;
    nl_canvas_release(W.shown);
    W.shown = NULL;
    if (W.video) {
        SDL_PumpEvents();
        SDL_FlushEvents(SDL_FIRSTEVENT, SDL_LASTEVENT);
    }
}

bool nl_window_is_open(void)
{
    return W.win != NULL;
}

void nl_window_size(int *w, int *h)
{
    if (W.win) SDL_GetWindowSize(W.win, &W.w, &W.h);
    *w = W.w;
    *h = W.h;
}

void nl_window_resize(int w, int h)
{
    W.w = w < 64 ? 64 : w > 8192 ? 8192 : w;
    W.h = h < 64 ? 64 : h > 8192 ? 8192 : h;
    if (W.win) {
        SDL_SetWindowSize(W.win, W.w, W.h);
        present();
    }
}

/* ---------------------------------------------------------------- keys and events ------- */

bool nl_window_paused(void)
{
    return W.paused;
}

const char *nl_window_note(void)
{
    return W.note;
}

static void set_paused(bool paused)
{
    W.paused = paused && W.win;
    if (W.win) present();
}

/* Writes the current view to runs/screenshot-<time>[-k].png (a name not taken yet). */
static nl_status save_screenshot(char *saved, size_t n)
{
    nl_canvas *c = nl_view_current(NULL);
    if (!c) return nl_seterr(NL_EINVAL, "viz: nothing to save yet: draw a panel first");
    char stamp[32], path[96];
    time_t t = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&t));
    snprintf(path, sizeof path, "runs/screenshot-%s.png", stamp);
    for (int k = 2; access(path, F_OK) == 0 && k < 1000; k++)
        snprintf(path, sizeof path, "runs/screenshot-%s-%d.png", stamp, k);
    nl_status s = nl_canvas_save_png(c, path);
    snprintf(W.note, sizeof W.note, "%s %s", s == NL_OK ? "saved" : "could not save", path);
    if (s == NL_OK && saved) snprintf(saved, n, "%s", path);
    return s;
}

nl_status nl_window_key(const char *key, char *saved, size_t n)
{
    nl_status s = NL_OK;
    if (strcmp(key, "space") == 0) {
        set_paused(!W.paused);
    } else if (strcmp(key, "tab") == 0) {
        if (W.nviews > 1) W.current = (W.current + 1) % W.nviews;
        if (W.nviews <= 1) /* nothing to cycle: say why, rather than do nothing */
            snprintf(W.note, sizeof W.note, "%s", W.nviews == 0 ? "tab: no views yet; draw a panel (viz.curves, ...)"
                     : "tab: only one view; draw another panel (viz.histogram, viz.features, ...) to switch");
        else
            W.note[0] = '\0';
    } else if (strcmp(key, "s") == 0) {
        s = save_screenshot(saved, n);
    } else if (strcmp(key, "q") == 0) {
        nl_window_close();
    } else {
        return nl_seterr(NL_EINVAL, "viz: unknown key '%s' (space, tab, s, q)", key);
    }
    present();
    return s;
}

void nl_window_pump(void)
{
    if (!W.win) return;
    W.last_pump = now_ms();
    bool dirty = false;
    SDL_Event e;
    while (W.win && SDL_PollEvent(&e)) {
        if (e.type == SDL_WINDOWEVENT) {
            if (e.window.event == SDL_WINDOWEVENT_CLOSE) nl_window_close();
            else dirty = true;
        } else if (e.type == SDL_KEYDOWN && !e.key.repeat) {
            SDL_Keycode k = e.key.keysym.sym;
            const char *key = k == SDLK_SPACE ? "space" : k == SDLK_TAB ? "tab" : k == SDLK_s ? "s"
                            : k == SDLK_q || k == SDLK_ESCAPE ? "q" : NULL;
            if (key) nl_window_key(key, NULL, 0); /* a failed save shows in the title */
        }
    }
    if (dirty) present();
}

void nl_window_tick(void)
{
    if (W.win && now_ms() - W.last_pump >= PUMP_MS) nl_window_pump();
}

void nl_window_wait_paused(void)
{
    while (W.paused && W.win && !nl_interrupted()) {
        nl_window_pump();
        SDL_Delay(PUMP_MS);
    }
    /* Ctrl-C in the terminal takes the pause over: the trainer pauses there, and its resume()
     * must continue at once rather than wait again for space in the window. */
    if (W.paused && nl_interrupted()) set_paused(false);
}

nl_canvas *nl_window_screenshot(void)
{
    int w, h;
    if (!W.win || !draw() || SDL_GetRendererOutputSize(W.ren, &w, &h) != 0) {
        nl_seterr(NL_EDEVICE, "viz.screenshot: %s", W.win ? SDL_GetError() : "the window is closed");
        return NULL;
    }
    nl_canvas *c = nl_canvas_new(w, h, 0);
    /* The logical size would scale the read rectangle: read the whole output unscaled. */
    SDL_RenderSetLogicalSize(W.ren, 0, 0);
    SDL_RenderSetViewport(W.ren, NULL);
    SDL_RenderSetScale(W.ren, 1, 1);
    int rc = c ? SDL_RenderReadPixels(W.ren, NULL, SDL_PIXELFORMAT_ARGB8888, c->px, w * 4) : -1;
    SDL_RenderPresent(W.ren);
    if (W.tex) SDL_RenderSetLogicalSize(W.ren, W.tex_w, W.tex_h);
    if (rc != 0 && c) {
        nl_seterr(NL_EDEVICE, "viz.screenshot: %s", SDL_GetError());
        nl_canvas_release(c);
        return NULL;
    }
    return c;
}
