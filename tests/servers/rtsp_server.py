"""A real RTSP server on loopback for the live-stream tests: GStreamer's gst-rtsp-server.

Run with Debian's /usr/bin/python3 (the GObject bindings belong to it):
    rtsp_server.py PORT VIDEO.mp4 MOUNT[,MOUNT...] LIFETIME_S
Serves the H.264 MP4 at rtsp://127.0.0.1:PORT/MOUNT, in real time, from its first
frame for every client. Prints "ready" once listening; exits after LIFETIME_S so a
test that dies cannot leave it behind. With RTSP_USER and RTSP_PASSWORD in the
environment (not argv, which ps shows), it requires HTTP Basic auth, as cameras do.
"""

import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, video, mount, lifetime = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
location = video.replace("\\", "\\\\").replace('"', '\\"')
factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse '
                   '! rtph264pay name=pay0 pt=96 config-interval=1 )')
user, password = os.environ.get("RTSP_USER"), os.environ.get("RTSP_PASSWORD")
if user and password:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken.new()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    for permission in (GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT):
        permissions.add_permission_for_role("viewer", permission, True)
    factory.set_permissions(permissions)
for path in mount.split(","):  # several mounts: one camera seen as several sources
    server.get_mount_points().add_factory("/" + path.strip("/"), factory)
if server.attach(None) == 0:
    sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
loop = GLib.MainLoop()
GLib.timeout_add_seconds(lifetime, loop.quit)
print("ready", flush=True)
loop.run()
