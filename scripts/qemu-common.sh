# Shared by qemu-tests.sh and qemu-migration.sh; sourced, not run. Expects ROOT, IOASID (empty:
# the newest launcher built in this checkout) and `die` to be defined by the caller.

# Sets IOASID (checked), QEMU (QEMU 10, unpacked by qemu-setup.sh) and GUEST (the guest folder
# guest-build.sh keeps up to date).
qemu_prepare() {
	if [ -z "$IOASID" ]; then
		IOASID=$(ls -t "$ROOT"/.build/release/ioasid "$ROOT"/.build/debug/ioasid 2>/dev/null | head -n1 || true)
	fi
	[ -n "$IOASID" ] && [ -x "$IOASID" ] || die "no ioasid launcher (build it with swift build, or pass --ioasid)"
	QEMU=$("$ROOT/scripts/qemu-setup.sh" --quiet | tail -n1)
	GUEST=$("$ROOT/scripts/guest-build.sh" --quiet | tail -n1)
}
