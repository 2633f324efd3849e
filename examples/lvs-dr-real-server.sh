#!/bin/sh
# Prepare (or undo) a real server of an LVS-DR virtual server (forwarding: dr), such as the web
# servers of examples/standalone/lvs-dr.yaml. Run it as root on each real server, not on the
# directors; running it again changes nothing.
#
#   lvs-dr-real-server.sh up 192.0.2.50        # before adding the server to the virtual server
#   lvs-dr-real-server.sh down 192.0.2.50      # after taking it out
#
# Why: with direct routing the director hands the client's packet, unchanged, to the real
# server's MAC address. The destination is still the VIP, so the real server must own the VIP
# (on lo, as /32: no route to the segment, nothing announced) and must never answer ARP for it,
# or it would steal the VIP from the director:
#   arp_ignore=1    answer ARP only for addresses of the interface the request came in on
#                   (the VIP is on lo, so eth0 stays silent about it);
#   arp_announce=2  never use the VIP as the source of this host's own ARP requests.
# The kernel uses the larger of `all` and the interface's value, so `all` covers every interface.
# IPv6 has no ARP: Linux answers neighbour solicitations only for addresses of the interface they
# arrive on, so the VIP on lo (/128, nodad) is all it takes.
#
# To make it permanent, put the two sysctls in /etc/sysctl.d/90-lvs-dr.conf and the address in
# the distribution's network configuration (or run this script at boot).
set -eu

usage() {
    echo "usage: $0 up|down VIP [VIP...]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
action=$1
shift
case $action in
    up | down) ;;
    *) usage ;;
esac

for vip in "$@"; do
    case $vip in
        */*) echo "$0: give the VIP without a prefix ($vip)" >&2; exit 2 ;;
        *:*) family=-6 prefix=128 extra=nodad ;;
        *.*) family=-4 prefix=32 extra= ;;
        *) echo "$0: $vip is not an IP address" >&2; exit 2 ;;
    esac
    if [ "$action" = up ]; then
        # `replace` adds the address, or leaves it as it is when it is there already.
        # shellcheck disable=SC2086 # $extra is empty or one word
        ip "$family" addr replace "$vip/$prefix" dev lo $extra
        echo "$vip/$prefix is on lo"
    elif ip "$family" -o addr show dev lo | grep -q -F " $vip/$prefix "; then
        ip "$family" addr del "$vip/$prefix" dev lo
        echo "removed $vip/$prefix from lo"
    fi
done

if [ "$action" = up ]; then
    # Idempotent: sysctl -w sets the same value again. Left in place by `down`: other VIPs (or
    # kube-proxy in IPVS mode with strictARP, which sets the same values) may need them.
    sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    echo "net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2"
fi
