/* window.h: the one SDL2 window that shows canvases, the views it can show (the panels drawn so
 * far, cycled with tab), and its keys. Works without a display: views, keys and saving still do;
 * only the window stays closed. One thread: call everything from the thread that runs Lua. */
#ifndef NL_WINDOW_H
#define NL_WINDOW_H

#include "canvas.h"

/* The size panels are drawn at when no window is open (and the window's first size). */
#define NL_VIEW_W 1200
#define NL_VIEW_H 720

/* Opens the window (or raises it when open) at the drawing size (nl_window_size) showing the
 * current view, scaled to fit. NL_OK, or NL_EDEVICE with
 * the reason when there is no display ($DISPLAY and $WAYLAND_DISPLAY unset and no
 * $SDL_VIDEODRIVER asked for, or SDL's video fails to start). SDL's own signal handlers are
 * never installed, so Ctrl-C stays the REPL's. */
nl_status nl_window_open(void);
/* Closes the window (if open); views are kept, so nl_window_open shows it again. Unpauses. */
void nl_window_close(void);
bool nl_window_is_open(void);
/* The size to draw panels at: the window's inner size when open, else NL_VIEW_W x NL_VIEW_H. */
void nl_window_size(int *w, int *h);
/* Asks for an inner size (a script's resize; the user's resizes arrive as events). */
void nl_window_resize(int w, int h);

/* Makes c the view named name (replacing the one of that name, which is released), and the
 * current view when make_current; shows it when the window is open and it is current. Takes its
 * own reference. At most 16 names (a 17th replaces the last). */
void nl_view_set(const char *name, nl_canvas *c, bool make_current);
/* The current view (borrowed; NULL when nothing was drawn) and its name. */
nl_canvas *nl_view_current(const char **name);
/* The view named name (borrowed), or NULL. */
nl_canvas *nl_view_get(const char *name);
/* Names of the views in the order tab visits them; returns the count (at most max). */
int nl_view_names(const char **names, int max);

/* Handles window events now: resizes, exposure, closing, keys. Cheap when closed. */
void nl_window_pump(void);
/* As nl_window_pump, but only when 30 ms have passed since the last pump: call it as often as
 * you like (between training steps); it costs a clock read otherwise. */
void nl_window_tick(void);

/* What a key does, the same from the window or from a script (nl_window_key):
 * "space" pauses or resumes (only while the window is open), "tab" shows the next view, "s"
 * saves the current view as runs/screenshot-YYYYmmdd-HHMMSS.png (the path goes to saved when
 * not NULL), "q" closes the window. NL_EINVAL for another key; saving's errors. */
nl_status nl_window_key(const char *key, char *saved, size_t n);

/* What the last key did, as the title shows it ("" for nothing to say). */
const char *nl_window_note(void);
/* Whether training is paused (space in the window). */
bool nl_window_paused(void);
/* Blocks while paused, pumping the window every 30 ms; returns when resumed, the window closes,
 * or Ctrl-C raised the interrupt flag (which also ends the pause: the trainer pauses instead).
 * While paused the window shows a banner over the view. */
void nl_window_wait_paused(void);

/* Reads back what the window shows (its whole inner area, letterboxing included) into a new
 * canvas. NULL with NL_EDEVICE when the window is closed or the read fails. */
nl_canvas *nl_window_screenshot(void);

#endif
