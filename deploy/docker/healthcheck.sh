#!/bin/bash
# HEALTHCHECK of the flowlens image: the web listener ($FLOWLENS_LISTEN, default 127.0.0.1:8647) answers
# GET /metrics with 200. Plain bash (/dev/tcp): the slim image has no curl. When the explorer has a bearer
# token (FLOWLENS_WEB_TOKEN, or the file named by FLOWLENS_WEB_TOKEN_FILE, as flowlens reads them), /metrics
# needs it: it is sent from bash builtins only, so it never appears in a process's arguments.
set -u
listen=${FLOWLENS_LISTEN:-127.0.0.1:8647}
host=${listen%:*}
port=${listen##*:}
host=${host#[}
host=${host%]}
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
[ "$host" = "::" ] && host=::1
token=${FLOWLENS_WEB_TOKEN:-}
if [ -z "$token" ] && [ -n "${FLOWLENS_WEB_TOKEN_FILE:-}" ]; then
	IFS= read -r token <"$FLOWLENS_WEB_TOKEN_FILE" || [ -n "$token" ] || {
		echo "flowlens-healthcheck: cannot read FLOWLENS_WEB_TOKEN_FILE" >&2
		exit 1
	}
	token=${token%$'\r'}
fi
auth=
[ -n "$token" ] && auth="Authorization: Bearer $token"$'\r\n'
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n%s\r\n' "$listen" "$auth" >&3
read -r -t 4 status <&3 || exit 1
case "$status" in
	"HTTP/1."?" 200"*) exit 0 ;;
	*) echo "flowlens: $status" >&2; exit 1 ;;
esac
