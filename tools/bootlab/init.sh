#!/bin/sh
# PID 1 of the boot lab's guest (tools/bootlab): what the appliance's initrd
# and health gate do, in a few lines of busybox. It mounts the slot its UKI's
# command line names (mount.usr=PARTLABEL=<GPT label>), runs the slot's
# health gate, and blesses the entry as systemd-bless-boot does (drops the
# +LEFT-DONE tries counter from the file name LoaderBootCountPath names) or,
# while the boot is a trial, reboots. With an update medium (a second disk)
# it then installs the version on it the way an update does: the other slot
# first, read back, labelled, and the UKI with its tries counter last.
# Every line the lab reads starts with OSIRIS-LAB.
export PATH=/bin
say() { echo "OSIRIS-LAB $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do insmod "/lib/modules/$m" || say "insmod $m failed"; done
mount -t efivarfs efivarfs /sys/firmware/efi/efivars

GUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f  # systemd-boot's vendor GUID (Boot Loader Interface)
USR_TYPE=8484680C-9521-48C6-9C11-B0720656F69E
efivar() { f=/sys/firmware/efi/efivars/$1-$GUID; [ -r "$f" ] && tail -c +5 "$f" | tr -d '\000'; }
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}";; esac; done; }
# The device of the partition whose GPT name is $1, waiting for it to appear.
part() {
  i=0
  while [ $i -lt 200 ]; do
    for u in /sys/class/block/vda*/uevent; do
      if grep -qx "PARTNAME=$1" "$u" 2>/dev/null; then echo "/dev/$(sed -n 's/^DEVNAME=//p' "$u")"; return 0; fi
    done
    i=$((i + 1)); sleep 0.05
  done
  return 1
}
# Whether the UKI $1 boots the slot labelled $2 (its .cmdline; NULs dropped: grep reads C strings).
names_slot() { tr -d '\000' < "$1" | grep -qF "mount.usr=PARTLABEL=$2 "; }
down() { umount /esp /slot /medium 2>/dev/null; sync; say "$1"; "$1" -f; sleep 5; }

slot=$(arg mount.usr); slot=${slot#PARTLABEL=}
counter=$(efivar LoaderBootCountPath | tr '\\' /)
say "boot slot=$slot entry=$(efivar LoaderEntrySelected) counter=${counter:-none}"
esp=$(part ESP) && mount -t vfat "$esp" /esp || { say "no ESP"; down poweroff; }

verdict=fail
if dev=$(part "$slot") && mount -t squashfs -o ro "$dev" /slot; then
  say "version $(cat /slot/version) from $dev"
  if /slot/gate; then verdict=pass; fi
else
  say "slot $slot not found or not mountable"
fi
say "gate $verdict"

if [ "$verdict" = pass ]; then
  if [ -n "$counter" ]; then
    name=${counter##*/}
    good=$(echo "$name" | sed -E 's/\+[0-9]+(-[0-9]+)?(\.[a-z]+)$/\2/')
    mv "/esp$counter" "/esp${counter%/*}/$good" && sync && say "blessed $name -> $good"
  else
    say "blessed already"
  fi
elif [ -n "$counter" ]; then
  say "trial boot failed: rebooting"
  down reboot
else
  say "gate failed on a blessed entry: not rebooting"
  down poweroff
fi

# -- an update, when the lab attached a medium ------------------------------------------
[ -b /dev/vdb ] || down poweroff
mount -t vfat -o ro /dev/vdb /medium || { say "install failed: medium not mountable"; down poweroff; }
new=$(cat /medium/version); tries=$(cat /medium/tries); prefix=$(cat /medium/prefix)
pausing=; [ -e /medium/pause ] && pausing=1
# A point where the lab may cut the power: it answers to go on, or kills QEMU.
point() { say "install at $1"; [ -z "$pausing" ] || read -r _reply; }

# The slot to write: the slot-type partition that is not the booted one.
target=
for u in /sys/class/block/vda[0-9]*/uevent; do
  n=$(cat "${u%/uevent}/partition"); label=$(sed -n 's/^PARTNAME=//p' "$u")
  [ "$(sfdisk --part-type /dev/vda "$n")" = "$USR_TYPE" ] && [ "$label" != "$slot" ] && { target=$n; old=$label; }
done
[ -n "$target" ] || { say "install failed: no inactive slot"; down poweroff; }
tdev=/dev/vda$target
say "install version $new into partition $target (was $old)"
point begin
# No UKI may name a slot that is being rewritten; an earlier install cut short left its .partial.
rm -f /esp/EFI/Linux/*.partial
for e in /esp/EFI/Linux/*.efi; do
  [ -f "$e" ] && names_slot "$e" "$old" && rm -f "$e" && say "removed entry ${e##*/}"
done
sync
point entries-removed
sfdisk -q --no-reread --no-tell-kernel --part-label /dev/vda "$target" "$(cat /medium/empty-label)" && sync
point slot-emptied
size=$(stat -c %s /medium/slot.img); half=$((size / 65536 / 2))
dd if=/medium/slot.img of="$tdev" bs=65536 count=$half conv=fsync 2>/dev/null
point slot-half-written
dd if=/medium/slot.img of="$tdev" bs=65536 skip=$half seek=$half conv=fsync 2>/dev/null
point slot-written
got=$(head -c "$size" "$tdev" | sha256sum | cut -d' ' -f1)
[ "$got" = "$(cat /medium/slot.sha256)" ] || { say "install failed: the slot does not read back as written"; down poweroff; }
point slot-verified
sfdisk -q --no-reread --no-tell-kernel --part-label /dev/vda "$target" "$prefix$new" && sync
point slot-labelled
entry="$prefix$new+$tries.efi"
cp /medium/uki.efi "/esp/EFI/Linux/$entry.partial" && sync
point entry-written
mv "/esp/EFI/Linux/$entry.partial" "/esp/EFI/Linux/$entry" && sync
point entry-installed
say "install done: $entry"
down poweroff
