"""A real RTSP camera for tests: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0) serving a
moving test pattern as Motion JPEG over RTP on ``rtsp://127.0.0.1:PORT/cam``.

It runs under Debian's own Python (``/usr/bin/python3``, which has the GObject bindings; the project's
venv does not), as a process of its own that a test starts, stops with SIGTERM and starts again:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --fps 10

It prints ``ready`` once it listens, and exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

PYTHON = "/usr/bin/python3"  # the interpreter that has Debian's python3-gi
PATH = "/cam"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    args = p.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,format=I420,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)  # one pipeline for every client, as a camera has
    server.get_mount_points().add_factory(PATH, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
