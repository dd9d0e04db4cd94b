// Running helper programs and this program's own child modes; finding the package root.
import Glibc

// MARK: - subprocesses

/// Runs `argv` with `environment` added; returns the exit status and the merged stdout+stderr.
func run(_ argv: [String], environment extra: [String: String] = [:], echo: Bool = false) -> (status: Int32, output: String) {
    var env: [String] = []
    var e = environ
    while let p = e.pointee {
        let s = String(cString: p)
        if let k = s.split(separator: "=", maxSplits: 1).first, extra[String(k)] != nil {} else { env.append(s) }
        e += 1
    }
    for (k, v) in extra { env.append("\(k)=\(v)") }
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return (-1, "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addclose(&actions, fds[1])
    var cargv = argv.map { strdup($0) } + [nil]
    var cenv = env.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, &cargv, &cenv)
    posix_spawn_file_actions_destroy(&actions)
    close(fds[1])
    for p in cargv { free(p) }
    for p in cenv { free(p) }
    guard rc == 0 else { close(fds[0]); return (-1, "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[0..<n]
        if echo { _ = chunk.withUnsafeBytes { write(2, $0.baseAddress, n) } }
    }
    close(fds[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, String(decoding: bytes, as: UTF8.self))
}

func selfPath() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
}

func dirname(_ p: String) -> String {
    guard let i = p.lastIndex(of: "/") else { return "." }
    return i == p.startIndex ? "/" : String(p[..<i])
}

func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }

/// The package root: the current directory if it holds Package.swift, else the nearest parent
/// of this executable that does.
func packageRoot() -> String? {
    var buf = [CChar](repeating: 0, count: 4096)
    if getcwd(&buf, buf.count) != nil {
        let cwd = string(fromCString: buf)
        if exists(cwd + "/Package.swift") && exists(cwd + "/scripts/bench-preload.sh") { return cwd }
    }
    var d = dirname(selfPath())
    while d != "/" && !d.isEmpty {
        if exists(d + "/Package.swift") && exists(d + "/scripts/bench-preload.sh") { return d }
        d = dirname(d)
    }
    return nil
}

/// The text of a NUL-terminated C string held in `buffer`.
func string(fromCString buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Parses "key value value…" lines.
func keyValues(_ s: String) -> [String: [Double]] {
    var r: [String: [Double]] = [:]
    for line in s.split(separator: "\n") {
        let f = line.split(separator: " ")
        guard f.count >= 2 else { continue }
        r[String(f[0])] = f.dropFirst().compactMap { Double($0) }
    }
    return r
}

/// Builds the C helpers of sections 1 and 4 (scripts/bench-preload.sh): the foreign-fd benchmark
/// and the malloc-counting preload. Nil when there is no package root or the build failed.
func buildHelpers(root: String?) -> (fdbench: String, malloccount: String)? {
    var built: (fdbench: String, malloccount: String)? = nil
    if let root {
        let r = run([root + "/scripts/bench-preload.sh", "build", root + "/.build/bench"])
        let lines = r.output.split(separator: "\n").map(String.init)
        if r.status == 0, lines.count >= 2 { built = (lines[lines.count - 2], lines[lines.count - 1]) }
        else { print("scripts/bench-preload.sh build failed (\(r.status)):\n\(r.output)") }
    } else {
        print("(package root with scripts/bench-preload.sh not found: run from the package folder; sections 1, 4, 5 skipped)")
    }
    return built
}
