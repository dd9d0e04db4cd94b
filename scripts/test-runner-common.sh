# Shared by the selftest runners (conformance.sh, vfio-selftests.sh); sourced, not run.
# Expects `log` and `die` to be defined by the caller.

is_root() { [ "$(id -u)" = 0 ]; }

# Installs Debian packages, as root only.
install_pkgs() {
	is_root || die "missing $*: install them (apt-get install $*) or run as root"
	log "installing $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "$@" >&2 ||
		{ apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "$@" >&2; } ||
		die "apt-get install $* failed"
}

# Sets BASELINE_N to the one number in the file $BASELINE (when $BASELINE is set).
read_baseline() {
	[ -n "$BASELINE" ] || return 0
	[ -r "$BASELINE" ] || die "cannot read the baseline file: $BASELINE"
	BASELINE_N=$(tr -d '[:space:]' < "$BASELINE")
	[[ $BASELINE_N =~ ^[0-9]+$ ]] || die "$BASELINE must hold one number"
}
