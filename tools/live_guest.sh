#!/usr/bin/env bash
# A live x86-64 QEMU guest for pagewalk's live tests (--gdb, --qmp): a Debian kernel and a
# busybox initramfs whose init only sleeps, under TCG, with a gdbstub on a free TCP port and a QMP
# unix socket.
#
#   tools/live_guest.sh start DIR   boot; wait until init runs; print the lines
#                                   PAGEWALK_LIVE_GDB=127.0.0.1:PORT  PAGEWALK_LIVE_QMP=DIR/qmp.sock
#                                   PAGEWALK_LIVE_PID=PID  PAGEWALK_LIVE_KERNEL=VMLINUZ
#   tools/live_guest.sh stop DIR    end the QEMU started in DIR (by its pid file)
#
# The kernel: $PAGEWALK_LIVE_KERNEL, else the newest $CACHE/boot/vmlinuz-*-amd64 that
# tools/ci_live_setup.sh unpacked (CACHE = $PAGEWALK_LIVE_CACHE, default ~/.cache/pagewalk-live).
# busybox: $CACHE/bin/busybox, else the host's static /bin/busybox (Debian busybox-static).
# Knobs: MEM (256M), CPU (max: LA57, so 5-level paging), SMP (1), TIMEOUT (180 s to reach init),
# APPEND (more kernel command-line words).
set -euo pipefail

CACHE=${PAGEWALK_LIVE_CACHE:-$HOME/.cache/pagewalk-live}
MARKER="=====PAGEWALK-LIVE-READY====="
die() { echo "live_guest: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop DIR"

stop() {
    local pidf="$dir/qemu.pid"
    [ -f "$pidf" ] || return 0
    local pid
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

find_kernel() {
    if [ -n "${PAGEWALK_LIVE_KERNEL:-}" ]; then
        [ -f "$PAGEWALK_LIVE_KERNEL" ] || die "PAGEWALK_LIVE_KERNEL=$PAGEWALK_LIVE_KERNEL: no such file"
        echo "$PAGEWALK_LIVE_KERNEL"
        return
    fi
    local k
    k=$(ls -1 "$CACHE"/boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$k" ] || die "no kernel in $CACHE/boot (run tools/ci_live_setup.sh, or set PAGEWALK_LIVE_KERNEL)"
    echo "$k"
}

find_busybox() {
    local b
    for b in "$CACHE/bin/busybox" /bin/busybox /usr/bin/busybox; do
        if [ -x "$b" ] && ! LC_ALL=C ldd "$b" >/dev/null 2>&1; then
            echo "$b"   # ldd fails on a static binary: that is the one we want
            return
        fi
    done
    die "no static busybox (apt-get install busybox-static, or run tools/ci_live_setup.sh)"
}

# qemu_fw_cfg.ko of the kernel's own tree (../lib/modules beside ../boot/vmlinuz): loaded in the
# guest, it hands QEMU the VMCOREINFO note (-device vmcoreinfo), so dump-guest-memory cores of
# this guest carry it. Without it the guest still boots; the cores then have no VMCOREINFO.
find_fw_cfg() {
    local kernel=$1 ver root
    ver=$(basename "$kernel"); ver=${ver#vmlinuz-}
    root=$(dirname "$(dirname "$kernel")")
    ls -1 "$root/lib/modules/$ver/kernel/drivers/firmware/"qemu_fw_cfg.ko* 2>/dev/null | head -n 1 || true
}

make_initrd() {
    local out=$1 bb=$2 fwcfg=$3 root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
    cp "$bb" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    case "$fwcfg" in
    "") ;;
    *.xz) xz -dc "$fwcfg" >"$root/qemu_fw_cfg.ko" ;;
    *.zst) zstd -qdc "$fwcfg" >"$root/qemu_fw_cfg.ko" ;;
    *) cp "$fwcfg" "$root/qemu_fw_cfg.ko" ;;
    esac
    cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
[ -f /qemu_fw_cfg.ko ] && /bin/busybox insmod /qemu_fw_cfg.ko
/bin/busybox echo "$MARKER"
exec /bin/busybox sleep 2147483647
EOF
    chmod 755 "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out"
    rm -rf "$root"
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

start() {
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not installed (run tools/ci_live_setup.sh)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop
    local kernel bb port
    kernel=$(find_kernel)
    bb=$(find_busybox)
    make_initrd "$dir/initrd.cpio.gz" "$bb" "$(find_fw_cfg "$kernel")"
    rm -f "$dir/serial.log" "$dir/qmp.sock"
    : >"$dir/serial.log"
    port=$(free_port)
    echo "$port" >"$dir/gdb.port"
    local t0=$SECONDS
    qemu-system-x86_64 -accel tcg -cpu "${CPU:-max}" -smp "${SMP:-1}" -m "${MEM:-256M}" \
        -nodefaults -no-user-config -display none -device vmcoreinfo \
        -kernel "$kernel" -initrd "$dir/initrd.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet ${APPEND:-}" \
        -serial "file:$dir/serial.log" \
        -gdb "tcp:127.0.0.1:$port" \
        -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
        -no-reboot -daemonize -pidfile "$dir/qemu.pid" >"$dir/qemu.log" 2>&1 \
        || die "qemu did not start: $(cat "$dir/qemu.log")"
    local pid
    pid=$(cat "$dir/qemu.pid")
    local deadline=$((SECONDS + ${TIMEOUT:-180}))
    until grep -q "$MARKER" "$dir/serial.log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "qemu exited before init ran; serial log tail: $(tail -n 20 "$dir/serial.log")"
        fi
        if [ $SECONDS -ge $deadline ]; then
            stop
            die "guest did not reach init in ${TIMEOUT:-180} s; serial log tail: $(tail -n 20 "$dir/serial.log")"
        fi
        sleep 0.2
    done
    echo "live_guest: booted $(basename "$kernel") in $((SECONDS - t0)) s" >&2
    echo "PAGEWALK_LIVE_GDB=127.0.0.1:$port"
    echo "PAGEWALK_LIVE_QMP=$dir/qmp.sock"
    echo "PAGEWALK_LIVE_PID=$pid"
    echo "PAGEWALK_LIVE_KERNEL=$kernel"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop DIR" ;;
esac
