import Glibc

/// An engine library opened in the tool itself, to ask it what a machine specification means
/// with its device kinds (`--engine`): an engine built with a device author's code knows kinds
/// this tool does not. Only C strings cross (`ioasid_engine_describe_machine`); the engine's
/// Swift types stay its own.
struct EngineLibrary {
    /// The engine's answer for a specification.
    enum Description {
        /// The `ioasid devices` lines.
        case listing(String)
        /// Why the engine refused the specification.
        case refused(String)
    }

    private typealias Describe = @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<CChar>?, UInt) -> Int
    private let describe: Describe
    /// The library's absolute path.
    let path: String

    /// Opens the engine at `path` (relative to the working directory unless absolute).
    init(path given: String) throws(ToolError) {
        guard let path = realPath(given) else { throw ToolError(description: "no engine library at \(given)") }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw ToolError(description: "cannot load the engine \(path): \(dlerror().map { String(cString: $0) } ?? "unknown error")")
        }
        guard let symbol = dlsym(handle, "ioasid_engine_describe_machine") else {
            throw ToolError(description: "\(path) is not an ioasid engine (no ioasid_engine_describe_machine)")
        }
        self.path = path
        self.describe = unsafeBitCast(symbol, to: Describe.self)
    }

    /// What the engine says of `spec`.
    func describe(_ spec: String) -> Description {
        var capacity = 4096
        while true {
            var buffer = [CChar](repeating: 0, count: capacity)
            let result = spec.withCString { text in buffer.withUnsafeMutableBufferPointer { describe(text, $0.baseAddress, UInt(capacity)) } }
            if abs(result) < capacity {
                let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                return result >= 0 ? .listing(text) : .refused(text)
            }
            capacity = abs(result) + 1
        }
    }
}
