# Sourced by the scripts that fetch Debian packages from a suite the machine does
# not use (sid, bookworm-backports) as a separate, download-only apt source.
#
# debian_uri: prints the archive URI of the machine's own Debian entry, read at
# run time: a deb822 stanza in sources.list.d/*.sources or a one-line entry in
# sources.list(.d/*.list).  Security, update and backports suites live elsewhere
# or are not the main archive, so they are skipped.  Prints nothing when the
# machine has no such entry.
debian_uri() {
	local f
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			function flush(   n, i, s, plain) {
				n = split(suites, s, " ")
				for (i = 1; i <= n; i++) if (s[i] !~ /-(security|updates|backports)$/) plain = 1
				if (uri != "" && types ~ /(^| )deb( |$)/ && plain && uri !~ /security/ && !found) {
					print uri; found = 1
				}
				uri = ""; types = ""; suites = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			tolower($1) == "types:" { $1 = ""; types = $0 " " }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			END { flush() }' "$f" | head -n1
	done | head -n1
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI suite components...
		sed -E -n 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\2 \3/p' "$f" |
			awk '$1 !~ /security/ && $2 !~ /-(security|updates|backports)/ { print $1 }'
	done | head -n1
}

