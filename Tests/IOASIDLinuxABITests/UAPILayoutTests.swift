// Checks the Swift mirrors of the Linux user API (IOASIDLinuxABI's Structs.swift and
// IoctlNumbers.swift) against the kernel's own headers.
//
// At test time the kernel source is fetched (scripts/fetch-linux-source.sh, into a cache
// folder outside the repository; IOASID_LINUX_SRC names an already extracted tree). The
// structures and ioctl definitions are read from include/uapi/linux/iommufd.h, from the
// test driver's drivers/iommu/iommufd/iommufd_test.h and from include/uapi/linux/vfio.h,
// a small C program is generated that prints sizeof/alignof of every structure, offsetof
// and sizeof of every field (nested members dotted, anonymous unions flattened, as C names
// them) and the value of every ioctl request; it is compiled against those headers and run,
// and each figure is compared with the Swift side.
//
// Without the kernel source the tests are cancelled (skipped) with a message, except when
// the CI environment variable is set: then they fail.

import Foundation
import IOASIDLinuxABI
import Testing

@Suite("Linux uapi layouts")
struct UAPILayoutTests {
    /// Every structure of iommufd.h and iommufd_test.h has a Swift mirror; every Swift
    /// mirror names a structure of the headers; sizes, alignment and every field agree.
    @Test func structLayoutsMatchTheKernelHeaders() throws {
        let kernel = try kernelLayout()
        let swiftByName = Dictionary(
            UAPI.structTypes.map { ($0.cName, $0 as any UAPIStruct.Type) }, uniquingKeysWith: { a, _ in a })

        // Completeness: all of iommufd.h and iommufd_test.h (VFIO only where mirrored).
        for name in kernel.requiredStructs where swiftByName[name] == nil {
            Issue.record("struct \(name) (\(kernel.structs[name]?.header ?? "?")) has no Swift mirror in UAPI.structTypes")
        }

        var comparedFields = 0
        for type in UAPI.structTypes {
            let name = type.cName
            guard let c = kernel.structs[name] else {
                Issue.record("Swift \(name) matches no struct of iommufd.h, iommufd_test.h or vfio.h")
                continue
            }
            if type.byteSize != c.size {
                Issue.record("\(name): Swift size \(type.byteSize), C sizeof \(c.size)")
            }
            if MemoryLayout<Int>.size == 8, alignment(of: type) > c.align {
                Issue.record("\(name): Swift alignment \(alignment(of: type)) exceeds C alignof \(c.align)")
            }
            let swiftFields = Dictionary(type.layoutFields.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            if swiftFields.count != type.layoutFields.count {
                Issue.record("\(name): layoutFields lists a field name twice")
            }
            for field in c.fields {
                guard let s = swiftFields[field.path] else {
                    Issue.record("\(name).\(field.path): C field (offset \(field.offset), size \(field.size)) missing from Swift layoutFields")
                    continue
                }
                comparedFields += 1
                if s.offset != field.offset || s.size != field.size {
                    Issue.record("\(name).\(field.path): Swift offset \(s.offset) size \(s.size), C offset \(field.offset) size \(field.size)")
                }
            }
            let cPaths = Set(c.fields.map(\.path))
            for s in type.layoutFields where !cPaths.contains(s.name) {
                if c.bitfields.contains(s.name) { continue }
                Issue.record("\(name).\(s.name): Swift field has no C counterpart")
            }
        }
        print("UAPILayoutTests: compared \(UAPI.structTypes.count) structs and \(comparedFields) fields with \(kernel.source)")
    }

    /// Every ioctl of iommufd.h and iommufd_test.h is in `IOCTL.all`, and every request
    /// in `IOCTL.all` has the value of the C macro of the same name.
    @Test func ioctlNumbersMatchTheKernelHeaders() throws {
        let kernel = try kernelLayout()
        let swift = Dictionary(IOCTL.all.map { ($0.name, $0.request) }, uniquingKeysWith: { a, _ in a })
        for name in kernel.requiredIoctls where swift[name] == nil {
            Issue.record("ioctl \(name) is missing from IOCTL.all")
        }
        for (name, request) in IOCTL.all {
            guard let c = kernel.ioctls[name] else {
                Issue.record("IOCTL.\(name) matches no ioctl macro of iommufd.h, iommufd_test.h or vfio.h")
                continue
            }
            if UInt64(request) != c {
                Issue.record("IOCTL.\(name) is 0x\(String(request, radix: 16)), C has 0x\(String(c, radix: 16))")
            }
        }
        print("UAPILayoutTests: compared \(IOCTL.all.count) ioctl numbers with \(kernel.source)")
    }

    /// The header reader itself: it must find what is known to be in iommufd.h, so that a
    /// change in the header's style cannot silently empty the comparisons above.
    @Test func headerReaderFindsTheKnownDeclarations() throws {
        let kernel = try kernelLayout()
        #expect(kernel.structs["iommu_ioas_map"]?.fields.map(\.path) == ["size", "flags", "ioas_id", "__reserved", "user_va", "length", "iova"])
        #expect(kernel.structs["iommu_hw_info"]?.fields.contains { $0.path == "in_data_type" } == true)
        #expect(kernel.structs["iommu_test_cmd"]?.fields.contains { $0.path == "check_map.iova" } == true)
        #expect(kernel.ioctls["IOMMU_IOAS_MAP"] != nil)
        #expect(kernel.requiredStructs.count >= 40)
        #expect(kernel.requiredIoctls.count >= 22)
    }
}

private func alignment(of type: any UAPIStruct.Type) -> Int {
    func measure<T: UAPIStruct>(_: T.Type) -> Int { MemoryLayout<T>.alignment }
    return measure(type)
}

// MARK: - The C side

/// What the compiled C program reported.
struct KernelLayout: Sendable {
    struct Field: Sendable {
        var path: String
        var offset: Int
        var size: Int
    }
    struct Struct: Sendable {
        var header: String
        var size: Int
        var align: Int
        var fields: [Field]
        /// Bit-field members: no offsetof in C, so not measured.
        var bitfields: Set<String>
    }
    var source: String
    var structs: [String: Struct]
    var ioctls: [String: UInt64]
    /// Structures and ioctls of iommufd.h and iommufd_test.h: all must be mirrored.
    var requiredStructs: [String]
    var requiredIoctls: [String]
}

struct LayoutTestError: Error, CustomStringConvertible {
    var description: String
}

/// Measured once, on first use, for all tests of the suite.
private let measuredKernelLayout: Result<KernelLayout, LayoutTestError> = {
    do {
        guard let source = try KernelSource.locate() else {
            return .failure(LayoutTestError(description: "SKIP"))
        }
        return .success(try measureKernelLayout(source: source))
    } catch let error as LayoutTestError {
        return .failure(error)
    } catch {
        return .failure(LayoutTestError(description: "\(error)"))
    }
}()

private func kernelLayout() throws -> KernelLayout {
    switch measuredKernelLayout {
    case .success(let layout):
        return layout
    case .failure(let error):
        let why = error.description == "SKIP" ? KernelSource.lastProblem : error.description
        if KernelSource.inCI {
            throw LayoutTestError(description: "kernel headers unavailable in CI: \(why)")
        }
        try Test.cancel("skipped: the Linux kernel source could not be fetched (\(why)); set IOASID_LINUX_SRC to an extracted tree")
    }
}

enum KernelSource {
    /// The package root, from this file's path (Tests/IOASIDLinuxABITests/<file>).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var inCI: Bool {
        let value = ProcessInfo.processInfo.environment["CI"] ?? ""
        return !value.isEmpty && value != "0" && value.lowercased() != "false"
    }

    nonisolated(unsafe) static var lastProblem = "unknown problem"

    static let required = [
        "include/uapi/linux/iommufd.h",
        "include/uapi/linux/vfio.h",
        "include/uapi/linux/stddef.h",
        "drivers/iommu/iommufd/iommufd_test.h",
    ]

    static func isUsable(_ root: String) -> Bool {
        required.allSatisfy { FileManager.default.fileExists(atPath: root + "/" + $0) }
    }

    /// The root of a kernel tree holding the headers, fetching it if needed; nil if it
    /// cannot be had (with the reason in `lastProblem`).
    static func locate() throws -> String? {
        if let given = ProcessInfo.processInfo.environment["IOASID_LINUX_SRC"], !given.isEmpty {
            guard isUsable(given) else {
                throw LayoutTestError(description: "IOASID_LINUX_SRC=\(given) lacks one of \(required)")
            }
            return given
        }
        let script = packageRoot.appendingPathComponent("scripts/fetch-linux-source.sh").path
        guard FileManager.default.isExecutableFile(atPath: script) else {
            lastProblem = "\(script) is missing"
            return nil
        }
        let run = try runProcess(["/bin/bash", script, "--quiet"], stderrToStdout: false)
        let root = run.output.split(separator: "\n").last.map(String.init) ?? ""
        guard run.status == 0, isUsable(root) else {
            lastProblem = "fetch-linux-source.sh exited with status \(run.status)"
            return nil
        }
        return root
    }
}

struct ProcessResult {
    var status: Int32
    var output: String
}

/// Runs `arguments` (the first is the program, looked up in PATH if not a path) and
/// returns its exit status and standard output (plus standard error if asked).
func runProcess(_ arguments: [String], stderrToStdout: Bool = true, in directory: URL? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    let pipe = Pipe()
    process.standardOutput = pipe
    if stderrToStdout { process.standardError = pipe }
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Copies the uapi headers, sanitized as `make headers_install` does for these files
/// (no `_UAPI` guard prefix, no `__user`), generates the measuring program from the parsed
/// headers, compiles and runs it.
func measureKernelLayout(source root: String) throws -> KernelLayout {
    let fm = FileManager.default
    let work = fm.temporaryDirectory.appendingPathComponent("ioasid-uapi-layout-\(UUID().uuidString)")
    try fm.createDirectory(at: work.appendingPathComponent("include/linux"), withIntermediateDirectories: true)
    defer { try? fm.removeItem(at: work) }

    func read(_ relative: String) throws -> String {
        try String(contentsOfFile: root + "/" + relative, encoding: .utf8)
    }
    for header in ["iommufd.h", "vfio.h", "stddef.h"] {
        let text = try read("include/uapi/linux/" + header)
        try sanitizeUAPIHeader(text).write(
            to: work.appendingPathComponent("include/linux/" + header), atomically: true, encoding: .utf8)
    }

    let testHeaderPath = root + "/drivers/iommu/iommufd/iommufd_test.h"
    let headers: [(name: String, parsed: ParsedHeader)] = [
        ("iommufd.h", try CHeaderReader.parse(read("include/uapi/linux/iommufd.h"))),
        ("iommufd_test.h", try CHeaderReader.parse(read("drivers/iommu/iommufd/iommufd_test.h"))),
        ("vfio.h", try CHeaderReader.parse(read("include/uapi/linux/vfio.h"))),
    ]

    // All structs of the iommufd headers; VFIO's only where Swift mirrors them.
    let mirrored = Set(UAPI.structTypes.map { $0.cName })
    let mirroredIoctls = Set(IOCTL.all.map { $0.name })
    var allStructs: [String: CStruct] = [:]
    for (_, parsed) in headers {
        for s in parsed.structs where allStructs[s.name] == nil { allStructs[s.name] = s }
    }
    var program = """
        #include <stddef.h>
        #include <stdio.h>
        #include <linux/iommufd.h>
        #include <linux/vfio.h>
        #include "\(testHeaderPath)"

        #define S(t) printf("S\\t%s\\t%zu\\t%zu\\n", #t, sizeof(struct t), _Alignof(struct t));
        #define F(t, f) printf("F\\t%s\\t%s\\t%zu\\t%zu\\n", #t, #f, offsetof(struct t, f), sizeof(((struct t *)0)->f));
        #define A(t, f) printf("F\\t%s\\t%s\\t%zu\\t0\\n", #t, #f, offsetof(struct t, f));
        #define I(n) printf("I\\t%s\\t%lu\\n", #n, (unsigned long)(n));

        int main(void)
        {

        """
    var headerOf: [String: String] = [:]
    var bitfields: [String: Set<String>] = [:]
    var requiredStructs: [String] = []
    var requiredIoctls: [String] = []
    for (name, parsed) in headers {
        let isVFIO = name == "vfio.h"
        for s in parsed.structs where headerOf[s.name] == nil {
            if isVFIO && !mirrored.contains(s.name) { continue }
            headerOf[s.name] = name
            if !isVFIO { requiredStructs.append(s.name) }
            program += "\tS(\(s.name))\n"
            for field in s.fieldPaths(resolving: allStructs) {
                if field.isBitfield {
                    bitfields[s.name, default: []].insert(field.path)
                } else if field.isFlexible {
                    program += "\tA(\(s.name), \(field.path))\n"
                } else {
                    program += "\tF(\(s.name), \(field.path))\n"
                }
            }
        }
        for ioctl in parsed.ioctls {
            if isVFIO && !mirroredIoctls.contains(ioctl) { continue }
            if !isVFIO { requiredIoctls.append(ioctl) }
            program += "\tI(\(ioctl))\n"
        }
    }
    program += "\treturn 0;\n}\n"

    let programURL = work.appendingPathComponent("layout.c")
    try program.write(to: programURL, atomically: true, encoding: .utf8)
    let compiler = ProcessInfo.processInfo.environment["CC"].flatMap { $0.isEmpty ? nil : $0 } ?? findCompiler()
    let binary = work.appendingPathComponent("layout").path
    let compile = try runProcess([compiler, "-std=gnu11", "-Wall", "-Werror=implicit-function-declaration",
                                  "-isystem", work.appendingPathComponent("include").path,
                                  "-o", binary, programURL.path])
    guard compile.status == 0 else {
        throw LayoutTestError(description: "compiling the layout program with \(compiler) failed:\n\(compile.output)")
    }
    let run = try runProcess([binary])
    guard run.status == 0 else {
        throw LayoutTestError(description: "the layout program failed (\(run.status)):\n\(run.output)")
    }

    var structs: [String: KernelLayout.Struct] = [:]
    var ioctls: [String: UInt64] = [:]
    for line in run.output.split(separator: "\n") {
        let part = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        switch part.first {
        case "S" where part.count == 4:
            structs[part[1]] = KernelLayout.Struct(
                header: headerOf[part[1]] ?? "?", size: Int(part[2]) ?? -1, align: Int(part[3]) ?? -1,
                fields: [], bitfields: bitfields[part[1]] ?? [])
        case "F" where part.count == 5:
            structs[part[1]]?.fields.append(
                KernelLayout.Field(path: part[2], offset: Int(part[3]) ?? -1, size: Int(part[4]) ?? -1))
        case "I" where part.count == 3:
            ioctls[part[1]] = UInt64(part[2])
        default:
            throw LayoutTestError(description: "unexpected line from the layout program: \(line)")
        }
    }
    return KernelLayout(source: root, structs: structs, ioctls: ioctls,
                        requiredStructs: requiredStructs, requiredIoctls: requiredIoctls)
}

private func findCompiler() -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for candidate in ["cc", "gcc", "clang"] {
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(candidate)") {
            return candidate
        }
    }
    return "cc"
}

/// What `scripts/headers_install.sh` does to these headers: the `_UAPI` guard prefix goes,
/// and the sparse annotations `__user`, `__force`, `__iomem` are dropped.
func sanitizeUAPIHeader(_ text: String) -> String {
    var lines: [String] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        var l = String(line)
        let trimmed = l.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("#ifndef") || trimmed.hasPrefix("#define") || trimmed.hasPrefix("#endif") {
            l = l.replacingOccurrences(of: " _UAPI", with: " ")
                .replacingOccurrences(of: "\t_UAPI", with: "\t")
                .replacingOccurrences(of: "/* _UAPI", with: "/* ")
        }
        for annotation in ["__user", "__force", "__iomem"] {
            l = l.replacingOccurrences(of: " \(annotation) ", with: " ")
                .replacingOccurrences(of: "(\(annotation) ", with: "(")
        }
        lines.append(l)
    }
    return lines.joined(separator: "\n")
}

// MARK: - Reading C declarations

/// One member of a C structure or union.
struct CMember: Sendable {
    /// nil for an anonymous struct/union, whose members belong to the enclosing struct.
    var name: String?
    /// For `struct tag name;`: the tag, whose fields appear as `name.field`.
    var structTag: String?
    /// For an inline `struct { ... } name;` or an anonymous aggregate.
    var children: [CMember] = []
    var isArray = false
    var isFlexible = false
    var isBitfield = false
}

struct CStruct: Sendable {
    var name: String
    var members: [CMember]

    struct Path {
        var path: String
        var isFlexible: Bool
        var isBitfield: Bool
    }

    /// Every field as C designates it in `offsetof`: nested named members dotted
    /// (`header.id`), members of anonymous structs/unions flattened.
    func fieldPaths(resolving structs: [String: CStruct]) -> [Path] {
        var out: [Path] = []
        func walk(_ members: [CMember], _ prefix: String, _ depth: Int) {
            guard depth < 8 else { return }
            for m in members {
                guard let name = m.name else {
                    walk(m.children, prefix, depth + 1)
                    continue
                }
                let path = prefix + name
                out.append(Path(path: path, isFlexible: m.isFlexible, isBitfield: m.isBitfield))
                if m.isArray { continue }
                if !m.children.isEmpty {
                    walk(m.children, path + ".", depth + 1)
                } else if let tag = m.structTag, let nested = structs[tag] {
                    walk(nested.members, path + ".", depth + 1)
                }
            }
        }
        walk(members, "", 0)
        return out
    }
}

struct ParsedHeader: Sendable {
    var structs: [CStruct]
    /// Macros defined as `_IO(...)`, `_IOR(...)`, `_IOW(...)` or `_IOWR(...)`.
    var ioctls: [String]
}

/// A reader for the plain declarations of kernel uapi headers: top-level `struct tag { ... };`
/// definitions (members: scalars, arrays, flexible arrays, nested named or anonymous
/// structs and unions, members of struct type, bit-fields, trailing attributes such as
/// `__counted_by(n)`) and the ioctl macros.
enum CHeaderReader {
    static func parse(_ text: String) throws -> ParsedHeader {
        // Join continued lines, then take the preprocessor lines out.
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        let noComments = stripComments(joined)
        var ioctls: [String] = []
        var code = ""
        for line in noComments.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("#") {
                let words = t.dropFirst().split(whereSeparator: { $0 == " " || $0 == "\t" })
                if words.count >= 3, words[0] == "define" {
                    let body = words[2...].joined(separator: " ")
                    if ["_IO(", "_IOR(", "_IOW(", "_IOWR("].contains(where: { body.hasPrefix($0) }) {
                        ioctls.append(String(words[1]))
                    }
                }
                code += "\n"
            } else {
                code += line + "\n"
            }
        }
        var tokens = Tokens(tokenize(code))
        var structs: [CStruct] = []
        while let token = tokens.next() {
            if token == "struct", let tag = tokens.peek(), isIdentifier(tag), tokens.peek(1) == "{" {
                tokens.skip(2)
                let members = try parseMembers(&tokens)
                structs.append(CStruct(name: tag, members: members))
            } else if token == "{" {
                try tokens.skipBalanced(from: "{", to: "}")
            }
        }
        return ParsedHeader(structs: structs, ioctls: ioctls)
    }

    /// Members up to and including the closing `}`.
    static func parseMembers(_ tokens: inout Tokens) throws -> [CMember] {
        var members: [CMember] = []
        while let token = tokens.peek() {
            if token == "}" { tokens.skip(1); return members }
            if token == "struct" || token == "union" {
                let tagged = tokens.peek(1).map(isIdentifier) ?? false
                let inlineBody = tokens.peek(tagged ? 2 : 1) == "{"
                if inlineBody {
                    tokens.skip(tagged ? 3 : 2)
                    let children = try parseMembers(&tokens)
                    var declarator = try declaratorTokens(&tokens)
                    if declarator.isEmpty {
                        members.append(CMember(name: nil, children: children))
                    } else {
                        var m = try member(from: &declarator)
                        m.children = children
                        members.append(m)
                    }
                    continue
                }
                // struct tag name...;
                tokens.skip(1)
                guard let tag = tokens.next(), isIdentifier(tag) else {
                    throw LayoutTestError(description: "unexpected tokens after \(token)")
                }
                var declarator = try declaratorTokens(&tokens)
                var m = try member(from: &declarator)
                m.structTag = tag
                members.append(m)
                continue
            }
            var declarator = try declaratorTokens(&tokens)
            if declarator.isEmpty { continue }
            members.append(try member(from: &declarator))
        }
        throw LayoutTestError(description: "unterminated struct body")
    }

    /// The tokens up to the `;` that ends a member (consumed), with attribute calls
    /// such as `__counted_by(n)` or `__attribute__((x))` taken out.
    static func declaratorTokens(_ tokens: inout Tokens) throws -> [String] {
        var out: [String] = []
        while let token = tokens.next() {
            if token == ";" { return out }
            if token == "(" {
                // An attribute call: drop it and the identifier before it.
                if let last = out.last, isIdentifier(last) { out.removeLast() }
                try tokens.skipBalanced(from: "(", to: ")", alreadyOpened: true)
                continue
            }
            out.append(token)
        }
        throw LayoutTestError(description: "member without ';'")
    }

    /// A member from its type and declarator tokens (`__u32 x[4]`, `__u8 data[]`, `__u32 f : 3`).
    static func member(from tokens: inout [String]) throws -> CMember {
        var m = CMember()
        if let colon = tokens.firstIndex(of: ":") {
            m.isBitfield = true
            tokens = Array(tokens[..<colon])
        }
        if let open = tokens.firstIndex(of: "[") {
            m.isArray = true
            m.isFlexible = tokens.indices.contains(open + 1) && tokens[open + 1] == "]"
            tokens = Array(tokens[..<open])
        }
        guard let name = tokens.last(where: isIdentifier) else {
            throw LayoutTestError(description: "member without a name: \(tokens)")
        }
        m.name = name
        return m
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first else { return false }
        return (first == "_" || CharacterSet.letters.contains(first))
            && s.unicodeScalars.allSatisfy { $0 == "_" || CharacterSet.alphanumerics.contains($0) }
            && !["struct", "union", "enum", "const", "volatile", "unsigned", "signed"].contains(s)
    }

    static func stripComments(_ text: String) -> String {
        var out = ""
        var chars = Array(text.unicodeScalars)[...]
        while let c = chars.first {
            if c == "/", chars.dropFirst().first == "*" {
                chars = chars.dropFirst(2)
                while !chars.isEmpty, !(chars.first == "*" && chars.dropFirst().first == "/") {
                    if chars.first == "\n" { out.unicodeScalars.append("\n") }
                    chars = chars.dropFirst()
                }
                chars = chars.dropFirst(2)
                out += " "
            } else if c == "/", chars.dropFirst().first == "/" {
                while let d = chars.first, d != "\n" { chars = chars.dropFirst() }
            } else {
                out.unicodeScalars.append(c)
                chars = chars.dropFirst()
            }
        }
        return out
    }

    static func tokenize(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        func flush() { if !current.isEmpty { tokens.append(current); current = "" } }
        for c in text.unicodeScalars {
            if c == "_" || CharacterSet.alphanumerics.contains(c) {
                current.unicodeScalars.append(c)
            } else {
                flush()
                if !CharacterSet.whitespacesAndNewlines.contains(c) { tokens.append(String(c)) }
            }
        }
        flush()
        return tokens
    }
}

struct Tokens {
    private let items: [String]
    private var index = 0

    init(_ items: [String]) { self.items = items }

    func peek(_ ahead: Int = 0) -> String? {
        index + ahead < items.count ? items[index + ahead] : nil
    }

    mutating func next() -> String? {
        defer { index += 1 }
        return peek()
    }

    mutating func skip(_ n: Int) { index += n }

    mutating func skipBalanced(from open: String, to close: String, alreadyOpened: Bool = true) throws {
        var depth = alreadyOpened ? 1 : 0
        while let t = next() {
            if t == open { depth += 1 }
            if t == close { depth -= 1; if depth == 0 { return } }
        }
        throw LayoutTestError(description: "unbalanced \(open)")
    }
}
