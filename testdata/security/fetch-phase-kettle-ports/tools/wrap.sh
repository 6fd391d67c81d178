#!/bin/sh
# Project code in the fetch phase (cargo runs the wrapper for `rustc -vV`
# during `cargo fetch`, with network): try kettle's own ports, directly and
# through the egress proxy, then fail so cargo shows what was printed.
# attack.conf (written by the test) lists "host:port want" lines; want is
# "blocked" for kettle's ports and "reached" for the test's control
# listener, which shows the probe itself works.
conf="$(dirname "$0")/../attack.conf"
[ -r "$conf" ] || exec "$@"
while read -r target want; do
  host=${target%:*}; port=${target##*:}
  if bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then r=REACHED; else r=blocked; fi
  echo "KETTLE-PROBE $target direct $r" >&2
  if curl -sS --max-time 5 -o /dev/null -p "http://$target/" 2>/dev/null; then r=REACHED; else r=blocked; fi
  echo "KETTLE-PROBE $target proxy $r want=$want" >&2
done < "$conf"
exit 1
