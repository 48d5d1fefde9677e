#!/usr/bin/env bash
# A real Kubernetes-style node in a VM, made offline from Debian's packages only: Debian 12 with
# systemd as PID 1, the distribution kernel (cgroup v2 unified, AppArmor enabled), apparmor,
# dbus, iptables and the CNI plugins. Booted by qemu with -kernel/-initrd from the image itself.
#
#   hack/node-vm.sh image            build (or reuse) the cached disk image; prints its directory
#   hack/node-vm.sh test             build ferrio (static release), the node test binary and the
#                                    test images, boot the VM, run tests/node.rs inside it against
#                                    ferrio installed by `ferrio install` and started by systemd;
#                                    exits with the suite's status (77: the VM cannot boot here)
#   hack/node-vm.sh shell            a root console on the VM (serial; Ctrl-a x quits qemu)
#   hack/node-vm.sh run DIR          boot with DIR shared (9p, tag "share", at /mnt/share in the
#                                    VM); DIR/run.sh runs as root, its output goes to the console
#                                    and DIR/output.log, its status to DIR/rc, then the VM powers off
#
# The image is cached in $FERRIO_VM_CACHE (default /var/cache/ferrio/node-vm) under a key of the
# package list and the provisioning below; the VM never writes to it (qemu -snapshot).
# Acceleration: KVM when /dev/kvm works (tried once, the answer cached), else TCG.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
CACHE=${FERRIO_VM_CACHE:-/var/cache/ferrio/node-vm}
MEM=${FERRIO_VM_MEM:-2048}
SMP=${FERRIO_VM_SMP:-2}
BOOT_TIMEOUT=${FERRIO_VM_BOOT_TIMEOUT:-240}
RUN_TIMEOUT=${FERRIO_VM_TIMEOUT:-900}

PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-amd64,apparmor,dbus,iproute2,iptables,containernetworking-plugins,procps,util-linux,ca-certificates,libseccomp2,runc,crun,criu
SUITE=bookworm

log() { echo "node-vm: $*" >&2; }

# The provisioning of the root filesystem; part of the cache key.
provision() {
  local root=$1
  echo ferrio-node > "$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 ferrio-node\n' > "$root/etc/hosts"
  echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
  # The console: root logs in without a password on the serial line (a throwaway VM with no network).
  mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
  cat > "$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I $TERM
EOF
  # The runner: mounts the share and runs its run.sh, then powers off.
  cat > "$root/usr/local/sbin/ferrio-vm-run" <<'EOF'
#!/bin/sh
modprobe 9pnet_virtio 2>/dev/null
mkdir -p /mnt/share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 share /mnt/share 2>/dev/null || exit 0
echo "ferrio-vm: up $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
[ -f /mnt/share/run.sh ] || exit 0
cd /mnt/share
sh /mnt/share/run.sh > /mnt/share/output.log 2>&1
echo $? > /mnt/share/rc
sync
cat /mnt/share/output.log > /dev/ttyS0
systemctl --no-block poweroff
EOF
  chmod 0755 "$root/usr/local/sbin/ferrio-vm-run"
  cat > "$root/etc/systemd/system/ferrio-vm-run.service" <<'EOF'
[Unit]
Description=ferrio node VM runner
After=multi-user.target dbus.service apparmor.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ferrio-vm-run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/ferrio-vm-run.service "$root/etc/systemd/system/multi-user.target.wants/ferrio-vm-run.service"
  # No network in the VM but loopback: nothing waits for one.
  rm -f "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  # Keep the journal in memory; nothing else writes to the (snapshot) disk that matters.
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/volatile.conf"
}

cache_key() {
  { echo "$SUITE $PACKAGES"; declare -f provision; } | sha256sum | cut -c1-16
}

image_dir() { echo "$CACHE/$(cache_key)"; }

build_image() {
  local dir; dir=$(image_dir)
  if [ -f "$dir/disk.img" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
    echo "$dir"; return
  fi
  for t in mmdebstrap mkfs.ext4 qemu-system-x86_64; do
    command -v $t >/dev/null || { log "need $t: apt-get install mmdebstrap e2fsprogs qemu-system-x86"; exit 1; }
  done
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  local t0=$SECONDS
  log "building the node image (Debian $SUITE: $PACKAGES)"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" >&2
  provision "$work/root"
  cp "$work/root"/boot/vmlinuz-* "$work/vmlinuz"
  cp "$work/root"/boot/initrd.img-* "$work/initrd.img"
  mkfs.ext4 -q -F -L root -d "$work/root" "$work/disk.img" 3G >&2
  rm -rf "$work/root"
  rm -rf "$dir"
  mv "$work" "$dir"
  trap - EXIT
  log "image built in $((SECONDS - t0)) s: $dir"
  echo "$dir"
}

# qemu's acceleration: KVM if a KVM guest boots here (checked once, cached), else TCG.
accel() {
  local dir=$1
  if [ -n "${FERRIO_VM_ACCEL:-}" ]; then echo "$FERRIO_VM_ACCEL"; return; fi
  if [ -f "$CACHE/accel" ]; then cat "$CACHE/accel"; return; fi
  local a=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    local probe; probe=$(mktemp -d)
    : > "$probe/keep"
    log "trying KVM"
    if boot "$dir" kvm "$probe" 60 >/dev/null 2>&1 && grep -q "ferrio-vm: up" "$probe/console.log"; then
      a=kvm
    else
      log "KVM did not boot the VM here: TCG"
    fi
    rm -rf "$probe"
  fi
  echo "$a" > "$CACHE/accel"
  echo "$a"
}

# boot DIR ACCEL SHARE TIMEOUT: boots the VM with SHARE on 9p, console to SHARE/console.log.
# Returns once the VM powers off (or 124 after TIMEOUT seconds).
boot() {
  local dir=$1 acc=$2 share=$3 limit=$4 machine
  case $acc in
    kvm) machine=(-accel kvm -cpu host,-arch-capabilities) ;;
    *) machine=(-accel tcg,thread=multi -cpu max) ;;
  esac
  timeout --foreground -k 5 "$limit" qemu-system-x86_64 "${machine[@]}" -smp "$SMP" -m "$MEM" \
    -nographic -no-reboot -nic none \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 psi=1 ${FERRIO_VM_APPEND:-}" \
    -drive "file=$dir/disk.img,format=raw,if=virtio,snapshot=on" \
    -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
    </dev/null > "$share/console.log" 2>&1
}

run_in_vm() {
  local share; share=$(cd "$1" && pwd)
  local dir; dir=$(build_image)
  local acc; acc=$(accel "$dir")
  rm -f "$share/rc" "$share/output.log"
  local t0=$SECONDS
  log "booting ($acc, $SMP vCPU, $MEM MiB)"
  local st=0
  boot "$dir" "$acc" "$share" "$RUN_TIMEOUT" || st=$?
  log "VM ran $((SECONDS - t0)) s (qemu status $st)"
  if ! grep -q "ferrio-vm: up" "$share/console.log"; then
    log "the VM did not come up; its console:"
    tail -n 40 "$share/console.log" >&2
    return 77
  fi
  grep -o "ferrio-vm: up [0-9.]*" "$share/console.log" | sed 's/^/node-vm: boot reached the runner after (s, guest uptime): /' >&2 || true
  [ -f "$share/rc" ] || { log "no result (timeout after ${RUN_TIMEOUT} s?)"; tail -n 60 "$share/console.log" >&2; return 1; }
  return "$(cat "$share/rc")"
}

cmd_test() {
  share=$(mktemp -d /tmp/ferrio-node-vm.XXXXXX)
  trap 'rm -rf "$share"' EXIT
  build_image >/dev/null
  log "building ferrio (static release) and the node tests"
  local rel; rel=$("$here/build-release.sh")
  cp "$rel" "$share/ferrio"
  local bin
  bin=$(cd "$repo" && cargo test --locked --test node --no-run --message-format=json 2>/dev/null \
        | grep '"kind":\["test"\],"crate_types":\["bin"\],"name":"node"' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -x "$bin" ] || { log "could not build tests/node.rs"; return 1; }
  cp "$bin" "$share/node-tests"
  "$here/build-test-images.sh" "$share/images" >/dev/null
  cat > "$share/run.sh" <<'EOF'
set -u
echo "== node: $(uname -r), $(stat -fc %T /sys/fs/cgroup), apparmor=$(cat /sys/module/apparmor/parameters/enabled), pid1=$(cat /proc/1/comm)"
export FERRIO_NODE_VM=1 FERRIO_NODE_SHARE=/mnt/share RUST_BACKTRACE=1
# The suite runs from the VM's own disk (9p is slow and cannot hold overlay upper dirs).
mkdir -p /var/tmp/node && cp -r /mnt/share/images /mnt/share/ferrio /mnt/share/node-tests /var/tmp/node/
export FERRIO_TEST_IMAGES=/var/tmp/node/images FERRIO_NODE_BIN=/var/tmp/node/ferrio
start=$(cut -d' ' -f1 /proc/uptime)
/var/tmp/node/node-tests --ignored --test-threads=1 --show-output 2>&1
rc=$?
echo "== node suite: status $rc, $(awk -v s=$start '{printf "%.0f", $1 - s}' /proc/uptime) s"
journalctl -u ferrio --no-pager -q 2>/dev/null | tail -n 30
exit $rc
EOF
  local st=0
  run_in_vm "$share" || st=$?
  [ -f "$share/output.log" ] && cat "$share/output.log"
  return $st
}

case "${1:-test}" in
  image) build_image ;;
  test) cmd_test ;;
  run) [ -n "${2:-}" ] || { echo "usage: $0 run DIR" >&2; exit 2; }; run_in_vm "$2" ;;
  shell)
    dir=$(build_image); acc=$(accel "$dir")
    share=${2:-$(mktemp -d)}
    case $acc in kvm) m=(-accel kvm -cpu host,-arch-capabilities) ;; *) m=(-accel tcg,thread=multi -cpu max) ;; esac
    exec qemu-system-x86_64 "${m[@]}" -smp "$SMP" -m "$MEM" -nographic -nic none \
      -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "root=/dev/vda rw console=ttyS0 psi=1" \
      -drive "file=$dir/disk.img,format=raw,if=virtio,snapshot=on" \
      -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
