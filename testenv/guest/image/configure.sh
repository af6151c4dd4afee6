#!/bin/bash
# Runs inside the guest's root filesystem (chroot) after debootstrap: make it boot as an installed
# Debian with systemd does, with the test user scripts/test-guest runs rootless checks as.
set -euo pipefail
export LC_ALL=C

echo test-guest >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttest-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' >/etc/fstab
printf 'nameserver 10.0.2.3\n' >/etc/resolv.conf
# A fixed machine id: every guest boots from the same image and is thrown away after the run.
printf '%s\n' 5c0d1e55deb1a2b3c4d5e6f708192a3b >/etc/machine-id

# root logs in on the serial console without a password (a throwaway guest, for debugging by
# hand with `scripts/test-guest shell`).
passwd -d root >/dev/null

# The ordinary user of the rootless checks: subordinate ids as `useradd` gives them on Debian,
# and lingering so that user@1000.service (with its delegated cgroup subtree) runs from boot, as
# it does for a logged-in user.
useradd --create-home --shell /bin/bash --uid 1000 --user-group tester
printf 'tester:100000:65536\n' >/etc/subuid
printf 'tester:100000:65536\n' >/etc/subgid
# The range root's `dockless run --userns` maps containers to (README: the `dockless` entry).
printf 'dockless:1000000:65536\n' >>/etc/subuid
printf 'dockless:1000000:65536\n' >>/etc/subgid
mkdir -p /var/lib/systemd/linger
touch /var/lib/systemd/linger/tester

systemctl enable systemd-networkd.service test-guest.service
# Timers that would start work in the middle of a test run.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
apt-get clean
rm -rf /var/lib/apt/lists/*
