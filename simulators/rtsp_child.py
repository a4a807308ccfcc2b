"""A GStreamer RTSP server playing pre-encoded H.264 clips in a loop, one mount per camera.

Run by Debian's ``/usr/bin/python3`` (whose PyGObject reaches GStreamer's introspection data),
never imported by gridwatch: it uses only the standard library and ``gi``. ``simulators.
camera_rtsp`` starts it, writes the configuration as JSON to its stdin, reads ``ready PORT``
from its stdout and then sends one command a line:

- ``select MOUNT KEY``: the mount plays clip KEY from its next frame (a PTZ move, a scene change);
- ``drop MOUNT``: the clients of MOUNT lose their connection, as on a failing uplink.

Configuration: ``{"port": 0, "mounts": {"/cam-001": {"fps": 25, "clips": {KEY: PATH},
"start": KEY, "clocked": {KEY: FRAME}}}}``. A clocked clip plays on the mount's clock, which
starts with its first client, once and then looping from FRAME; a client joining or switching
to it starts at the key frame before the clock's frame.

A clip file is ``GWH264`` then, per access unit, a little-endian uint32 length, one key-frame
byte and the Annex B bytes. Every client gets its own pipeline fed by an
``appsrc`` with the mount's current clip, time-stamped continuously across loops and clip
switches; the server's sinks pace it in real time. The server exits when its stdin closes.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MAGIC = b"GWH264\n"
RECORD = struct.Struct("<IB")
LAUNCH = (
    "( appsrc name=src format=time is-live=false max-buffers=2 "
    "caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
    "rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def read_clip(path: str) -> list[tuple[bytes, bool]]:
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a clip file")
    units, at = [], len(MAGIC)
    while at < len(data):
        length, key = RECORD.unpack_from(data, at)
        at += RECORD.size
        units.append((data[at : at + length], bool(key)))
        at += length
    if not units or not units[0][1]:
        raise ValueError(f"{path}: a clip must start with a key frame")
    return units


class Mount:
    def __init__(
        self,
        fps: float,
        clips: dict[str, list[tuple[bytes, bool]]],
        start: str,
        clocked: dict[str, int],
    ) -> None:
        self.fps = fps
        self.duration = int(Gst.SECOND / fps)
        self.clips = clips
        self.key = start
        self.clocked = clocked
        self.started: float | None = None  # when the first client came: clocked frame 0
        self.medias: list[Any] = []

    def entry(self, key: str) -> int:
        """Where a client starts playing ``key``: its first frame, or for a clocked clip the
        key frame at or before the clock's frame (played once, then looped from its FRAME)."""
        if key not in self.clocked:
            return 0
        units, loop_from = self.clips[key], self.clocked[key]
        started = self.started if self.started is not None else time.monotonic()
        n = max(int((time.monotonic() - started) * self.fps), 0)
        if n >= len(units):
            n = loop_from + (n - loop_from) % (len(units) - loop_from)
        return next(i for i in range(n, -1, -1) if units[i][1])

    def wrap(self, key: str) -> int:
        """Where ``key`` continues after its last frame."""
        loop_from = self.clocked.get(key, 0)
        units = self.clips[key]
        return next(i for i in range(loop_from, -1, -1) if units[i][1])


class Feeder:
    """Feeds one client's appsrc from its mount, one access unit per ``need-data``."""

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        self.key: str | None = None
        self.index = 0
        self.pts = 0

    def need_data(self, src: Any, _length: int) -> None:
        if self.key != self.mount.key:  # switch at once, on a key frame
            self.key = self.mount.key
            self.index = self.mount.entry(self.key)
        units = self.mount.clips[self.key]
        data, key = units[self.index]
        self.index += 1
        if self.index >= len(units):
            self.index = self.mount.wrap(self.key)
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.pts = buffer.dts = self.pts
        buffer.duration = self.mount.duration
        if not key:
            buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.pts += self.mount.duration
        src.emit("push-buffer", buffer)


def main() -> None:
    Gst.init(None)
    config = json.loads(sys.stdin.readline())
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(config.get("port", 0)))
    mounts: dict[str, Mount] = {}
    for path, spec in config["mounts"].items():
        clips = {key: read_clip(clip) for key, clip in spec["clips"].items()}
        clocked = {str(k): int(v) for k, v in spec.get("clocked", {}).items()}
        mount = Mount(float(spec["fps"]), clips, str(spec["start"]), clocked)
        mounts[path] = mount
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(LAUNCH)
        factory.set_shared(False)
        factory.connect("media-configure", _configure, mount)
        server.get_mount_points().add_factory(path, factory)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        raise SystemExit("the RTSP server could not bind its port")
    print(f"ready {server.get_bound_port()}", flush=True)

    def command(line: str) -> bool:
        words = line.split()
        if words[:1] == ["select"] and len(words) == 3 and words[1] in mounts:
            if words[2] in mounts[words[1]].clips:
                mounts[words[1]].key = words[2]
        elif words[:1] == ["drop"] and len(words) == 2 and words[1] in mounts:
            _drop(server, mounts[words[1]])
        else:
            print(f"unknown command {line.strip()!r}", file=sys.stderr, flush=True)
        return False

    def read_commands() -> None:
        for line in sys.stdin:
            GLib.idle_add(command, line)
        GLib.idle_add(loop.quit)

    threading.Thread(target=read_commands, daemon=True).start()
    loop.run()


def _configure(_factory: Any, media: Any, mount: Mount) -> None:
    src = media.get_element().get_child_by_name("src")
    if mount.started is None:
        mount.started = time.monotonic()
    src.connect("need-data", Feeder(mount).need_data)
    mount.medias.append(media)
    media.connect("unprepared", lambda m: mount.medias.remove(m) if m in mount.medias else None)


def _drop(server: Any, mount: Mount) -> None:
    def plays_mount(session: Any) -> bool:
        return any(sm.get_media() in mount.medias for sm in session.filter(None, None))

    def client_filter(_server: Any, client: Any, _user: Any = None) -> Any:
        if any(plays_mount(s) for s in client.session_filter(None, None)):
            return GstRtspServer.RTSPFilterResult.REMOVE  # closes its connection
        return GstRtspServer.RTSPFilterResult.KEEP

    server.client_filter(client_filter, None)


if __name__ == "__main__":
    main()
