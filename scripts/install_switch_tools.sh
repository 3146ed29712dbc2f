#!/bin/sh
# Installs what the real-SIP tests need (Debian/Ubuntu packages), only when something is missing:
# Kamailio with http_client (kamailio-utils-modules), jansson (kamailio-extra-modules) and db_sqlite for the
# completion spool (kamailio-sqlite-modules; htable and sqlops come with kamailio), sipp (sip-tester), and
# Lua 5.2 and 5.3 (FreeSWITCH 1.10 builds mod_lua on 5.2) for the FreeSWITCH recipe tests.
set -eu
need=""
command -v kamailio >/dev/null 2>&1 || need="$need kamailio"
ls /usr/lib/*/kamailio/modules/http_client.so >/dev/null 2>&1 || need="$need kamailio-utils-modules"
ls /usr/lib/*/kamailio/modules/jansson.so >/dev/null 2>&1 || need="$need kamailio-extra-modules"
ls /usr/lib/*/kamailio/modules/db_sqlite.so >/dev/null 2>&1 || need="$need kamailio-sqlite-modules"
command -v sipp >/dev/null 2>&1 || need="$need sip-tester"
command -v lua5.2 >/dev/null 2>&1 || need="$need lua5.2"
command -v lua5.3 >/dev/null 2>&1 || need="$need lua5.3"
[ -z "$need" ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing:$need" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >/dev/null
# The package starts a system Kamailio on :5060 where systemd runs; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
  $sudo systemctl stop kamailio || true
fi
