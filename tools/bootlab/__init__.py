"""The boot lab: a real GPT disk with Debian's systemd-boot and one Unified
Kernel Image per version, booted in QEMU (TCG, OVMF), showing what the boot
loader does with the appliance's boot counting: a bad version is tried
``tries`` times and the previous one comes back, a good one is blessed, and
a power cut while installing a version never leaves a disk without a
blessed version to boot. See docs/image.md, "The boot lab"; run it with
``make boot-lab``. ``bootlab.kit`` is the same for other tests: a disk, a
release's artefacts, and booting a disk image file they updated."""
