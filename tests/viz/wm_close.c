/* wm_close.c: closes nnlab's window the way a window manager does (a WM_DELETE_WINDOW client
 * message), for tests/viz/run.sh. Exits 0 when a mapped window of class "nnlab" got the message, 1 when
 * there is none, 2 without a display. */
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <stdio.h>
#include <string.h>

/* The first mapped window under w (depth first) of class "nnlab" (SDL names the class after the
 * program), or None. */
static Window find(Display *d, Window w)
{
    XClassHint hint = {NULL, NULL};
    XWindowAttributes a;
    if (XGetClassHint(d, w, &hint)) {
        int match = hint.res_class && strcmp(hint.res_class, "nnlab") == 0 &&
                    XGetWindowAttributes(d, w, &a) && a.map_state == IsViewable;
        XFree(hint.res_name);
        XFree(hint.res_class);
        if (match) return w;
    }
    Window root, parent, *kids = NULL, found = None;
    unsigned n = 0;
    if (!XQueryTree(d, w, &root, &parent, &kids, &n)) return None;
    for (unsigned i = 0; i < n && found == None; i++) found = find(d, kids[i]);
    if (kids) XFree(kids);
    return found;
}

int main(void)
{
    Display *d = XOpenDisplay(NULL);
    if (!d) {
        fprintf(stderr, "wm_close: no display\n");
        return 2;
    }
    Window w = find(d, DefaultRootWindow(d));
    if (w == None) {
        fprintf(stderr, "wm_close: no nnlab window\n");
        XCloseDisplay(d);
        return 1;
    }
    XEvent e = {0};
    e.xclient.type = ClientMessage;
    e.xclient.window = w;
    e.xclient.message_type = XInternAtom(d, "WM_PROTOCOLS", False);
    e.xclient.format = 32;
    e.xclient.data.l[0] = (long)XInternAtom(d, "WM_DELETE_WINDOW", False);
    e.xclient.data.l[1] = CurrentTime;
    XSendEvent(d, w, False, NoEventMask, &e);
    XFlush(d);
    XCloseDisplay(d);
    return 0;
}
