#!/bin/sh
# Prepare nbgrader's exchange on the shared volume (docs/jupyterhub.md), as root, once,
# before any student's server starts:
#
#   sh deploy/jupyterhub/make_exchange.sh ROOT INSTRUCTOR [COURSE]
#
# ROOT        the exchange folder every server mounts, e.g. /srv/nbgrader/exchange
# INSTRUCTOR  owner of the course folder: the instructor server's user, as chown takes it
#             (name or uid, optionally :group), e.g. 1000:100
# COURSE      the course id (default initlab)
#
# Modes (nbgrader 0.9.6's exchange code, nbgrader/exchange/default/):
#   ROOT                 1777  nbgrader's release_assignment insists on rwx for all and
#                              resets anything else to 0777; the sticky bit keeps anyone
#                              from renaming or deleting a folder there they do not own
#   ROOT/COURSE          0755  owned by the instructor, created here so that no student
#                              can create it first; only the instructor writes in it
#   ROOT/COURSE/outbound 0755  released assignments: everyone reads, only the instructor
#                              publishes
#   ROOT/COURSE/inbound  3733  submissions: everyone may create one but not list the
#                              folder (nbgrader's own 2733), and with the sticky bit no
#                              student can rename or delete another's
# What these modes cannot stop (a student can still drop a submission named after a
# classmate into inbound/): see docs/jupyterhub.md.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: sh make_exchange.sh ROOT INSTRUCTOR [COURSE]" >&2
    echo "  e.g. sh make_exchange.sh /srv/nbgrader/exchange 1000:100 initlab" >&2
    exit 2
fi
root=$1
owner=$2
course=${3:-initlab}
case $course in
    */* | "" | . | ..) echo "COURSE must be a plain folder name, not '$course'" >&2; exit 2 ;;
esac

mkdir -p "$root/$course/outbound" "$root/$course/inbound"
chmod 1777 "$root"
chown "$owner" "$root/$course" "$root/$course/outbound" "$root/$course/inbound"
chmod 0755 "$root/$course" "$root/$course/outbound"
chmod 3733 "$root/$course/inbound"
echo "exchange ready: $root/$course (outbound 0755, inbound 3733, owner $owner)"
