#!/bin/bash
# HEALTHCHECK of the flowlens image: the web listener ($FLOWLENS_LISTEN, default 127.0.0.1:8647) answers
# GET /metrics with 200. Plain bash (/dev/tcp): the slim image has no curl.
set -u
listen=${FLOWLENS_LISTEN:-127.0.0.1:8647}
host=${listen%:*}
port=${listen##*:}
host=${host#[}
host=${host%]}
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
[ "$host" = "::" ] && host=::1
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$listen" >&3
read -r -t 4 status <&3 || exit 1
case "$status" in
	"HTTP/1."?" 200"*) exit 0 ;;
	*) echo "flowlens: $status" >&2; exit 1 ;;
esac
