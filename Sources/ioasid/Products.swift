import Glibc

/// The two libraries `ioasid run` injects, found next to the `ioasid` executable.
struct Products {
    static let preloadName = "libioasid-preload.so"
    static let engineName = "libIOASIDEngine.so"

    /// Absolute path of `libioasid-preload.so`.
    var preload: String
    /// Absolute path of `libIOASIDEngine.so`.
    var engine: String

    /// Looks in the executable's directory (the SwiftPM build directory), then `../lib` and
    /// `../lib/ioasid` (an installed layout).
    static func locate() throws(ToolError) -> Products {
        let directory = executableDirectory()
        let candidates = [directory, directory + "/../lib", directory + "/../lib/ioasid"]
        for candidate in candidates {
            if let preload = realPath(candidate + "/" + preloadName), let engine = realPath(candidate + "/" + engineName) {
                return Products(preload: preload, engine: engine)
            }
        }
        throw ToolError(description: "cannot find \(preloadName) and \(engineName) next to the ioasid executable (looked in \(candidates.joined(separator: ", ")))")
    }

    static func executableDirectory() -> String {
        let executable = realPath("/proc/self/exe") ?? CommandLine.arguments[0]
        guard let slash = executable.lastIndex(of: "/") else { return currentDirectory() }
        return String(executable[..<slash])
    }
}

/// The canonical absolute path of an existing file, or nil.
func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

func currentDirectory() -> String {
    guard let cwd = getcwd(nil, 0) else { return "." }
    defer { free(cwd) }
    return String(cString: cwd)
}

func errorString(_ error: Int32) -> String {
    String(cString: strerror(error))
}
