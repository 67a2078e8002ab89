#!/usr/bin/python3
"""A real RTSP server on 127.0.0.1 serving H.264, for tests and demos (GStreamer gst-rtsp-server).

Runs under Debian's Python (``/usr/bin/python3``), which has PyGObject; the project venv does not.

    /usr/bin/python3 tools/rtsp_test_server.py --port 8554                 # videotestsrc, 640x360@30
    /usr/bin/python3 tools/rtsp_test_server.py --port 8554 --file clip.mp4 # an H.264 MP4, looped

Prints one line ``READY rtsp://127.0.0.1:<port><path>`` on stdout once it accepts clients, and
exits cleanly on SIGTERM or SIGINT (or after ``--max-lifetime`` seconds, so a forgotten server
cannot outlive a test run). Both RTSP transports work: RTP over TCP (interleaved) and over UDP.

Needs: ``apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def _pipeline(args: argparse.Namespace) -> str:
    enc = (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} bframes=0 "
        "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    if args.file:
        # Decode and re-encode so the file can loop seamlessly (see _loop_on_eos) and any codec works.
        return (
            f'( filesrc location="{args.file}" ! decodebin ! videoconvert name=conv ! videoscale '
            f"! video/x-raw,format=I420 ! {enc} )"
        )
    return (
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! {enc} )"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/test")
    p.add_argument("--file", help="serve this video file (looped) instead of videotestsrc")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (ball, smpte, ...)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=30, help="keyframe interval in frames")
    p.add_argument("--max-lifetime", type=float, default=900.0, help="exit after this many seconds")
    args = p.parse_args()
    if args.file and not os.path.isfile(args.file):
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as e:
        print(
            f"error: GStreamer RTSP server bindings missing ({e}); run under /usr/bin/python3 after "
            "apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly",
            file=sys.stderr,
        )
        return 2

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_pipeline(args))
    factory.set_shared(True)
    if args.file:
        factory.connect("media-configure", lambda _f, media: _loop_on_eos(media, Gst, GLib))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    def quit_(*_a: object) -> bool:
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_)
    GLib.timeout_add(int(args.max_lifetime * 1000), quit_)
    print(f"READY rtsp://{args.host}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


def _loop_on_eos(media, Gst, GLib) -> None:  # noqa: N803 - module arguments
    """Restart the file from 0 when it ends, instead of ending the RTSP stream."""
    element = media.get_element()

    def rewind() -> bool:
        pipeline = element
        while pipeline.get_parent() is not None:
            pipeline = pipeline.get_parent()
        pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        return False

    def on_event(_pad, info):
        if info.get_event().type == Gst.EventType.EOS:
            GLib.idle_add(rewind)
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    # qtdemux reads in pull mode and sends EOS itself, so catch it after the decoder
    conv = element.get_by_name("conv")
    if conv is None:
        return
    conv.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)


if __name__ == "__main__":
    sys.exit(main())
