# syntax=docker/dockerfile:1
# rtpengine from Debian's own package (rtpengine-daemon), userspace
# forwarding only: no kernel module, so no privileged container and no DKMS.
#
#   docker build -f docker/rtpengine.Dockerfile -t rtcgate-rtpengine docker
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends rtpengine-daemon \
    && rm -rf /var/lib/apt/lists/*
# The package creates the unprivileged user "rtpengine"; media ports above
# 1024 need no capability in userspace mode.
USER rtpengine
# Options come from compose.yaml (listen addresses, interfaces, port range).
ENTRYPOINT ["/usr/bin/rtpengine", "--foreground", "--log-stderr", "--config-file=none", "--table=-1"]
